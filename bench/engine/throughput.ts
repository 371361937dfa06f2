/**
 * Engine throughput: prefill and decode tokens/s on the dev `aligned` model and on a synthetic ~350M-parameter
 * llama (bf16 safetensors, generated into a temp dir), each as a ratio to onnxruntime's own MatMul
 * throughput measured in the same process (achieved FLOP/s over that "peak"), plus peak RSS against the
 * checkpoint's size. Each model is measured in a child process so its peak RSS is its own.
 *
 *   npx tsx bench/engine/throughput.ts [--keep] [--skip-dev] [--skip-synthetic] [--batch 8] [--prompt-tokens 64] [--new-tokens 32] [--plain-env]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../../src/engine/onnx/graph-builder.js';
import { loadEngine } from '../../src/engine/engine.js';
import { withEngineProcessEnv } from '../../src/engine/session/session.js';
import { syntheticParameterCount, writeSyntheticModel, type SyntheticModelOptions } from '../../src/engine/synthetic/synthetic-model.js';
import type { ModelSpec } from '../../src/checkpoint/types.js';

const SYNTHETIC_350M: SyntheticModelOptions = {
  family: 'llama', vocabSize: 32000, hiddenSize: 1024, intermediateSize: 2816, numLayers: 24, numHeads: 16, numKvHeads: 8, headDim: 64,
  tieWordEmbeddings: false, dtype: 'BF16', seed: 3, std: 0.02, maxPositionEmbeddings: 2048,
};

const { values } = parseArgs({
  options: {
    child: { type: 'string' }, keep: { type: 'boolean' }, 'skip-dev': { type: 'boolean' }, 'plain-env': { type: 'boolean' }, 'skip-synthetic': { type: 'boolean' },
    batch: { type: 'string' }, 'prompt-tokens': { type: 'string' }, 'new-tokens': { type: 'string' }, 'cache-dir': { type: 'string' },
  },
});
const BATCH = Number(values.batch ?? 8);
const PROMPT_TOKENS = Number(values['prompt-tokens'] ?? 64);
const NEW_TOKENS = Number(values['new-tokens'] ?? 32);

interface ChildResult {
  model: string;
  checkpointBytes: number;
  params: number;
  matmulGflops: number;
  prefillTokS: number;
  prefillGflops: number;
  decodeTokS: number;
  decodeGflops: number;
  loadMs: number;
  peakRssBytes: number;
  baselineRssBytes: number;
  /** RSS right after the first session is built (weights resident, before any large batch). */
  loadedRssBytes: number;
}

