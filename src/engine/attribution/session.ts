/**
 * One attribution graph (model, optional LoRA adapter, direction count, layer range) as a cached .onnx file
 * beside hard links to the weight files, and its onnxruntime session. Weights reach onnxruntime as external
 * data (mapped/read by onnxruntime, never through the JS heap); the direction matrices are graph inputs.
 */
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LoraAdapter, ModelCheckpoint, TensorInfo } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import type { WeightRef } from '../onnx/blocks.js';
import type { PaddedBatch } from '../runtime/batch.js';
import { cacheKey, defaultCacheRoot, ensureEntry, fileFingerprint, locationFor } from '../session/model-cache.js';
import { countBackward, countForward } from '../runtime/counters.js';
import { createSession, fileBytes, ort, runOptions, type ExecutionProvider } from '../session/session.js';
import { loraMatmul } from '../model/lora-matmul.js';
import { ACTIVATION_PREFIX, buildAttributionGraph, directionInputName, scoreOutputName, scoredWeights } from './graph.js';
import { patchFile, type PreparedPatch } from './patch.js';

/** Bump when the attribution graph changes, so stale cache entries are not reused. */
export const ATTRIBUTION_GRAPH_VERSION = 3;

export interface AttributionSessionOptions {
  directionSets: number;
  layerFrom: number;
  layerTo: number;
  /** See AttributionGraphOptions: 'full' (default), 'segment' or 'head' (see headRows). */
  mode?: 'full' | 'segment' | 'head';
  /** See AttributionGraphOptions.lossHead (default true). */
  lossHead?: boolean;
  /**
   * A forward-only graph giving the residual entering each of these layers (see boundaryHiddens); with mode
   * 'segment' it starts at layerFrom (from hidden_in when layerFrom > 0).
   */
  boundaries?: number[];
  /** See AttributionGraphOptions.activations (forwardKeep runs an 'output' graph; run takes `acts` with 'input'). */
  activations?: 'output' | 'input';
  cacheRoot?: string;
  executionProvider?: ExecutionProvider;
  threads?: number;
  /**
   * Rows of linear weights replaced by these values (absolute, merged with any adapter: patch.ts) in the
   * graph's weights: the loss and its gradient are those of the patched model. Its digest names the graph.
   */
  patch?: PreparedPatch;
}

/** A padded batch plus what the loss needs: next-token targets and per-position loss weights, [B, T]. */
export interface AttributionBatch {
  padded: PaddedBatch;
  targets: BigInt64Array;
  lossWeights: Float32Array;
}

export interface BatchScores {
  /** Summed NLL (0 for a segment without the loss head). */
  lossSum: number;
  /** dLoss/d(residual entering layerFrom), [N, H], from a segment with layerFrom > 0. */
  gradIn?: Float32Array;
  /** scores[k].get(weight) = [out] gradient-direction inner products of loss_sum. */
  scores: Map<string, Float32Array>[];
}

/** What a segment run takes besides the batch (see run and forwardKeep). */
export interface SegmentFeeds {
  hiddenIn?: Float32Array;
  gradOut?: Float32Array;
  acts?: Map<string, ort.Tensor>;
}

function refOf(t: TensorInfo, location: string): WeightRef {
  return { dtype: t.dtype, shape: t.shape, location, offset: t.byteOffset, length: t.byteLength };
}

