/**
 * Device-resident KV cache for generation on the CUDA provider (opt-in: EngineOptions.deviceKv /
 * FGSN_CUDA_DEVICE_KV=1, CUDA only; the CPU path is the host `KvStore` and does not change).
 *
 * The decoder graph's `present.*` outputs (the step's new positions) are asked for as 'gpu-buffer' tensors
 * (onnxruntime-node `preferredOutputLocation`, which runs the session through an IO binding), and a small
 * second graph on the same provider appends them to the cache and drops finished rows:
 *   past' = Gather(Concat(past, Transpose(new, [2,0,1,3]), axis 0), rows, axis 1)
 * whose outputs are 'gpu-buffer' as well, so the cache never goes back to the host; only ids, masks, row
 * indices in and last-token logits out cross PCIe. The cache is rebuilt on the device each step (a device
 * copy, instead of the host path's host->device copy of the whole cache).
 *
 * NOT RUN YET (no GPU machine): onnxruntime-node 1.29 binds 'gpu-buffer' outputs to the memory info
 * "WebGPU_Buf" (it was written for the WebGPU provider), so onnxruntime may refuse the binding on CUDA or copy
 * across devices. bench/engine/device-check.ts runs generation with and without this store, in a child
 * process, and compares; until it passes there, it stays off by default.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ModelSpec } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import { GraphBuilder } from '../onnx/graph-builder.js';
import { createSession, ort, runOptions, type SessionConfig } from '../session/session.js';
import { emptyKvCache, KvStore, type KvCache, type NewKv } from './forward.js';

/** The KV cache of one generation bucket: the host `KvStore`, or the device-resident store below. */
export interface GenerationKv {
  readonly length: number;
  append(added: NewKv): void | Promise<void>;
  keepRows(keep: number[]): void | Promise<void>;
  view(): KvCache | Promise<KvCache>;
  /** Releases its memory now (host or device); `extra`: the last step's new KV, never appended. */
  dispose(extra?: NewKv): void;
}

/** FGSN_CUDA_DEVICE_KV=1 turns device-resident KV on for CUDA engines unless the engine option says otherwise. */
export function deviceKvFromEnv(): boolean {
  return process.env.FGSN_CUDA_DEVICE_KV === '1';
}

