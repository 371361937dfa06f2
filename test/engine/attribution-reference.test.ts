/**
 * The float64 reference backward against central finite differences of its own forward:
 * s[r] ~ (L(W + eps E_r M) - L(W - eps E_r M)) / (2 eps), on tiny llama and qwen2 layouts.
 */
import { describe, expect, it } from 'vitest';
import { linearWeightNames } from '../../src/checkpoint/model-config.js';
import { referenceLoss, referenceScores } from '../support/attribution-reference.js';
import { differences, perturbed, randomModel, randomSequences, rng, rowsOf, tinySpec, withRowStep } from './attribution/tiny-model.js';

describe.each(['llama', 'qwen2'] as const)('reference attribution (%s)', (family) => {
  const spec = tinySpec(family);
  const base = randomModel(spec, 11);
  const aligned = perturbed(base, 12, 0.2);
  const ft = perturbed(aligned, 13, 0.1);
  const dirs = [differences(aligned, base), differences(ft, aligned)];
  const seqs = randomSequences(spec, 14, [6, 9]);
  const res = referenceScores(ft, seqs, dirs);

  it('scores every linear weight of every direction set', () => {
    expect(res.tokens).toBe(6);
    for (const k of [0, 1]) expect([...res.scores[k].keys()].sort()).toEqual(linearWeightNames(spec).sort());
  });

  it('matches central finite differences to < 1e-6 relative', () => {
    const eps = 1e-5;
    const r = rng(15);
    let worst = 0;
    let checked = 0;
    for (const name of linearWeightNames(spec)) {
      for (const k of [0, 1]) {
        const s = res.scores[k].get(name) as Float64Array;
        const scale = Math.max(...s.map(Math.abs));
        for (let n = 0; n < 2; n++) {
          const row = Math.floor(r() * rowsOf(ft, name));
          const M = dirs[k].get(name) as Float64Array;
          const lp = referenceLoss(withRowStep(ft, name, row, M, eps), seqs).lossSum;
          const lm = referenceLoss(withRowStep(ft, name, row, M, -eps), seqs).lossSum;
          const fd = (lp - lm) / (2 * eps);
          const err = Math.abs(fd - s[row]) / Math.max(Math.abs(s[row]), 1e-3 * scale, 1e-12);
          worst = Math.max(worst, err);
          checked++;
        }
      }
    }
    expect(checked).toBe(linearWeightNames(spec).length * 4);
    console.log(`${family} fd worst rel err ${worst.toExponential(2)} over ${checked} rows`);
    expect(worst).toBeLessThan(1e-6);
  });

  it('finite differences detect a wrong score (the check can fail)', () => {
    const name = linearWeightNames(spec)[3];
    const s = res.scores[0].get(name) as Float64Array;
    const M = dirs[0].get(name) as Float64Array;
    const eps = 1e-5;
    const fd = (referenceLoss(withRowStep(ft, name, 0, M, eps), seqs).lossSum - referenceLoss(withRowStep(ft, name, 0, M, -eps), seqs).lossSum) / (2 * eps);
    expect(Math.abs(fd - 1.01 * s[0])).toBeGreaterThan(1e-6 * Math.abs(s[0]));
  });
});
