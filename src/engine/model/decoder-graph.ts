/**
 * The decoder forward graph for llama / mistral / qwen2 (HF eager semantics). One graph serves prefill and
 * KV-cache decode: past keys/values [P, B, KV, D] (time-major) may have P = 0.
 *
 * Inputs: input_ids [B, T] int64, attention_mask [B, P+T] int64, position_ids [B, T] int64,
 * past_key_values.{i}.key/value [P, B, KV, D] (when kvCache; time-major), token_weights [B, T] float32 (when square sums
 * are captured: 1 for tokens to count, 0 for padding or tokens to leave out).
 *
 * logit_rows [K] int64 and target_ids [K] int64 (when logitRows).
 *
 * Outputs (selected by DecoderGraphOptions): logits (or, with logitRows, target_logprob / top2_logits / top2_ids
 * of the picked positions), present.{i}.key/value (the T NEW positions only,
 * [B, KV, T, D]), embed, hidden.{i} (residual after
 * layer i), mlp_act.{i} (silu(gate) * up), final_norm, and square sums of linear inputs. Square sums are one
 * output per DISTINCT input (q/k/v share one, gate/up share one): sqsum.{i}.attn_in (q/k/v_proj),
 * sqsum.{i}.o_in (o_proj), sqsum.{i}.mlp_in (gate/up_proj), sqsum.{i}.down_in (down_proj); each is [d_in],
 * summed over the batch and over tokens weighted by token_weights. SQSUM_INPUT_OF maps weights to them.
 */
import type { LinearModule, ModelSpec } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import {
  WeightTable, applyRope, attentionMask4d, dimsOf, gqaAttention, lastToken, linear, linearRowBlocks, loraBranch, rmsNorm,
  castTo, patchedRows, siluGate, toHeads, unflatten, weightedSquareSum, type ComputeDtype, type WeightResolver,
} from '../onnx/blocks.js';
import { GraphBuilder, elemCode, type Dim } from '../onnx/graph-builder.js';
import { scaledRopeTables } from '../onnx/rope-graph.js';
import { familyAttention, geluTanhGate, offsetNormWeight, scaleBy, slidingMask4d, softcap, splitLast } from '../onnx/family-blocks.js';
import type { Dims } from '../onnx/blocks.js';

export type Capture = 'none' | 'last' | 'all';

export interface DecoderGraphOptions {
  kvCache: boolean;
  logits: Capture;
  hidden: Capture;
  mlpAct: Capture;
  embed: Capture;
  finalNorm: Capture;
  inputSquareSums: boolean;
  /** LoRA applied as extra MatMuls: base weight name -> adapter tensors (refs) and scaling. */
  lora?: Map<string, { a: string; b: string; scaling: number }>;
  /**
   * Compute type (default float32). float16 is meant for GPU providers: weights are cast to half once at
   * load (half the memory of float32 compute), the residual stream and linears run in half, RMSNorm and
   * softmax in float32. Every output, KV cache included, stays float32 at the graph's edge.
   */
  compute?: ComputeDtype;
  /**
   * Every linear weight takes a row patch as graph inputs (patch.<weight>.rows [k] int64 and
   * patch.<weight>.values [k, in] float32; k may be 0): see patchedRows. The engine feeds them.
   */
  rowPatch?: boolean;
  /**
   * Logits of selected positions only: inputs logit_rows [K] int64 (flat indices b * T + t into the batch) and
   * target_ids [K] int64; outputs target_logprob [K] = log softmax(logits)[target], top2_logits [K, 2] and
   * top2_ids [K, 2] int64 (the two largest logits, ties to the lower id). One graph (with kvCache) then serves
   * generation (K = the batch's last positions, dummy targets, read the top two) and teacher-forced scoring (an
   * empty past, K = every position that predicts a next token, read target_logprob), so an engine doing both
   * holds one session, one float32 copy of the weights. Computed per lm_head row block: no [K, vocab] tensor is
   * concatenated or output. Needs logits 'none' and finalNorm 'none'.
   */
  logitRows?: boolean;
  /**
   * An untied model's token embeddings come in as input inputs_embeds [batch * tokens, hidden] float32 (the
   * engine reads the rows from the checkpoint) instead of a Gather over the table inside the graph. Why:
   * onnxruntime faults in the whole mapped table at session creation, and for an untied table that is resident
   * memory the graph never needs (46 MiB, 0.18x the checkpoint, on the 125M trio; bench/scale). input_ids stays
   * an input (it gives the graph its batch and token dimensions). Ignored for tied embeddings, whose table is
   * also the lm_head.
   */
  embedsInput?: boolean;
}

