/** One run of the decoder graph on a padded batch (prefill or a KV-cache decode step). */
import type { ModelSpec } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import { ort, runOptions } from '../session/session.js';
import { releaseBuffer } from '../../util/index.js';
import { countForward } from './counters.js';

/** The past fed to a decode step: per layer, time-major [P, B, KV, D] tensors (views of a KvStore). */
export interface KvCache {
  keys: ort.Tensor[];
  values: ort.Tensor[];
  /** Cached positions P. */
  length: number;
}

/** The keys and values of a step's NEW positions, per layer [B, KV, T, D]. */
export interface NewKv {
  keys: ort.Tensor[];
  values: ort.Tensor[];
}

export function emptyKvCache(spec: ModelSpec, batch: number): KvCache {
  const dims = [0, batch, spec.numKvHeads, spec.headDim];
  const empty = (): ort.Tensor => new ort.Tensor('float32', new Float32Array(0), dims);
  return {
    keys: Array.from({ length: spec.numLayers }, empty),
    values: Array.from({ length: spec.numLayers }, empty),
    length: 0,
  };
}

export interface StepInput {
  batch: number;
  length: number;
  inputIds: BigInt64Array;
  /** [B, P + T]. */
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  past?: KvCache;
  tokenWeights?: Float32Array;
  /** Flat positions b * T + t whose logits a logitRows graph computes (logit_rows, [K]). */
  logitRows?: BigInt64Array;
  /** [K] targets of those positions (target_ids); zeros (dummies) when absent. */
  targetIds?: BigInt64Array;
  /** The outputs to fetch (default all): what is not asked for is not copied out of onnxruntime. */
  fetches?: readonly string[];
  /** Further inputs fed by name when the graph has them (the engine's row patch, see patchedRows). */
  extraFeeds?: Record<string, ort.Tensor>;
}

export interface StepOutput {
  outputs: Record<string, ort.Tensor>;
  /** KV of the positions this step added (KV-cache graph only). */
  added?: NewKv;
}

export async function runStep(session: ort.InferenceSession, spec: ModelSpec, s: StepInput): Promise<StepOutput> {
  const total = s.attentionMask.length / s.batch;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', s.inputIds, [s.batch, s.length]),
    attention_mask: new ort.Tensor('int64', s.attentionMask, [s.batch, total]),
    position_ids: new ort.Tensor('int64', s.positionIds, [s.batch, s.length]),
  };
  const wantsKv = session.inputNames.includes('past_key_values.0.key');
  if (wantsKv) {
    const past = s.past ?? emptyKvCache(spec, s.batch);
    if (past.length + s.length !== total) {
      throw new FgsnError('ENGINE_RUN_FAILED', `attention mask covers ${total} positions, cache + tokens are ${past.length + s.length}`);
    }
    for (let i = 0; i < spec.numLayers; i++) {
      feeds[`past_key_values.${i}.key`] = past.keys[i];
      feeds[`past_key_values.${i}.value`] = past.values[i];
    }
  }
  if (session.inputNames.includes('token_weights')) {
    feeds.token_weights = new ort.Tensor('float32', s.tokenWeights ?? new Float32Array(s.batch * s.length).fill(1), [s.batch, s.length]);
  }
  if (session.inputNames.includes('logit_rows')) {
    if (s.logitRows === undefined) throw new FgsnError('ENGINE_RUN_FAILED', 'the graph needs the rows to compute logits of');
    const k = s.logitRows.length;
    if (s.targetIds !== undefined && s.targetIds.length !== k) throw new FgsnError('ENGINE_RUN_FAILED', `${s.targetIds.length} target ids for ${k} logit rows`);
    feeds.logit_rows = new ort.Tensor('int64', s.logitRows, [k]);
    feeds.target_ids = new ort.Tensor('int64', s.targetIds ?? new BigInt64Array(k), [k]);
  }
  if (s.extraFeeds !== undefined) {
    for (const name of session.inputNames) {
      const t = s.extraFeeds[name];
      if (t !== undefined) feeds[name] = t;
    }
  }
  let outputs: Record<string, ort.Tensor>;
  countForward(s.batch * s.length);
  try {
    outputs = (s.fetches === undefined
      ? await session.run(feeds, runOptions(session))
      : await session.run(feeds, s.fetches, runOptions(session))) as Record<string, ort.Tensor>;
  } catch (e) {
    throw new FgsnError('ENGINE_RUN_FAILED', `onnxruntime run failed: ${(e as Error).message}`, { cause: e, details: { batch: s.batch, tokens: s.length } });
  }
  for (const name of s.fetches ?? []) {
    if (outputs[name] === undefined) throw new FgsnError('ENGINE_RUN_FAILED', `onnxruntime returned no output "${name}"`);
  }
  if (!wantsKv || outputs['present.0.key'] === undefined) return { outputs };
  const added: NewKv = { keys: [], values: [] };
  for (let i = 0; i < spec.numLayers; i++) {
    added.keys.push(outputs[`present.${i}.key`]);
    added.values.push(outputs[`present.${i}.value`]);
  }
  return { outputs, added };
}

