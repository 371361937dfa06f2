/**
 * The inference engine: a checkpoint (+ optional LoRA adapter) with its tokenizer and onnxruntime sessions.
 * JavaScript only pads, feeds and slices; every tensor operation runs in onnxruntime.
 */
import {
  linearModules, linearWeightName, linearWeightNames, linearWeightShape, LoraAdapter, ModelCheckpoint,
  type ModelSpec, parameterCount, readGenerationConfig,
} from '../checkpoint/index.js';
import { FgsnError } from '../errors.js';
import { SQSUM_INPUT_OF, type Capture, type DecoderGraphOptions } from './model/decoder-graph.js';
import { GraphSessions, type LoraMode } from './model/graph-sessions.js';
import { rowPatchInputNames } from './onnx/blocks.js';
import { leftPad, lengthBuckets, tokenWeights, unpadRows, type BucketBound } from './runtime/batch.js';
import { generationKv, deviceKvFromEnv } from './runtime/device-kv.js';
import { runStep, type StepInput } from './runtime/forward.js';
import { defaultCacheRoot } from './session/model-cache.js';
import { computeDtypeFromEnv, executionProviderFromEnv, ort, type ComputeDtype, type ExecutionProvider } from './session/session.js';

import { ChatTokenizer } from './tokenizer/chat-tokenizer.js';
import {
  checkRowPatch, scoreSequences, scoredWeights, type AttributionResult, type DirectionSource, type Reduction, type RowPatch,
} from './attribution/index.js';

export interface EngineOptions {
  /** PEFT LoRA adapter folder applied on top of the model. */
  adapter?: string;
  /** How the adapter is applied: weights merged into a cached safetensors file (default) or extra MatMuls. */
  loraMode?: LoraMode;
  /** Default: FGSN_EXECUTION_PROVIDER, else 'cpu'. */
  executionProvider?: ExecutionProvider;
  /**
   * Compute type of forward graphs (capture, generation). Default: FGSN_COMPUTE_DTYPE, else float32. float16
   * is for GPU providers (on the CPU provider onnxruntime casts around its few half kernels: no faster and
   * more memory, but the same half-precision rounding at every op's edge). Attribution is float32 always.
   */
  compute?: ComputeDtype;
  /** Where graph files live (default FGSN_CACHE_DIR, else <tmpdir>/fgsn-engine-cache). */
  cacheDir?: string;
  /** onnxruntime intra-op threads. */
  threads?: number;
  /**
   * Graph variants (capture selections, generation) kept loaded at once; each holds a float32 copy of the
   * weights. Default 2; use 1 for models near the memory limit (peak RSS is then ~2x a bf16 checkpoint).
   */
  maxSessions?: number;
  /**
   * CUDA only: keep generation's KV cache on the device between steps (runtime/device-kv.ts). Default
   * FGSN_CUDA_DEVICE_KV=1, else off: not yet run on a GPU (bench/engine/device-check.ts checks it).
   */
  deviceKv?: boolean;
  /**
   * Graphs take a row patch (see `setRowPatch`): every linear weight gets patch inputs, fed empty until a
   * patch is set. One loaded engine then measures any number of edits of its model without writing one.
   */
  rowPatch?: boolean;
  /**
   * Captures generation's graph also outputs, so one session serves generation, scoring and the captures
   * they cover (capture() runs there when every output it asks for is one of these; generate() can return
   * each prompt's last hidden states from its prefill). For a caller that generates and then captures on the
   * same model, as the atlas does: a second graph would be a second session build (a float32 copy of the
   * weights, seconds per GB) and would run the prompts' forward again. Default: none.
   */
  rowsCapture?: RowsCapture;
}

/** Outputs added to generation's graph (EngineOptions.rowsCapture). */
export interface RowsCapture {
  hidden?: 'last';
  inputSquareSums?: boolean;
}

export type { RowPatch };

/** Teacher-forced log-probabilities of one sequence. */
export interface SequenceLogProbs {
  ids: number[];
  promptLength: number;
  /** logprobs[t - 1] = log p(ids[t] | ids[<t]) for t = 1 .. ids.length - 1. */
  logprobs: Float32Array;
}

export type CaptureMode = Exclude<Capture, 'none'>;

