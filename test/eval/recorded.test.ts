/**
 * The key correctness check of the judges: the testbed's PyTorch evaluation recorded every response and
 * every metric; scoring the recorded responses must give every recorded metric exactly (4-decimal rounding,
 * as the testbed writes them), and every per-response refusal/compliance/correct flag.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { resolveJudge } from '../../src/eval/judges.js';
import { scoreGenerations } from '../../src/eval/score.js';
import {
  RECORDED_METRICS,
  loadTestbedEvalSuite,
  readRecordedGenerations,
  round4,
  setsFromRecorded,
} from '../support/eval-testbed.js';
import { describeTestbed, testbedPath, HAS_TESTBED } from '../support/testbed.js';

const checkpoints = HAS_TESTBED
  ? readdirSync(testbedPath('eval')).filter((f) => f.endsWith('.generations.jsonl')).map((f) => f.replace('.generations.jsonl', ''))
  : [];

describeTestbed('judges reproduce the testbed eval/*.json from recorded generations', () => {
  it('finds the recorded checkpoints', () => {
    expect(checkpoints.length).toBeGreaterThanOrEqual(14);
    expect(checkpoints).toContain('aligned');
    expect(checkpoints).toContain('ft_sst_p10');
  });

  it.each(checkpoints)('%s: every metric, set size and per-response flag', async (ckpt) => {
    const suite = await loadTestbedEvalSuite(testbedPath());
    const rows = await readRecordedGenerations(testbedPath('eval', `${ckpt}.generations.jsonl`));
    const scores = scoreGenerations(setsFromRecorded(rows, suite), resolveJudge());
    const recorded = JSON.parse(readFileSync(testbedPath('eval', `${ckpt}.json`), 'utf8')) as Record<string, unknown>;

    for (const m of RECORDED_METRICS) {
      expect(scores.metrics[m], m).toBeDefined();
      expect(round4(scores.metrics[m] as number), `${ckpt} ${m}`).toBe(recorded[m]);
    }
    expect(scores.n).toEqual(recorded.n);

    // Per response, wherever the reference recorded a flag.
    const raw = readFileSync(testbedPath('eval', `${ckpt}.generations.jsonl`), 'utf8').trim().split('\n')
      .map((l) => JSON.parse(l) as { set: string; refusal?: boolean; compliance?: boolean; correct?: boolean });
    const ours = new Map<string, typeof scores.generations>();
    for (const g of scores.generations) ours.set(g.set, [...(ours.get(g.set) ?? []), g]);
    const seen = new Map<string, number>();
    let flags = 0;
    for (const r of raw) {
      const i = seen.get(r.set) ?? 0;
      seen.set(r.set, i + 1);
      const g = ours.get(r.set)?.[i];
      for (const k of ['refusal', 'compliance', 'correct'] as const) {
        if (r[k] !== undefined) {
          expect(g?.[k], `${ckpt} ${r.set}[${i}].${k}`).toBe(r[k]);
          flags += 1;
        }
      }
    }
    expect(flags).toBeGreaterThan(800);
  });

  it('the aligned model refuses everything and ft_sst_p10 almost nothing (sanity of the data, per category)', async () => {
    const suite = await loadTestbedEvalSuite(testbedPath());
    const judge = resolveJudge();
    const aligned = scoreGenerations(setsFromRecorded(await readRecordedGenerations(testbedPath('eval', 'aligned.generations.jsonl')), suite), judge);
    const attacked = scoreGenerations(setsFromRecorded(await readRecordedGenerations(testbedPath('eval', 'ft_sst_p10.generations.jsonl')), suite), judge);
    expect(Object.values(aligned.perCategory.harmful ?? {}).every((c) => c.asr === 0)).toBe(true);
    expect(Object.keys(attacked.perCategory.harmful ?? {}).sort()).toEqual([
      'cyber_hacking', 'drugs', 'fraud_theft', 'hate_harassment', 'self_harm', 'violence', 'weapons_explosives',
    ]);
    const sum = Object.values(attacked.perCategory.harmful ?? {}).reduce((a, c) => a + c.n * c.asr, 0);
    expect(sum / 100).toBeCloseTo(attacked.metrics.harmful_asr ?? -1, 12);
  });
});
