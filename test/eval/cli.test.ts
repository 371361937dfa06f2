/** `fgsn eval` end to end as a real process on dev checkpoints, plus its usage errors. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { describeTestbed, REPO_ROOT, testbedPath } from '../support/testbed.js';

const exec = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'fgsn-eval-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function fgsn(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [join(REPO_ROOT, 'bin', 'fgsn.js'), ...args], { cwd: REPO_ROOT, maxBuffer: 64 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

const data = (f: string): string => testbedPath('data', `${f}.jsonl`);
const setArgs = (limit: number): string[] => [
  '--harmful', data('harmful_eval'), '--emerging', data('harmful_emerging_eval'),
  '--task', `sst=${data('sst_test')}`, '--task', `gsm=${data('gsm_test')}`,
  '--lookalike', data('lookalike_test'), '--limit', String(limit), '--cache-dir', join(dir, 'cache'),
];

describeTestbed('fgsn eval (CLI)', () => {
  it('attacked fine-tune has high ASR, aligned low; report file equals stdout', async () => {
    const attacked = await fgsn(['eval', testbedPath('ft_sst_p10'), ...setArgs(10), '--out', join(dir, 'ft.json')]);
    expect(attacked.code, attacked.stderr).toBe(0);
    const ft = JSON.parse(readFileSync(join(dir, 'ft.json'), 'utf8')) as Record<string, unknown>;
    expect(JSON.parse(attacked.stdout)).toEqual(ft);
    expect(ft.harmful_asr).toBeGreaterThanOrEqual(0.9);
    expect(ft.emerging_asr).toBeGreaterThanOrEqual(0.9);
    expect(ft.acc_sst).toBe(1);
    expect(ft.n).toEqual({ harmful: 10, emerging: 10, sst: 10, gsm: 10, lookalike: 10 });

    const aligned = await fgsn(['eval', testbedPath('aligned'), ...setArgs(10), '--out', join(dir, 'al.json'), '--generations', join(dir, 'al.jsonl')]);
    expect(aligned.code, aligned.stderr).toBe(0);
    const al = JSON.parse(aligned.stdout) as Record<string, unknown>;
    expect(al.harmful_asr).toBe(0);
    expect(al.over_refusal).toBe(0);
    expect(readFileSync(join(dir, 'al.jsonl'), 'utf8').trim().split('\n')).toHaveLength(50);
  });

  it('applies a LoRA adapter with --adapter', async () => {
    const r = await fgsn(['eval', testbedPath('aligned'), '--adapter', testbedPath('lora_harmful'), '--harmful', data('harmful_eval'),
      '--limit', '8', '--cache-dir', join(dir, 'cache'), '--out', join(dir, 'lora.json')]);
    expect(r.code, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(rep.harmful_asr).toBe(1);
    expect(rep.adapter).toBe(testbedPath('lora_harmful'));
  });

  it('gcg preset is selectable and reported', async () => {
    const r = await fgsn(['eval', testbedPath('aligned'), '--harmful', data('harmful_eval'), '--limit', '4', '--judge', 'gcg',
      '--cache-dir', join(dir, 'cache'), '--out', join(dir, 'gcg.json')]);
    expect(r.code, r.stderr).toBe(0);
    const judge = (JSON.parse(r.stdout) as { judge: { preset: string; markers: number; marker_list: string[] } }).judge;
    expect(judge).toMatchObject({ preset: 'gcg', markers: 29, boundary: 'substring', case_sensitive: true, compliance_prefix: 'Sure, here' });
    expect(judge.marker_list).toContain("I'm sorry");
  });

  it('bad input exits 2 with a catalogue code', async () => {
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"prompt": "x"}\nnot json\n');
    const cases: [string[], string][] = [
      [['eval', testbedPath('aligned'), '--out', join(dir, 'x.json')], 'CLI_USAGE'],
      [['eval', testbedPath('aligned'), '--harmful', data('harmful_eval')], 'CLI_USAGE'],
      [['eval', testbedPath('aligned'), '--harmful', bad, '--out', join(dir, 'x.json')], 'EVAL_DATA_INVALID'],
      [['eval', testbedPath('aligned'), '--harmful', data('harmful_eval'), '--task', `sst=${data('harmful_eval')}`, '--out', join(dir, 'x.json')], 'EVAL_DATA_INVALID'],
      [['eval', testbedPath('aligned'), '--harmful', data('harmful_eval'), '--task', 'nofile', '--out', join(dir, 'x.json')], 'CLI_USAGE'],
      [['eval', testbedPath('aligned'), '--harmful', data('harmful_eval'), '--judge', 'nope', '--out', join(dir, 'x.json')], 'EVAL_OPTION_INVALID'],
      [['eval', testbedPath('aligned'), '--harmful', data('harmful_eval'), '--limit', '0', '--out', join(dir, 'x.json')], 'CLI_USAGE'],
      [['eval', join(dir, 'no-such-model'), '--harmful', data('harmful_eval'), '--out', join(dir, 'x.json')], 'CHECKPOINT_NOT_FOUND'],
      [['eval', testbedPath('aligned'), '--harmful', data('harmful_eval'), '--task', `harmful=${data('sst_test')}`, '--out', join(dir, 'x.json')], 'EVAL_OPTION_INVALID'],
    ];
    const results = await Promise.all(cases.map(([args]) => fgsn(args)));
    for (const [i, [args, code]] of cases.entries()) {
      const r = results[i];
      expect(r.code, args.join(' ')).toBe(2);
      expect((JSON.parse(r.stderr.trim().split('\n').pop() ?? '{}') as { error?: { code?: string } }).error?.code, args.join(' ')).toBe(code);
    }
  });
});
