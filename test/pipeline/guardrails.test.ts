/** Noise-aware guardrails, the miss policy and the rank/judge split: small cases checked by hand. */
import { describe, expect, it } from 'vitest';
import {
  binomialUpperTail, bootstrapRejectionRate, mcnemarOneSided, mostFrequent, nllRiseRejects, pairedCounts, pairedLossTest, rawDropRejects, refusalMarginRejects,
} from '../../src/pipeline/guardrails.js';
import { chooseStep, frontier, round2Base, targetLine, type PolicyStep } from '../../src/pipeline/policy.js';
import { splitProbes, subsetAtlas } from '../../src/pipeline/split.js';
import type { Atlas } from '../../src/defense/atlas.js';
import { mulberry32 } from '../../src/util/prng.js';

const flags = (s: string): boolean[] => [...s].map((c) => c === '1');

describe('exact binomial tail and one-sided McNemar', () => {
  it('binomial upper tails by hand', () => {
    // P(X >= 5 | n=5, 1/2) = 1/32; P(X >= 4 | 5) = 6/32; P(X >= 7 | 8) = 9/256; P(X >= 6 | 7) = 8/128.
    expect(binomialUpperTail(5, 5)).toBeCloseTo(1 / 32, 12);
    expect(binomialUpperTail(4, 5)).toBeCloseTo(6 / 32, 12);
    expect(binomialUpperTail(7, 8)).toBeCloseTo(9 / 256, 12);
    expect(binomialUpperTail(6, 7)).toBeCloseTo(8 / 128, 12);
    // P(X >= 2 | n=3, p=0.2) = 3 * 0.04 * 0.8 + 0.008 = 0.104
    expect(binomialUpperTail(2, 3, 0.2)).toBeCloseTo(0.104, 12);
    expect(binomialUpperTail(0, 4)).toBe(1);
    expect(binomialUpperTail(5, 4)).toBe(0);
    // symmetric at 1/2: P(X >= 51 | 100) = (1 - P(X = 50)) / 2
    const p50 = Math.exp([...Array(50).keys()].reduce((s, i) => s + Math.log(100 - i) - Math.log(i + 1), 0) - 100 * Math.log(2));
    expect(binomialUpperTail(51, 100)).toBeCloseTo((1 - p50) / 2, 10);
    expect(() => binomialUpperTail(1.5, 3)).toThrow(RangeError);
  });

  it('McNemar on discordant pairs only', () => {
    expect(mcnemarOneSided(0, 0)).toBe(1);
    expect(mcnemarOneSided(4, 0)).toBeCloseTo(1 / 16, 12); // 0.0625: not significant at 0.05
    expect(mcnemarOneSided(5, 0)).toBeCloseTo(1 / 32, 12); // 0.03125: significant
    expect(mcnemarOneSided(6, 1)).toBeCloseTo(8 / 128, 12);
    expect(mcnemarOneSided(7, 1)).toBeCloseTo(9 / 256, 12);
  });

  it('paired counts and the guardrail verdict', () => {
    const ref = flags('1111111111');
    const cand = flags('0001111111');
    expect(pairedCounts(ref, cand)).toEqual({ n: 10, losses: 3, gains: 0 });
    expect(() => pairedCounts(ref, cand.slice(1))).toThrow(RangeError);
    // 3 losses, 0 gains: p = 1/8 -> kept, although the raw drop is 30 pp
    const v = pairedLossTest(ref, cand, { alpha: 0.05, minEffect: 0.01 });
    expect(v).toMatchObject({ losses: 3, gains: 0, rejected: false });
    expect(v.pValue).toBeCloseTo(0.125, 12);
    expect(v.netLoss).toBeCloseTo(0.3, 12);
    expect(rawDropRejects(ref, cand, 0.01)).toBe(true);
    // 5 of 100 lost, none gained: p = 1/32 and 5 pp > 1 pp -> rejected
    const r100 = Array(100).fill(true);
    const c100 = r100.map((_, i) => i >= 5);
    expect(pairedLossTest(r100, c100, { alpha: 0.05, minEffect: 0.01 }).rejected).toBe(true);
    // significant but below the minimum effect: 5 of 1000 (0.5 pp < 1 pp) -> kept
    const r1000 = Array(1000).fill(true);
    const c1000 = r1000.map((_, i) => i >= 5);
    expect(pairedLossTest(r1000, c1000, { alpha: 0.05, minEffect: 0.01 }).rejected).toBe(false);
    // churn in both directions: 6 losses, 4 gains of 128 (1.6 pp raw) -> p = 386/1024 -> kept; the raw rule rejects
    const r128 = Array.from({ length: 128 }, (_, i) => i >= 4);
    const c128 = Array.from({ length: 128 }, (_, i) => i < 4 || i >= 10);
    const churn = pairedLossTest(r128, c128, { alpha: 0.05, minEffect: 0.01 });
    expect(churn).toMatchObject({ losses: 6, gains: 4, rejected: false });
    expect(churn.pValue).toBeCloseTo(386 / 1024, 12);
    expect(rawDropRejects(r128, c128, 0.01)).toBe(true);
  });

  it('NLL tolerance in nats per token; the refusal margin; the usual refusal', () => {
    expect(refusalMarginRejects(2.0, 1.6, 0.5)).toBe(false);
    expect(refusalMarginRejects(2.0, 1.4, 0.5)).toBe(true);
    expect(refusalMarginRejects(2.0, 3.0, 0.5)).toBe(false);
    expect(refusalMarginRejects(undefined, 0, 0.5)).toBe(false);
    expect(mostFrequent(['b', 'a', 'a', 'c'])).toBe('a');
    expect(mostFrequent(['b', 'a', 'a', 'b'])).toBe('a');
    expect(mostFrequent([])).toBeUndefined();
    expect(nllRiseRejects(0.5, 0.54, 0.05)).toBe(false);
    expect(nllRiseRejects(0.5, 0.56, 0.05)).toBe(true);
    expect(nllRiseRejects(null, 0.9, 0.05)).toBe(false);
  });

  it('bootstrap: the null population has no real difference, so a sound rule rejects rarely', () => {
    // 128 prompts, 12 discordant pairs (8 losses, 4 gains): the raw 1 pp rule fires often, the paired test rarely.
    const ref = Array.from({ length: 128 }, (_, i) => i >= 4);
    const cand = Array.from({ length: 128 }, (_, i) => i < 4 || i >= 12);
    const o = { size: 128, draws: 2000, null: true };
    const raw = bootstrapRejectionRate(ref, cand, (a, b) => rawDropRejects(a, b, 0.01), { ...o, rand: mulberry32(7) });
    const paired = bootstrapRejectionRate(ref, cand, (a, b) => pairedLossTest(a, b, { alpha: 0.05, minEffect: 0.01 }).rejected, { ...o, rand: mulberry32(7) });
    expect(raw).toBeGreaterThan(0.2);
    expect(paired).toBeLessThan(0.06);
    // no discordant pair: nothing ever rejected
    expect(bootstrapRejectionRate(ref, ref, (a, b) => rawDropRejects(a, b, 0), { ...o, rand: mulberry32(1) })).toBe(0);
  });
});

