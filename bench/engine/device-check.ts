/**
 * GPU check, for a session lent a CUDA machine (onnxruntime-node 1.29 with the CUDA 13 provider placed by
 * `npm run gpu:setup`; bench/engine/device-pack.sh + device-run.sh carry everything to an offline machine).
 * On the dev aligned model it runs the same captures and the same batched greedy generations on the CPU
 * provider (float32, the reference) and on the target provider in float32 and float16 compute, and checks:
 *   float32: logits allclose(atol = rtol = 1e-3) to CPU float32, >= 99% identical greedy generations;
 *   float16: logits allclose(atol = rtol = 5e-2), >= 95% identical (half rounding moves near-ties; on the CPU
 *            provider float16 logits moved by <= 0.035 on a scale of 28, test/engine/compute-fp16.test.ts).
 * Then generation with the device-resident KV cache (runtime/device-kv.ts, in a child process: it has never
 * run, a crash must not end the check) against the host-KV generations; prefill/decode tokens/s of a
 * synthetic ~350M bf16 llama; and a whole `harden` of the dev testbed (base, aligned, ft_sst_p10); each timing
 * as a ratio to the provider's float32 MatMul throughput measured in the same run. One JSON line per result;
 * exit 0 when every check passed, 5 when one failed, 3 when the target provider is unavailable.
 *
 *   npx tsx bench/engine/device-check.ts [model-dir] [--ep cuda|cpu] [--prompts 128] [--skip-synthetic]
 *     [--skip-harden] [--harden-cpu] [--skip-device-kv] [--out results.jsonl]
 * `--ep cpu` runs the whole check against the CPU provider itself: a dry run on any machine.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isFgsnError } from '../../src/errors.js';
import { loadEngine, type Engine } from '../../src/engine/engine.js';
import type { ComputeDtype, ExecutionProvider } from '../../src/engine/session/session.js';
import { writeSyntheticModel } from '../../test/support/synthetic/synthetic-model.js';
import { runHarden } from '../../src/pipeline/harden.js';
import type { ProbeRecord } from '../../src/pipeline/types.js';
import { matmulGflops, SYNTHETIC_350M, timeEngine, tokenPrompts } from './timing.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'skip-synthetic': { type: 'boolean' }, 'skip-harden': { type: 'boolean' }, 'harden-cpu': { type: 'boolean' }, 'skip-device-kv': { type: 'boolean' },
    prompts: { type: 'string', default: '128' }, ep: { type: 'string', default: 'cuda' }, out: { type: 'string' },
    'child-device-kv': { type: 'boolean' },
  },
});
if (values.ep !== 'cuda' && values.ep !== 'cpu') throw new Error(`--ep must be cuda or cpu, got "${values.ep}"`);
const TARGET = values.ep as ExecutionProvider;
const testbed = process.env.FGSN_TESTBED_DIR ?? fileURLToPath(new URL('../../../shared/testbed/dev', import.meta.url));
const modelDir = positionals[0] ?? `${testbed}/aligned`;
const prompts = readFileSync(`${testbed}/eval/aligned.generations.jsonl`, 'utf8').trim().split('\n')
  .slice(0, Number(values.prompts)).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
const work = mkdtempSync(join(tmpdir(), 'fgsn-device-'));
let failed = false;

function emit(r: Record<string, unknown>): void {
  const line = JSON.stringify(r);
  console.log(line);
  if (values.out !== undefined) appendFileSync(values.out, `${line}\n`);
  if (r.pass === false) failed = true;
}

interface Outputs { logits: Float32Array[]; texts: string[]; genMs: number; tokens: number }

async function generations(engine: Engine): Promise<Pick<Outputs, 'texts' | 'genMs' | 'tokens'>> {
  await engine.generate(prompts.slice(0, 4), { maxNewTokens: 4 });
  const t0 = performance.now();
  const gens = await engine.generate(prompts, { batchSize: 64 });
  return { texts: gens.map((g) => g.text), genMs: performance.now() - t0, tokens: gens.reduce((n, g) => n + g.ids.length, 0) };
}

async function outputs(engine: Engine): Promise<Outputs> {
  const cap = await engine.capture(prompts.slice(0, 16), { logits: 'all' }, { batchSize: 16 });
  return { logits: cap.sequences.map((s) => s.logits!), ...(await generations(engine)) };
}

async function open(dir: string, ep: ExecutionProvider, compute: ComputeDtype = 'float32', deviceKv = false): Promise<Engine> {
  return loadEngine(dir, { executionProvider: ep, compute, deviceKv, cacheDir: join(work, 'cache'), maxSessions: 1 });
}

/** numpy.allclose's worst ratio max |a - b| / (atol + rtol |b|) over all logits (<= 1: allclose). */
function allclose(got: Float32Array[], ref: Float32Array[], tol: number): { ratio: number; maxDiff: number; maxAbs: number } {
  let ratio = 0;
  let maxDiff = 0;
  let maxAbs = 0;
  got.forEach((l, j) => l.forEach((v, i) => {
    const d = Math.abs(v - ref[j][i]);
    ratio = Math.max(ratio, Number.isFinite(d) ? d / (tol + tol * Math.abs(ref[j][i])) : Infinity);
    maxDiff = Math.max(maxDiff, d);
    maxAbs = Math.max(maxAbs, Math.abs(ref[j][i]));
  }));
  return { ratio, maxDiff, maxAbs };
}