/** onnxruntime's sgemm throughput on a square product, best of several runs: the "peak" of this machine. */
async function matmulGflops(n: number): Promise<number> {
  const g = new GraphBuilder('mm');
  const a = g.input('a', 'float32', [n, n]);
  const b = g.input('b', 'float32', [n, n]);
  g.output('c', g.op('MatMul', [a, b]), 'float32', [n, n]);
  const dir = mkdtempSync(join(tmpdir(), 'fgsn-mm-'));
  try {
    writeFileSync(join(dir, 'mm.onnx'), g.toModelBytes());
    const s = await ort.InferenceSession.create(join(dir, 'mm.onnx'), { graphOptimizationLevel: 'all' });
    const data = new Float32Array(n * n).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
    const feeds = { a: new ort.Tensor('float32', data, [n, n]), b: new ort.Tensor('float32', data, [n, n]) };
    await s.run(feeds);
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
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
function flopsPerToken(spec: ModelSpec, context: number): number {
  const H = spec.hiddenSize;
  const D = spec.headDim;
  const perLayer = H * spec.numHeads * D * 2 + H * spec.numKvHeads * D * 2 + 3 * H * spec.intermediateSize;
  return 2 * (spec.numLayers * perLayer + spec.vocabSize * H) + 4 * spec.numLayers * context * spec.numHeads * D;
}

function prompts(vocab: number, n: number, len: number, seed: number): number[][] {
  let s = seed;
  const next = (): number => (s = (s * 1103515245 + 12345) % 2147483648);
  return Array.from({ length: n }, () => [2, ...Array.from({ length: len - 1 }, () => 7 + (next() % (vocab - 7)))]);
}

async function measure(modelDir: string): Promise<ChildResult> {
  const baselineRssBytes = process.memoryUsage().rss;
  const peak = await matmulGflops(1024);
  const t0 = performance.now();
  // One live session: capture and generation graphs would otherwise each hold a float32 copy of the weights.
  const engine = await loadEngine(modelDir, { cacheDir: values['cache-dir'], maxSessions: 1 });
  try {
    const spec = engine.spec;
    const pre = prompts(spec.vocabSize, BATCH, PROMPT_TOKENS, 1);
    await engine.capture(pre.slice(0, 1), { logits: 'last' }); // builds the graph, creates the session
    const loadMs = performance.now() - t0;
    const loadedRssBytes = process.memoryUsage().rss;
    let prefillMs = Infinity;
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await engine.capture(pre, { logits: 'last' }, { batchSize: BATCH });
      prefillMs = Math.min(prefillMs, performance.now() - t);
    }
    const prefillTokS = (BATCH * PROMPT_TOKENS) / (prefillMs / 1000);
    // Decode: generate NEW_TOKENS with no stop token, minus the prefill of the same short prompts.
    const short = prompts(spec.vocabSize, BATCH, 16, 2);
    await engine.generate(short, { maxNewTokens: 2, batchSize: BATCH, stopTokenIds: [] });
    let shortPrefill = Infinity;
    let genMs = Infinity;
    for (let i = 0; i < 2; i++) {
      let t = performance.now();
      await engine.generate(short, { maxNewTokens: 1, batchSize: BATCH, stopTokenIds: [] });
      shortPrefill = Math.min(shortPrefill, performance.now() - t);
      t = performance.now();
      await engine.generate(short, { maxNewTokens: NEW_TOKENS, batchSize: BATCH, stopTokenIds: [] });
      genMs = Math.min(genMs, performance.now() - t);
    }
    const decodeTokS = (BATCH * (NEW_TOKENS - 1)) / ((genMs - shortPrefill) / 1000);
    const checkpointBytes = engine.checkpoint.files.reduce((n, f) => n + statSync(f).size, 0);
    return {
      model: modelDir,
      checkpointBytes,
      params: engine.checkpoint.parameterCount,
      matmulGflops: peak,
      prefillTokS,
      prefillGflops: (prefillTokS * flopsPerToken(spec, PROMPT_TOKENS / 2)) / 1e9,
      decodeTokS,
      decodeGflops: (decodeTokS * flopsPerToken(spec, 16 + NEW_TOKENS / 2)) / 1e9,
      loadMs,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      baselineRssBytes,
      loadedRssBytes,
    };
  } finally {
    await engine.close();
  }
}

function runChild(modelDir: string, cacheDir: string): ChildResult {
  const self = fileURLToPath(import.meta.url);
  const out = execFileSync(process.execPath, ['--import', 'tsx', self, '--child', modelDir, '--cache-dir', cacheDir,
    '--batch', String(BATCH), '--prompt-tokens', String(PROMPT_TOKENS), '--new-tokens', String(NEW_TOKENS)], {
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20,
      // The child is an engine process like the worker's processors: the same environment defaults unless --plain-env.
      env: values['plain-env'] ? process.env : withEngineProcessEnv(process.env),
    });
  return JSON.parse(out.trim().split('\n').at(-1) as string) as ChildResult;
}

function report(r: ChildResult, label: string): void {
  const mb = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
  console.log(`\n${label}: ${(r.params / 1e6).toFixed(1)} M params, checkpoint ${mb(r.checkpointBytes)}, load+graph ${r.loadMs.toFixed(0)} ms`);
  console.log(`  onnxruntime MatMul 1024^3 (peak reference): ${r.matmulGflops.toFixed(1)} GFLOP/s`);
  console.log(`  prefill (batch ${BATCH} x ${PROMPT_TOKENS} tokens): ${r.prefillTokS.toFixed(0)} tok/s = ${r.prefillGflops.toFixed(1)} GFLOP/s = ${(r.prefillGflops / r.matmulGflops).toFixed(2)} x MatMul peak`);
  console.log(`  decode  (batch ${BATCH}, ${NEW_TOKENS} new tokens, KV cache): ${r.decodeTokS.toFixed(0)} tok/s = ${r.decodeGflops.toFixed(1)} GFLOP/s = ${(r.decodeGflops / r.matmulGflops).toFixed(2)} x MatMul peak`);
  console.log(`  peak RSS ${mb(r.peakRssBytes)} (process baseline ${mb(r.baselineRssBytes)}); peak RSS / checkpoint size = ${(r.peakRssBytes / r.checkpointBytes).toFixed(2)}, (peak - baseline) / size = ${((r.peakRssBytes - r.baselineRssBytes) / r.checkpointBytes).toFixed(2)}`);
  console.log(`  RSS after load ${mb(r.loadedRssBytes)}: (loaded - baseline) / size = ${((r.loadedRssBytes - r.baselineRssBytes) / r.checkpointBytes).toFixed(2)} (float32 compute: weights alone are 2x a bf16 file)`);
}

if (values.child !== undefined) {
  console.log(JSON.stringify(await measure(values.child)));
} else {
  const work = mkdtempSync(join(tmpdir(), 'fgsn-bench-'));
  try {
    const testbed = process.env.FGSN_TESTBED_DIR ?? fileURLToPath(new URL('../../../shared/testbed/dev', import.meta.url));
    if (!values['skip-dev']) report(runChild(join(testbed, 'aligned'), join(work, 'cache')), 'dev aligned (F32)');
    if (!values['skip-synthetic']) {
      const dir = join(work, 'synthetic-350m');
      const t0 = performance.now();
      await writeSyntheticModel(dir, SYNTHETIC_350M);
      console.log(`\nwrote synthetic llama (${(syntheticParameterCount(SYNTHETIC_350M) / 1e6).toFixed(1)} M params, bf16) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const r = runChild(dir, join(work, 'cache'));
      report(r, 'synthetic llama 350M (BF16)');
      const ratio = (r.peakRssBytes - r.baselineRssBytes) / r.checkpointBytes;
      console.log(`  bf16 memory check (peak - baseline <= ~2x checkpoint): ${ratio <= 2.2 ? 'OK' : 'EXCEEDED'} (${ratio.toFixed(2)}x)`);
    }
  } finally {
    if (!values.keep) rmSync(work, { recursive: true, force: true });
  }
}