export interface CaptureRequest {
  embed?: CaptureMode;
  /** Residual stream after each decoder layer. */
  hidden?: CaptureMode;
  /** silu(gate_proj(x)) * up_proj(x) of each layer. */
  mlpAct?: CaptureMode;
  finalNorm?: CaptureMode;
  logits?: CaptureMode;
  /** Per linear weight, sum over counted tokens of each input feature squared ([d_in]). */
  inputSquareSums?: boolean;
}

/** A prompt (chat-formatted by the engine) or ready token ids (used as is). */
export type CaptureInput = string | readonly number[];

export interface CaptureOptions {
  batchSize?: number;
  /** Teacher-forced responses, one per string prompt: the sequence is prompt + response + end of turn. */
  responses?: readonly string[];
  /** Tokens counted in the square sums: every real token (default), only response tokens, or only prompt tokens. */
  squareSumTokens?: 'all' | 'response' | 'prompt';
}

export interface SequenceCapture {
  ids: number[];
  /** Length of the prompt part (generation prompt included); equals ids.length without a response. */
  promptLength: number;
  /** 'all': [len, hidden] row-major; 'last': [hidden]. */
  embed?: Float32Array;
  hidden?: Float32Array[];
  mlpAct?: Float32Array[];
  finalNorm?: Float32Array;
  logits?: Float32Array;
}

export interface CaptureResult {
  sequences: SequenceCapture[];
  /**
   * Weight name -> [d_in] sums over all sequences; weights sharing an input (q/k/v, gate/up) share one array.
   */
  inputSquareSums?: Map<string, Float32Array>;
  /** Number of tokens counted in inputSquareSums. */
  squareSumTokenCount?: number;
}

export interface GenerateOptions {
  maxNewTokens?: number;
  batchSize?: number;
  /** Default: generation_config.json eos_token_id, else config.json's. */
  stopTokenIds?: readonly number[];
  /** Called after each batch with the prompts finished so far (progress bars; does not change batching). */
  onBatch?: (done: number, total: number) => void;
  /**
   * 'last': each generation also carries `promptHidden`, the residual after every layer at the prompt's last
   * token, read from the prefill (as capture(prompts, { hidden: 'last' }) gives). Needs an engine loaded with
   * rowsCapture.hidden 'last'.
   */
  hidden?: 'last';
}

export interface Generation {
  text: string;
  /** Generated tokens, the stop token excluded. */
  ids: number[];
  promptIds: number[];
  finishReason: 'stop' | 'length';
  /** Gap between the best and second-best logit at each generated step (small = near-tie). */
  margins: number[];
  /** With GenerateOptions.hidden 'last': per layer [hidden], the residual at the prompt's last token. */
  promptHidden?: Float32Array[];
}

/** What `Engine.attribute` scores: the NLL of these responses, teacher-forced, under this engine's model (+ adapter). */
export interface AttributeOptions {
  /** Direction sets M_k; the result holds <dL/dW[r], M_k[r]> per linear weight row (attribution/index.ts). */
  directions: DirectionSource[];
  /** 'mean' (default): over all response tokens; 'sum': the plain sum. */
  reduction?: Reduction;
  /** Sequences per onnxruntime run (default 8). */
  batchSize?: number;
  /**
   * Layers whose directions are in memory at once (one segment each); default: as many as fit
   * `maxDirectionBytes` (default 1 GiB). Given, it overrides the byte budget.
   */
  layersPerPass?: number;
  maxDirectionBytes?: number;
  /** Forward activations kept for the top chunks' backward (attribution/index.ts; default the checkpoint's bytes). */
  keepActivationBytes?: number;
  /**
   * Attribute under this engine's model with these rows replaced (absolute new values, as a written model
   * would hold them; the same map `setRowPatch` takes), as a static patch in the attribution graphs: the
   * scores of the model a writer would produce, without writing it. Graphs are cached per patch digest in
   * this engine's cache folder.
   */
  patch?: RowPatch;
}

const DEFAULT_BATCH = 16;