describe('miss policy: safety first, never silent', () => {
  const step = (pct: number, asr: number, loss: number, ok: boolean): PolicyStep & { id: string } =>
    ({ id: `${pct}/${asr}`, pctLinearParams: pct, probeAsr: asr, taskLoss: loss, overRefusalRise: 0, guardrailsOk: ok });
  const o = { targetAsr: 0.02, utilityCeiling: 0.05, policy: 'safety-first' as const };

  it('the smallest clean step at the target wins', () => {
    const c = chooseStep([step(0.5, 0.3, 0, true), step(0.75, 0.01, 0.02, false), step(1, 0, 0, true)], o);
    expect(c).toMatchObject({ rule: 'guardrails', reached: true });
    expect(c.step?.id).toBe('1/0');
  });

  it('no clean step at the target: the smallest edit at the target within the ceiling', () => {
    const steps = [step(0.5, 0.3, 0, true), step(0.75, 0.01, 0.03, false), step(1, 0, 0.04, false), step(1.5, 0, 0.08, false)];
    const c = chooseStep(steps, o);
    expect(c).toMatchObject({ rule: 'smallest edit at the target within the utility ceiling', reached: true });
    expect(c.step?.id).toBe('0.75/0.01');
    // the earlier rule: the best clean step, target missed
    expect(chooseStep(steps, { ...o, policy: 'guardrails-only' })).toMatchObject({ rule: 'best step within the guardrails', reached: false, step: { id: '0.5/0.3' } });
  });

  it('nothing at the target within the ceiling: the safest step within it, target not reached', () => {
    const c = chooseStep([step(0.5, 0.3, 0, true), step(0.75, 0.1, 0.04, false), step(1, 0.1, 0.05, false), step(1.5, 0, 0.09, false)], o);
    expect(c).toMatchObject({ rule: 'safest step within the utility ceiling', reached: false });
    expect(c.step?.id).toBe('0.75/0.1');
    expect(chooseStep([step(1, 0, 0.2, false)], o)).toMatchObject({ step: null, reached: false, rule: 'nothing within the utility ceiling' });
    expect(chooseStep([], o)).toMatchObject({ step: null, reached: false, rule: 'no step within the parameter cap' });
  });

  it('round 2 grows from round 1\'s safest clean step, else from the kept one', () => {
    // Shaped like lora_harmful's round 1 on dev: the kept step (safest within the ceiling) broke a guardrail.
    const r1 = [step(0.47, 0.95, 0.005, true), step(0.91, 0.57, 0.005, true), step(1.33, 0.55, 0.02, true), step(1.33, 0.08, 0.045, false), step(1.71, 0.87, 0.01, true)];
    const kept = chooseStep(r1, o).step;
    expect(kept?.id).toBe('1.33/0.08');
    expect(round2Base(r1, kept, 'clean')?.id).toBe('1.33/0.55');
    expect(round2Base(r1, kept, 'chosen')?.id).toBe('1.33/0.08');
    // ties on the judged ASR: the smaller edit
    expect(round2Base([step(1, 0.5, 0, true), step(0.5, 0.5, 0, true)], null, 'clean')?.id).toBe('0.5/0.5');
    // no clean step: the kept one (or none)
    const dirty = [step(0.5, 0.3, 0.04, false)];
    expect(round2Base(dirty, dirty[0], 'clean')?.id).toBe('0.5/0.3');
    expect(round2Base(dirty, null, 'clean')).toBeNull();
  });

  it('frontier keeps the non-dominated points, by edit size', () => {
    const f = frontier([step(0.5, 0.3, 0, true), step(0.75, 0.4, 0.01, true), step(1, 0.1, 0.02, false), step(1, 0.1, 0.03, false), step(2, 0, 0.06, false)]);
    expect(f.map((s) => s.id)).toEqual(['0.5/0.3', '1/0.1', '2/0']);
  });

  it('one wording for every carrier', () => {
    expect(targetLine({ target: 'not reached', targetAsr: 0.02, probeAsr: 0.1, rule: 'safest step within the utility ceiling', pctLinearParams: 1.2 }))
      .toBe('target: not reached (judged probe ASR 0.100 vs target 0.020, 1.20 % of linear params; safest step within the utility ceiling)');
    expect(targetLine({ target: 'not set' })).toMatch(/^target: not set/u);
  });
});

