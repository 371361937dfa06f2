/**
 * First-order attribution: for the NLL of given responses under a model W, the per-row inner products of
 * the gradient with direction matrices, s_k[W][r] = <dL/dW[r, :], M_k[r, :]>, for every linear weight
 * (q, k, v, o, gate, up, down of every layer) and every direction set k, computed in onnxruntime by a
 * hand-built backward graph (graph.ts). The defense ranks rows by -s (first-order loss drop when moving
 * row r along M_k[r]).
 *
 * Loss: teacher-forced NLL of the RESPONSE tokens only: the tokens of the chat template's rendering of
 * prompt + response after the rendering of the prompt with the generation prompt (so the template's own
 * end-of-turn token after the response, e.g. `<|end|>`, is scored; the prompt and padding never are).
 * `reduction: 'mean'` (default) divides by the total number of response tokens over ALL sequences (a
 * token-level mean, independent of how sequences are batched); `'sum'` is the plain sum.
 *
 * Memory: the weights of W are external data that onnxruntime reads and casts to float32 per session
 * (no prepacked copies, see session.ts); direction matrices are fed as float32 graph inputs, K * (linear
 * parameters of the scored layers) * 4 bytes. Layers are scored in chunks sized by `maxDirectionBytes`
 * (default a quarter of the checkpoint's bytes, within [64 MiB, 1 GiB]) or `layersPerPass`. A model whose
 * directions fit the budget runs one graph (forward + backward per batch). Otherwise the forward runs chunk
 * by chunk bottom-up, each chunk a session of its own layers only, keeping the residual stream at every
 * chunk boundary (4 * tokens * hidden bytes per boundary); then the chunks run top-down as segments, each
 * passing the gradient at its lower boundary to the next: one backward and two forwards in all, with one
 * chunk's float32 weights and directions in memory at a time (a bf16 125M job: 3.0 GB -> 0.7 GB peak,
 * docs/scale.md). The top chunks whose forward activations fit `keepActivationBytes` (default the
 * checkpoint's bytes, on CPU with the default chunking) keep them from the forward sweep and skip the second
 * forward (graph.ts `activations`): up to that many more bytes in memory, less than the atlas' peak at 1.1B. The loss head runs on the response rows only and never forms a log-softmax or one-hot
 * [rows, vocab] tensor (graph.ts).
 * Directions are read row block by row block (<= 4 MiB each) through `DirectionSource.rows`, never a
 * whole checkpoint.
 */
import { linearWeightShape, LoraAdapter, ModelCheckpoint } from '../../checkpoint/index.js';
import type { ModelSpec } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import { releaseBuffer } from '../../util/index.js';
import { lengthBuckets } from '../runtime/batch.js';
import { releaseTensors } from '../runtime/forward.js';
import { fileBytes, ort, type ExecutionProvider } from '../session/session.js';
import { ChatTokenizer } from '../tokenizer/chat-tokenizer.js';
import { attributionBatch, responseTokens, type ScoredSequence } from './batch.js';
import { scoredWeights } from './graph.js';
import { AttributionSession, type AttributionBatch } from './session.js';
import { preparePatch, type RowPatch } from './patch.js';

export { attributionBatch, responseTokens, type ScoredSequence } from './batch.js';
export { buildAttributionGraph, scoredWeights, type AttributionGraphOptions } from './graph.js';
export { AttributionSession, type AttributionBatch, type AttributionSessionOptions, type BatchScores } from './session.js';
export { checkRowPatch, preparePatch, type PreparedPatch, type RowPatch } from './patch.js';

/**
 * One direction set: M[weight] rows [r0, r1) as row-major float32 [(r1 - r0) * in]. With `out` (at least that
 * long: the graph input being filled) the values go into its prefix and a view of it comes back; else fresh
 * storage. A source may ignore `out`: its values are then copied. `release` frees what the source keeps
 * between calls (scratch); the source stays usable.
 */
export interface DirectionSource {
  name: string;
  rows(weight: string, r0: number, r1: number, out?: Float32Array): Promise<Float32Array>;
  release?(): void;
}

export type Reduction = 'mean' | 'sum';

