/**
 * onnxruntime-node sessions. Note: onnxruntime-node's `run()` returns a promise but executes synchronously
 * on the calling thread (after a setImmediate), so a long run blocks that thread's event loop; the API
 * therefore runs the engine in a worker thread (see worker/run-in-worker.ts).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { FgsnError } from '../../errors.js';
import type { ComputeDtype } from '../onnx/blocks.js';
import { cudaLoadHint, diagnoseCudaLoad, GPU_SETUP_COMMAND, providerBindingDir } from './ep-diagnosis.js';

export type { ComputeDtype };

export type ExecutionProvider = 'cpu' | 'cuda';

export interface SessionConfig {
  executionProvider?: ExecutionProvider;
  /** Intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
  /** CUDA only: keep generation's KV cache on the device (runtime/device-kv.ts). Default off. */
  deviceKv?: boolean;
  /**
   * Turn off onnxruntime's weight prepacking (session.disable_prepacking): for graphs whose weights feed
   * several nodes (the attribution graph's forward and backward), where each node would keep its own packed copy.
   */
  disablePrepacking?: boolean;
  /** CUDA only (ignored on the CPU provider, whose tensors are host tensors): where outputs are returned. */
  preferredOutputLocation?: ort.InferenceSession.SessionOptions['preferredOutputLocation'];
  /** Bytes of the checkpoint the session's weights come from: FGSN_ORT_ARENA=auto decides the arena by it. */
  checkpointBytes?: number;
}

export function executionProviderFromEnv(): ExecutionProvider {
  const v = (process.env.FGSN_EXECUTION_PROVIDER ?? 'cpu').toLowerCase();
  if (v !== 'cpu' && v !== 'cuda') {
    throw new FgsnError('CONFIG_INVALID', `FGSN_EXECUTION_PROVIDER must be cpu or cuda, got "${v}"`);
  }
  return v;
}

/** FGSN_COMPUTE_DTYPE: float32 (default) or float16 (for GPU providers; see DecoderGraphOptions.compute). */
export function computeDtypeFromEnv(): ComputeDtype {
  const v = (process.env.FGSN_COMPUTE_DTYPE ?? 'float32').toLowerCase();
  if (v !== 'float32' && v !== 'float16') {
    throw new FgsnError('CONFIG_INVALID', `FGSN_COMPUTE_DTYPE must be float32 or float16, got "${v}"`);
  }
  return v;
}

/**
 * The CUDA provider library installed beside onnxruntime-node's binding (the package lists 'cuda' as a
 * backend but does not bundle it: `npm run gpu:setup` places it there, see scripts/gpu-setup.mjs).
 */
function cudaProviderInstalled(): boolean {
  try {
    const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
    return existsSync(join(providerBindingDir(), lib));
  } catch {
    return false;
  }
}

/** Throws ENGINE_EP_UNAVAILABLE when onnxruntime-node was installed without the requested provider. */
export function assertProviderAvailable(ep: ExecutionProvider): void {
  if (ep === 'cpu') return;
  const backends = ort.listSupportedBackends();
  const entry = backends.find((b) => b.name === ep);
  if (entry === undefined || (!entry.bundled && !cudaProviderInstalled())) {
    throw new FgsnError('ENGINE_EP_UNAVAILABLE', `execution provider "${ep}" is not installed in this onnxruntime-node: no libonnxruntime_providers_cuda.so in ${providerBindingDir()} (bundled: ${backends.filter((b) => b.bundled).map((b) => b.name).join(', ')})`, {
      details: { requested: ep, backends },
      hint: `Run \`${GPU_SETUP_COMMAND}\` (installs onnxruntime's CUDA 13 provider for this onnxruntime-node from the npm registry), or set FGSN_EXECUTION_PROVIDER=cpu.`,
    });
  }
}