function identical(got: string[], ref: string[]): { share: number; differing: number[] } {
  const differing = got.flatMap((t, i) => (t === ref[i] ? [] : [i]));
  return { share: (got.length - differing.length) / got.length, differing };
}

/** Tolerances of the check (see the header). */
const CRITERIA: Record<ComputeDtype, { tol: number; identical: number }> = { float32: { tol: 1e-3, identical: 0.99 }, float16: { tol: 5e-2, identical: 0.95 } };

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

function readProbes(file: string, n: number): ProbeRecord[] {
  return readFileSync(join(testbed, 'data', file), 'utf8').trim().split('\n').slice(0, n).map((l) => ({ prompt: (JSON.parse(l) as { prompt: string }).prompt }));
}

/** A whole `harden` (fgsn method, default options) of ft_sst_p10 against base and aligned on `ep`. */
async function harden(ep: ExecutionProvider): Promise<Record<string, unknown>> {
  const peak = await matmulGflops(ep === 'cpu' ? 1024 : 4096, ep);
  const outDir = join(work, `hardened-${ep}`);
  const t0 = performance.now();
  const r = await runHarden({
    basePath: join(testbed, 'base'), alignedPath: join(testbed, 'aligned'), finetunedPath: join(testbed, 'ft_sst_p10'),
    harmful: readProbes('harmful_attack_pool.jsonl', 64), benign: readProbes('lookalike_train.jsonl', 64), task: readProbes('sst_train.jsonl', 64),
    method: 'fgsn', outputs: ['model'], outDir, cacheDir: join(work, `harden-cache-${ep}`), executionProvider: ep,
  });
  const seconds = (performance.now() - t0) / 1000;
  rmSync(outDir, { recursive: true, force: true });
  return {
    check: 'harden', model: 'dev testbed ft_sst_p10 (base, aligned)', ep, matmulGflops: peak, seconds,
    // Seconds x the provider's MatMul GFLOP/s: the harden's cost in "GFLOP at MatMul peak", comparable across devices.
    secondsTimesMatmulGflops: seconds * peak, stageSeconds: r.summary.stageSeconds, rowsChanged: r.summary.rowsChanged, paramsChangedPctLinear: r.summary.paramsChangedPctLinear,
  };
}

/**
 * Generation with the device-resident KV cache, in a child process (it has never run on a GPU; onnxruntime
 * may refuse, or worse, the 'gpu-buffer' binding on CUDA).
 */
