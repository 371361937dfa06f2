/**
 * float16 compute (EngineOptions.compute / FGSN_COMPUTE_DTYPE), the option meant for GPU providers, run here
 * on the CPU provider: the same graph, half-precision rounding at every op's edge. Checked against the
 * float32 TS reference forward on a tiny qwen2 (tied embeddings, q/k/v biases), against the float32 engine
 * for the in-graph square sums, and against the testbed's recorded greedy generations on the dev aligned model.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { isFgsnError } from '../../src/errors.js';
import { computeDtypeFromEnv, loadEngine } from '../../src/engine/index.js';
import { compareGenerations, readRecordedGenerations } from '../support/testbed-generations.js';
import { engineOptions } from '../../src/engine/cli-options.js';
import { writeSyntheticModel } from '../support/synthetic/synthetic-model.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';
import { allcloseRatio, expectCloseToReference, maxAbsDiff, tempDir } from './helpers.js';
import { referenceForward, referenceGreedy, type Weights } from './reference-forward.js';

const PROMPTS = [
  [2, 4, 11, 12, 13, 5],
  [2, 4, 20, 21, 22, 23, 24, 25, 26, 27, 5],
  [2, 4, 30, 5],
];

describe('float16 compute on a tiny qwen2 vs the float32 TS reference', () => {
  const tmp = tempDir('fgsn-fp16-');
  const dir = join(tmp.path, 'model');
  let weights: Map<string, Float32Array>;
  let ckpt: ModelCheckpoint;
  beforeAll(async () => {
    await writeSyntheticModel(dir, {
      family: 'qwen2', vocabSize: 60, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
      tieWordEmbeddings: true, seed: 7, std: 0.08, dtype: 'F32',
    });
    ckpt = await ModelCheckpoint.open(dir);
    weights = new Map(await Promise.all(ckpt.names().map(async (n) => [n, await ckpt.readF32(n)] as const)));
  });
  afterAll(async () => {
    await ckpt.close();
    tmp.remove();
  });
  const w: Weights = (n) => weights.get(n) as Float32Array;

  it('every activation of a padded batch is within half precision of the reference, and really rounded', async () => {
    const engine = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache'), compute: 'float16' });
    try {
      const cap = await engine.capture(PROMPTS, { embed: 'all', hidden: 'all', mlpAct: 'all', finalNorm: 'all', logits: 'all' }, { batchSize: 3 });
      let logitErr = 0;
      PROMPTS.forEach((ids, j) => {
        const ref = referenceForward(ckpt.spec, w, ids);
        // onnxruntime 1.29's CPU half MatMul rounds its sums to half: the logits (|max| ~28 here) moved by up to
        // 0.035 (measured), i.e. a few half ulps of their scale, where 1.30 stayed within 1e-2. So the logits get
        // an absolute tolerance of 2^-9 of their scale on top of 1e-2; every other activation keeps 1e-2.
        const scale = ref.logits.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        expectCloseToReference(cap.sequences[j], { ...ref, logits: Float64Array.from(cap.sequences[j].logits!) }, ckpt.spec.numLayers, 1e-2, `prompt ${j}`);
        expect(allcloseRatio(cap.sequences[j].logits!, ref.logits, 1e-2 + scale / 512, 1e-2), `prompt ${j} logits`).toBeLessThanOrEqual(1);
        logitErr = Math.max(logitErr, maxAbsDiff(cap.sequences[j].logits!, ref.logits));
      });
      // float32 compute matches this reference to 1e-4 (qwen2-tiny.test.ts): a larger error shows the half path ran.
      expect(logitErr).toBeGreaterThan(1e-4);
    } finally {
      await engine.close();
    }
  });

  it('KV-cache greedy generation in float16 follows the reference', async () => {
    const engine = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache'), compute: 'float16' });
    try {
      const gens = await engine.generate(PROMPTS, { maxNewTokens: 8, batchSize: 3 });
      const stop = new Set(engine.eosTokenIds);
      PROMPTS.forEach((ids, j) => expect(gens[j].ids, `prompt ${j}`).toEqual(referenceGreedy(ckpt.spec, w, ids, 8, stop)));
      expect(Math.max(...gens.map((g) => g.ids.length))).toBeGreaterThan(3);
    } finally {
      await engine.close();
    }
  });

  it('input square sums are accumulated in float32 and match the float32 graph', async () => {
    const sums = async (compute: 'float32' | 'float16'): Promise<Float32Array[]> => {
      const engine = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache'), compute });
      try {
        const cap = await engine.capture(PROMPTS, { inputSquareSums: true }, { batchSize: 3 });
        return [...cap.inputSquareSums!.keys()].sort().map((k) => cap.inputSquareSums!.get(k)!);
      } finally {
        await engine.close();
      }
    };
    const [full, half] = [await sums('float32'), await sums('float16')];
    expect(half).toHaveLength(full.length);
    full.forEach((f, i) => expect(allcloseRatio(half[i], f, 1e-3, 2e-2), `sum ${i}`).toBeLessThanOrEqual(1));
  });
});

describe('compute type settings', () => {
  it('FGSN_COMPUTE_DTYPE defaults to float32 and refuses other values', () => {
    const saved = process.env.FGSN_COMPUTE_DTYPE;
    try {
      delete process.env.FGSN_COMPUTE_DTYPE;
      expect(computeDtypeFromEnv()).toBe('float32');
      process.env.FGSN_COMPUTE_DTYPE = 'FLOAT16';
      expect(computeDtypeFromEnv()).toBe('float16');
      process.env.FGSN_COMPUTE_DTYPE = 'bf16';
      expect(() => computeDtypeFromEnv()).toThrow(/FGSN_COMPUTE_DTYPE must be float32 or float16/);
    } finally {
      if (saved === undefined) delete process.env.FGSN_COMPUTE_DTYPE;
      else process.env.FGSN_COMPUTE_DTYPE = saved;
    }
  });

  it('--compute-dtype is passed through and checked', () => {
    expect(engineOptions({ 'compute-dtype': 'float16' }).compute).toBe('float16');
    expect(engineOptions({}).compute).toBeUndefined();
    try {
      engineOptions({ 'compute-dtype': 'half' });
      expect.unreachable();
    } catch (e) {
      expect(isFgsnError(e) && e.code).toBe('CLI_USAGE');
    }
  });
});

describeTestbed('float16 compute on the dev aligned model', () => {
  const cache = tempDir('fgsn-fp16-gen-');
  afterAll(() => cache.remove());

  // onnxruntime 1.29's CPU half kernels are slow (147 generations: 400 s on the 2-core dev machine, 2 s with
  // 1.30) and sum in half, so logits move in 1/128 steps: 7 of 147 recorded generations differed (4.8%), every
  // one at a near-tie (gap <= 0.047). Hence 40 prompts and a 10% rate; the near-tie bound is unchanged.
  it('reproduces the recorded greedy generations except at near-ties', { timeout: 600_000 }, async () => {
    const engine = await loadEngine(testbedPath('aligned'), { cacheDir: cache.path, compute: 'float16' });
    try {
      const all = await readRecordedGenerations(testbedPath('eval', 'aligned.generations.jsonl'));
      const recorded = all.filter((_, i) => i % Math.ceil(all.length / 40) === 0);
      const report = await compareGenerations(engine, recorded, { batchSize: 32 });
      for (const m of report.mismatches) {
        console.info(`fp16 aligned #${m.index} step ${m.step}: recorded "${m.recordedToken}" vs ours "${m.ourToken}", logit gap ${m.logitGap}`);
        // Half precision moves logits by up to ~1e-2 here (float32 vs float16 on the same prompts).
        expect(Math.abs(m.logitGap)).toBeLessThan(0.05);
      }
      expect(report.mismatches.length / report.total).toBeLessThan(0.1);
      console.info(`fp16 aligned: ${report.total - report.mismatches.length}/${report.total} identical`);
    } finally {
      await engine.close();
    }
  });
});
