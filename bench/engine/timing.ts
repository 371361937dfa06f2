/**
 * Shared measurements of the engine benches (throughput.ts, device-check.ts): the onnxruntime MatMul
 * reference ("peak" of the execution provider in use), matmul FLOPs per token, and prefill/decode tokens/s of
 * a loaded engine on token-id prompts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder } from '../../src/engine/onnx/graph-builder.js';
import type { Engine } from '../../src/engine/engine.js';
import { createSession, ort, type ExecutionProvider } from '../../src/engine/session/session.js';
import type { SyntheticModelOptions } from '../../test/support/synthetic/synthetic-model.js';
import type { ModelSpec } from '../../src/checkpoint/types.js';

/** About 350M parameters in llama layout, bf16 on disk. */
export const SYNTHETIC_350M: SyntheticModelOptions = {
  family: 'llama', vocabSize: 32000, hiddenSize: 1024, intermediateSize: 2816, numLayers: 24, numHeads: 16, numKvHeads: 8, headDim: 64,
  tieWordEmbeddings: false, dtype: 'BF16', seed: 3, std: 0.02, maxPositionEmbeddings: 2048,
};

/** onnxruntime's float32 MatMul throughput on an n x n x n product, best of ten warmed-up runs, on the given provider. */
export async function matmulGflops(n: number, executionProvider: ExecutionProvider = 'cpu'): Promise<number> {
  const g = new GraphBuilder('mm');
  const a = g.input('a', 'float32', [n, n]);
  const b = g.input('b', 'float32', [n, n]);
  g.output('c', g.op('MatMul', [a, b]), 'float32', [n, n]);
  const dir = mkdtempSync(join(tmpdir(), 'fgsn-mm-'));
  try {
    writeFileSync(join(dir, 'mm.onnx'), g.toModelBytes());
    const s = await createSession(join(dir, 'mm.onnx'), { executionProvider });
    const data = new Float32Array(n * n).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
    const feeds = { a: new ort.Tensor('float32', data, [n, n]), b: new ort.Tensor('float32', data, [n, n]) };
    // Warmed up for half a second first: the first runs of a fresh process measured 155-165 GFLOP/s where
    // later ones reach 250-275 on the 2-core CI machine (thread pool and clock ramp-up), and a low reference
    // would inflate every floor built on it.
    const warm = performance.now();
    while (performance.now() - warm < 500) await s.run(feeds);
    let best = Infinity;
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await s.run(feeds);
      best = Math.min(best, performance.now() - t0);
    }
    await s.release();
    return (2 * n ** 3) / (best / 1000) / 1e9;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Matmul FLOPs per token: 2 x (linear weights + lm_head); attention scores add 4 x context x hidden per layer. */
export function flopsPerToken(spec: ModelSpec, context: number): number {
  const H = spec.hiddenSize;
  const D = spec.headDim;
  const perLayer = H * spec.numHeads * D * 2 + H * spec.numKvHeads * D * 2 + 3 * H * spec.intermediateSize;
  return 2 * (spec.numLayers * perLayer + spec.vocabSize * H) + 4 * spec.numLayers * context * spec.numHeads * D;
}

/** Reproducible token-id prompts: BOS then `len - 1` ids above the special tokens. */
export function tokenPrompts(vocab: number, n: number, len: number, seed: number): number[][] {
  let s = seed;
  const next = (): number => (s = (s * 1103515245 + 12345) % 2147483648);
  return Array.from({ length: n }, () => [2, ...Array.from({ length: len - 1 }, () => 7 + (next() % (vocab - 7)))]);
}

export interface EngineTiming {
  prefillTokS: number;
  prefillGflops: number;
  decodeTokS: number;
  decodeGflops: number;
}

/**
 * Prefill: best of 3 captures of `batch` prompts of `promptTokens` (last logits). Decode: generation of
 * `newTokens` with no stop token, minus the prefill of the same short prompts, best of 2. The engine's
 * first graph must already be built (call once before, so that the build is not timed).
 */
export async function timeEngine(engine: Engine, o: { batch: number; promptTokens: number; newTokens: number }): Promise<EngineTiming> {
  const spec = engine.spec;
  const pre = tokenPrompts(spec.vocabSize, o.batch, o.promptTokens, 1);
  let prefillMs = Infinity;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await engine.capture(pre, { logits: 'last' }, { batchSize: o.batch });
    prefillMs = Math.min(prefillMs, performance.now() - t);
  }
  const prefillTokS = (o.batch * o.promptTokens) / (prefillMs / 1000);
  const short = tokenPrompts(spec.vocabSize, o.batch, 16, 2);
  await engine.generate(short, { maxNewTokens: 2, batchSize: o.batch, stopTokenIds: [] });
  let shortPrefill = Infinity;
  let genMs = Infinity;
  for (let i = 0; i < 2; i++) {
    let t = performance.now();
    await engine.generate(short, { maxNewTokens: 1, batchSize: o.batch, stopTokenIds: [] });
    shortPrefill = Math.min(shortPrefill, performance.now() - t);
    t = performance.now();
    await engine.generate(short, { maxNewTokens: o.newTokens, batchSize: o.batch, stopTokenIds: [] });
    genMs = Math.min(genMs, performance.now() - t);
  }
  const decodeTokS = (o.batch * (o.newTokens - 1)) / ((genMs - shortPrefill) / 1000);
  return {
    prefillTokS,
    prefillGflops: (prefillTokS * flopsPerToken(spec, o.promptTokens / 2)) / 1e9,
    decodeTokS,
    decodeGflops: (decodeTokS * flopsPerToken(spec, 16 + o.newTokens / 2)) / 1e9,
  };
}
