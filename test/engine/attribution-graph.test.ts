/**
 * The onnxruntime attribution graph against the float64 reference (reference.ts, itself checked by finite
 * differences) and directly against finite differences of the reference loss, on tiny generated llama and
 * qwen2 (q/k/v biases, tied embeddings) checkpoints written as real model folders. Sequences of different
 * lengths go through one left-padded batch, so padding is exercised on every comparison.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/index.js';
import { attributionBatch, type ScoredSequence } from '../../src/engine/attribution/batch.js';
import { scoreSequences } from '../../src/engine/attribution/index.js';
import { AttributionSession, type BatchScores } from '../../src/engine/attribution/session.js';
import { referenceLoss, referenceScores, type RefResult } from '../support/attribution-reference.js';
import { ort } from '../../src/engine/session/session.js';
import { differences, perturbed, randomModel, randomSequences, rng, roundedToBf16, rowsOf, tinySpec, withRowStep, writeModelFolder } from './attribution/tiny-model.js';

/** Worst per-row relative error, each row's error relative to max(|ref row|, 1e-3 * max |ref| of the matrix). */
function worstRel(got: Float32Array, ref: Float64Array): number {
  const scale = Math.max(...ref.map(Math.abs));
  let worst = 0;
  for (let r = 0; r < ref.length; r++) worst = Math.max(worst, Math.abs(got[r] - ref[r]) / Math.max(Math.abs(ref[r]), 1e-3 * scale, 1e-30));
  return worst;
}

function toTensors(dirs: Map<string, Float64Array>[], spec: ReturnType<typeof tinySpec>): Map<string, ort.Tensor>[] {
  return dirs.map((d) => new Map([...d].map(([name, m]) => {
    const rows = rowsOf({ spec, tensors: new Map() }, name);
    return [name, new ort.Tensor('float32', Float32Array.from(m), [rows, m.length / rows])];
  })));
}

function sumScores(parts: BatchScores[]): BatchScores {
  const out: BatchScores = { lossSum: 0, scores: parts[0].scores.map(() => new Map()) };
  for (const p of parts) {
    out.lossSum += p.lossSum;
    p.scores.forEach((m, k) => m.forEach((v, name) => {
      const acc = out.scores[k].get(name) ?? new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) acc[i] += v[i];
      out.scores[k].set(name, acc);
    }));
  }
  return out;
}