export interface CommonAttributionOptions {
  directions: DirectionSource[];
  reduction?: Reduction;
  /** Sequences per onnxruntime run (default 8); batches group similar lengths to limit padding. */
  batchSize?: number;
  /**
   * Budget for the direction inputs of one pass (default: a quarter of the checkpoint's bytes, within
   * [64 MiB, 1 GiB]); see the module comment.
   */
  maxDirectionBytes?: number;
  /** Layers per pass; overrides maxDirectionBytes. */
  layersPerPass?: number;
  /**
   * With layer chunks: bytes of forward activations kept from the forward sweep for the backward of the top
   * chunks that fit, which then skip their forward recompute; 0 recomputes every chunk. Default: defaultKeepBytes
   * on the CPU provider when neither layersPerPass nor maxDirectionBytes is given, else 0.
   */
  keepActivationBytes?: number;
  executionProvider?: ExecutionProvider;
  threads?: number;
  /** Graph cache folder (default: the engine's, FGSN_CACHE_DIR or <tmp>/fgsn-engine-cache). */
  cacheRoot?: string;
  /**
   * Score under the checkpoint with these rows replaced (absolute new values, as a written model would hold
   * them; merged with the adapter when there is one): a static row patch in the graphs (patch.ts), so an
   * edited model is attributed without being written. Its graphs are cached under the patch's digest: give a
   * job-scoped cacheRoot when the patch is used once.
   */
  patch?: RowPatch;
}

export interface AttributionOptions extends CommonAttributionOptions {
  /** Folder of the weights W the loss is evaluated under (usually the fine-tuned model). */
  model: string;
  /** PEFT LoRA adapter applied on top of `model` (as extra MatMuls; the gradient flows through them). */
  adapter?: string;
  /** Chat-formatted with the model folder's tokenizer and chat template. */
  sequences: { prompt: string; response: string }[];
}

export interface AttributionResult {
  /** Mean (or summed) NLL of the response tokens. */
  loss: number;
  reduction: Reduction;
  /** Response tokens scored, over all sequences. */
  tokens: number;
  /** direction name -> weight name -> [out] scores of the (mean or summed) loss. */
  scores: Map<string, Map<string, Float32Array>>;
  /** Layer ranges [from, to) run as separate passes. */
  layerChunks: [number, number][];
  /** Of those, the chunks whose backward took the forward sweep's activations (no recompute). */
  keptChunks: number;
  seconds: number;
}

const ROW_BLOCK_BYTES = 4 << 20;
const MAX_DEFAULT_DIRECTION_BYTES = 1 << 30;
const MIN_DEFAULT_DIRECTION_BYTES = 64 << 20;

/**
 * The default direction budget of one pass: a quarter of the checkpoint's bytes, within [64 MiB, 1 GiB].
 * With one direction set that is about half the checkpoint's bytes of float32 weights + directions per
 * pass, so the pass, its activations and the process stay under 3x the checkpoint (docs/scale.md; kept
 * activations, keepActivationBytes, come on top within their own budget). The
 * floor keeps small models in one pass: below it the memory saved is less than the process's own, and
 * every chunk costs two session builds (the dev testbed's attribution would go from 1 session to 9).
 */
export function defaultDirectionBytes(checkpoint: ModelCheckpoint): number {
  const bytes = fileBytes(checkpoint.files);
  return Math.min(MAX_DEFAULT_DIRECTION_BYTES, Math.max(MIN_DEFAULT_DIRECTION_BYTES, Math.floor(bytes / 4)));
}

/**
 * M = a - b, read row block by row block from two checkpoints of the same architecture. `a` is decoded
 * straight into the destination and `b` into one scratch block reused across calls: a fresh pair of blocks
 * per call (each its own zeroed mapping) and a copy into the graph input made loading V for the 1.1B bench
 * trio take 19.6 s of a 72 s attribution; written in place it is about a third of that (docs/scale.md).
 */
export function checkpointDifference(name: string, a: ModelCheckpoint, b: ModelCheckpoint): DirectionSource {
  // Taken while a call uses it, so calls that overlap never share it.
  let spare: Float32Array | null = null;
  return {
    name,
    async rows(weight, r0, r1, out) {
      const ta = a.tensor(weight);
      const tb = b.tensor(weight);
      if (ta.shape.join(',') !== tb.shape.join(',')) {
        throw new FgsnError('DEFENSE_MODEL_MISMATCH', `${weight}: ${a.dir} and ${b.dir} differ in shape`, { details: { weight } });
      }
      const n = (r1 - r0) * ta.shape.slice(1).reduce((p, d) => p * d, 1);
      if (!(Number.isSafeInteger(r0) && Number.isSafeInteger(r1) && r0 >= 0 && r0 <= r1 && r1 <= ta.shape[0]) || (out !== undefined && out.length < n)) {
        throw new FgsnError('DEFENSE_MODEL_MISMATCH', `${weight}: rows [${r0}, ${r1}) of ${a.dir} - ${b.dir} (shape [${ta.shape.join(', ')}]) do not fit the ${out?.length ?? 'requested'} values asked for`, {
          details: { weight, shape: ta.shape, rows: [r0, r1] },
        });
      }
      let buf = spare;
      spare = null;
      if (buf === null || buf.length < n) {
        if (buf !== null) releaseBuffer(buf);
        buf = new Float32Array(n);
      }
      // Two reads at once: one can wait on the disk while the other decodes.
      const [x, y] = await Promise.all([a.readRowsF32(weight, r0, r1, out), b.readRowsF32(weight, r0, r1, buf)]);
      for (let i = 0; i < n; i++) x[i] -= y[i];
      spare = buf;
      return x;
    },
    release() {
      if (spare !== null) releaseBuffer(spare);
      spare = null;
    },
  };
}