/** Smallest float32 lm_head block (see WeightTable.rowBlocks): above glibc's 32 MiB mmap threshold cap. */
export const LM_HEAD_BLOCK_BYTES = 40 * 2 ** 20;

export const DEFAULT_GRAPH_OPTIONS: DecoderGraphOptions = {
  kvCache: false, logits: 'all', hidden: 'none', mlpAct: 'none', embed: 'none', finalNorm: 'none', inputSquareSums: false,
};

export type SqsumInput = 'attn_in' | 'o_in' | 'mlp_in' | 'down_in';

export const SQSUM_INPUT_OF: Record<LinearModule, SqsumInput> = {
  q_proj: 'attn_in', k_proj: 'attn_in', v_proj: 'attn_in', o_proj: 'o_in', gate_proj: 'mlp_in', up_proj: 'mlp_in', down_proj: 'down_in',
  qkv_proj: 'attn_in', gate_up_proj: 'mlp_in',
};

export function checkSupported(spec: ModelSpec): void {
  const problems: string[] = [];
  if (spec.hiddenAct !== 'silu' && spec.hiddenAct !== 'gelu_pytorch_tanh') problems.push(`hidden_act ${String(spec.hiddenAct)}`);
  if (spec.numHeads % spec.numKvHeads !== 0) problems.push('num_attention_heads not a multiple of num_key_value_heads');
  if (spec.headDim % 2 !== 0) problems.push('odd head_dim');
  if (problems.length > 0) {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `model not supported by the graph builder: ${problems.join(', ')}`, { details: problems });
  }
}

/**
 * Builds the graph. `resolve` gives, for each checkpoint tensor name (and each LoRA tensor name referenced
 * in opts.lora), where its bytes live relative to the folder the .onnx file is written into.
 */
