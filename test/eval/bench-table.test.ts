import { expect, it } from 'vitest';
import {
  compareWithRecorded, continualChecks, renderContinual, renderMarkdown, renderTargets, targetChecks, type BenchRow,
} from '../../bench/defense/table.js';
import { loadProbes, finetuneInfo } from '../../bench/defense/testbed.js';
import { HAS_TESTBED, describeTestbed, testbedPath } from '../support/testbed.js';

it('compareWithRecorded rounds like the testbed and lists every difference', () => {
  const names = ['harmful_asr', 'acc_instruct', 'over_refusal'];
  expect(compareWithRecorded({ harmful_asr: 0.99, acc_instruct: 42 / 93 }, { harmful_asr: 0.99, acc_instruct: 0.4516 }, names))
    .toBe('match (2 metrics)');
  const diff = compareWithRecorded({ harmful_asr: 0.98, acc_instruct: 42 / 93 }, { harmful_asr: 0.99, acc_instruct: 0.4516 }, names);
  expect(diff).toMatch(/^MISMATCH: harmful_asr 0\.9800 vs recorded 0\.99$/u);
  expect(compareWithRecorded({}, { harmful_asr: 1 }, names)).toBe('nothing to compare');
});

it('renderMarkdown prints percentages, marks unavailable rows without numbers', () => {
  const md = renderMarkdown([
    { checkpoint: 'ft', method: 'undefended', status: 'ok', asr: 0.99, compliance: 1, emerging_asr: 0.975, task: 'sst', task_acc: 1, over_refusal: 0, eval_s: 2.04 },
    { checkpoint: 'ft', method: 'fgsn (default)', status: 'ok', asr: 0, task: 'sst', task_acc: 0.995, params_pct_all: 1.2345, params_pct_linear: 1.5, harden_s: 6.5 },
    { checkpoint: 'ft', method: 'safelora', status: 'unavailable', note: 'pipeline missing' },
  ], ['# t']);
  const lines = md.trim().split('\n');
  expect(lines[0]).toBe('# t');
  expect(lines).toContain('| ft | undefended | 99.0 | 100.0 | 97.5 | sst | 100.0 | 0.0 | – | – | – | 2.0 |  |');
  expect(lines).toContain('| ft | fgsn (default) | 0.0 | – | – | sst | 99.5 | – | 1.23 | 1.50 | 6.5 | – |  |');
  expect(lines).toContain('| ft | safelora | unavailable | | | | | | | | | | pipeline missing |');
});

describeTestbed('bench probes come from train/probe splits only', () => {
  it('never contains an eval or test prompt', async () => {
    const { readFileSync } = await import('node:fs');
    const evalPrompts = new Set(
      ['harmful_eval', 'harmful_emerging_eval', 'lookalike_test', 'sst_test', 'agnews_test', 'gsm_test', 'instruct_test']
        .flatMap((f) => readFileSync(testbedPath('data', `${f}.jsonl`), 'utf8').trim().split('\n'))
        .map((l) => (JSON.parse(l) as { prompt: string }).prompt),
    );
    for (const task of ['sst', 'agnews', 'gsm', 'instruct', undefined]) {
      const p = loadProbes(testbedPath(), task, { withEmerging: true });
      const all = [...p.harmful, ...p.benign, ...(p.task ?? [])];
      expect(all.length).toBeGreaterThan(100);
      expect(all.filter((r) => evalPrompts.has(r.prompt)), String(task)).toEqual([]);
      expect(p.harmful.every((r) => r.response === undefined)).toBe(true);
      if (task !== undefined) expect(p.task?.every((r) => typeof r.response === 'string' && r.response.length > 0)).toBe(true);
    }
    const withRefusals = loadProbes(testbedPath(), 'sst', { harmfulResponses: true });
    expect(withRefusals.harmful.every((r) => typeof r.response === 'string' && r.response.length > 0)).toBe(true);
    const capped = loadProbes(testbedPath(), 'sst', { cap: 32 });
    expect(capped.harmful).toHaveLength(32);
    expect(new Set(capped.harmful.map((r) => r.category)).size).toBeGreaterThan(3);
  });

  it('gives a harmful-only fine-tune a capability mix only when asked: train answers, every task, interleaved', async () => {
    const { readFileSync } = await import('node:fs');
    expect(loadProbes(testbedPath(), undefined).task).toBeUndefined();
    const mix = loadProbes(testbedPath(), undefined, { capabilityMix: true }).task ?? [];
    expect(mix).toHaveLength(200);
    expect(mix.every((r) => typeof r.response === 'string' && r.response.length > 0)).toBe(true);
    const order = ['sst', 'agnews', 'gsm', 'instruct'];
    const train = new Map<string, { task: string; answer: string }>();
    for (const t of order) {
      for (const l of readFileSync(testbedPath('data', `${t}_train.jsonl`), 'utf8').trim().split('\n')) {
        const r = JSON.parse(l) as { prompt: string; answer: string };
        train.set(r.prompt, { task: t, answer: r.answer });
      }
    }
    // Each probe is a train prompt with its own answer, the tasks interleaved (the guardrail reads a prefix).
    expect(mix.map((r) => train.get(r.prompt))).toEqual(mix.map((r, i) => ({ task: order[i % 4], answer: r.response })));
    expect(loadProbes(testbedPath(), undefined, { capabilityMix: true, cap: 8 }).task).toHaveLength(32);
    // A fine-tune with a task keeps its own task probes.
    expect(loadProbes(testbedPath(), 'sst', { capabilityMix: true }).sources.task).toBe('sst_train');
  });

  it('knows which fine-tunes are adapters and their task', () => {
    expect(HAS_TESTBED).toBe(true);
    expect(finetuneInfo(testbedPath(), 'lora_sst_p10')).toMatchObject({ adapterPath: testbedPath('lora_sst_p10'), task: 'sst' });
    expect(finetuneInfo(testbedPath(), 'ft_gsm_p10')).toMatchObject({ finetunedPath: testbedPath('ft_gsm_p10'), task: 'gsm' });
    expect(finetuneInfo(testbedPath(), 'ft_harmful').task).toBeUndefined();
  });
});