/** M = scaling * B A of a LoRA adapter (zero rows for weights it does not target). */
export function adapterDirection(name: string, adapter: LoraAdapter, spec: ModelSpec): DirectionSource {
  const targets = new Set(adapter.targets());
  return {
    name,
    async rows(weight, r0, r1, out) {
      if (!targets.has(weight)) {
        const n = (r1 - r0) * (linearWeightShape(spec, weight)?.[1] ?? 0);
        return out === undefined ? new Float32Array(n) : out.subarray(0, n).fill(0);
      }
      const d = await adapter.deltaRowsF32(weight, r0, r1);
      // A delta that does not fit goes back as is, for the caller's shape check to name.
      if (out === undefined || d.length > out.length) return d;
      const n = d.length;
      out.set(d);
      releaseBuffer(d);
      return out.subarray(0, n);
    },
  };
}

/** Greedy contiguous layer chunks whose direction inputs fit `budget` bytes (at least one layer each). */
export function layerChunks(spec: ModelSpec, directionSets: number, budget: number): [number, number][] {
  const perLayer = scoredWeights(spec, 0, 1).reduce((n, w) => {
    const s = linearWeightShape(spec, w) as [number, number];
    return n + s[0] * s[1];
  }, 0) * 4 * directionSets;
  const per = Math.max(1, Math.floor(budget / perLayer));
  const out: [number, number][] = [];
  for (let l = 0; l < spec.numLayers; l += per) out.push([l, Math.min(spec.numLayers, l + per)]);
  return out;
}

/**
 * Default budget of kept activations: the checkpoint's bytes. On the 1.1B bench trio (16 harmful sequences, 8
 * chunks) every chunk fits (1.4 GB): the attribution took 52.5-54.3 s instead of 63.7 s, peak 2.17 -> 3.58 GB
 * (by hand, 2026-12-06, docs/scale.md); the job's peak stays the atlas' (2.36x). On the 125M trio, where the
 * process itself is ~0.7x the checkpoint, 1.25x took the fixed budget's peak from 2.63x to 2.87x (issue 11's
 * bound is 3x); 1x keeps more margin.
 */
export function defaultKeepBytes(checkpoint: ModelCheckpoint): number {
  return fileBytes(checkpoint.files);
}

/**
 * Bytes of the activations an 'output' half of layers [from, to) gives for these batches (graph.ts tensorsOf:
 * per token and layer the two residuals and 1/rms of their norms, q (grouped), k and v in heads, the attention
 * probabilities (one per head and key), the context, the gate's and up's outputs, and the family's extras).
 */
export function keptActivationBytes(spec: ModelSpec, batches: readonly AttributionBatch[], from: number, to: number): number {
  const H = spec.hiddenSize;
  const NH = spec.numHeads;
  const KV = spec.numKvHeads;
  const D = spec.headDim;
  const I = spec.intermediateSize;
  let floats = 0;
  for (const b of batches) {
    const T = b.padded.length;
    const perToken = 2 * H + 2 + 2 * NH * D + 2 * KV * D + NH * T + 2 * I
      + (spec.qkNorm ? NH * D + KV * D + NH + KV : 0) + (spec.attnSoftcap ? NH * T : 0) + (spec.sandwichNorms ? 2 * H + 2 : 0);
    floats += b.padded.batch * T * perToken;
  }
  return floats * 4 * (to - from);
}

/** Rows per run of the loss head: its [rows, vocab] float32 tensors stay near 16 MiB each. */
export function headRows(vocabSize: number): number {
  return Math.max(16, Math.floor((16 << 20) / (4 * vocabSize)));
}

