import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/testbed.js';

function fgsn(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['bin/fgsn.js', ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('fgsn command dispatcher', () => {
  it('lists every command in help and exits 0', () => {
    const r = fgsn('help');
    expect(r.status).toBe(0);
    for (const c of ['demo', 'inspect', 'harden', 'eval', 'serve', 'worker']) expect(r.stdout).toContain(`  ${c}`);
  });

  it('an unknown command is a usage error (exit 2)', () => {
    const r = fgsn('hardne');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown command "hardne"');
  });

  it.each([['harden', '--bogus'], ['apply-diff', '--nope'], ['eval', '--max-new-tokens']])(
    'a bad flag of %s is CLI_USAGE with exit 2, not an internal error',
    (command, flag) => {
      const r = fgsn(command, flag);
      expect(r.status).toBe(2);
      const err = (JSON.parse(r.stderr.trim().split('\n').pop() ?? '{}') as { error: { code: string; message: string } }).error;
      expect(err.code).toBe('CLI_USAGE');
      expect(err.message).toContain(`fgsn ${command}:`);
    },
  );
});
