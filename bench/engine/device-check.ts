/**
 * GPU check, for a session lent a CUDA machine (onnxruntime-node with its CUDA provider library beside the
 * binding; see bench/engine/device-run.sh for a machine that cannot download it). On the dev aligned model it
 * runs the same captures and the same batched greedy generations on the CPU and CUDA execution providers and
 * prints the largest logit difference (CUDA vs CPU, against the logits' own scale) and how many generations
 * are identical; then, on a synthetic ~350M bf16 llama, prefill and decode tokens/s on each provider as a
 * ratio to that provider's float32 MatMul throughput measured in the same run. CUDA runs twice, in float32 and
 * in float16 compute (DecoderGraphOptions.compute), each compared with the CPU's float32 outputs.
 * Without CUDA it prints the ENGINE_EP_UNAVAILABLE error and exits 3.
 *
 *   npx tsx bench/engine/device-check.ts [model-dir] [--skip-synthetic] [--prompts 128] [--ep cuda|cpu]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isFgsnError } from '../../src/errors.js';
import { loadEngine, type Engine } from '../../src/engine/engine.js';
import type { ComputeDtype, ExecutionProvider } from '../../src/engine/session/session.js';
import { writeSyntheticModel } from '../../src/engine/synthetic/synthetic-model.js';
import { matmulGflops, SYNTHETIC_350M, timeEngine, tokenPrompts } from './timing.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { 'skip-synthetic': { type: 'boolean' }, prompts: { type: 'string', default: '128' }, ep: { type: 'string', default: 'cuda' } },
});
// `--ep cpu` runs the whole script against the CPU provider itself: a dry run of the check on any machine.
const TARGET = values.ep as ExecutionProvider;
const testbed = process.env.FGSN_TESTBED_DIR ?? fileURLToPath(new URL('../../../shared/testbed/dev', import.meta.url));
const modelDir = positionals[0] ?? `${testbed}/aligned`;
const prompts = readFileSync(`${testbed}/eval/aligned.generations.jsonl`, 'utf8').trim().split('\n')
  .slice(0, Number(values.prompts)).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
const work = mkdtempSync(join(tmpdir(), 'fgsn-device-'));

interface Outputs { logits: Float32Array[]; texts: string[]; genMs: number; tokens: number }

async function outputs(engine: Engine): Promise<Outputs> {
  const cap = await engine.capture(prompts.slice(0, 16), { logits: 'all' }, { batchSize: 16 });
  await engine.generate(prompts.slice(0, 4), { maxNewTokens: 4 });
  const t0 = performance.now();
  const gens = await engine.generate(prompts, { batchSize: 64 });
  return { logits: cap.sequences.map((s) => s.logits!), texts: gens.map((g) => g.text), genMs: performance.now() - t0, tokens: gens.reduce((n, g) => n + g.ids.length, 0) };
}

async function open(dir: string, ep: ExecutionProvider, compute: ComputeDtype = 'float32'): Promise<Engine> {
  return loadEngine(dir, { executionProvider: ep, compute, cacheDir: join(work, 'cache'), maxSessions: 1 });
}

async function speed(dir: string, ep: ExecutionProvider, compute: ComputeDtype): Promise<Record<string, number>> {
  const peak = await matmulGflops(ep === 'cpu' ? 1024 : 4096, ep);
  const engine = await open(dir, ep, compute);
  try {
    await engine.capture(tokenPrompts(engine.spec.vocabSize, 1, 64, 1), { logits: 'last' });
    const t = await timeEngine(engine, { batch: 8, promptTokens: 64, newTokens: 32 });
    return { matmulGflops: peak, ...t, prefillOverPeak: t.prefillGflops / peak, decodeOverPeak: t.decodeGflops / peak };
  } finally {
    await engine.close();
  }
}

try {
  const cpu = await open(modelDir, 'cpu');
  const ref = await outputs(cpu);
  await cpu.close();
  for (const compute of ['float32', 'float16'] as const) {
    let got: Outputs;
    try {
      const engine = await open(modelDir, TARGET, compute);
      got = await outputs(engine);
      await engine.close();
    } catch (e) {
      // Only the provider's absence ends the check quietly; any other failure is a finding and propagates.
      if (!(isFgsnError(e) && e.code === 'ENGINE_EP_UNAVAILABLE')) throw e;
      console.log(JSON.stringify({ cuda: 'unavailable', error: e.toJSON() }));
      rmSync(work, { recursive: true, force: true });
      process.exit(3);
    }
    let maxDiff = 0;
    let scale = 0;
    got.logits.forEach((l, j) => l.forEach((v, i) => {
      maxDiff = Math.max(maxDiff, Math.abs(v - ref.logits[j][i]));
      scale = Math.max(scale, Math.abs(ref.logits[j][i]));
    }));
    const differing = got.texts.flatMap((t, i) => (t === ref.texts[i] ? [] : [i]));
    console.log(JSON.stringify({
      model: modelDir,
      ep: TARGET,
      compute,
      maxLogitDiffVsCpuFloat32: maxDiff,
      maxAbsLogit: scale,
      greedyIdentical: `${got.texts.length - differing.length}/${got.texts.length}`,
      differingPrompts: differing,
      cpuGenTokS: ref.tokens / (ref.genMs / 1000),
      genTokS: got.tokens / (got.genMs / 1000),
    }));
  }
  if (!values['skip-synthetic']) {
    const dir = join(work, 'synthetic-350m');
    await writeSyntheticModel(dir, SYNTHETIC_350M);
    const runs: [ExecutionProvider, ComputeDtype][] = [['cpu', 'float32'], [TARGET, 'float32'], [TARGET, 'float16']];
    for (const [ep, compute] of runs) {
      console.log(JSON.stringify({ model: 'synthetic llama 350M (BF16)', ep, compute, batch: 8, promptTokens: 64, newTokens: 32, ...(await speed(dir, ep, compute)) }));
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