describe.each(['llama', 'qwen2'] as const)('attribution graph on a tiny %s checkpoint', (family) => {
  const spec = tinySpec(family);
  const base = randomModel(spec, 21);
  const aligned = perturbed(base, 22, 0.2);
  const ft = perturbed(aligned, 23, 0.1);
  const dirs = [differences(aligned, base), differences(ft, aligned)];
  const refSeqs = randomSequences(spec, 24, [5, 9, 7, 3]);
  const seqs: ScoredSequence[] = refSeqs.map((s) => ({ ids: s.ids, promptLength: s.lossPositions[0] }));
  let dir: string;
  let ckpt: ModelCheckpoint;
  let full: AttributionSession;
  let got: BatchScores;
  let ref: RefResult;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fgsn-attr-'));
    await writeModelFolder(ft, join(dir, 'model'));
    ckpt = await ModelCheckpoint.open(join(dir, 'model'));
    full = await AttributionSession.open(ckpt, null, { directionSets: 2, layerFrom: 0, layerTo: spec.numLayers, cacheRoot: join(dir, 'cache'), threads: 1 });
    got = await full.run(attributionBatch(seqs, 0), toTensors(dirs, spec));
    ref = referenceScores(ft, refSeqs, dirs);
  });
  afterAll(async () => {
    await full?.release();
    await ckpt?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loss and every score match the float64 reference (fp32, < 1e-3 relative)', () => {
    expect(Math.abs(got.lossSum - ref.lossSum) / ref.lossSum).toBeLessThan(1e-5);
    let worst = 0;
    for (const k of [0, 1]) {
      expect([...got.scores[k].keys()].sort()).toEqual([...ref.scores[k].keys()].sort());
      for (const [name, r] of ref.scores[k]) worst = Math.max(worst, worstRel(got.scores[k].get(name) as Float32Array, r));
    }
    console.log(`${family}: onnx vs f64 reference, worst row rel err ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-3);
  });

  it('scores match central finite differences of the loss along each row direction (< 1e-3)', () => {
    const r = rng(25);
    const eps = 1e-5;
    let worst = 0;
    for (const name of ref.scores[0].keys()) {
      for (const k of [0, 1]) {
        const row = Math.floor(r() * rowsOf(ft, name));
        const M = dirs[k].get(name) as Float64Array;
        const fd = (referenceLoss(withRowStep(ft, name, row, M, eps), refSeqs).lossSum - referenceLoss(withRowStep(ft, name, row, M, -eps), refSeqs).lossSum) / (2 * eps);
        const s = (got.scores[k].get(name) as Float32Array)[row];
        const scale = Math.max(...(ref.scores[k].get(name) as Float64Array).map(Math.abs));
        worst = Math.max(worst, Math.abs(s - fd) / Math.max(Math.abs(fd), 1e-3 * scale));
      }
    }
    console.log(`${family}: onnx vs finite differences, worst rel err ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-3);
  });

  it('does not depend on batch composition or padding', async () => {
    const alone = await Promise.all(seqs.map((s) => full.run(attributionBatch([s], 0), toTensors(dirs, spec))));
    const summed = sumScores(alone);
    expect(Math.abs(summed.lossSum - got.lossSum) / got.lossSum).toBeLessThan(1e-5);
    let worst = 0;
    for (const k of [0, 1]) for (const [name, v] of got.scores[k]) worst = Math.max(worst, worstRel(summed.scores[k].get(name) as Float32Array, Float64Array.from(v)));
    // fp32 summation order differs between one batch and four: float noise only, far below a padding leak.
    expect(worst).toBeLessThan(1e-3);
  });

  it('a layer-range graph scores its layers exactly as the full graph', async () => {
    const part = await AttributionSession.open(ckpt, null, { directionSets: 2, layerFrom: 1, layerTo: 2, cacheRoot: join(dir, 'cache'), threads: 1 });
    try {
      const sub = (m: Map<string, ort.Tensor>): Map<string, ort.Tensor> => new Map([...m].filter(([n]) => part.weights.includes(n)));
      const res = await part.run(attributionBatch(seqs, 0), toTensors(dirs, spec).map(sub));
      expect(part.weights).toHaveLength(7);
      // Graph variants share one cache folder, so the weights are linked (or copied) once per model.
      // (dot entries are the cache's lock and hold files, not entries)
      const entries = readdirSync(join(dir, 'cache')).filter((f) => !f.startsWith('.'));
      expect(entries).toHaveLength(1);
      expect(readdirSync(join(dir, 'cache', entries[0])).filter((f) => f.startsWith('attribution-')).length).toBeGreaterThanOrEqual(2);
      expect(res.lossSum).toBeCloseTo(got.lossSum, 5);
      for (const k of [0, 1]) {
        for (const name of part.weights) {
          expect(worstRel(res.scores[k].get(name) as Float32Array, Float64Array.from(got.scores[k].get(name) as Float32Array))).toBeLessThan(1e-5);
        }
      }
    } finally {
      await part.release();
    }
  });

  it('scoreSequences: layer chunks under a small direction budget and mean reduction give the same scores', async () => {
    const src = dirs.map((m, k) => ({
      name: `d${k}`,
      rows: async (w: string, r0: number, r1: number): Promise<Float32Array> => {
        const cols = (m.get(w) as Float64Array).length / rowsOf(ft, w);
        return Float32Array.from((m.get(w) as Float64Array).subarray(r0 * cols, r1 * cols));
      },
    }));
    const res = await scoreSequences(ckpt, null, seqs, { directions: src, maxDirectionBytes: 1, batchSize: 3, cacheRoot: join(dir, 'cache'), threads: 1 });
    expect(res.layerChunks).toEqual([[0, 1], [1, 2]]);
    expect(res.tokens).toBe(ref.tokens);
    expect(Math.abs(res.loss - ref.lossSum / ref.tokens) / res.loss).toBeLessThan(1e-5);
    let worst = 0;
    for (const k of [0, 1]) {
      for (const [name, r] of ref.scores[k]) worst = Math.max(worst, worstRel(res.scores.get(`d${k}`)?.get(name) as Float32Array, r.map((x) => x / ref.tokens)));
    }
    expect(worst).toBeLessThan(1e-3);
  });
});