export function buildDecoderGraph(spec: ModelSpec, resolve: WeightResolver, opts: DecoderGraphOptions): GraphBuilder {
  checkSupported(spec);
  const g = new GraphBuilder(`fgsn_${spec.family}_decoder`);
  const w = new WeightTable(g, resolve);
  const H = spec.hiddenSize;
  const D = spec.headDim;
  const NH = spec.numHeads;
  const KV = spec.numKvHeads;
  const ct = opts.compute ?? 'float32';
  const W = (name: string): string => w.as(name, ct);
  const toF32 = (x: string): string => castTo(g, x, ct, 'float32');

  const inputIds = g.input('input_ids', 'int64', ['batch', 'tokens']);
  const attnMask = g.input('attention_mask', 'int64', ['batch', 'total']);
  const positionIds = g.input('position_ids', 'int64', ['batch', 'tokens']);
  const d = dimsOf(g, inputIds, attnMask);
  const mask = attentionMask4d(g, attnMask, d);
  const rope = scaledRopeTables(g, positionIds, spec);
  const cos = castTo(g, rope.cos, 'float32', ct);
  const sin = castTo(g, rope.sin, 'float32', ct);
  const fam = familyLayerParts(g, spec, positionIds, mask, d, ct, W);
  const tokenWeights = opts.inputSquareSums
    ? g.op('Reshape', [g.input('token_weights', 'float32', ['batch', 'tokens']), g.constI64([-1, 1])])
    : '';

  const capture = (name: string, flat: string, features: number, mode: Capture): void => {
    if (mode === 'none') return;
    const x3 = unflatten(g, toF32(flat), d, features);
    if (mode === 'all') g.output(name, x3, 'float32', ['batch', 'tokens', features]);
    else g.output(name, lastToken(g, x3, d), 'float32', ['batch', features]);
  };

  const proj = (x: string, layer: number, group: 'self_attn' | 'mlp', mod: LinearModule, hasBias: boolean): string => {
    const name = `model.layers.${layer}.${group}.${mod}.weight`;
    const bias = hasBias ? W(`model.layers.${layer}.${group}.${mod}.bias`) : undefined;
    const y = linear(g, x, W(name), bias);
    const l = opts.lora?.get(name);
    const full = l === undefined ? y : g.op('Add', [y, loraBranch(g, x, W(l.a), W(l.b), l.scaling)]);
    return opts.rowPatch ? patchedRows(g, x, full, name, w.ref(name).shape[1], bias, ct) : full;
  };

  const sqsum = (layer: number, which: SqsumInput, x: string, features: number): void => {
    // Summed in float32 whatever the compute type: a sum of squares over many tokens overflows half.
    if (opts.inputSquareSums) g.output(`sqsum.${layer}.${which}`, weightedSquareSum(g, toF32(x), tokenWeights), 'float32', [features]);
  };

  // An untied embedding table is gathered in its stored dtype and only the picked rows are cast: a
  // compute-type copy of the (often largest) table would cost up to 2x its size for nothing.
  const embedName = 'model.embed_tokens.weight';
  let h: string;
  if (opts.embedsInput === true && !spec.tieWordEmbeddings) {
    h = castTo(g, g.input('inputs_embeds', 'float32', ['batch_tokens', H]), 'float32', ct);
  } else {
    const embedStored = w.stored(embedName);
    const gatherFrom = spec.tieWordEmbeddings ? W(embedName) : embedStored.value;
    let rows = g.op('Gather', [gatherFrom, inputIds], { axis: 0 });
    if (gatherFrom === embedStored.value && embedStored.elem !== ct) rows = g.op('Cast', [rows], { to: elemCode(ct) });
    h = g.op('Reshape', [rows, g.constI64([-1, H])]);
  }
  if (spec.embedScale !== undefined) h = scaleBy(g, h, spec.embedScale, ct);
  capture('embed', h, H, opts.embed);

  for (let i = 0; i < spec.numLayers; i++) {
    const p = `model.layers.${i}`;
    const xn = fam.norm(h, `${p}.input_layernorm.weight`);
    sqsum(i, 'attn_in', xn, H);
    // Phi-3 computes q/k/v in one product and splits its output ([q; k; v] rows).
    const [qf, kf, vf] = spec.fusedProjections
      ? splitLast(g, proj(xn, i, 'self_attn', 'qkv_proj', false), [NH * D, KV * D, KV * D])
      : (['q_proj', 'k_proj', 'v_proj'] as const).map((m) => proj(xn, i, 'self_attn', m, spec.qkvBias));
    // Qwen3 / Gemma 3 normalise each query and key head (RMSNorm over head_dim) before the rotation.
    const qh = spec.qkNorm ? fam.norm(toHeads(g, qf, d, NH, D), `${p}.self_attn.q_norm.weight`) : toHeads(g, qf, d, NH, D);
    const kh = spec.qkNorm ? fam.norm(toHeads(g, kf, d, KV, D), `${p}.self_attn.k_norm.weight`) : toHeads(g, kf, d, KV, D);
    const rc = fam.rope(i) ?? { cos, sin };
    const q = applyRope(g, qh, rc.cos, rc.sin, D);
    let k = applyRope(g, kh, rc.cos, rc.sin, D);
    let v = toHeads(g, vf, d, KV, D);
    if (opts.kvCache) {
      // The past comes time-major, [P, B, KV, D]: the caller keeps one buffer per layer and appends in place, so
      // the first P positions are one contiguous view. Only the new positions go out (present, [B, KV, T, D]):
      // the full cache then exists once, in the caller's buffer, instead of as input, output and JS copy.
      const kvShape: Dim[] = ['past', 'batch', KV, D];
      const newShape: Dim[] = ['batch', KV, 'seq', D];
      const past = (kind: 'key' | 'value'): string =>
        castTo(g, g.op('Transpose', [g.input(`past_key_values.${i}.${kind}`, 'float32', kvShape)], { perm: [1, 2, 0, 3] }), 'float32', ct);
      const pk = past('key');
      const pv = past('value');
      g.output(`present.${i}.key`, toF32(k), 'float32', newShape);
      g.output(`present.${i}.value`, toF32(v), 'float32', newShape);
      k = g.op('Concat', [pk, k], { axis: 2 });
      v = g.op('Concat', [pv, v], { axis: 2 });
    }
    const ctx = fam.attention(i, q, k, v) ?? gqaAttention(g, q, k, v, mask, d, { numHeads: NH, numKvHeads: KV, headDim: D, compute: ct });
    sqsum(i, 'o_in', ctx, NH * D);
    const attnOut = proj(ctx, i, 'self_attn', 'o_proj', spec.oBias);
    // Gemma's sandwich: the attention and MLP outputs are normalised before they join the residual.
    h = g.op('Add', [h, spec.sandwichNorms ? fam.norm(attnOut, `${p}.post_attention_layernorm.weight`) : attnOut]);

    const xn2 = fam.norm(h, `${p}.${spec.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`);
    sqsum(i, 'mlp_in', xn2, H);
    const [gateOut, upOut] = spec.fusedProjections
      ? splitLast(g, proj(xn2, i, 'mlp', 'gate_up_proj', false), [spec.intermediateSize, spec.intermediateSize])
      : [proj(xn2, i, 'mlp', 'gate_proj', spec.mlpBias), proj(xn2, i, 'mlp', 'up_proj', spec.mlpBias)];
    const act = spec.hiddenAct === 'gelu_pytorch_tanh' ? geluTanhGate(g, gateOut, upOut, ct) : siluGate(g, gateOut, upOut);
    capture(`mlp_act.${i}`, act, spec.intermediateSize, opts.mlpAct);
    sqsum(i, 'down_in', act, spec.intermediateSize);
    const mlpOut = proj(act, i, 'mlp', 'down_proj', spec.mlpBias);
    h = g.op('Add', [h, spec.sandwichNorms ? fam.norm(mlpOut, `${p}.post_feedforward_layernorm.weight`) : mlpOut]);
    capture(`hidden.${i}`, h, H, opts.hidden);
  }

  if (opts.logits === 'none' && opts.finalNorm === 'none' && !opts.logitRows) return g;
  const normW = fam.normWeight('model.norm.weight');
  const capLogits = (x: string): string => (spec.finalSoftcap ? castTo(g, softcap(g, castTo(g, x, ct, 'float32'), spec.finalSoftcap), 'float32', ct) : x);
  // An untied lm_head is the largest weight: split so its prepacking transient is one block, not all of it.
  const spans = spec.tieWordEmbeddings
    ? [{ value: W(embedName), start: 0, rows: spec.vocabSize }]
    : w.rowBlockSpans('lm_head.weight', LM_HEAD_BLOCK_BYTES, ct);
  const headW = spans.map((b) => b.value);
  if (opts.logitRows) {
    if (opts.logits !== 'none' || opts.finalNorm !== 'none') {
      throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', 'logitRows computes its own logits: logits and finalNorm must be none');
    }
    // Norm and lm_head run on the K picked rows of the flat [B*T, H] residual only, one lm_head row block at a
    // time: each block's logits give its logsumexp, the target's logit where the target falls in it, and its
    // two largest logits; nothing the size of [K, vocab] is concatenated or leaves the graph.
    const hn = rmsNorm(g, g.op('Gather', [h, g.input('logit_rows', 'int64', ['rows'])], { axis: 0 }), normW, spec.rmsNormEps, ct);
    const targets = g.op('Reshape', [g.input('target_ids', 'int64', ['rows']), g.constI64([-1, 1])]);
    const two = g.constI64([2]);
    const lses: string[] = [];
    const atTarget: string[] = [];
    const topV: string[] = [];
    const topI: string[] = [];
    for (const b of spans) {
      const z = toF32(capLogits(linear(g, hn, b.value)));
      lses.push(g.op('ReduceLogSumExp', [z], { axes: [1], keepdims: 1 }));
      const local = g.op('Sub', [targets, g.constI64([b.start], [])]);
      const inBlock = g.op('And', [g.op('GreaterOrEqual', [local, g.constI64([0], [])]), g.op('Less', [local, g.constI64([b.rows], [])])]);
      const idx = g.op('Min', [g.op('Max', [local, g.constI64([0], [])]), g.constI64([b.rows - 1], [])]);
      atTarget.push(g.op('Where', [inBlock, g.op('GatherElements', [z, idx], { axis: 1 }), g.constF32([-Infinity], [])]));
      const [v, ix] = g.node('TopK', [z, two], { outputs: 2, attrs: { axis: 1, largest: 1, sorted: 1 } });
      topV.push(v);
      topI.push(g.op('Add', [ix, g.constI64([b.start], [])]));
    }
    const cat = (xs: string[]): string => (xs.length === 1 ? xs[0] : g.op('Concat', xs, { axis: 1 }));
    const lse = spans.length === 1 ? lses[0] : g.op('ReduceLogSumExp', [cat(lses)], { axes: [1], keepdims: 1 });
    const tv = spans.length === 1 ? atTarget[0] : g.op('ReduceMax', [cat(atTarget)], { axes: [1], keepdims: 1 });
    g.output('target_logprob', g.op('Reshape', [g.op('Sub', [tv, lse]), g.constI64([-1])]), 'float32', ['rows']);
    // The best two over the blocks' best two: TopK breaks ties toward the lower position, and the candidates are
    // in vocabulary order, so the winner is the lowest-index maximum, as a first-max argmax over the row.
    const [v2, pos] = g.node('TopK', [cat(topV), two], { outputs: 2, attrs: { axis: 1, largest: 1, sorted: 1 } });
    g.output('top2_logits', v2, 'float32', ['rows', 2]);
    g.output('top2_ids', g.op('GatherElements', [cat(topI), pos], { axis: 1 }), 'int64', ['rows', 2]);
    return g;
  }
  if (opts.logits === 'last' && opts.finalNorm !== 'all') {
    // Only the last position: norm and lm_head on [B, H] instead of [B*T, H].
    const hl = lastToken(g, unflatten(g, h, d, H), d);
    const hn = rmsNorm(g, hl, normW, spec.rmsNormEps, ct);
    if (opts.finalNorm === 'last') g.output('final_norm', toF32(hn), 'float32', ['batch', H]);
    g.output('logits', toF32(capLogits(linearRowBlocks(g, hn, headW))), 'float32', ['batch', spec.vocabSize]);
    return g;
  }
  const hn = rmsNorm(g, h, normW, spec.rmsNormEps, ct);
  capture('final_norm', hn, H, opts.finalNorm);
  if (opts.logits !== 'none') capture('logits', capLogits(linearRowBlocks(g, hn, headW)), spec.vocabSize, opts.logits);
  return g;
}

