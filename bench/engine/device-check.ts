/**
 * GPU check, for a session lent a CUDA machine (onnxruntime-node installed with ONNXRUNTIME_NODE_INSTALL=cuda12):
 * runs the golden prompts and a generation batch on the CPU and CUDA execution providers, prints the largest
 * logit difference (CUDA vs CPU) and greedy agreement, and decode/prefill tokens/s on CUDA.
 * Without CUDA it prints the ENGINE_EP_UNAVAILABLE error and exits 3.
 *
 *   npx tsx bench/engine/device-check.ts [model-dir]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isFgsnError } from '../../src/errors.js';
import { loadEngine, type Engine } from '../../src/engine/index.js';

const testbed = process.env.FGSN_TESTBED_DIR ?? fileURLToPath(new URL('../../../shared/testbed/dev', import.meta.url));
const modelDir = process.argv[2] ?? `${testbed}/aligned`;
const prompts = readFileSync(`${testbed}/eval/aligned.generations.jsonl`, 'utf8').trim().split('\n').slice(0, 128).map((l) => (JSON.parse(l) as { prompt: string }).prompt);

async function run(engine: Engine): Promise<{ logits: Float32Array[]; texts: string[]; genMs: number; tokens: number }> {
  const cap = await engine.capture(prompts.slice(0, 16), { logits: 'all' }, { batchSize: 16 });
  await engine.generate(prompts.slice(0, 4), { maxNewTokens: 4 });
  const t0 = performance.now();
  const gens = await engine.generate(prompts, { batchSize: 64 });
  return { logits: cap.sequences.map((s) => s.logits!), texts: gens.map((g) => g.text), genMs: performance.now() - t0, tokens: gens.reduce((n, g) => n + g.ids.length, 0) };
}

const cpu = await loadEngine(modelDir, { executionProvider: 'cpu' });
const ref = await run(cpu);
await cpu.close();
let cuda: Engine;
try {
  cuda = await loadEngine(modelDir, { executionProvider: 'cuda' });
  await cuda.capture(prompts.slice(0, 1), { logits: 'last' });
} catch (e) {
  console.log(JSON.stringify({ cuda: 'unavailable', error: isFgsnError(e) ? e.toJSON() : String(e) }));
  process.exit(3);
}
const got = await run(cuda);
await cuda.close();
let maxDiff = 0;
got.logits.forEach((l, j) => l.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - ref.logits[j][i])))));
const same = got.texts.filter((t, i) => t === ref.texts[i]).length;
console.log(JSON.stringify({
  model: modelDir,
  maxLogitDiffCudaVsCpu: maxDiff,
  greedyIdentical: `${same}/${got.texts.length}`,
  cpuGenTokS: ref.tokens / (ref.genMs / 1000),
  cudaGenTokS: got.tokens / (got.genMs / 1000),
}));