describe('attribution in segments (directions over budget) on a 3-layer qwen2 checkpoint', () => {
  it('chains boundary residuals and gradients through every segment and matches the reference', async () => {
    const spec = { ...tinySpec('qwen2'), numLayers: 3 };
    const ft = randomModel(spec, 41);
    const dirs = [differences(ft, perturbed(ft, 42, 0.1)), differences(perturbed(ft, 43, 0.1), ft)];
    const refSeqs = randomSequences(spec, 44, [7, 4, 10]);
    const seqs = refSeqs.map((q) => ({ ids: q.ids, promptLength: q.lossPositions[0] }));
    const dir = mkdtempSync(join(tmpdir(), 'fgsn-attr-seg-'));
    try {
      await writeModelFolder(ft, join(dir, 'model'));
      const ckpt = await ModelCheckpoint.open(join(dir, 'model'));
      const src = dirs.map((m, k) => ({
        name: `d${k}`,
        rows: async (w: string, r0: number, r1: number): Promise<Float32Array> => {
          const cols = (m.get(w) as Float64Array).length / rowsOf(ft, w);
          return Float32Array.from((m.get(w) as Float64Array).subarray(r0 * cols, r1 * cols));
        },
      }));
      const res = await scoreSequences(ckpt, null, seqs, { directions: src, reduction: 'sum', maxDirectionBytes: 1, batchSize: 2, cacheRoot: join(dir, 'cache'), threads: 1 });
      await ckpt.close();
      expect(res.layerChunks).toEqual([[0, 1], [1, 2], [2, 3]]);
      const ref = referenceScores(ft, refSeqs, dirs);
      expect(Math.abs(res.loss - ref.lossSum) / ref.lossSum).toBeLessThan(1e-5);
      let worst = 0;
      for (const k of [0, 1]) for (const [name, r] of ref.scores[k]) worst = Math.max(worst, worstRel(res.scores.get(`d${k}`)?.get(name) as Float32Array, r));
      expect(worst).toBeLessThan(1e-3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('attribution graph on a bf16 checkpoint', () => {
  it('upcasts bf16 weights (Cast in the graph) and matches the reference on the rounded weights', async () => {
    const spec = tinySpec('llama');
    const ft = randomModel(spec, 31);
    const dirs = [differences(ft, perturbed(ft, 32, 0.1))];
    const refSeqs = randomSequences(spec, 33, [6, 4]);
    const dir = mkdtempSync(join(tmpdir(), 'fgsn-attr-bf16-'));
    try {
      await writeModelFolder(ft, join(dir, 'model'), 'BF16');
      const ckpt = await ModelCheckpoint.open(join(dir, 'model'));
      const s = await AttributionSession.open(ckpt, null, { directionSets: 1, layerFrom: 0, layerTo: 2, cacheRoot: join(dir, 'cache'), threads: 1 });
      const got = await s.run(attributionBatch(refSeqs.map((q) => ({ ids: q.ids, promptLength: q.lossPositions[0] })), 0), toTensors(dirs, spec));
      await s.release();
      await ckpt.close();
      const ref = referenceScores(roundedToBf16(ft), refSeqs, dirs);
      const wrong = referenceScores(ft, refSeqs, dirs);
      expect(Math.abs(got.lossSum - ref.lossSum) / ref.lossSum).toBeLessThan(1e-5);
      expect(Math.abs(got.lossSum - wrong.lossSum) / ref.lossSum).toBeGreaterThan(1e-5);
      let worst = 0;
      for (const [name, r] of ref.scores[0]) worst = Math.max(worst, worstRel(got.scores[0].get(name) as Float32Array, r));
      expect(worst).toBeLessThan(1e-3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