export class AttributionSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly weights: string[],
    readonly directionSets: number,
    private readonly hidden: number,
    /** Whether this graph's forward starts at the tokens / its backward starts at the loss (pass counters). */
    private readonly counts: { forward: boolean; backward: boolean },
  ) {}

  static async open(ckpt: ModelCheckpoint, lora: LoraAdapter | null, opts: AttributionSessionOptions): Promise<AttributionSession> {
    const sources = [...ckpt.files];
    let loraTensors = new Map<string, TensorInfo>();
    let loraEdges = new Map<string, { a: string; b: string; scaling: number }>();
    if (lora !== null) {
      const m = loraMatmul(lora);
      loraTensors = m.tensors;
      loraEdges = m.edges;
      for (const f of m.files) if (!sources.includes(f)) sources.push(f);
    }
    // One cache folder per model (weights linked or, across devices, copied once); every attribution graph
    // variant (direction count, layer range, segment) is a further .onnx file in it.
    const entry = await ensureEntry({
      cacheRoot: opts.cacheRoot ?? defaultCacheRoot(),
      key: cacheKey({
        kind: 'attribution',
        v: ATTRIBUTION_GRAPH_VERSION,
        config: await readFile(join(ckpt.dir, 'config.json'), 'utf8'),
        files: sources.map(fileFingerprint),
        lora: lora === null ? null : { scaling: lora.config.scaling, targets: lora.targets() },
      }),
      sources,
      graph: () => new Uint8Array(0), // placeholder model.onnx: the variants below are the graphs
    });
    const variant = {
      directionSets: opts.directionSets,
      layerFrom: opts.layerFrom,
      layerTo: opts.layerTo,
      mode: opts.mode,
      lossHead: opts.lossHead,
      boundaries: opts.boundaries,
      ...(opts.activations !== undefined ? { activations: opts.activations } : {}),
      lora: loraEdges.size > 0 ? loraEdges : undefined,
    };
    const patch = opts.patch === undefined ? undefined : await patchFile(entry.dir, opts.patch, lora, new Set(loraEdges.keys()));
    const onnxPath = join(entry.dir, `attribution-${cacheKey({ ...variant, lora: [...loraEdges.keys()], ...(opts.patch ? { patch: opts.patch.digest } : {}) })}.onnx`);
    if (!existsSync(onnxPath)) {
      const resolve = (name: string): WeightRef | undefined => {
        const t = loraTensors.get(name) ?? (ckpt.has(name) ? ckpt.tensor(name) : undefined);
        if (t === undefined) return undefined;
        const i = sources.indexOf(t.file);
        if (i < 0) throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `weight ${name} lives in ${t.file}, which is not linked beside the graph`);
        return refOf(t, locationFor(i));
      };
      const tmp = `${onnxPath}.${process.pid}.${Date.now()}.tmp`;
      try {
        writeFileSync(tmp, buildAttributionGraph(ckpt.spec, resolve, variant, patch?.resolve).toModelBytes());
        renameSync(tmp, onnxPath);
      } catch (e) {
        rmSync(tmp, { force: true });
        if (e instanceof FgsnError) throw e;
        throw new FgsnError('STORAGE_ERROR', `cannot write the attribution graph ${onnxPath}: ${(e as Error).message}`, { cause: e });
      }
    }
    // No prepacking: every weight feeds a forward Gemm and a backward MatMul, and onnxruntime would keep a
    // packed copy per consuming node beside the float32 initializer (measured on the 125M bench trio: the
    // whole-model pass peaked 0.5 GB higher with it, at the same speed).
    const session = await createSession(onnxPath, { executionProvider: opts.executionProvider, threads: opts.threads, disablePrepacking: true, checkpointBytes: fileBytes(ckpt.files) });
    const forwardOnly = opts.boundaries !== undefined || opts.activations === 'output';
    const weights = forwardOnly ? [] : scoredWeights(ckpt.spec, opts.layerFrom, opts.layerTo);
    const segment = opts.mode === 'segment';
    const counts = opts.mode === 'head'
      ? { forward: false, backward: false }
      : { forward: !segment || opts.layerFrom === 0, backward: !segment || opts.layerTo === ckpt.spec.numLayers };
    return new AttributionSession(session, weights, forwardOnly ? 0 : opts.directionSets, ckpt.spec.hiddenSize, counts);
  }

  private feeds(batch: AttributionBatch, seg: SegmentFeeds): Record<string, ort.Tensor> {
    const { padded: p } = batch;
    const dims = [p.batch, p.length];
    const rows = [p.batch * p.length, this.hidden];
    const all: Record<string, () => ort.Tensor | undefined> = {
      input_ids: () => new ort.Tensor('int64', p.inputIds, dims),
      attention_mask: () => new ort.Tensor('int64', p.attentionMask, dims),
      position_ids: () => new ort.Tensor('int64', p.positionIds, dims),
      targets: () => new ort.Tensor('int64', batch.targets, dims),
      loss_weights: () => new ort.Tensor('float32', batch.lossWeights, dims),
      hidden_in: () => (seg.hiddenIn === undefined ? undefined : new ort.Tensor('float32', seg.hiddenIn, rows)),
      grad_out: () => (seg.gradOut === undefined ? undefined : new ort.Tensor('float32', seg.gradOut, rows)),
    };
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of this.session.inputNames) {
      const kept = name.startsWith(ACTIVATION_PREFIX) ? seg.acts?.get(name) : undefined;
      if (kept !== undefined) {
        feeds[name] = kept;
        continue;
      }
      const make = all[name];
      if (make === undefined) {
        if (name.startsWith(ACTIVATION_PREFIX)) throw new FgsnError('ENGINE_RUN_FAILED', `attribution: the graph needs the kept activation ${name}`);
        continue;
      }
      const t = make();
      if (t === undefined) throw new FgsnError('ENGINE_RUN_FAILED', `attribution: the graph needs input ${name}`);
      feeds[name] = t;
    }
    return feeds;
  }

  private async exec(feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
    try {
      return await this.session.run(feeds, runOptions(this.session));
    } catch (e) {
      throw new FgsnError('ENGINE_RUN_FAILED', `attribution graph failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Forward-only graph (opened with `boundaries`): the residual entering each boundary layer, [N, H]. A
   * segment starting above layer 0 takes the residual entering it (`hiddenIn`).
   */
  async boundaryHiddens(batch: AttributionBatch, seg: { hiddenIn?: Float32Array } = {}): Promise<Map<number, Float32Array>> {
    // A forward run chunk by chunk is one forward pass: counted once, by the chunk that starts at the tokens.
    if (this.counts.forward) countForward(batch.padded.batch * batch.padded.length);
    const out = await this.exec(this.feeds(batch, seg));
    const res = new Map<number, Float32Array>();
    for (const name of this.session.outputNames) res.set(Number(name.slice('hidden.'.length)), out[name].data as Float32Array);
    return res;
  }

  /**
   * 'output' graph (opened with activations 'output'): the residual leaving the segment, [N, H], and the
   * activations its backward half reads, to feed to run() of the 'input' graph of the same layers.
   */
  async forwardKeep(batch: AttributionBatch, seg: { hiddenIn?: Float32Array } = {}): Promise<{ top: Float32Array; acts: Map<string, ort.Tensor> }> {
    if (this.counts.forward) countForward(batch.padded.batch * batch.padded.length);
    const out = await this.exec(this.feeds(batch, seg));
    const acts = new Map<string, ort.Tensor>();
    let top: Float32Array | undefined;
    for (const name of this.session.outputNames) {
      if (name.startsWith(ACTIVATION_PREFIX)) acts.set(name, out[name] as ort.Tensor);
      else if (name.startsWith('hidden.')) top = out[name].data as Float32Array;
    }
    if (top === undefined) throw new FgsnError('ENGINE_RUN_FAILED', 'attribution: the forward half gave no boundary residual');
    return { top, acts };
  }

  /**
   * Runs one batch; `directions[k]` maps each scored weight to its ort tensor [out, in] (reused across
   * batches). A segment takes the residual entering it (`hiddenIn`) and the gradient leaving it (`gradOut`);
   * a backward half ('input' graph) takes its forward half's activations (`acts`) instead of `hiddenIn`.
   */
  async run(batch: AttributionBatch, directions: Map<string, ort.Tensor>[], seg: SegmentFeeds = {}): Promise<BatchScores> {
    const feeds = this.feeds(batch, seg);
    for (let k = 0; k < this.directionSets; k++) {
      for (const name of this.weights) {
        const t = directions[k]?.get(name);
        if (t === undefined) throw new FgsnError('ENGINE_RUN_FAILED', `attribution: direction set ${k} has no matrix for ${name}`);
        feeds[directionInputName(k, name)] = t;
      }
    }
    if (this.counts.backward) countBackward(batch.padded.batch * batch.padded.length);
    const out = await this.exec(feeds);
    const scores = Array.from({ length: this.directionSets }, (_, k) => {
      const m = new Map<string, Float32Array>();
      for (const name of this.weights) m.set(name, out[scoreOutputName(k, name)].data as Float32Array);
      return m;
    });
    return {
      lossSum: 'loss_sum' in out ? (out.loss_sum.data as Float32Array)[0] : 0,
      gradIn: 'grad_in' in out ? (out.grad_in.data as Float32Array) : undefined,
      scores,
    };
  }

  /**
   * 'head' graph: summed weighted NLL of `rows` positions given the residual leaving the top layer
   * (hidden [rows, H]), their next tokens and loss weights, and its gradient wrt that residual [rows, H].
   */
  async headRows(hidden: Float32Array, targets: BigInt64Array, lossWeights: Float32Array): Promise<{ lossSum: number; grad: Float32Array }> {
    const n = targets.length;
    const out = await this.exec({
      hidden_in: new ort.Tensor('float32', hidden, [n, this.hidden]),
      targets: new ort.Tensor('int64', targets, [1, n]),
      loss_weights: new ort.Tensor('float32', lossWeights, [1, n]),
    });
    return { lossSum: (out.loss_sum.data as Float32Array)[0], grad: out.grad_in.data as Float32Array };
  }

  release(): Promise<void> {
    return this.session.release();
  }
}