function deviceKvChild(): { texts?: string[]; genMs?: number; tokens?: number; error?: string; status: number | null; signal: string | null } {
  const args = [...process.execArgv, process.argv[1], modelDir, '--ep', TARGET, '--prompts', String(prompts.length), '--child-device-kv'];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 26, env: process.env, timeout: 300_000 });
  const last = r.stdout?.trim().split('\n').at(-1) ?? '';
  try {
    return { ...(JSON.parse(last) as object), status: r.status, signal: r.signal };
  } catch {
    return { error: (r.stderr ?? '').trim().split('\n').slice(-5).join(' | '), status: r.status, signal: r.signal };
  }
}

if (values['child-device-kv']) {
  try {
    const engine = await open(modelDir, TARGET, 'float32', true);
    console.log(JSON.stringify(await generations(engine)));
    await engine.close();
  } catch (e) {
    console.log(JSON.stringify({ error: (e as Error).message }));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  process.exit(0);
}

try {
  const cpu = await open(modelDir, 'cpu');
  const ref = await outputs(cpu);
  await cpu.close();
  let hostKv: Outputs | undefined;
  for (const compute of ['float32', 'float16'] as const) {
    let got: Outputs;
    try {
      const engine = await open(modelDir, TARGET, compute);
      got = await outputs(engine);
      await engine.close();
    } catch (e) {
      // Only the provider's absence ends the check quietly; any other failure is a finding and propagates.
      if (!(isFgsnError(e) && e.code === 'ENGINE_EP_UNAVAILABLE')) throw e;
      emit({ check: 'provider', ep: TARGET, pass: false, error: e.toJSON() });
      rmSync(work, { recursive: true, force: true });
      process.exit(3);
    }
    if (compute === 'float32') hostKv = got;
    const c = CRITERIA[compute];
    const close = allclose(got.logits, ref.logits, c.tol);
    const same = identical(got.texts, ref.texts);
    emit({
      check: 'outputs vs CPU float32', model: modelDir, ep: TARGET, compute,
      pass: close.ratio <= 1 && same.share >= c.identical,
      logitsAllcloseTol: c.tol, logitsAllcloseRatio: close.ratio, maxLogitDiff: close.maxDiff, maxAbsLogit: close.maxAbs,
      greedyIdentical: `${got.texts.length - same.differing.length}/${got.texts.length}`, identicalRequired: c.identical, differingPrompts: same.differing,
      cpuGenTokS: ref.tokens / (ref.genMs / 1000), genTokS: got.tokens / (got.genMs / 1000),
    });
  }
  if (!values['skip-device-kv'] && hostKv !== undefined) {
    const d = deviceKvChild();
    const same = d.texts === undefined ? undefined : identical(d.texts, hostKv.texts);
    emit({
      check: 'device-resident KV (float32) vs host KV', ep: TARGET,
      // Informative: device KV is opt-in; a failure here is recorded, not a failed check.
      works: same !== undefined && same.share === 1,
      greedyIdentical: same === undefined ? null : `${d.texts!.length - same.differing.length}/${d.texts!.length}`,
      hostKvGenTokS: hostKv.tokens / (hostKv.genMs / 1000), deviceKvGenTokS: d.tokens === undefined ? null : d.tokens / (d.genMs! / 1000),
      error: d.error ?? null, childStatus: d.status, childSignal: d.signal,
    });
  }
  if (!values['skip-synthetic']) {
    const dir = join(work, 'synthetic-350m');
    await writeSyntheticModel(dir, SYNTHETIC_350M);
    const runs: [ExecutionProvider, ComputeDtype][] = [['cpu', 'float32'], [TARGET, 'float32'], [TARGET, 'float16']];
    for (const [ep, compute] of runs) {
      emit({ check: 'speed', model: 'synthetic llama 350M (BF16)', ep, compute, batch: 8, promptTokens: 64, newTokens: 32, ...(await speed(dir, ep, compute)) });
    }
    rmSync(dir, { recursive: true, force: true });
  }
  if (!values['skip-harden']) {
    const runs: ExecutionProvider[] = values['harden-cpu'] && TARGET !== 'cpu' ? ['cpu', TARGET] : [TARGET];
    for (const ep of runs) emit(await harden(ep));
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 5 : 0);