/**
 * A growing KV cache in one preallocated time-major buffer per layer and kind ([capacity, B, KV, D]): a step's
 * new positions are written after the cached ones, and the past is fed as a view of the first P positions, so
 * no step copies or reallocates the whole cache.
 */
export class KvStore {
  private readonly keys: Float32Array[];
  private readonly values: Float32Array[];
  private readonly stride: number;
  length = 0;

  constructor(private readonly spec: ModelSpec, private batch: number, readonly capacity: number) {
    this.stride = spec.numKvHeads * spec.headDim;
    const size = capacity * batch * this.stride;
    this.keys = Array.from({ length: spec.numLayers }, () => new Float32Array(size));
    this.values = Array.from({ length: spec.numLayers }, () => new Float32Array(size));
  }

  /** Appends a step's new positions ([B, KV, T, D] per layer) after the cached ones. */
  append(added: NewKv): void {
    const [b, kv, t, d] = added.keys[0].dims as number[];
    if (b !== this.batch || kv * d !== this.stride) throw new RangeError(`KV of shape [${added.keys[0].dims.join(', ')}] for a cache of batch ${this.batch}`);
    if (this.length + t > this.capacity) throw new RangeError(`KV cache full: ${this.length} + ${t} positions, capacity ${this.capacity}`);
    const write = (dst: Float32Array, src: Float32Array): void => {
      // src [B, KV, T, D] -> dst [P + t, B, KV, D]
      for (let bi = 0; bi < b; bi++) {
        for (let h = 0; h < kv; h++) {
          for (let ti = 0; ti < t; ti++) {
            const from = ((bi * kv + h) * t + ti) * d;
            const to = (((this.length + ti) * b + bi) * kv + h) * d;
            dst.set(src.subarray(from, from + d), to);
          }
        }
      }
    };
    for (let i = 0; i < this.keys.length; i++) {
      write(this.keys[i], added.keys[i].data as Float32Array);
      write(this.values[i], added.values[i].data as Float32Array);
    }
    this.length += t;
    releaseTensors([...added.keys, ...added.values]);
  }

  /** Keeps the batch rows `keep` (ascending), compacted in place. */
  keepRows(keep: number[]): void {
    const nb = keep.length;
    for (const buf of [...this.keys, ...this.values]) {
      // Targets never pass their sources: position p row r moves from (p * B + keep[r]) to (p * nb + r) <= it.
      for (let p = 0; p < this.length; p++) {
        keep.forEach((src, r) => buf.copyWithin((p * nb + r) * this.stride, (p * this.batch + src) * this.stride, (p * this.batch + src + 1) * this.stride));
      }
    }
    this.batch = nb;
  }

  /**
   * Frees the store's buffers now (and `extra`, the last step's new KV, never appended); the store is unusable
   * after. Without it they wait for V8's collector: measured on the 125M trio, the finished buckets of one
   * generation held up to ~200 MiB of garbage buffers beside the next bucket's store (a third of the float32
   * weights), which set the search's peak RSS.
   */
  dispose(extra?: NewKv): void {
    for (const buf of [...this.keys, ...this.values]) releaseBuffer(buf);
    if (extra !== undefined) releaseTensors([...extra.keys, ...extra.values]);
    this.length = 0;
  }

  /** The cached positions as the past of the next step (views, not copies). */
  view(): KvCache {
    const n = this.length * this.batch * this.stride;
    const dims = [this.length, this.batch, this.spec.numKvHeads, this.spec.headDim];
    return {
      keys: this.keys.map((k) => new ort.Tensor('float32', k.subarray(0, n), dims)),
      values: this.values.map((v) => new ort.Tensor('float32', v.subarray(0, n), dims)),
      length: this.length,
    };
  }
}

/** releaseBuffer for host tensors' data (CPU location only; device tensors are the device store's to free). */
export function releaseTensors(ts: readonly ort.Tensor[]): void {
  for (const t of ts) if (t.location === 'cpu' && ArrayBuffer.isView(t.data)) releaseBuffer(t.data);
}