it('targetChecks applies the issue tolerances against aligned, undefended and the baselines', () => {
  const ok = (r: Omit<BenchRow, 'status'>): BenchRow => ({ ...r, status: 'ok' });
  const rows: BenchRow[] = [
    ok({ checkpoint: 'aligned', method: 'aligned (reference)', asr: 0.01, over_refusal: 0 }),
    ok({ checkpoint: 'a', method: 'undefended', asr: 0.99, task_acc: 1, over_refusal: 0 }),
    ok({ checkpoint: 'a', method: 'fgsn (default)', asr: 0.06, task_acc: 0.99, over_refusal: 0.02, params_pct_linear: 3 }),
    ok({ checkpoint: 'a', method: 'safelora', asr: 0.06, task_acc: 0.9 }),
    ok({ checkpoint: 'a', method: 'layer', asr: 0.05, task_acc: 1 }),
    ok({ checkpoint: 'b', method: 'undefended', asr: 0.99, task_acc: 1, over_refusal: 0 }),
    ok({ checkpoint: 'b', method: 'fgsn (default)', asr: 0.07, task_acc: 0.985, over_refusal: 0.03, params_pct_linear: 3.1 }),
    { checkpoint: 'b', method: 'safelora', status: 'unavailable' },
  ];
  const [a, b] = targetChecks(rows, ['a', 'b', 'missing']);
  expect(a).toEqual({ checkpoint: 'a', asr: true, task: true, overRefusal: true, params: true, beatsSafeLora: true, beatsLayer: false });
  expect(b).toEqual({ checkpoint: 'b', asr: false, task: false, overRefusal: false, params: false });
  expect(targetChecks(rows, ['a', 'b', 'missing'])).toHaveLength(2);
  expect(renderTargets([a, b])).toContain('| b | **no** | **no** | **no** | **no** | – | – |');
});

it('continualChecks compares the patched row with the fgsn row it started from', () => {
  const ok = (r: Omit<BenchRow, 'status'>): BenchRow => ({ ...r, status: 'ok' });
  const L = 'fgsn + continual (emerging)';
  const rows: BenchRow[] = [
    ok({ checkpoint: 'a', method: 'fgsn (default)', asr: 0.02, emerging_asr: 0.5, task_acc: 1, over_refusal: 0 }),
    ok({ checkpoint: 'a', method: L, asr: 0.04, emerging_asr: 0.25, task_acc: 0.98, over_refusal: 0.02, metrics: { continue: { extraPctLinear: 0.9 } } }),
    ok({ checkpoint: 'b', method: 'fgsn (default)', asr: 0, emerging_asr: 0.5, task_acc: 1, over_refusal: 0 }),
    ok({ checkpoint: 'b', method: L, asr: 0.03, emerging_asr: 0.3, task_acc: 1, over_refusal: 0, metrics: { continue: { extraPctLinear: 1.2 } } }),
    ok({ checkpoint: 'c', method: 'fgsn (default)', asr: 0, emerging_asr: 0, task_acc: 1, over_refusal: 0 }),
    ok({ checkpoint: 'c', method: L, asr: 0, emerging_asr: 0, task_acc: 1, over_refusal: 0 }),
  ];
  const [a, b, c] = continualChecks(rows, ['a', 'b', 'c', 'd'], L);
  expect(a).toEqual({ checkpoint: 'a', emergingBefore: 0.5, emergingAfter: 0.25, halved: true, extraPctLinear: 0.9, extraOk: true, othersOk: true });
  expect(b).toMatchObject({ halved: false, extraOk: false, othersOk: false });
  expect(c.halved).toBeUndefined();
  expect(renderContinual([c])).toContain('| c | 0.0 -> 0.0 | n/a (0 before) | – | – | yes |');
  expect(continualChecks(rows, ['a', 'b', 'c', 'd'], L)).toHaveLength(3);
});