export interface FamilyLayerParts {
  /** RMSNorm with the checkpoint's weight `name` (as (1 + w) where the family stores offsets). */
  norm: (x: string, name: string) => string;
  /** The weight value the norm multiplies by. */
  normWeight: (name: string) => string;
  /** Rope tables of layer i when they differ from the model's (Gemma 3's local layers), else null. */
  rope: (layer: number) => { cos: string; sin: string } | null;
  /** Attention of layer i when it differs from plain gqaAttention (sliding window, scale, soft cap), else null. */
  attention: (layer: number, q: string, k: string, v: string) => string | null;
}

/**
 * The per-layer family switches of the forward graph, built once per graph (masks and rope tables are shared
 * by the layers that use them). Families on the llama path get the plain blocks back (null = use the default).
 */
export function familyLayerParts(
  g: GraphBuilder, spec: ModelSpec, positionIds: string, mask: string, d: Dims, ct: ComputeDtype, W: (name: string) => string,
): FamilyLayerParts {
  const normWeight = (name: string): string => (spec.normWeightOffset ? offsetNormWeight(g, W(name), ct) : W(name));
  let localRope: { cos: string; sin: string } | null = null;
  let slidingMask: string | null = null;
  const custom = spec.attnScale !== undefined || (spec.attnSoftcap ?? null) !== null;
  const sliding = (i: number): boolean => (spec.slidingWindow ?? null) !== null && spec.slidingLayers?.[i] === true;
  return {
    normWeight,
    norm: (x, name) => rmsNorm(g, x, normWeight(name), spec.rmsNormEps, ct),
    rope: (i) => {
      if (spec.localRopeTheta === undefined || !sliding(i)) return null;
      if (localRope === null) {
        const t = scaledRopeTables(g, positionIds, { headDim: spec.headDim, ropeTheta: spec.localRopeTheta, ropeScaling: null });
        localRope = { cos: castTo(g, t.cos, 'float32', ct), sin: castTo(g, t.sin, 'float32', ct) };
      }
      return localRope;
    },
    attention: (i, q, k, v) => {
      const slides = sliding(i);
      if (!slides && !custom) return null;
      if (slides && slidingMask === null) slidingMask = slidingMask4d(g, mask, d, spec.slidingWindow as number);
      return familyAttention(g, q, k, v, slides ? (slidingMask as string) : mask, d, {
        numHeads: spec.numHeads, numKvHeads: spec.numKvHeads, headDim: spec.headDim, compute: ct,
        scale: spec.attnScale ?? 1 / Math.sqrt(spec.headDim), softcap: spec.attnSoftcap ?? null,
      });
    },
  };
}