/**
 * The loss and dLoss/d(residual leaving the top layer) [N, H] of one batch, the loss head run on its
 * counted positions only, `rows` at a time (zero gradient elsewhere).
 */
async function headGradient(head: AttributionSession, b: AttributionBatch, top: Float32Array, H: number, rows: number): Promise<{ lossSum: number; grad: Float32Array }> {
  const counted: number[] = [];
  b.lossWeights.forEach((w, n) => {
    if (w > 0) counted.push(n);
  });
  const grad = new Float32Array(top.length);
  let lossSum = 0;
  for (let k = 0; k < counted.length; k += rows) {
    const part = counted.slice(k, k + rows);
    const hidden = new Float32Array(part.length * H);
    part.forEach((n, j) => hidden.set(top.subarray(n * H, (n + 1) * H), j * H));
    const r = await head.headRows(hidden, BigInt64Array.from(part, (n) => b.targets[n]), Float32Array.from(part, (n) => b.lossWeights[n]));
    lossSum += r.lossSum;
    part.forEach((n, j) => grad.set(r.grad.subarray(j * H, (j + 1) * H), n * H));
  }
  return { lossSum, grad };
}

/** Chunks of `per` layers (at least 1). */
export function fixedLayerChunks(numLayers: number, per: number): [number, number][] {
  const n = Math.max(1, Math.floor(per));
  const out: [number, number][] = [];
  for (let l = 0; l < numLayers; l += n) out.push([l, Math.min(numLayers, l + n)]);
  return out;
}

/** The direction matrices of `weights` for each source, as float32 graph inputs [out, in]. */
export async function loadDirections(sources: DirectionSource[], spec: ModelSpec, weights: string[]): Promise<Map<string, ort.Tensor>[]> {
  const out: Map<string, ort.Tensor>[] = [];
  for (const src of sources) {
    const m = new Map<string, ort.Tensor>();
    try {
      for (const w of weights) m.set(w, await loadDirection(src, spec, w));
    } finally {
      // The source's scratch goes now, not when V8 collects the source.
      src.release?.();
    }
    out.push(m);
  }
  return out;
}

/** Frees what loadDirections allocated (its tensors' data are its own arrays). */
function releaseDirections(dirs: Map<string, ort.Tensor>[]): void {
  for (const m of dirs) releaseTensors([...m.values()]);
}

async function loadDirection(src: DirectionSource, spec: ModelSpec, weight: string): Promise<ort.Tensor> {
  const [rows, cols] = linearWeightShape(spec, weight) as [number, number];
  const data = new Float32Array(rows * cols);
  const block = Math.max(1, Math.floor(ROW_BLOCK_BYTES / (4 * cols)));
  for (let r0 = 0; r0 < rows; r0 += block) {
    const r1 = Math.min(rows, r0 + block);
    const dst = data.subarray(r0 * cols, r1 * cols);
    const part = await src.rows(weight, r0, r1, dst);
    if (!(part instanceof Float32Array) || part.length !== (r1 - r0) * cols) {
      throw new FgsnError('DEFENSE_MODEL_MISMATCH', `direction "${src.name}" gave ${part?.length} values for rows ${r0}..${r1} of ${weight} [${rows}, ${cols}]`, {
        details: { direction: src.name, weight },
      });
    }
    // Sources that fill `dst` return a view of it; others' values are copied in.
    if (part.buffer !== data.buffer || part.byteOffset !== dst.byteOffset) data.set(part, r0 * cols);
  }
  return new ort.Tensor('float32', data, [rows, cols]);
}

/**
 * Scores already tokenized sequences under an opened checkpoint (+ adapter). The building block of
 * attributionScores, for callers that tokenize themselves.
 */
