/**
 * The attribution graph's backward for every family (fused projections, q/k norm, Gemma's offset and sandwich
 * norms, tanh-GELU, soft caps, sliding windows, local rope, rope scalings) against central finite differences
 * of the float64 TS reference forward's loss: score[r] = <dL/dW[r], M[r]> ~ (L(W + eps e_r M) - L(W - eps e_r M)) / 2 eps
 * on a random row of every scored weight, sequences of different lengths in one left-padded batch.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linearWeightNames, linearWeightShape } from '../../src/checkpoint/model-config.js';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { attributionBatch, type ScoredSequence } from '../../src/engine/attribution/batch.js';
import { AttributionSession } from '../../src/engine/attribution/session.js';
import { keptActivationBytes, scoreSequences } from '../../src/engine/attribution/index.js';
import { ort } from '../../src/engine/session/session.js';
import { writeSyntheticFromConfig } from '../support/synthetic/synthetic-model.js';
import { mulberry32 } from '../../src/util/prng.js';
import { FAMILY_CONFIGS, LENGTH_DEPENDENT_ROPE } from '../support/synthetic/family-configs.js';
import { tempDir } from './helpers.js';
import { referenceForward, type Weights } from './reference-forward.js';

/** Sum over response positions of -log p(ids[t + 1] | ids[<= t]) (attributionBatch's loss), float64. */
function loss(spec: ModelCheckpoint['spec'], w: Weights, seqs: ScoredSequence[]): number {
  let sum = 0;
  for (const s of seqs) {
    const { logits } = referenceForward(spec, w, s.ids);
    const V = spec.vocabSize;
    for (let t = 0; t + 1 < s.ids.length; t++) {
      if (t + 1 < s.promptLength) continue;
      const row = logits.subarray(t * V, (t + 1) * V);
      const max = Math.max(...row);
      let z = 0;
      for (const x of row) z += Math.exp(x - max);
      sum -= row[s.ids[t + 1]] - max - Math.log(z);
    }
  }
  return sum;
}

/**
 * Seeded sequences (lengths past the tiny sliding windows; one call-length class for length-dependent rope, see
 * families.test.ts) and one random direction per scored weight; `r` goes on drawing from the same stream.
 */
function probe(spec: ModelCheckpoint['spec'], family: string, seed: number): { r: () => number; seqs: ScoredSequence[]; names: string[]; dirs: Map<string, Float32Array> } {
  const r = mulberry32(seed);
  const lengths = LENGTH_DEPENDENT_ROPE.has(family) ? [9, 12] : [9, 12, 5];
  const seqs: ScoredSequence[] = lengths.map((n) => ({ ids: Array.from({ length: n }, (_, i) => (i === 0 ? 2 : 7 + Math.floor(r() * 50))), promptLength: n - 3 }));
  const names = linearWeightNames(spec);
  const dirs = new Map(names.map((n) => {
    const [rows, cols] = linearWeightShape(spec, n) as [number, number];
    return [n, Float32Array.from({ length: rows * cols }, () => r() - 0.5)] as const;
  }));
  return { r, seqs, names, dirs };
}

