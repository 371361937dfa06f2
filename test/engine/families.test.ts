/**
 * Every supported family in its public models' configuration (test/support/synthetic/family-configs.ts), tiny and with
 * random weights, run by the engine and by the TS reference forward (reference-forward.ts): every captured
 * activation (embed, hidden, mlp_act, final_norm, logits) within allclose 1e-4, and greedy generation with the
 * KV cache equal to the reference's full-recompute greedy decoding.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { loadEngine } from '../../src/engine/index.js';
import { writeSyntheticFromConfig } from '../support/synthetic/synthetic-model.js';
import { FAMILY_CONFIGS, LENGTH_DEPENDENT_ROPE } from '../support/synthetic/family-configs.js';
import { expectCloseToReference, tempDir } from './helpers.js';
import { referenceForward, referenceGreedy, type Weights } from './reference-forward.js';

// 6, 11, 4 and 21 tokens: past the tiny sliding windows (6-12) and longrope's original context (16).
const PROMPTS = [
  [2, 4, 11, 12, 13, 5],
  [2, 4, 20, 21, 22, 23, 24, 25, 26, 27, 5],
  [2, 4, 30, 5],
  [2, 4, ...Array.from({ length: 18 }, (_, i) => 31 + i), 5],
];

for (const [name, config] of Object.entries(FAMILY_CONFIGS)) {
  describe(`tiny ${name} vs the TS reference forward`, () => {
    const tmp = tempDir(`fgsn-fam-${name}-`);
    const dir = join(tmp.path, 'model');
    let weights: Map<string, Float32Array>;
    let ckpt: ModelCheckpoint;

    beforeAll(async () => {
      await writeSyntheticFromConfig(dir, config, { dtype: 'F32', seed: 11, std: 0.08 });
      ckpt = await ModelCheckpoint.open(dir);
      weights = new Map(await Promise.all(ckpt.names().map(async (n) => [n, await ckpt.readF32(n)] as const)));
    });
    afterAll(async () => {
      await ckpt.close();
      tmp.remove();
    });
    const w: Weights = (n) => {
      const v = weights.get(n);
      if (v === undefined) throw new Error(`no weight ${n}`);
      return v;
    };

    it('every activation matches the reference (padded batch; one call per prompt where rope follows the length)', async () => {
      const engine = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache') });
      try {
        const what = { embed: 'all', hidden: 'all', mlpAct: 'all', finalNorm: 'all', logits: 'all' } as const;
        const groups = LENGTH_DEPENDENT_ROPE.has(name) ? PROMPTS.map((p) => [p]) : [PROMPTS];
        for (const group of groups) {
          const cap = await engine.capture(group, what, { batchSize: group.length });
          group.forEach((ids, j) => {
            expectCloseToReference(cap.sequences[j], referenceForward(ckpt.spec, w, ids), ckpt.spec.numLayers, 1e-4, `${name} prompt ${PROMPTS.indexOf(ids)}`);
          });
        }
      } finally {
        await engine.close();
      }
    });

    it('batched KV-cache greedy generation matches reference greedy decoding', async () => {
      const engine = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache') });
      try {
        // Longrope: keys cached before the switch to long factors keep their rotation (as in transformers), which a
        // full recompute would not: generate within the original context there.
        const prompts = LENGTH_DEPENDENT_ROPE.has(name) ? [PROMPTS[0], PROMPTS[2]] : PROMPTS.slice(0, 3);
        const gens = await engine.generate(prompts, { maxNewTokens: 8, batchSize: prompts.length });
        const stop = new Set(engine.eosTokenIds);
        prompts.forEach((ids, j) => {
          expect(gens[j].ids, `${name} prompt ${j}`).toEqual(referenceGreedy(ckpt.spec, w, ids, 8, stop));
        });
        expect(Math.max(...gens.map((g) => g.ids.length))).toBeGreaterThan(3);
      } finally {
        await engine.close();
      }
    });
  });
}