export async function scoreSequences(
  checkpoint: ModelCheckpoint,
  adapter: LoraAdapter | null,
  sequences: ScoredSequence[],
  opts: CommonAttributionOptions & { padTokenId?: number },
): Promise<AttributionResult> {
  const t0 = performance.now();
  const spec = checkpoint.spec;
  const K = opts.directions.length;
  if (K === 0) throw new FgsnError('DEFENSE_OPTION_INVALID', 'attribution needs at least one direction set');
  const names = opts.directions.map((d) => d.name);
  if (new Set(names).size !== K) throw new FgsnError('DEFENSE_OPTION_INVALID', `direction names must be distinct: ${names.join(', ')}`);
  if (sequences.length === 0) throw new FgsnError('PROBES_EMPTY', 'attribution needs at least one sequence');
  for (const [i, s] of sequences.entries()) {
    if (s.ids.length > spec.maxPositionEmbeddings) {
      throw new FgsnError('ENGINE_SEQUENCE_TOO_LONG', `sequence ${i} has ${s.ids.length} tokens, the model takes ${spec.maxPositionEmbeddings}`, { details: { index: i } });
    }
  }
  if (opts.keepActivationBytes !== undefined && !(opts.keepActivationBytes >= 0)) {
    throw new FgsnError('DEFENSE_OPTION_INVALID', `keepActivationBytes must be >= 0 (bytes, or Infinity), got ${opts.keepActivationBytes}`);
  }
  const tokens = sequences.reduce((n, s) => n + responseTokens(s), 0);
  if (tokens === 0) throw new FgsnError('PROBES_INVALID', 'no response tokens to score: every response is empty');
  const reduction = opts.reduction ?? 'mean';
  const batchSize = Math.max(1, opts.batchSize ?? 8);
  const padId = opts.padTokenId ?? spec.padTokenId ?? 0;
  const batches = lengthBuckets(sequences.map((s) => s.ids.length), batchSize).map((idx) => attributionBatch(idx.map((i) => sequences[i]), padId));
  const chunks = opts.layersPerPass !== undefined
    ? fixedLayerChunks(spec.numLayers, opts.layersPerPass)
    : layerChunks(spec, K, opts.maxDirectionBytes ?? defaultDirectionBytes(checkpoint));

  const acc = opts.directions.map(() => new Map<string, Float64Array>());
  const add = (scores: Map<string, Float32Array>[]): void => scores.forEach((m, k) => m.forEach((v, w) => {
    const a = acc[k].get(w) ?? new Float64Array(v.length);
    for (let i = 0; i < v.length; i++) a[i] += v[i];
    acc[k].set(w, a);
  }));
  const patch = preparePatch(checkpoint, opts.patch);
  const sessionOpts = { directionSets: K, cacheRoot: opts.cacheRoot, executionProvider: opts.executionProvider, threads: opts.threads };
  // Every graph that reads linear weights gets the patch (the loss head reads only the head and final norm).
  const patched = { ...sessionOpts, ...(patch ? { patch } : {}) };
  const L = spec.numLayers;
  let lossSum = 0;
  let keptChunks = 0;
  if (chunks.length === 1) {
    const session = await AttributionSession.open(checkpoint, adapter, { ...patched, layerFrom: 0, layerTo: L });
    try {
      const dirs = await loadDirections(opts.directions, spec, session.weights);
      try {
        for (const b of batches) {
          const r = await session.run(b, dirs);
          lossSum += r.lossSum;
          add(r.scores);
        }
      } finally {
        releaseDirections(dirs);
      }
    } finally {
      await session.release();
    }
  } else {
    // The forward chunk by chunk, bottom-up, each chunk's session holding only its own layers' weights and
    // keeping the residual leaving it; the loss head a few response rows at a time; then the segments
    // top-down, each handing the gradient at its lower boundary to the one below: two forwards + one
    // backward in all (less the kept chunks' recompute), one chunk's float32 weights and directions in memory
    // at a time, and [rows, vocab] tensors of HEAD_ROWS rows whatever the batch.
    const hiddens: Map<number, Float32Array>[] = batches.map(() => new Map());
    // The top chunks whose activations fit the budget keep them from the forward sweep: their backward
    // halves skip the recompute (the one cost of chunking beyond session builds: a forward of those layers).
    // Explicit memory settings (a smaller direction budget, fewer layers per pass) or a GPU provider (where
    // the recompute is cheap and kept tensors would round-trip through host memory) keep nothing by default.
    const explicitMemory = opts.layersPerPass !== undefined || opts.maxDirectionBytes !== undefined;
    const onCpu = (opts.executionProvider ?? 'cpu') === 'cpu';
    const budget = opts.keepActivationBytes ?? (explicitMemory || !onCpu ? 0 : defaultKeepBytes(checkpoint));
    const kept = new Map<number, (Map<string, ort.Tensor> | undefined)[]>();
    let keptBytes = 0;
    for (let c = chunks.length - 1; c >= 0; c--) {
      keptBytes += keptActivationBytes(spec, batches, chunks[c][0], chunks[c][1]);
      if (keptBytes > budget) break;
      kept.set(chunks[c][0], []);
    }
    keptChunks = kept.size;
    try {
      for (const [from, to] of chunks) {
        const acts = kept.get(from);
        const fwd = await AttributionSession.open(checkpoint, adapter, {
          ...patched, layerFrom: from, layerTo: to, mode: 'segment', ...(acts !== undefined ? { activations: 'output' as const } : { boundaries: [to] }),
        });
        try {
          for (const [i, b] of batches.entries()) {
            const hiddenIn = from > 0 ? hiddens[i].get(from) : undefined;
            if (acts !== undefined) {
              const out = await fwd.forwardKeep(b, { hiddenIn });
              hiddens[i].set(to, out.top);
              acts.push(out.acts);
              // act.{from}.hIn holds it now.
              hiddens[i].delete(from);
            } else {
              const out = await fwd.boundaryHiddens(b, { hiddenIn });
              hiddens[i].set(to, out.get(to) as Float32Array);
            }
          }
        } finally {
          await fwd.release();
        }
      }
      let grads: (Float32Array | undefined)[] = [];
      const head = await AttributionSession.open(checkpoint, adapter, { ...sessionOpts, layerFrom: L, layerTo: L, mode: 'head' });
      try {
        for (const [i, b] of batches.entries()) {
          const top = hiddens[i].get(L) as Float32Array;
          hiddens[i].delete(L);
          const r = await headGradient(head, b, top, spec.hiddenSize, headRows(spec.vocabSize));
          lossSum += r.lossSum;
          grads.push(r.grad);
        }
      } finally {
        await head.release();
      }
      for (const [from, to] of [...chunks].reverse()) {
        const acts = kept.get(from);
        const session = await AttributionSession.open(checkpoint, adapter, {
          ...patched, layerFrom: from, layerTo: to, mode: 'segment', lossHead: false, ...(acts !== undefined ? { activations: 'input' as const } : {}),
        });
        try {
          const dirs = await loadDirections(opts.directions, spec, session.weights);
          const below: (Float32Array | undefined)[] = [];
          try {
            for (const [i, b] of batches.entries()) {
              const input = acts !== undefined ? { acts: acts[i] } : { hiddenIn: from > 0 ? hiddens[i].get(from) : undefined };
              const r = await session.run(b, dirs, { ...input, gradOut: grads[i] });
              if (acts !== undefined) {
                // This batch's kept activations are spent: freed now, not when V8 collects them.
                if (acts[i] !== undefined) releaseTensors([...acts[i]!.values()]);
                acts[i] = undefined;
              }
              add(r.scores);
              below.push(r.gradIn);
              // The residual entering this chunk is not needed again.
              hiddens[i].delete(from);
            }
          } finally {
            // A chunk's directions (a quarter of the checkpoint's bytes by default) go now, not when V8
            // collects them: otherwise the next chunk, or the search's engine, loads beside them.
            releaseDirections(dirs);
          }
          grads = below;
        } finally {
          await session.release();
        }
      }
    } finally {
      // What a failed run left kept goes now, not when V8 collects it.
      for (const acts of kept.values()) for (const a of acts) if (a !== undefined) releaseTensors([...a.values()]);
    }
  }
  const div = reduction === 'mean' ? tokens : 1;
  const scores = new Map<string, Map<string, Float32Array>>();
  opts.directions.forEach((d, k) => {
    const m = new Map<string, Float32Array>();
    for (const w of scoredWeights(spec)) m.set(w, Float32Array.from(acc[k].get(w) as Float64Array, (x) => x / div));
    scores.set(d.name, m);
  });
  return { loss: lossSum / div, reduction, tokens, scores, layerChunks: chunks, keptChunks, seconds: (performance.now() - t0) / 1000 };
}

/** Tokenizes prompt + response with the model's chat template, then scores (see the module comment). */
export async function attributionScores(opts: AttributionOptions): Promise<AttributionResult> {
  const checkpoint = await ModelCheckpoint.open(opts.model);
  let adapter: LoraAdapter | null = null;
  try {
    if (opts.adapter !== undefined) adapter = await LoraAdapter.open(opts.adapter, checkpoint.spec);
    const tok = await ChatTokenizer.load(opts.model, checkpoint.spec.padTokenId ?? 0);
    const sequences: ScoredSequence[] = [];
    for (const s of opts.sequences) {
      const enc = await tok.encodeChat(s.prompt, s.response);
      sequences.push({ ids: enc.ids, promptLength: enc.promptLength });
    }
    return await scoreSequences(checkpoint, adapter, sequences, { ...opts, padTokenId: tok.padTokenId });
  } finally {
    await adapter?.close();
    await checkpoint.close();
  }
}