/**
 * Environment defaults for a process that hosts the engine, applied where fgsn spawns one (the worker's
 * sandboxed processors, the throughput bench's child); a value already in the environment wins. glibc reads
 * MALLOC_MMAP_THRESHOLD_ only at process start, so a process cannot set it for itself. With it, float32
 * weights and large tensors are their own mappings and go back to the OS when a session is released; where
 * the arena is off (FGSN_ORT_ARENA=auto: checkpoints under 1 GiB) they are not held in onnxruntime's chunks
 * either. GLIBC_TUNABLES is joined to a host value that does not set glibc.malloc.hugetlb. Measured (bench/engine/throughput.ts, 350M
 * bf16, 2026-11-27, with the append-only KV cache): peak 2.10-2.13x the checkpoint with these, 2.24-2.30x
 * without, decode tok/s unchanged. Before the KV cache was append-only, the same settings cost about 25% of
 * decode speed (every step mapped and unmapped a whole cache), which is why they were not set then.
 */
export const ENGINE_PROCESS_ENV: Readonly<Record<string, string>> = {
  MALLOC_MMAP_THRESHOLD_: '262144',
  // onnxruntime's arena for big checkpoints only (ARENA_AUTO_MIN_BYTES).
  FGSN_ORT_ARENA: 'auto',
  // Those mappings in transparent huge pages where the kernel allows it (THP "madvise"): the kernel zeroes
  // every fresh mapping page by page. A by-hand fixed-budget harden of the 1.1B bench trio spent 81 s of
  // system time in 154 s of wall time (perf: 19 % of its CPU samples in clear_page_erms); with huge pages
  // 55 s, and 127 s of wall time (docs/scale.md).
  GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1',
  // onnxruntime's worker threads otherwise get glibc arenas of their own, each keeping its freed chunks: with
  // two, the engine-only search pattern on the 125M trio peaked ~20 MiB lower (676-678 vs 700-703 MiB).
  MALLOC_ARENA_MAX: '2',
};

/**
 * V8 flags for a process that hosts the engine (Node reads them at start, so they go on the command line where
 * fgsn spawns one: the worker's processors, the bench children). 2 MiB semi-spaces instead of V8's default:
 * the engine's JavaScript allocates little, and a search on the 125M trio showed V8's heap at 47-96 MiB total
 * for 27-38 MiB used; with this flag 36 MiB (bench/scale, 2026-12-04).
 */
export const ENGINE_PROCESS_EXEC_ARGV: readonly string[] = ['--max-semi-space-size=2'];

/**
 * `env` with ENGINE_PROCESS_ENV filled in where `env` does not set a value; a GLIBC_TUNABLES of the host's
 * that does not mention glibc.malloc.hugetlb gets ours appended (glibc takes a colon-separated list).
 */
export function withEngineProcessEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...ENGINE_PROCESS_ENV, ...env };
  const host = env.GLIBC_TUNABLES;
  if (host !== undefined && host !== '' && !host.includes('glibc.malloc.hugetlb')) out.GLIBC_TUNABLES = `${host}:${ENGINE_PROCESS_ENV.GLIBC_TUNABLES}`;
  return out;
}

/**
 * FGSN_ORT_ARENA=auto turns the CPU arena on for checkpoints of at least this many bytes. Measured with the
 * engine process environment (bench/scale, 16 + 16 probes, 2026-12-04): on the 125M trio (256 MiB) the arena
 * raised the default budget's peak from 2.81x to 3.05x the checkpoint (over issue 11's 3x) for a 15 % shorter
 * search; on the 1.1B trio (2.05 GiB) it cost 0.1x (4.52 -> 4.74 GiB) and took the fixed budget from 138.6 to
 * 119.6 s (132.4 s in a second run): without it every activation is a fresh mapping the kernel zeroes. The bound sits between the two.
 */
export const ARENA_AUTO_MIN_BYTES = 1 << 30;