/**
 * What one generation or scoring bucket may hold beyond the session, as a share of the float32 weights' bytes
 * (the session's own floor): the caller's batch size is a maximum, and a bucket has no more rows than fit.
 * Measured on the 125M trio (bench/scale), whose 12 full KV heads make its KV cache large for its size: at
 * batch 32 a generation bucket's host KV store alone was 135 MiB (a quarter of the weights), and a scoring
 * batch of 8 x 60 tokens added ~140 MiB of [rows, vocab-block] head tensors; both set the search's peak RSS.
 * At 1/16 the 125M trio runs generation buckets of ~7 rows (its 40-prompt generation took ~9-11 s instead of
 * ~7-9 s at ~15) and scoring buckets of ~2 sequences (no slower than 8 there); TinyLlama-1.1B (4 KV heads)
 * keeps the callers' batch sizes. Never below BUCKET_BUDGET_FLOOR: a 32 MiB bucket is small next to the
 * process itself (~100 MiB), and small models (the dev testbed) keep the callers' batch sizes.
 */
const BUCKET_BUDGET_SHARE = 1 / 16;
const BUCKET_BUDGET_FLOOR = 32 * 2 ** 20;

const EMBED_WEIGHT = 'model.embed_tokens.weight';

/** Host KV store bytes of one row per position (keys and values, float32, every layer). */
export function kvBytesPerPosition(spec: ModelSpec): number {
  return spec.numLayers * 2 * spec.numKvHeads * spec.headDim * 4;
}

/**
 * Head bytes of one scored position: the logits row graph's live [rows, vocab-block] float32 tensors, counted as
 * two vocabulary rows (measured ~5 live blocks of half the vocabulary at once on the 125M trio).
 */
export function headBytesPerPosition(spec: ModelSpec): number {
  return 2 * spec.vocabSize * 4;
}

/**
 * Whether a session of `have` computes every output `want` asks for (capture modes equal or not asked;
 * logits, MLP activations, embeddings and the final norm never come from generation's graph).
 */
function coveredBy(want: DecoderGraphOptions, have: DecoderGraphOptions): boolean {
  const none = want.logits === 'none' && want.mlpAct === 'none' && want.embed === 'none' && want.finalNorm === 'none';
  return none && (want.hidden === 'none' || want.hidden === have.hidden) && (!want.inputSquareSums || have.inputSquareSums);
}

export class Engine {
  private constructor(
    readonly modelDir: string,
    readonly checkpoint: ModelCheckpoint,
    readonly adapter: LoraAdapter | null,
    readonly tokenizer: ChatTokenizer,
    readonly eosTokenIds: number[],
    readonly defaultMaxNewTokens: number,
    private readonly graphs: GraphSessions,
    private readonly rowPatch: boolean,
    /** Where and how attribution sessions run: the same cache and provider as the forward graphs. */
    private readonly runtime: { cacheRoot: string; executionProvider: ExecutionProvider; threads?: number },
    private readonly rowsCapture: RowsCapture | undefined,
  ) {}

  /** Patch inputs of every linear weight (empty until setRowPatch), fed to every run of a rowPatch engine. */
  private patchFeeds: Record<string, ort.Tensor> | undefined;

  static async load(modelDir: string, opts: EngineOptions = {}): Promise<Engine> {
    const checkpoint = await ModelCheckpoint.open(modelDir);
    let adapter: LoraAdapter | null = null;
    try {
      adapter = opts.adapter === undefined ? null : await LoraAdapter.open(opts.adapter, checkpoint.spec);
      const tokenizer = await ChatTokenizer.load(modelDir, checkpoint.spec.padTokenId ?? 0);
      const gen = await readGenerationConfig(modelDir);
      const eos = gen !== null && gen.eosTokenIds.length > 0 ? gen.eosTokenIds : checkpoint.spec.eosTokenIds;
      const runtime = {
        cacheRoot: opts.cacheDir ?? defaultCacheRoot(),
        executionProvider: opts.executionProvider ?? executionProviderFromEnv(),
        ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
      };
      const graphs = new GraphSessions(checkpoint, adapter, {
        ...runtime,
        loraMode: opts.loraMode,
        compute: opts.compute ?? computeDtypeFromEnv(),
        maxSessions: opts.maxSessions,
        deviceKv: opts.deviceKv ?? deviceKvFromEnv(),
      });
      const engine = new Engine(modelDir, checkpoint, adapter, tokenizer, eos, gen?.maxNewTokens ?? 40, graphs, opts.rowPatch ?? false, runtime, opts.rowsCapture);
      if (engine.rowPatch) engine.setRowPatch(new Map());
      return engine;
    } catch (e) {
      await checkpoint.close();
      await adapter?.close();
      throw e;
    }
  }

