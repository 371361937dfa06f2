/**
 * A tiny generated qwen2-layout model (q/k/v biases, tied embeddings, GQA 4:2, rope_theta 1e6) with random
 * weights, run by the engine and by the pure-TS reference forward (reference-forward.ts): every activation
 * in a padded batch, and greedy generation with the KV cache. Also in bf16, where both sides see the same
 * rounded weights (the engine upcasts through a Cast in the graph, the reference through the checkpoint reader).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { loadEngine } from '../../src/engine/index.js';
import { writeSyntheticModel, type SyntheticModelOptions } from '../support/synthetic/synthetic-model.js';
import { expectCloseToReference, tempDir } from './helpers.js';
import { referenceForward, referenceGreedy, type Weights } from './reference-forward.js';

const TINY: Omit<SyntheticModelOptions, 'dtype'> = {
  family: 'qwen2', vocabSize: 60, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
  tieWordEmbeddings: true, seed: 7, std: 0.08,
};

const PROMPTS = [
  [2, 4, 11, 12, 13, 5],
  [2, 4, 20, 21, 22, 23, 24, 25, 26, 27, 5],
  [2, 4, 30, 5],
];

for (const dtype of ['F32', 'BF16'] as const) {
  describe(`tiny qwen2 (${dtype}) vs the TS reference forward`, () => {
    const tmp = tempDir('fgsn-qwen2-');
    const dir = join(tmp.path, 'model');
    let weights: Map<string, Float32Array>;
    let ckpt: ModelCheckpoint;

    beforeAll(async () => {
      await writeSyntheticModel(dir, { ...TINY, dtype });
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

    it('the checkpoint has the qwen2 features under test', () => {
      expect(ckpt.spec.family).toBe('qwen2');
      expect(ckpt.spec.tieWordEmbeddings).toBe(true);
      expect(ckpt.spec.qkvBias).toBe(true);
      expect(ckpt.has('lm_head.weight')).toBe(false);
      expect(ckpt.spec.numHeads / ckpt.spec.numKvHeads).toBe(2);
    });

    it('every activation of a padded batch matches the reference', async () => {
      const engine = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache') });
      try {
        const cap = await engine.capture(PROMPTS, { embed: 'all', hidden: 'all', mlpAct: 'all', finalNorm: 'all', logits: 'all' }, { batchSize: 3 });
        PROMPTS.forEach((ids, j) => {
          expectCloseToReference(cap.sequences[j], referenceForward(ckpt.spec, w, ids), ckpt.spec.numLayers, 1e-4, `prompt ${j}`);
        });
      } finally {
        await engine.close();
      }
    });

    it('batched KV-cache greedy generation matches reference greedy decoding', async () => {
      const engine = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache') });
      try {
        const gens = await engine.generate(PROMPTS, { maxNewTokens: 8, batchSize: 3 });
        const stop = new Set(engine.eosTokenIds);
        expect([...stop].sort()).toEqual([3, 6]);
        PROMPTS.forEach((ids, j) => {
          expect(gens[j].ids, `prompt ${j}`).toEqual(referenceGreedy(ckpt.spec, w, ids, 8, stop));
        });
        // Random weights rarely stop early: make sure the KV cache ran several steps.
        expect(Math.max(...gens.map((g) => g.ids.length))).toBeGreaterThan(3);
        // Generation stops when the context (max_position_embeddings) is full.
        const nearlyFull = Array.from({ length: ckpt.spec.maxPositionEmbeddings - 2 }, (_, i) => 7 + (i % 50));
        const [edge] = await engine.generate([nearlyFull], { maxNewTokens: 10, stopTokenIds: [] });
        expect(edge.ids).toHaveLength(2);
        expect(edge.finishReason).toBe('length');
      } finally {
        await engine.close();
      }
    });
  });
}