export function presentOutputNames(numLayers: number): string[] {
  return Array.from({ length: numLayers }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat();
}

/**
 * The session config of a graph: for a KV-cache graph on CUDA with device KV on, its present.* outputs stay
 * on the device. Every other graph, and every CPU session, gets `cfg` unchanged.
 */
export function withDeviceKvOutputs(cfg: SessionConfig, kvCacheGraph: boolean, numLayers: number): SessionConfig {
  if (!kvCacheGraph || cfg.executionProvider !== 'cuda' || cfg.deviceKv !== true) return cfg;
  return { ...cfg, preferredOutputLocation: Object.fromEntries(presentOutputNames(numLayers).map((n) => [n, 'gpu-buffer' as const])) };
}

function isDeviceTensor(t: ort.Tensor): boolean {
  return t.location === 'gpu-buffer';
}

/** The merge graph (append + row selection) of `numLayers` layers; see the module comment. */
export function mergeGraph(numLayers: number): Uint8Array {
  const g = new GraphBuilder('fgsn-kv-merge');
  const rows = g.input('rows', 'int64', ['R']);
  for (let i = 0; i < numLayers; i++) {
    for (const kind of ['key', 'value']) {
      const past = g.input(`past.${i}.${kind}`, 'float32', ['P', 'B', 'KV', 'D']);
      const added = g.input(`new.${i}.${kind}`, 'float32', ['B', 'KV', 'T', 'D']);
      const timeMajor = g.op('Transpose', [added], { perm: [2, 0, 1, 3] });
      const cat = g.op('Concat', [past, timeMajor], { axis: 0 });
      g.output(`out.${i}.${kind}`, g.op('Gather', [cat, rows], { axis: 1 }), 'float32', null);
    }
  }
  return g.toModelBytes();
}

const mergeSessions = new Map<string, Promise<ort.InferenceSession>>();

/** A merge session; its outputs stay on the device on CUDA (createSession ignores the location on CPU). */
export async function createMergeSession(numLayers: number, cfg: SessionConfig): Promise<ort.InferenceSession> {
  const dir = mkdtempSync(join(tmpdir(), 'fgsn-kv-merge-'));
  const path = join(dir, 'merge.onnx');
  writeFileSync(path, mergeGraph(numLayers));
  try {
    return await createSession(path, { executionProvider: cfg.executionProvider, threads: cfg.threads, preferredOutputLocation: 'gpu-buffer' });
  } finally {
    // onnxruntime has read the file (the graph holds no external data).
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One merge session per layer count and provider config, for the life of the process (it holds no weights). */
function mergeSession(numLayers: number, cfg: SessionConfig): Promise<ort.InferenceSession> {
  const key = `${numLayers}:${cfg.executionProvider}:${cfg.threads ?? ''}`;
  let s = mergeSessions.get(key);
  if (s === undefined) {
    s = createMergeSession(numLayers, cfg);
    s.catch(() => mergeSessions.delete(key));
    mergeSessions.set(key, s);
  }
  return s;
}

/**
 * Device-resident cache of one bucket. `append` and `keepRows` only record what the next `view` applies, in
 * one run of the merge graph (the engine always appends, then drops rows, then asks for the past).
 */
export class DeviceKvStore implements GenerationKv {
  private past: KvCache;
  private pending: NewKv | null = null;
  private rows: number[] | null = null;
  length = 0;

  constructor(private readonly merge: ort.InferenceSession, private readonly spec: ModelSpec, private batch: number) {
    this.past = emptyKvCache(spec, batch);
  }

  append(added: NewKv): void {
    if (this.pending !== null) throw new FgsnError('ENGINE_RUN_FAILED', 'device KV: two appends without a view in between');
    this.pending = added;
    this.length += added.keys[0].dims[2];
  }

  keepRows(keep: number[]): void {
    // Rows index the batch as it stands after the pending append (the append does not change the batch).
    this.rows = this.rows === null ? [...keep] : keep.map((r) => (this.rows as number[])[r]);
    this.batch = keep.length;
  }

  async view(): Promise<KvCache> {
    if (this.pending === null && this.rows === null) return this.past;
    const n = this.spec.numLayers;
    const oldBatch = this.past.keys[0].dims[1];
    const added = this.pending ?? emptyNew(this.spec, oldBatch);
    const rows = this.rows ?? Array.from({ length: oldBatch }, (_, r) => r);
    const feeds: Record<string, ort.Tensor> = { rows: new ort.Tensor('int64', BigInt64Array.from(rows, BigInt), [rows.length]) };
    for (let i = 0; i < n; i++) {
      feeds[`past.${i}.key`] = this.past.keys[i];
      feeds[`past.${i}.value`] = this.past.values[i];
      feeds[`new.${i}.key`] = added.keys[i];
      feeds[`new.${i}.value`] = added.values[i];
    }
    let out: Record<string, ort.Tensor>;
    try {
      out = (await this.merge.run(feeds, runOptions(this.merge))) as Record<string, ort.Tensor>;
    } catch (e) {
      throw new FgsnError('ENGINE_RUN_FAILED', `device KV merge failed: ${(e as Error).message}`, { cause: e });
    }
    disposeAll([...this.past.keys, ...this.past.values, ...added.keys, ...added.values]);
    this.past = {
      keys: Array.from({ length: n }, (_, i) => out[`out.${i}.key`]),
      values: Array.from({ length: n }, (_, i) => out[`out.${i}.value`]),
      length: this.length,
    };
    this.pending = null;
    this.rows = null;
    return this.past;
  }

  dispose(extra?: NewKv): void {
    const pending = [this.pending, extra].flatMap((k) => (k == null ? [] : [...k.keys, ...k.values]));
    disposeAll([...this.past.keys, ...this.past.values, ...pending]);
    this.past = emptyKvCache(this.spec, this.batch);
    this.pending = null;
  }
}

function emptyNew(spec: ModelSpec, batch: number): NewKv {
  const dims = [batch, spec.numKvHeads, 0, spec.headDim];
  const empty = (): ort.Tensor => new ort.Tensor('float32', new Float32Array(0), dims);
  return { keys: Array.from({ length: spec.numLayers }, empty), values: Array.from({ length: spec.numLayers }, empty) };
}

/** Device tensors are released now rather than at garbage collection (device memory is not seen by the GC). */
function disposeAll(ts: ort.Tensor[]): void {
  for (const t of ts) if (isDeviceTensor(t)) t.dispose();
}

/**
 * The KV store for a generation bucket on `session`: device-resident when the session's present.* outputs
 * were asked for on the device (withDeviceKvOutputs), the host KvStore otherwise.
 */
export async function generationKv(session: ort.InferenceSession, cfg: SessionConfig, spec: ModelSpec, batch: number, capacity: number): Promise<GenerationKv> {
  if (withDeviceKvOutputs(cfg, session.inputNames.includes('past_key_values.0.key'), spec.numLayers) === cfg) {
    return new KvStore(spec, batch, capacity);
  }
  return new DeviceKvStore(await mergeSession(spec.numLayers, cfg), spec, batch);
}