for (const [name, config] of Object.entries(FAMILY_CONFIGS)) {
  describe(`attribution graph on a tiny ${name}`, () => {
    const tmp = tempDir(`fgsn-fattr-${name}-`);
    const dir = join(tmp.path, 'model');
    let ckpt: ModelCheckpoint;
    let weights: Map<string, Float32Array>;
    beforeAll(async () => {
      await writeSyntheticFromConfig(dir, config, { dtype: 'F32', seed: 5, std: 0.15 });
      ckpt = await ModelCheckpoint.open(dir);
      weights = new Map(await Promise.all(ckpt.names().map(async (n) => [n, await ckpt.readF32(n)] as const)));
    });
    afterAll(async () => {
      await ckpt.close();
      tmp.remove();
    });

    it('scores match central finite differences of the reference loss (< 1e-3 relative)', async () => {
      const spec = ckpt.spec;
      const { r, seqs, names, dirs } = probe(spec, name, 21);
      const session = await AttributionSession.open(ckpt, null, { directionSets: 1, layerFrom: 0, layerTo: ckpt.spec.numLayers, cacheRoot: join(tmp.path, 'cache'), threads: 1 });
      let got;
      try {
        expect(session.weights).toEqual(names);
        const tensors = new Map([...dirs].map(([n, m]) => [n, new ort.Tensor('float32', m, linearWeightShape(spec, n) as [number, number])]));
        got = await session.run(attributionBatch(seqs, 0), [tensors]);
      } finally {
        await session.release();
      }
      const base: Weights = (n) => weights.get(n) as Float32Array;
      expect(got.lossSum).toBeCloseTo(loss(spec, base, seqs), 3);
      const eps = 1e-4;
      let worst = 0;
      for (const n of names) {
        const s = got.scores[0].get(n) as Float32Array;
        const scale = Math.max(...s.map(Math.abs));
        const [rows, cols] = linearWeightShape(spec, n) as [number, number];
        // One random row per weight (two forwards each): every scored matrix is checked.
        {
          const row = Math.floor(r() * rows);
          const step = (sign: number): Weights => {
            const moved = Float64Array.from(weights.get(n) as Float32Array);
            const m = dirs.get(n) as Float32Array;
            for (let j = 0; j < cols; j++) moved[row * cols + j] += sign * eps * m[row * cols + j];
            return (x) => (x === n ? moved : (weights.get(x) as Float32Array));
          };
          const fd = (loss(spec, step(1), seqs) - loss(spec, step(-1), seqs)) / (2 * eps);
          worst = Math.max(worst, Math.abs(s[row] - fd) / Math.max(Math.abs(fd), 1e-3 * scale, 1e-9));
        }
      }
      console.info(`${name}: attribution graph vs finite differences, worst rel err ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(1e-3);
    });

    it('in layer chunks, keeping the forward sweep\'s activations (all, the top chunk, none) gives the whole graph\'s scores', async () => {
      // Four layers in chunks of two: a kept chunk's graph carries one layer's output into the next, and (Gemma)
      // sliding and global layers, local and global rope, side by side.
      const deep = join(tmp.path, 'deep');
      await writeSyntheticFromConfig(deep, { ...config, num_hidden_layers: 4 }, { dtype: 'F32', seed: 6, std: 0.15 });
      const ck = await ModelCheckpoint.open(deep);
      try {
        const spec = ck.spec;
        const { seqs, names, dirs } = probe(spec, name, 22);
        const whole = await AttributionSession.open(ck, null, { directionSets: 1, layerFrom: 0, layerTo: spec.numLayers, cacheRoot: join(tmp.path, 'cache'), threads: 1 });
        let ref;
        try {
          ref = await whole.run(attributionBatch(seqs, 0), [new Map([...dirs].map(([n, m]) => [n, new ort.Tensor('float32', m, linearWeightShape(spec, n) as [number, number])]))]);
        } finally {
          await whole.release();
        }
        const src = [{ name: 'm', rows: async (wn: string, r0: number, r1: number): Promise<Float32Array> => {
          const cols = (linearWeightShape(spec, wn) as [number, number])[1];
          return (dirs.get(wn) as Float32Array).slice(r0 * cols, r1 * cols);
        } }];
        const top = keptActivationBytes(spec, [attributionBatch(seqs, 0)], 2, 4);
        expect(top).toBeGreaterThan(0);
        for (const [keep, chunksKept] of [[0, 0], [top, 1], [Infinity, 2]] as const) {
          const res = await scoreSequences(ck, null, seqs, {
            directions: src, reduction: 'sum', layersPerPass: 2, batchSize: seqs.length, keepActivationBytes: keep, cacheRoot: join(tmp.path, 'cache'), threads: 1,
          });
          expect(res.layerChunks).toEqual([[0, 2], [2, 4]]);
          expect(res.keptChunks, `keep ${keep}`).toBe(chunksKept);
          expect(Math.abs(res.loss - ref.lossSum) / Math.abs(ref.lossSum)).toBeLessThan(1e-5);
          let rel = 0;
          for (const n of names) {
            const a = res.scores.get('m')?.get(n) as Float32Array;
            const b = ref.scores[0].get(n) as Float32Array;
            const scale = Math.max(...b.map(Math.abs), 1e-12);
            for (let i = 0; i < b.length; i++) rel = Math.max(rel, Math.abs(a[i] - b[i]) / scale);
          }
          expect(rel, `keep ${keep}`).toBeLessThan(1e-4);
        }
        await expect(scoreSequences(ck, null, seqs, { directions: src, layersPerPass: 2, keepActivationBytes: Number.NaN, cacheRoot: join(tmp.path, 'cache') }))
          .rejects.toMatchObject({ code: 'DEFENSE_OPTION_INVALID' });
      } finally {
        await ck.close();
      }
    });
  });
}