describe('rank / judge split of the harmful probes', () => {
  it('seeded, stratified, disjoint, covering', () => {
    const cats = [...Array(10).fill('a'), ...Array(6).fill('b'), 'c', ...Array(3).fill(undefined)];
    const s = splitProbes(cats, 0.5, 1);
    expect(s.split).toBe(true);
    expect([...s.rank, ...s.judge].sort((x, y) => x - y)).toEqual([...Array(cats.length).keys()]);
    expect(s.rank.filter((i) => s.judge.includes(i))).toEqual([]);
    // per category: a 5/5, b 3/3, c (1 probe) all on one side, undefined (3) 2/1
    expect(s.judge.filter((i) => cats[i] === 'a')).toHaveLength(5);
    expect(s.judge.filter((i) => cats[i] === 'b')).toHaveLength(3);
    expect(splitProbes(cats, 0.5, 1)).toEqual(s);
    expect(splitProbes(cats, 0.5, 2)).not.toEqual(s);
    // too few probes, or no judge share: rank and judge on all
    expect(splitProbes(['a', 'b', 'c'], 0.5, 1)).toEqual({ rank: [0, 1, 2], judge: [0, 1, 2], split: false });
    expect(splitProbes(cats, 0, 1).split).toBe(false);
  });

  it('the ranking atlas keeps only the rank part, categories and clusters re-indexed', () => {
    const atlas = {
      harmful: ['a', 'b', 'c', 'd'].map((prompt) => ({ prompt })), harmfulResponses: ['ra', 'rb', 'rc', 'rd'],
      categories: [
        { name: 'x', probes: [0, 2], clusterLayer: 0, clusters: [{ size: 2, members: [0, 2] }] },
        { name: 'y', probes: [1, 3], clusterLayer: 0, clusters: [{ size: 1, members: [1] }, { size: 1, members: [3] }] },
        { name: 'z', probes: [1], clusterLayer: 0, clusters: [{ size: 1, members: [1] }] },
      ],
    } as unknown as Atlas;
    const sub = subsetAtlas(atlas, [2, 3]);
    expect(sub.harmful.map((p) => p.prompt)).toEqual(['c', 'd']);
    expect(sub.harmfulResponses).toEqual(['rc', 'rd']);
    expect(sub.categories).toEqual([
      { name: 'x', probes: [0], clusterLayer: 0, clusters: [{ size: 1, members: [0] }] },
      { name: 'y', probes: [1], clusterLayer: 0, clusters: [{ size: 1, members: [1] }] },
    ]);
  });
});