/**
 * Whether an engine session gets onnxruntime's CPU arena: FGSN_ORT_ARENA=0 never, =auto for checkpoints of
 * ARENA_AUTO_MIN_BYTES or more (`checkpointBytes`; off when unknown), anything else (unset included) always.
 * Measured on a bf16 llama in a process with the host's malloc (bench/engine/throughput.ts): without the arena
 * every intermediate tensor is a plain malloc, and the freed activations and per-step KV outputs stay in glibc's
 * heap (fragmented, not returned): after a batch-8 prefill RSS sat at 2.26x the checkpoint instead of ~2.05x.
 * With it, activations reuse its chunks, and `runOptions` shrinks it after each run so a large batch's memory
 * still goes back.
 */
export function cpuArenaEnabled(checkpointBytes?: number): boolean {
  const v = process.env.FGSN_ORT_ARENA;
  if (v === '0') return false;
  if (v === 'auto') return checkpointBytes !== undefined && checkpointBytes >= ARENA_AUTO_MIN_BYTES;
  return true;
}

/** Bytes of a checkpoint's weight files (what `checkpointBytes` and the attribution's direction budget count). */
export function fileBytes(files: readonly string[]): number {
  return files.reduce((n, f) => n + statSync(f).size, 0);
}

/** Sessions created with the CPU arena on (runOptions asks those, and only those, to shrink it). */
const arenaSessions = new WeakSet<ort.InferenceSession>();

/**
 * Options for every `session.run` of an engine session: a session with the CPU arena shrinks it back after the
 * run; one without gets no shrink request (onnxruntime would accept and ignore it).
 */
export function runOptions(session: ort.InferenceSession): ort.InferenceSession.RunOptions {
  return arenaSessions.has(session) ? { extra: { memory: { enable_memory_arena_shrinkage: 'cpu:0' } } } : {};
}

export async function createSession(onnxPath: string, cfg: SessionConfig = {}): Promise<ort.InferenceSession> {
  const ep = cfg.executionProvider ?? 'cpu';
  assertProviderAvailable(ep);
  const arena = cpuArenaEnabled(cfg.checkpointBytes);
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: ep === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    // On CPU, 'basic' (constant folding, redundant-node elimination): 'all' adds fusions that cost session
    // builds seconds per GB of weights and bought no run time. Measured on the 1.1B bench trio (2026-12-04,
    // bf16, arena on): building the generation graph 19.1 s with 'all', 16.0 with 'extended', 12.4 with
    // 'basic'; 40-token generation of 16 prompts 12.3 / 12.1 / 12.6 s; a fixed-budget harden 128 -> 109 s,
    // its diff byte-identical. CUDA keeps 'all' (not measured there).
    graphOptimizationLevel: ep === 'cuda' ? 'all' : 'basic',
    logSeverityLevel: 3,
    enableCpuMemArena: arena,
  };
  if (cfg.threads !== undefined) options.intraOpNumThreads = cfg.threads;
  if (cfg.disablePrepacking === true) options.extra = { session: { disable_prepacking: '1' } };
  if (ep === 'cuda' && cfg.preferredOutputLocation !== undefined) options.preferredOutputLocation = cfg.preferredOutputLocation;
  try {
    const session = await ort.InferenceSession.create(onnxPath, options);
    if (arena) arenaSessions.add(session);
    return session;
  } catch (e) {
    const msg = (e as Error).message;
    // onnxruntime-node's message for a provider that cannot load is "...AppendExecutionProvider_Cuda: Failed
    // to load shared library"; which library is missing only onnxruntime's log says (see ep-diagnosis.ts).
    if (ep === 'cuda' && /cuda|libcu|shared library/i.test(msg)) {
      const d = /shared library/i.test(msg) ? await diagnoseCudaLoad(onnxPath) : {};
      const said = d.ortError === undefined ? '' : ` (onnxruntime: ${d.ortError})`;
      throw new FgsnError('ENGINE_EP_UNAVAILABLE', `CUDA execution provider failed to start: ${msg}${said}`, {
        cause: e,
        details: { requested: ep, missingLibrary: d.missingLibrary },
        hint: cudaLoadHint(d.missingLibrary),
      });
    }
    throw new FgsnError('ENGINE_RUN_FAILED', `onnxruntime could not load ${onnxPath}: ${msg}`, { cause: e });
  }
}

export { ort };