  get spec(): ModelSpec {
    return this.checkpoint.spec;
  }

  /**
   * The rows graph's inputs_embeds for `ids` (DecoderGraphOptions.embedsInput): an untied model's embedding rows
   * read from the checkpoint, each distinct id once, upcast to float32 as the graph's Cast would; nothing for
   * a tied model, whose graph gathers from its lm_head table. LoRA adapters never target the embedding table.
   */
  private async embedFeeds(ids: BigInt64Array): Promise<Record<string, ort.Tensor>> {
    if (this.spec.tieWordEmbeddings) return {};
    const H = this.spec.hiddenSize;
    const distinct = [...new Set(Array.from(ids, Number))];
    const rows = await Promise.all(distinct.map((id) => this.checkpoint.readRowsF32(EMBED_WEIGHT, id, id + 1)));
    const at = new Map(distinct.map((id, k) => [id, rows[k]]));
    const data = new Float32Array(ids.length * H);
    ids.forEach((id, k) => data.set(at.get(Number(id))!, k * H));
    return { inputs_embeds: new ort.Tensor('float32', data, [ids.length, H]) };
  }

  /** Bytes a generation or scoring bucket may hold beyond the session (BUCKET_BUDGET_SHARE). */
  private bucketBudget(): number {
    return Math.max(BUCKET_BUDGET_FLOOR, parameterCount(this.spec) * 4 * BUCKET_BUDGET_SHARE);
  }

  /** onnxruntime sessions currently loaded (each holds a float32 copy of the weights). */
  get liveSessions(): number {
    return this.graphs.liveSessions;
  }

  /** onnxruntime sessions created so far, rebuilds after an eviction included. */
  get sessionsCreated(): number {
    return this.graphs.sessionsCreated;
  }

  /**
   * The one graph generation and teacher-forced scoring share (KV cache, logits of selected rows, target
   * log-probs): an engine that does both, as a search step does, holds one session, not two.
   */
  private rowsGraph(): DecoderGraphOptions {
    return {
      kvCache: true, logits: 'none', hidden: this.rowsCapture?.hidden ?? 'none', mlpAct: 'none', embed: 'none', finalNorm: 'none',
      inputSquareSums: this.rowsCapture?.inputSquareSums ?? false, logitRows: true, embedsInput: true,
      ...(this.rowPatch ? { rowPatch: true } : {}),
    };
  }

  /** The graph file for a set of options (built on first use); exposed for tooling and tests. */
  graphEntry(graph: DecoderGraphOptions): ReturnType<GraphSessions['entry']> {
    return this.graphs.entry(graph);
  }

