/**
 * Engine throughput: prefill and decode tokens/s on the dev `aligned` model and on a synthetic ~350M-parameter
 * llama (bf16 safetensors, generated into a temp dir), each as a ratio to onnxruntime's own MatMul
 * throughput measured in the same process (achieved FLOP/s over that "peak"), plus peak RSS against the
 * checkpoint's size. Each model is measured in a child process so its peak RSS is its own.
 *
 *   npx tsx bench/engine/throughput.ts [--keep] [--skip-dev] [--skip-synthetic] [--batch 8] [--prompt-tokens 64] [--new-tokens 32] [--plain-env]
 *     [--compute-dtype float32|float16|both]
 * `both` measures each model in float32 then float16 compute (children in the same run) and prints the ratios.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadEngine } from '../../src/engine/engine.js';
import { ENGINE_PROCESS_EXEC_ARGV, withEngineProcessEnv, type ComputeDtype } from '../../src/engine/session/session.js';
import { syntheticParameterCount, writeSyntheticModel } from '../../test/support/synthetic/synthetic-model.js';
import { matmulGflops, SYNTHETIC_350M, timeEngine, tokenPrompts } from './timing.js';

const { values } = parseArgs({
  options: {
    child: { type: 'string' }, keep: { type: 'boolean' }, 'skip-dev': { type: 'boolean' }, 'plain-env': { type: 'boolean' }, 'skip-synthetic': { type: 'boolean' },
    batch: { type: 'string' }, 'prompt-tokens': { type: 'string' }, 'new-tokens': { type: 'string' }, 'cache-dir': { type: 'string' },
    'compute-dtype': { type: 'string', default: 'float32' },
  },
});
const BATCH = Number(values.batch ?? 8);
const PROMPT_TOKENS = Number(values['prompt-tokens'] ?? 64);
const NEW_TOKENS = Number(values['new-tokens'] ?? 32);
const COMPUTE = values['compute-dtype'];
if (!['float32', 'float16', 'both'].includes(COMPUTE)) throw new Error(`--compute-dtype must be float32, float16 or both, got "${COMPUTE}"`);
const COMPUTES: ComputeDtype[] = COMPUTE === 'both' ? ['float32', 'float16'] : [COMPUTE as ComputeDtype];

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

async function measure(modelDir: string): Promise<ChildResult> {
  const baselineRssBytes = process.memoryUsage().rss;
  const peak = await matmulGflops(1024);
  const t0 = performance.now();
  // One live session: capture and generation graphs would otherwise each hold a float32 copy of the weights.
  const engine = await loadEngine(modelDir, { cacheDir: values['cache-dir'], maxSessions: 1, compute: COMPUTES[0] });
  try {
    await engine.capture(tokenPrompts(engine.spec.vocabSize, 1, PROMPT_TOKENS, 1), { logits: 'last' }); // builds the graph, creates the session
    const loadMs = performance.now() - t0;
    const loadedRssBytes = process.memoryUsage().rss;
    const timing = await timeEngine(engine, { batch: BATCH, promptTokens: PROMPT_TOKENS, newTokens: NEW_TOKENS });
    const checkpointBytes = engine.checkpoint.files.reduce((n, f) => n + statSync(f).size, 0);
    return {
      model: modelDir,
      checkpointBytes,
      params: engine.checkpoint.parameterCount,
      matmulGflops: peak,
      ...timing,
      loadMs,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      baselineRssBytes,
      loadedRssBytes,
    };
  } finally {
    await engine.close();
  }
}

function runChild(modelDir: string, cacheDir: string, compute: ComputeDtype): ChildResult {
  const self = fileURLToPath(import.meta.url);
  const out = execFileSync(process.execPath, [...(values['plain-env'] ? [] : ENGINE_PROCESS_EXEC_ARGV), '--import', 'tsx', self, '--child', modelDir, '--cache-dir', cacheDir, '--compute-dtype', compute,
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

/** Runs one model in each requested compute type; with two, prints float16 / float32 ratios of the same run. */
function measureModel(dir: string, cacheDir: string, label: string): ChildResult[] {
  const rs = COMPUTES.map((c) => {
    const r = runChild(dir, cacheDir, c);
    report(r, `${label}, ${c} compute`);
    return r;
  });
  if (rs.length === 2) {
    const [a, b] = rs;
    const mem = (r: ChildResult): number => (r.peakRssBytes - r.baselineRssBytes) / r.checkpointBytes;
    console.log(`  float16 / float32 compute: prefill ${(b.prefillTokS / a.prefillTokS).toFixed(2)}x, decode ${(b.decodeTokS / a.decodeTokS).toFixed(2)}x, (peak - baseline) / size ${mem(b).toFixed(2)} vs ${mem(a).toFixed(2)}`);
  }
  return rs;
}

if (values.child !== undefined) {
  console.log(JSON.stringify(await measure(values.child)));
} else {
  const work = mkdtempSync(join(tmpdir(), 'fgsn-bench-'));
  try {
    const testbed = process.env.FGSN_TESTBED_DIR ?? fileURLToPath(new URL('../../../shared/testbed/dev', import.meta.url));
    if (!values['skip-dev']) measureModel(join(testbed, 'aligned'), join(work, 'cache'), 'dev aligned (F32)');
    if (!values['skip-synthetic']) {
      const dir = join(work, 'synthetic-350m');
      const t0 = performance.now();
      await writeSyntheticModel(dir, SYNTHETIC_350M);
      console.log(`\nwrote synthetic llama (${(syntheticParameterCount(SYNTHETIC_350M) / 1e6).toFixed(1)} M params, bf16) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const [r] = measureModel(dir, join(work, 'cache'), 'synthetic llama 350M (BF16)');
      const ratio = (r.peakRssBytes - r.baselineRssBytes) / r.checkpointBytes;
      console.log(`  bf16 memory check, ${COMPUTES[0]} compute (peak - baseline <= ~2x checkpoint): ${ratio <= 2.2 ? 'OK' : 'EXCEEDED'} (${ratio.toFixed(2)}x)`);
    }
  } finally {
    if (!values.keep) rmSync(work, { recursive: true, force: true });
  }
}
