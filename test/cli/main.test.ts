import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { DEFENSE_METHODS, METHODS } from '../../src/defense/methods/index.js';
import { kebab } from '../../src/cli/method-flags.js';
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

  it('harden --help documents every option of every registered method from its schema', () => {
    const r = fgsn('harden', '--help');
    expect(r.status).toBe(0);
    for (const m of DEFENSE_METHODS) {
      expect(r.stdout).toContain(`  ${m}: ${METHODS[m].summary}`);
      for (const [key, schema] of Object.entries(METHODS[m].options.shape as Record<string, z.ZodType>)) {
        expect(r.stdout).toContain(`--${kebab(key)} `);
        expect(r.stdout).toContain(schema.description!);
      }
    }
  });

  it('harden refuses --q with the default target-driven search, saying what to give instead', () => {
    const r = fgsn('harden', '--base', 'b', '--aligned', 'a', '--finetuned', 'f', '--harmful', 'h', '--benign', 'n', '--out', 'o', '--q', '0.02');
    expect(r.status).toBe(2);
    const err = (JSON.parse(r.stderr.trim().split('\n').pop() ?? '{}') as { error: { code: string; message: string } }).error;
    expect(err.code).toBe('DEFENSE_OPTION_INVALID');
    expect(err.message).toMatch(/option q=.*targetAsr off.*qStart/);
  });
});