  /**
   * The rows every later run of this engine uses instead of the checkpoint's (replaces the previous patch; an
   * empty map restores the checkpoint). Rows are absolute new values, as a written model would hold them.
   */
  setRowPatch(patch: RowPatch): void {
    if (!this.rowPatch) throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', 'this engine was loaded without rowPatch');
    checkRowPatch(this.checkpoint, patch);
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of linearWeightNames(this.spec)) {
      const dIn = this.checkpoint.tensor(name).shape[1];
      const p = patch.get(name) ?? { rows: new Uint32Array(0), values: new Float32Array(0) };
      const n = rowPatchInputNames(name);
      feeds[n.rows] = new ort.Tensor('int64', BigInt64Array.from(p.rows, (r) => BigInt(r)), [p.rows.length]);
      feeds[n.values] = new ort.Tensor('float32', p.values, [p.rows.length, dIn]);
    }
    this.patchFeeds = feeds;
  }

  private checkLength(ids: readonly number[]): void {
    if (ids.length === 0) throw new FgsnError('PROBES_INVALID', 'empty token sequence');
    if (ids.length > this.spec.maxPositionEmbeddings) {
      throw new FgsnError('ENGINE_SEQUENCE_TOO_LONG', `sequence of ${ids.length} tokens exceeds max_position_embeddings ${this.spec.maxPositionEmbeddings}`);
    }
  }

  private async encodeInputs(inputs: readonly CaptureInput[], responses?: readonly string[]): Promise<{ ids: number[]; promptLength: number }[]> {
    if (responses !== undefined && responses.length !== inputs.length) {
      throw new FgsnError('PROBES_INVALID', `${responses.length} responses for ${inputs.length} prompts`);
    }
    return Promise.all(inputs.map(async (x, j) => {
      const enc = typeof x === 'string' ? await this.tokenizer.encodeChat(x, responses?.[j]) : { ids: [...x], promptLength: x.length };
      this.checkLength(enc.ids);
      return enc;
    }));
  }

  async capture(inputs: readonly CaptureInput[], what: CaptureRequest, opts: CaptureOptions = {}): Promise<CaptureResult> {
    const graph: DecoderGraphOptions = {
      kvCache: false,
      logits: what.logits ?? 'none',
      hidden: what.hidden ?? 'none',
      mlpAct: what.mlpAct ?? 'none',
      embed: what.embed ?? 'none',
      finalNorm: what.finalNorm ?? 'none',
      inputSquareSums: what.inputSquareSums ?? false,
      ...(this.rowPatch ? { rowPatch: true } : {}),
    };
    const encoded = await this.encodeInputs(inputs, opts.responses);
    const rows = this.rowsGraph();
    const onRows = this.rowsCapture !== undefined && coveredBy(graph, rows);
    const lease = await this.graphs.acquire(onRows ? rows : graph);
    const session = lease.session;
    try {
      return await this.captureWith(session, graph, encoded, opts, onRows);
    } finally {
      lease.release();
    }
  }

  /**
   * `graph` names what to capture; `onRows`: the session is generation's graph (rowsGraph), which computes at
   * least that: its logits run on one dummy row and only the asked-for outputs are fetched.
   */
  private async captureWith(
    session: ort.InferenceSession, graph: DecoderGraphOptions, encoded: { ids: number[]; promptLength: number }[], opts: CaptureOptions, onRows: boolean,
  ): Promise<CaptureResult> {
    const spec = this.spec;
    const sequences: SequenceCapture[] = encoded.map((e) => ({ ids: e.ids, promptLength: e.promptLength }));
    const sums = new Map<string, Float64Array>();
    let counted = 0;
    const pick = (data: Float32Array, mode: Capture, p: ReturnType<typeof leftPad>, b: number, features: number): Float32Array =>
      mode === 'all' ? unpadRows(data, p, b, features) : data.slice(b * features, (b + 1) * features);

    for (const bucket of lengthBuckets(encoded.map((e) => e.ids.length), opts.batchSize ?? DEFAULT_BATCH)) {
      const p = leftPad(bucket.map((j) => encoded[j].ids), this.tokenizer.padTokenId);
      const which = opts.squareSumTokens ?? 'all';
      const tw = graph.inputSquareSums
        ? tokenWeights(
          p,
          (b) => (which === 'response' ? encoded[bucket[b]].promptLength : 0),
          (b) => (which === 'prompt' ? encoded[bucket[b]].promptLength : p.lengths[b]),
        )
        : undefined;
      const rowsFeeds: Partial<StepInput> = onRows
        ? {
          logitRows: new BigInt64Array(1),
          fetches: session.outputNames.filter((n) => (graph.hidden !== 'none' && n.startsWith('hidden.')) || (graph.inputSquareSums && n.startsWith('sqsum.'))),
        }
        : {};
      const extraFeeds = onRows ? { ...this.patchFeeds, ...(await this.embedFeeds(p.inputIds)) } : this.patchFeeds;
      const { outputs } = await runStep(session, spec, { ...p, tokenWeights: tw, extraFeeds, ...rowsFeeds });
      const data = (name: string): Float32Array => outputs[name].data as Float32Array;
      bucket.forEach((j, b) => {
        const s = sequences[j];
        if (graph.embed !== 'none') s.embed = pick(data('embed'), graph.embed, p, b, spec.hiddenSize);
        if (graph.hidden !== 'none') s.hidden = Array.from({ length: spec.numLayers }, (_, i) => pick(data(`hidden.${i}`), graph.hidden, p, b, spec.hiddenSize));
        if (graph.mlpAct !== 'none') s.mlpAct = Array.from({ length: spec.numLayers }, (_, i) => pick(data(`mlp_act.${i}`), graph.mlpAct, p, b, spec.intermediateSize));
        if (graph.finalNorm !== 'none') s.finalNorm = pick(data('final_norm'), graph.finalNorm, p, b, spec.hiddenSize);
        if (graph.logits !== 'none') s.logits = pick(data('logits'), graph.logits, p, b, spec.vocabSize);
      });
      if (tw !== undefined) {
        for (const v of tw) counted += v;
        for (const name of Object.keys(outputs)) {
          if (!name.startsWith('sqsum.')) continue;
          const src = data(name);
          let acc = sums.get(name);
          if (acc === undefined) sums.set(name, (acc = new Float64Array(src.length)));
          for (let i = 0; i < src.length; i++) acc[i] += src[i];
        }
      }
    }
    const result: CaptureResult = { sequences };
    if (graph.inputSquareSums) {
      const byInput = new Map([...sums].map(([k, v]) => [k, Float32Array.from(v)]));
      result.inputSquareSums = new Map();
      for (let i = 0; i < spec.numLayers; i++) {
        for (const m of linearModules(spec)) {
          const v = byInput.get(`sqsum.${i}.${SQSUM_INPUT_OF[m]}`);
          if (v !== undefined) result.inputSquareSums.set(linearWeightName(i, m), v);
        }
      }
      result.squareSumTokenCount = counted;
    }
    return result;
  }

  /**
   * Teacher-forced log-probabilities of every next token (prompt + response when responses are given), computed
   * in the graph: only one float per scored position leaves onnxruntime, never logits over the vocabulary. Runs
   * on generation's graph (rowsGraph) with an empty past, logits computed only at positions that predict a token.
   */
  async logProbs(inputs: readonly CaptureInput[], opts: { responses?: readonly string[]; batchSize?: number } = {}): Promise<SequenceLogProbs[]> {
    const encoded = await this.encodeInputs(inputs, opts.responses);
    const lease = await this.graphs.acquire(this.rowsGraph());
    try {
      const out: SequenceLogProbs[] = new Array(encoded.length);
      const headBound: BucketBound = { budgetBytes: this.bucketBudget(), rowBytes: (len) => len * headBytesPerPosition(this.spec) };
      for (const bucket of lengthBuckets(encoded.map((e) => e.ids.length), opts.batchSize ?? DEFAULT_BATCH, headBound)) {
        const p = leftPad(bucket.map((j) => encoded[j].ids), this.tokenizer.padTokenId);
        const T = p.length;
        // Position t of a row predicts its token t + 1: every real position but the last is scored, in order.
        const rows: bigint[] = [];
        const targets: bigint[] = [];
        for (const [b, j] of bucket.entries()) {
          const ids = encoded[j].ids;
          const pad = T - ids.length;
          for (let t = 0; t + 1 < ids.length; t++) {
            rows.push(BigInt(b * T + pad + t));
            targets.push(BigInt(ids[t + 1]));
          }
        }
        let lp: Float32Array = new Float32Array(0);
        if (rows.length > 0) {
          const { outputs } = await runStep(lease.session, this.spec, {
            ...p, logitRows: BigInt64Array.from(rows), targetIds: BigInt64Array.from(targets), fetches: ['target_logprob'],
            extraFeeds: { ...this.patchFeeds, ...(await this.embedFeeds(p.inputIds)) },
          });
          lp = outputs.target_logprob.data as Float32Array;
        }
        let at = 0;
        for (const j of bucket) {
          const e = encoded[j];
          const n = Math.max(0, e.ids.length - 1);
          out[j] = { ids: e.ids, promptLength: e.promptLength, logprobs: lp.slice(at, at + n) };
          at += n;
        }
      }
      return out;
    } finally {
      lease.release();
    }
  }

  async generate(prompts: readonly CaptureInput[], opts: GenerateOptions = {}): Promise<Generation[]> {
    const maxNew = opts.maxNewTokens ?? this.defaultMaxNewTokens;
    const stop = new Set(opts.stopTokenIds ?? this.eosTokenIds);
    if (opts.hidden !== undefined && this.rowsCapture?.hidden !== opts.hidden) {
      throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `generate(hidden: '${opts.hidden}') needs an engine loaded with rowsCapture.hidden '${opts.hidden}'`);
    }
    const encoded = await this.encodeInputs(prompts);
    const lease = await this.graphs.acquire(this.rowsGraph());
    try {
      return await this.generateWith(lease.session, encoded, maxNew, stop, opts.batchSize ?? DEFAULT_BATCH, opts.onBatch, opts.hidden === 'last');
    } finally {
      lease.release();
    }
  }

  private async generateWith(
    session: ort.InferenceSession, encoded: { ids: number[]; promptLength: number }[], maxNew: number, stop: Set<number>, batchSize: number,
    onBatch?: (done: number, total: number) => void,
    promptHidden = false,
  ): Promise<Generation[]> {
    let finished = 0;
    const spec = this.spec;
    const results: Generation[] = new Array(encoded.length);
    const pad = this.tokenizer.padTokenId;

    // With rowsCapture, what the graph also computes stays inside onnxruntime unless asked for (promptHidden).
    const stepFetches = this.rowsCapture === undefined
      ? undefined
      : ['top2_logits', 'top2_ids', ...Array.from({ length: spec.numLayers }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat()];
    const prefillFetches = stepFetches !== undefined && promptHidden
      ? [...stepFetches, ...Array.from({ length: spec.numLayers }, (_, i) => `hidden.${i}`)]
      : stepFetches;
    const kvBound: BucketBound = { budgetBytes: this.bucketBudget(), rowBytes: (len) => (len + maxNew) * kvBytesPerPosition(spec) };
    for (const bucket of lengthBuckets(encoded.map((e) => e.ids.length), batchSize, kvBound)) {
      const p = leftPad(bucket.map((j) => encoded[j].ids), pad);
      const gen: number[][] = bucket.map(() => []);
      const margins: number[][] = bucket.map(() => []);
      const done: ('stop' | 'length' | null)[] = bucket.map(() => null);
      const lastPos = p.lengths.map((l) => l - 1);
      // Rows still generating (indices into the bucket), and their attention-mask rows.
      let rows = bucket.map((_, b) => b);
      let masks = rows.map((b) => Array.from(p.attentionMask.subarray(b * p.length, (b + 1) * p.length), Number));
      const cache = await generationKv(session, this.graphs.sessionConfig, spec, bucket.length, p.length + maxNew);
      const extraFeeds = this.patchFeeds;
      // Logits of each row's last position only: with left padding that is position T - 1 of every row (targets
      // are dummies: target_logprob is not read).
      const lastRows = BigInt64Array.from(bucket, (_, b) => BigInt(b * p.length + p.length - 1));
      let step = await runStep(session, spec, {
        ...p, logitRows: lastRows, extraFeeds: { ...extraFeeds, ...(await this.embedFeeds(p.inputIds)) }, ...(prefillFetches !== undefined ? { fetches: prefillFetches } : {}),
      });
      // The prefill's hidden outputs are [B, hidden] at position T - 1: every row's last prompt token.
      const prefillHidden = bucket.map((_, b) => (promptHidden
        ? Array.from({ length: spec.numLayers }, (_, i) => (step.outputs[`hidden.${i}`].data as Float32Array).slice(b * spec.hiddenSize, (b + 1) * spec.hiddenSize))
        : undefined));
      for (let n = 0; ; n++) {
        // The graph's two largest logits per row (ties to the lower id, as a first-max argmax): the token and
        // its margin over the runner-up.
        const top = step.outputs.top2_logits.data as Float32Array;
        const topIds = step.outputs.top2_ids.data as BigInt64Array;
        const next: number[] = [];
        rows.forEach((b, r) => {
          const tok = Number(topIds[2 * r]);
          margins[b].push(top[2 * r] - top[2 * r + 1]);
          if (stop.has(tok)) {
            done[b] = 'stop';
          } else {
            gen[b].push(tok);
            // The context is full once the token just chosen would sit past max_position_embeddings.
            if (gen[b].length >= maxNew || p.lengths[b] + gen[b].length >= spec.maxPositionEmbeddings) done[b] = 'length';
          }
          next.push(tok);
        });
        if (done.every((d) => d !== null) || n + 1 >= maxNew) break;
        // Finished rows leave the batch (their cache rows are dropped): the others' results do not depend on them.
        const keep = rows.map((b, r) => (done[b] === null ? r : -1)).filter((r) => r >= 0);
        await cache.append(step.added!);
        if (keep.length < rows.length) {
          await cache.keepRows(keep);
          rows = keep.map((r) => rows[r]);
          masks = keep.map((r) => masks[r]);
        }
        const past = await cache.view();
        const tokens = BigInt64Array.from(keep.map((r) => next[r]), BigInt);
        masks = masks.map((m) => [...m, 1]);
        step = await runStep(session, spec, {
          batch: rows.length,
          length: 1,
          inputIds: tokens,
          attentionMask: BigInt64Array.from(masks.flat(), BigInt),
          positionIds: BigInt64Array.from(rows, (b) => BigInt(++lastPos[b])),
          past,
          // One new position per row: row r's is flat position r.
          logitRows: BigInt64Array.from(rows, (_, r) => BigInt(r)),
          extraFeeds: { ...extraFeeds, ...(await this.embedFeeds(tokens)) },
          ...(stepFetches !== undefined ? { fetches: stepFetches } : {}),
        });
      }
      cache.dispose(step.added);
      await Promise.all(bucket.map(async (j, b) => {
        results[j] = {
          text: await this.tokenizer.decode(gen[b]),
          ids: gen[b],
          promptIds: encoded[j].ids,
          finishReason: done[b] ?? 'length',
          margins: margins[b],
          ...(prefillHidden[b] !== undefined ? { promptHidden: prefillHidden[b] } : {}),
        };
      }));
      finished += bucket.length;
      onBatch?.(finished, encoded.length);
    }
    return results;
  }

  /**
   * First-order attribution of the teacher-forced NLL of `responses` (one per prompt, chat-formatted with this
   * engine's tokenizer) under this engine's model and adapter: per linear weight row, <dL/dW[r], M_k[r]> for
   * every direction set. Runs in its own float32 sessions (attribution/), on this engine's cache and provider;
   * a row patch set on this engine (setRowPatch) does not apply: `opts.patch` does.
   */
  async attribute(prompts: readonly string[], responses: readonly string[], opts: AttributeOptions): Promise<AttributionResult> {
    if (prompts.length !== responses.length) {
      throw new FgsnError('DEFENSE_OPTION_INVALID', `attribution got ${prompts.length} prompts and ${responses.length} responses`);
    }
    const sequences = await Promise.all(prompts.map(async (p, i) => {
      const e = await this.tokenizer.encodeChat(p, responses[i]);
      return { ids: e.ids, promptLength: e.promptLength };
    }));
    const maxDirectionBytes = opts.layersPerPass === undefined
      ? opts.maxDirectionBytes
      : Math.max(1, Math.min(this.spec.numLayers, opts.layersPerPass)) * layerDirectionBytes(this.spec, opts.directions.length);
    return scoreSequences(this.checkpoint, this.adapter, sequences, {
      directions: opts.directions,
      ...(opts.reduction !== undefined ? { reduction: opts.reduction } : {}),
      ...(opts.batchSize !== undefined ? { batchSize: opts.batchSize } : {}),
      ...(maxDirectionBytes !== undefined ? { maxDirectionBytes } : {}),
      ...(opts.keepActivationBytes !== undefined ? { keepActivationBytes: opts.keepActivationBytes } : {}),
      ...(opts.patch !== undefined ? { patch: opts.patch } : {}),
      ...this.runtime,
      padTokenId: this.tokenizer.padTokenId,
    });
  }

  /** Releases every onnxruntime session (each holds a float32 copy of the weights); later runs build them again. */
  async releaseSessions(): Promise<void> {
    await this.graphs.close();
  }

  async close(): Promise<void> {
    await this.graphs.close();
    await this.checkpoint.close();
    await this.adapter?.close();
  }
}

/** Bytes of one layer's direction inputs for `sets` direction sets, as attribution's layerChunks counts them. */
function layerDirectionBytes(spec: ModelSpec, sets: number): number {
  return scoredWeights(spec, 0, 1).reduce((n, w) => {
    const [rows, cols] = linearWeightShape(spec, w) as [number, number];
    return n + rows * cols;
  }, 0) * 4 * sets;
}

export function loadEngine(modelDir: string, opts: EngineOptions = {}): Promise<Engine> {
  return Engine.load(modelDir, opts);
}
