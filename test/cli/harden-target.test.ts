/**
 * `fgsn harden` says on its last line whether the safety target was reached, and `--require-target` turns a
 * miss into a non-zero exit status. On the planted demo models (no testbed needed).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { REPO_ROOT } from '../support/testbed.js';

const exec = promisify(execFile);

async function harden(tb: DemoTestbed, out: string, extra: string[]): Promise<{ code: number; stdout: string }> {
  const args = ['bin/fgsn.js', 'harden', '--base', tb.base, '--aligned', tb.aligned, '--finetuned', tb.finetuned, '--harmful', tb.files.harmfulProbes,
    '--benign', tb.files.benignProbes, '--task', tb.files.taskProbes, '--out', out, '--format', 'report', '--cache-dir', join(tb.root, 'cache'), '--quiet', ...extra];
  try {
    const { stdout } = await exec(process.execPath, args, { cwd: REPO_ROOT, maxBuffer: 1 << 24 });
    return { code: 0, stdout };
  } catch (e) {
    const err = e as { code?: number; stdout?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '' };
  }
}

describe('fgsn harden: target status on the last line, --require-target', () => {
  let dir: string;
  let tb: DemoTestbed;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fgsn-target-'));
    tb = await writeDemoTestbed(join(dir, 'tb'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a missed target: the last line says "not reached", the report too, and --require-target exits 3', async () => {
    const out = join(dir, 'missed');
    const r = await harden(tb, out, ['--max-params', '0.000001', '--require-target']);
    expect(r.code).toBe(3);
    const last = r.stdout.trim().split('\n').at(-1);
    expect(last).toMatch(/^target: not reached \(judged probe ASR 1\.000 vs target 0\.020/u);
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8')) as { target: string; targetDetails: { rule: string } };
    expect(report.target).toBe('not reached');
    expect(report.targetDetails.rule).toBe('no step within the parameter cap');
    // the JSON before the last line carries it too
    const json = JSON.parse(r.stdout.trim().split('\n').slice(0, -1).join('\n')) as { summary: { target: string } };
    expect(json.summary.target).toBe('not reached');
  }, 120_000);

  it('without --require-target a miss still exits 0; a fixed budget has no target', async () => {
    const r = await harden(tb, join(dir, 'missed-ok'), ['--max-params', '0.000001']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n').at(-1)).toMatch(/^target: not reached/u);
    const fixed = await harden(tb, join(dir, 'fixed'), ['--target-asr', 'off', '--require-target']);
    expect(fixed.code).toBe(0);
    expect(fixed.stdout.trim().split('\n').at(-1)).toMatch(/^target: not set/u);
  }, 120_000);

  it('a reached target exits 0 with --require-target', async () => {
    const r = await harden(tb, join(dir, 'reached'), ['--require-target']);
    expect(r.stdout.trim().split('\n').at(-1)).toMatch(/^target: reached/u);
    expect(r.code).toBe(0);
  }, 120_000);
});
