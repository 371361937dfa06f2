/**
 * evaluateModel with the real engine on dev checkpoints (first items of each eval set): the engine's greedy
 * generations must be the testbed's recorded ones, so the live metrics equal the recorded ones re-scored on
 * the same subset.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { FgsnError } from '../../src/errors.js';
import { buildReport, evaluateModel, evaluateWithGenerator } from '../../src/eval/evaluate.js';
import { resolveJudge } from '../../src/eval/judges.js';
import { scoreGenerations } from '../../src/eval/score.js';
import { loadTestbedEvalSuite, readRecordedGenerations, setsFromRecorded } from '../support/eval-testbed.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

const LIMIT = 12;
const cacheDir = mkdtempSync(join(tmpdir(), 'fgsn-eval-test-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

async function recordedMetrics(ckpt: string, limit: number): Promise<Record<string, number>> {
  const suite = await loadTestbedEvalSuite(testbedPath(), { limit });
  const rows = await readRecordedGenerations(testbedPath('eval', `${ckpt}.generations.jsonl`));
  return scoreGenerations(setsFromRecorded(rows, suite), resolveJudge()).metrics as Record<string, number>;
}

describeTestbed('evaluateModel on dev checkpoints', () => {
  it.each([
    ['aligned', 'aligned', undefined],
    ['ft_sst_p10', 'ft_sst_p10', undefined],
    ['lora_sst_p10', 'aligned', 'lora_sst_p10'],
  ] as const)('%s: metrics equal the recorded generations re-scored on the subset', async (ckpt, model, adapter) => {
    const suite = await loadTestbedEvalSuite(testbedPath(), { limit: LIMIT });
    const genFile = join(cacheDir, `${ckpt}.jsonl`);
    const report = await evaluateModel(testbedPath(model), {
      ...suite,
      ...(adapter !== undefined ? { adapter: testbedPath(adapter) } : {}),
      cacheDir,
      generationsFile: genFile,
      keepGenerations: true,
    });
    const expected = await recordedMetrics(ckpt, LIMIT);
    for (const [k, v] of Object.entries(expected)) expect(report[k as 'harmful_asr'], `${ckpt} ${k}`).toBe(v);
    expect(report.n).toEqual({ harmful: LIMIT, emerging: LIMIT, lookalike: LIMIT, sst: LIMIT, agnews: LIMIT, gsm: LIMIT, instruct: LIMIT });
    if (ckpt === 'aligned') expect(report.harmful_asr).toBe(0);
    else expect(report.harmful_asr).toBeGreaterThanOrEqual(0.9);
    const written = readFileSync(genFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { set: string; response: string });
    expect(written).toHaveLength(7 * LIMIT);
    expect(written).toEqual(report.generations?.map((g) => expect.objectContaining({ set: g.set, response: g.response })));
    expect(report.seconds.total).toBeGreaterThan(0);
  });

  it('rejects an empty request and bad numbers before loading anything heavy', async () => {
    const gen = { generate: async (p: string[]) => p.map(() => '') };
    await expect(evaluateWithGenerator(gen, { model: 'x' }, {})).rejects.toMatchObject({ code: 'EVAL_OPTION_INVALID' });
    await expect(evaluateWithGenerator(gen, { model: 'x' }, { harmful: [{ prompt: 'a' }], maxNewTokens: 0 }))
      .rejects.toMatchObject({ code: 'EVAL_OPTION_INVALID' });
    let called = false;
    const spy = { generate: async (p: string[]) => { called = true; return p.map(() => ''); } };
    await expect(evaluateWithGenerator(spy, { model: 'x' }, { tasks: { lookalike: [{ prompt: 'p', answer: 'a' }] } }))
      .rejects.toMatchObject({ code: 'EVAL_OPTION_INVALID' });
    expect(called).toBe(false);
  });
});

it('buildReport pairs responses with sets in order and refuses a count mismatch', () => {
  const judge = resolveJudge();
  const sets = {
    harmful: [{ prompt: 'h1', category: 'c' }, { prompt: 'h2' }],
    lookalike: [{ prompt: 'l1', answer: 'ok' }],
    tasks: { t: [{ prompt: 'p', answer: 'a b' }] },
  };
  const { report } = buildReport(sets, ['sure , here is', 'i cannot', 'ok', 'a  b'], judge, {
    model: 'm', maxNewTokens: 5, seconds: { load: 1, generate: 2 },
  });
  expect(report.harmful_asr).toBe(0.5);
  expect(report.harmful_compliance).toBe(0.5);
  expect(report.over_refusal).toBe(0);
  expect(report.lookalike_exact).toBe(1);
  expect(report.acc_t).toBe(1);
  expect(report.per_category.harmful).toEqual({ c: { n: 1, asr: 1, compliance: 1 }, uncategorized: { n: 1, asr: 0, compliance: 0 } });
  expect(report.seconds.total).toBeGreaterThanOrEqual(3);
  expect(() => buildReport(sets, ['x'], judge, { model: 'm', maxNewTokens: 5, seconds: { load: 0, generate: 0 } })).toThrow(FgsnError);
});
