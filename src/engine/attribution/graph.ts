/**
 * The attribution graph: the decoder forward (same blocks as the engine's forward graph) followed by a
 * hand-built backward of the summed response NLL, reduced inside the graph to per-row inner products
 *
 *   score.{k}.{W}[r] = <dL/dW[r, :], M_k[r, :]> = sum_n delta[n, r] * (x_n . M_k[r, :])
 *
 * with x the linear's input and delta the gradient at its output. dL/dW itself is never formed: per linear
 * and direction set the graph makes one extra [N, out] product (x M_k^T), the size of the linear's output.
 *
 * onnxruntime-node has no autograd, so every backward rule is written out below (RMSNorm with float32
 * variance, SiLU gate, GQA attention with softmax, rotate_half RoPE, residuals, lm_head / tied embeddings,
 * optional LoRA branches); the float64 reference in reference.ts is the independent check.
 *
 * Inputs: input_ids, attention_mask, position_ids [B, T] int64 (left padding, as runtime/batch.ts builds
 * them); targets [B, T] int64 (the token predicted at each position, any valid id where unused);
 * loss_weights [B, T] float32 (1 where the prediction counts, 0 elsewhere: prompt, padding); and the
 * direction matrices dir.{k}.{W} [out, in] float32 for every scored weight.
 * Outputs: loss_sum [] (sum of weighted NLL), score.{k}.{W} [out] (gradient of loss_sum).
 *
 * Only layers in [layerFrom, layerTo) are scored, and the backward stops at layerFrom: callers split a big
 * model into layer chunks so the directions fed per run stay within a memory budget.
 */
import type { LinearModule, ModelSpec } from '../../checkpoint/index.js';
import { linearModules, linearWeightName } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import { checkSupported } from '../model/decoder-graph.js';
import {
  WeightTable, applyRope, attentionMask4d, dimsOf, linear, shapeOf, toHeads, type Dims, type PatchResolver, type WeightResolver,
} from '../onnx/blocks.js';
import { GraphBuilder } from '../onnx/graph-builder.js';
import { scaledRopeTables } from '../onnx/rope-graph.js';
import { geluTanhGate, offsetNormWeight, scaleBy, slidingMask4d, splitLast } from '../onnx/family-blocks.js';

export interface AttributionGraphOptions {
  /** Number of direction sets K (inputs dir.0 .. dir.K-1). */
  directionSets: number;
  /** First scored layer (default 0). */
  layerFrom?: number;
  /** One past the last scored layer (default numLayers). */
  layerTo?: number;
  /** LoRA branches (x A^T) B^T * scaling added to base weights, as the engine's forward graph takes them. */
  lora?: Map<string, { a: string; b: string; scaling: number }>;
  /**
   * 'full' (default): tokens in, every layer forward, loss at the top, backward down to layerFrom.
   * 'segment': only layers [layerFrom, layerTo) are built. When layerFrom > 0 the residual entering it is the
   * input hidden_in [N, H] and the output grad_in [N, H] is dLoss/d(hidden_in); when layerTo < numLayers,
   * grad_out [N, H] = dLoss/d(residual leaving layerTo - 1) is an input and no loss head is built.
   * Chained top-down, segments cost one forward and one backward in all, whatever their number.
   * 'head': only the final norm and the loss head, on hidden_in [rows, H] (the residual leaving the top
   * layer) with targets / loss_weights [1, rows]; outputs loss_sum and grad_in = dLoss/d(hidden_in). Callers
   * run it on a few rows at a time, so its [rows, vocab] tensors stay small whatever the batch.
   */
  mode?: 'full' | 'segment' | 'head';
  /**
   * false: a segment ending at the top layer takes grad_out like any other (the loss head then runs as its
   * own 'head' graph, see mode). Default true.
   */
  lossHead?: boolean;
  /**
   * Forward-only graph: outputs hidden.{l} [N, H], the residual entering layer l, for each l here, building
   * layers [0, max l) (or, with mode 'segment', [layerFrom, max l) from hidden_in, so a forward can run
   * chunk by chunk with only one chunk's weights in a session).
   */
  boundaries?: number[];
  /**
   * With mode 'segment', the two halves of a segment, so a caller with memory to spare skips the backward's
   * forward recompute: 'output' is forward-only (like `boundaries`) and outputs, besides hidden.{layerTo},
   * every tensor the backward of its layers reads, as act.{layer}.{key}; 'input' builds only the backward,
   * taking those tensors as inputs (and grad_out, never a loss head; no hidden_in: act.{layerFrom}.hIn is it).
   */
  activations?: 'output' | 'input';
}

export const directionInputName = (k: number, weight: string): string => `dir.${k}.${weight}`;
export const scoreOutputName = (k: number, weight: string): string => `score.${k}.${weight}`;
export const boundaryOutputName = (layer: number): string => `hidden.${layer}`;
export const ACTIVATION_PREFIX = 'act.';
const activationName = (layer: number, key: string): string => `${ACTIVATION_PREFIX}${layer}.${key}`;

/** Weight names scored by a graph built with these options, layer-major in linearModules(spec) order. */
export function scoredWeights(spec: ModelSpec, layerFrom = 0, layerTo = spec.numLayers): string[] {
  const out: string[] = [];
  for (let i = layerFrom; i < layerTo; i++) for (const m of linearModules(spec)) out.push(linearWeightName(i, m));
  return out;
}

interface Linear {
  name: string;
  w: string;
  lora?: { a: string; b: string; scaling: number };
  outFeatures: number;
}

interface Norm {
  y: string;
  inv: string;
}

/** RMSNorm that keeps 1/rms for the backward (same float32 arithmetic as blocks.rmsNorm). */
function rmsNormKeep(g: GraphBuilder, x: string, weight: string, eps: number): Norm {
  const variance = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [variance, g.scalarF32(eps)])])]);
  return normWith(g, x, inv, weight);
}

/** y = x * inv * w given 1/rms: rmsNormKeep's output, and how a backward half rebuilds it from a kept inv. */
function normWith(g: GraphBuilder, x: string, inv: string, weight: string): Norm {
  return { y: g.op('Mul', [g.op('Mul', [x, inv]), weight]), inv };
}

/** y = w * x * r, r = (mean(x^2) + eps)^-1/2: dx = r dn - r^3 x mean(dn x), with dn = dy * w. */
function rmsNormBack(g: GraphBuilder, dy: string, x: string, inv: string, weight: string): string {
  const dn = g.op('Mul', [dy, weight]);
  const dot = g.op('ReduceMean', [g.op('Mul', [dn, x])], { axes: [-1], keepdims: 1 });
  const inv3 = g.op('Mul', [g.op('Mul', [inv, inv]), inv]);
  return g.op('Sub', [g.op('Mul', [dn, inv]), g.op('Mul', [x, g.op('Mul', [inv3, dot])])]);
}

/** rotate_half^T(y) = cat(y[..., d/2:], -y[..., :d/2]): the backward of the rotation's shuffle. */
function rotateHalfT(g: GraphBuilder, y: string, headDim: number): string {
  const [y1, y2] = g.node('Split', [y, g.constI64([headDim / 2, headDim / 2])], { outputs: 2, attrs: { axis: -1 } });
  return g.op('Concat', [y2, g.op('Neg', [y1])], { axis: -1 });
}

/** Backward of x*cos + rotate_half(x)*sin. */
function ropeBack(g: GraphBuilder, dy: string, cos: string, sin: string, headDim: number): string {
  return g.op('Add', [g.op('Mul', [dy, cos]), rotateHalfT(g, g.op('Mul', [dy, sin]), headDim)]);
}

/** [B, heads, T, D] -> flat [N, heads * D]. */
function fromHeads(g: GraphBuilder, x: string, heads: number, headDim: number): string {
  const bthd = g.op('Transpose', [x], { perm: [0, 2, 1, 3] });
  return g.op('Reshape', [bthd, g.constI64([-1, heads * headDim])]);
}

/** 1 - t^2: the derivative of tanh given t = tanh(x) (soft caps, the tanh GELU). */
function oneMinusSquare(g: GraphBuilder, t: string): string {
  return g.op('Sub', [g.scalarF32(1), g.op('Mul', [t, t])]);
}

/** tanh(sqrt(2/pi) (z + 0.044715 z^3)), kept for the tanh-GELU backward. */
function geluTanhInner(g: GraphBuilder, z: string): string {
  const z3 = g.op('Mul', [g.op('Mul', [z, z]), z]);
  return g.op('Tanh', [g.op('Mul', [g.op('Add', [z, g.op('Mul', [z3, g.scalarF32(0.044715)])]), g.scalarF32(Math.sqrt(2 / Math.PI))])]);
}

/**
 * Summed weighted NLL of the positions that count, and its gradient wrt hTop. Only the rows with a positive
 * loss weight (the response tokens) go through the final norm and lm_head, so the graph's [rows, vocab]
 * tensors are [response tokens, vocab], and there are two of them at most (logits, softmax; a third, the
 * cap's derivative, with a final soft cap): the one-hot and log-softmax copies are avoided by writing the
 * gradient as dh = (softmax W - W[target]) * weight (W the head, one row gathered per target).
 */
function lossHead(g: GraphBuilder, w: WeightTable, spec: ModelSpec, hTop: string): string {
  const normW = (name: string): string => (spec.normWeightOffset ? offsetNormWeight(g, w.f32(name), 'float32') : w.f32(name));
  const finalW = normW('model.norm.weight');
  const targets = g.input('targets', 'int64', ['batch', 'tokens']);
  const lossWeights = g.input('loss_weights', 'float32', ['batch', 'tokens']);
  const wflat = g.op('Reshape', [lossWeights, g.constI64([-1])]);
  // rows [M]: the flat positions whose prediction counts.
  const rows = g.op('Reshape', [g.op('NonZero', [g.op('Greater', [wflat, g.scalarF32(0)])]), g.constI64([-1])]);
  const hSel = g.op('Gather', [hTop, rows], { axis: 0 });
  const tSel = g.op('Reshape', [g.op('Gather', [g.op('Reshape', [targets, g.constI64([-1])]), rows], { axis: 0 }), g.constI64([-1, 1])]);
  const wSel = g.op('Reshape', [g.op('Gather', [wflat, rows], { axis: 0 }), g.constI64([-1, 1])]);
  const nf = rmsNormKeep(g, hSel, finalW, spec.rmsNormEps);
  const headW = w.f32(spec.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  let logits = linear(g, nf.y, headW);
  // Gemma 2's final cap: logits -> cap tanh(logits / cap); its derivative 1 - tanh^2 scales dlogits below.
  const capT = spec.finalSoftcap ? g.op('Tanh', [g.op('Div', [logits, g.scalarF32(spec.finalSoftcap)])]) : null;
  if (capT !== null) logits = g.op('Mul', [capT, g.scalarF32(spec.finalSoftcap as number)]);
  // nll = logsumexp(logits) - logits[target]; ReduceLogSumExp subtracts the row max first.
  const lse = g.op('ReduceLogSumExp', [logits], { axes: [-1], keepdims: 1 });
  const nll = g.op('Sub', [lse, g.op('GatherElements', [logits, tSel], { axis: 1 })]);
  g.output('loss_sum', g.op('ReduceSum', [g.op('Mul', [nll, wSel])], { keepdims: 0 }), 'float32', []);
  // dlogits = (softmax - onehot) * c * weight, c = 1 - tanh^2 under a cap (else 1).
  let probs = g.op('Softmax', [logits], { axis: -1 });
  const wTarget = g.op('Gather', [headW, g.op('Reshape', [tSel, g.constI64([-1])])], { axis: 0 });
  let atTarget = wTarget;
  if (capT !== null) {
    const c = oneMinusSquare(g, capT);
    probs = g.op('Mul', [probs, c]);
    atTarget = g.op('Mul', [wTarget, g.op('GatherElements', [c, tSel], { axis: 1 })]);
  }
  const dhSel = g.op('Mul', [g.op('Sub', [g.op('MatMul', [probs, headW]), atTarget]), wSel]);
  const dnSel = rmsNormBack(g, dhSel, hSel, nf.inv, finalW);
  // Back to every row (zero where the prediction does not count).
  const zeros = g.op('Expand', [g.scalarF32(0), g.op('Shape', [hTop])]);
  return g.op('ScatterND', [zeros, g.op('Unsqueeze', [rows, g.constI64([1])]), dnSel]);
}


/**
 * `patches`: linear weights read with some rows replaced (a static row patch, see WeightTable): the loss,
 * its forward and its backward are those of the patched model.
 */
export function buildAttributionGraph(spec: ModelSpec, resolve: WeightResolver, opts: AttributionGraphOptions, patches?: PatchResolver): GraphBuilder {
  checkSupported(spec);
  const L = spec.numLayers;
  if (opts.mode === 'head') {
    const g = new GraphBuilder(`fgsn_${spec.family}_attribution_head`);
    const hIn = g.input('hidden_in', 'float32', ['rows', spec.hiddenSize]);
    g.output('grad_in', lossHead(g, new WeightTable(g, resolve, patches), spec, hIn), 'float32', ['rows', spec.hiddenSize]);
    return g;
  }
  const lo = opts.layerFrom ?? 0;
  const hi = opts.layerTo ?? L;
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && lo < hi && hi <= L) || !(opts.directionSets >= 1)) {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `attribution graph: bad layer range [${lo}, ${hi}) or direction count ${opts.directionSets} for a ${L}-layer model`);
  }
  const boundaries = opts.boundaries ?? null;
  const segment = opts.mode === 'segment';
  const acts = opts.activations ?? null;
  if (acts !== null && (!segment || boundaries !== null || (acts === 'input' && hi === L && opts.lossHead !== false))) {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', 'attribution graph: activations need mode segment, no boundaries, and (as input) lossHead false at the top');
  }
  const lowest = segment ? lo + 1 : 1;
  if (boundaries !== null && (boundaries.length === 0 || boundaries.some((b) => !Number.isInteger(b) || b < lowest || b > L))) {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `attribution graph: boundaries must be layers in [${lowest}, ${L}], got ${JSON.stringify(boundaries)}`);
  }
  // Layers built: [first, last).
  const first = segment ? lo : 0;
  const last = boundaries !== null ? Math.max(...boundaries) : segment ? hi : L;
  const withHead = last === L && opts.lossHead !== false;
  const K = opts.directionSets;
  const g = new GraphBuilder(`fgsn_${spec.family}_attribution`);
  const w = new WeightTable(g, resolve, patches);
  const H = spec.hiddenSize;
  const D = spec.headDim;
  const NH = spec.numHeads;
  const KV = spec.numKvHeads;
  const G = NH / KV;
  const I = spec.intermediateSize;

  const inputIds = g.input('input_ids', 'int64', ['batch', 'tokens']);
  const attnMask = g.input('attention_mask', 'int64', ['batch', 'tokens']);
  const positionIds = g.input('position_ids', 'int64', ['batch', 'tokens']);
  const d: Dims = dimsOf(g, inputIds, attnMask);
  const mask = attentionMask4d(g, attnMask, d);
  const { cos, sin } = scaledRopeTables(g, positionIds, spec);
  const scale = g.scalarF32(spec.attnScale ?? 1 / Math.sqrt(D));

  const lin = (layer: number, mod: LinearModule, outFeatures: number): Linear => {
    const name = linearWeightName(layer, mod);
    return { name, w: w.f32(name), lora: opts.lora?.get(name), outFeatures };
  };
  const biasOf = (l: Linear, present: boolean): string | undefined => (present ? w.f32(l.name.replace(/\.weight$/, '.bias')) : undefined);
  const fwd = (x: string, l: Linear, present: boolean): string => {
    const y = linear(g, x, l.w, biasOf(l, present));
    if (l.lora === undefined) return y;
    const branch = linear(g, linear(g, x, w.f32(l.lora.a)), w.f32(l.lora.b), undefined, l.lora.scaling);
    return g.op('Add', [y, branch]);
  };
  /** dx = dy W (+ scaling (dy B) A for a LoRA branch). */
  const back = (dy: string, l: Linear): string => {
    const dx = g.op('MatMul', [dy, l.w]);
    if (l.lora === undefined) return dx;
    const viaB = g.op('MatMul', [g.op('MatMul', [dy, w.f32(l.lora.b)]), w.f32(l.lora.a)]);
    return g.op('Add', [dx, g.op('Mul', [viaB, g.scalarF32(l.lora.scaling)])]);
  };
  const score = (layer: number, l: Linear, x: string, delta: string, inFeatures: number): void => {
    if (layer < lo || layer >= hi) return;
    for (let k = 0; k < K; k++) {
      const m = g.input(directionInputName(k, l.name), 'float32', [l.outFeatures, inFeatures]);
      const xm = linear(g, x, m);
      const s = g.op('ReduceSum', [g.op('Mul', [delta, xm]), g.constI64([0])], { keepdims: 0 });
      g.output(scoreOutputName(k, l.name), s, 'float32', [l.outFeatures]);
    }
  };

  // ---- family switches (see FamilyLayerParts in the forward graph; the same blocks) ----
  const normW = (name: string): string => (spec.normWeightOffset ? offsetNormWeight(g, w.f32(name), 'float32') : w.f32(name));
  const sliding = (i: number): boolean => (spec.slidingWindow ?? null) !== null && spec.slidingLayers?.[i] === true;
  let slidingMask: string | null = null;
  const maskOf = (i: number): string => (sliding(i) ? (slidingMask ??= slidingMask4d(g, mask, d, spec.slidingWindow as number)) : mask);
  let localRope: { cos: string; sin: string } | null = null;
  const ropeOf = (i: number): { cos: string; sin: string } => {
    if (spec.localRopeTheta === undefined || !sliding(i)) return { cos, sin };
    return (localRope ??= scaledRopeTables(g, positionIds, { headDim: D, ropeTheta: spec.localRopeTheta, ropeScaling: null }));
  };
  const gelu = spec.hiddenAct === 'gelu_pytorch_tanh';
  const fused = spec.fusedProjections === true;

  // ---- forward, keeping what the backward needs ----
  const flat = ['rows', H];
  let h = acts === 'input'
    ? ''
    : first === 0
      ? g.op('Reshape', [g.op('Gather', [w.f32('model.embed_tokens.weight'), inputIds], { axis: 0 }), g.constI64([-1, H])])
      : g.input('hidden_in', 'float32', flat);
  if (acts !== 'input' && first === 0 && spec.embedScale !== undefined) h = scaleBy(g, h, spec.embedScale, 'float32');
  interface Saved {
    hIn: string; n1: Norm; q: Linear; k: Linear; v: Linear; qkv: Linear | null; o: Linear; qg: string; kh: string; vh: string; pg: string; ctx: string;
    hMid: string; n2: Norm; gate: Linear; up: Linear; gateUp: Linear | null; down: Linear; gateOut: string; sig: string; upOut: string; act: string;
    qRaw: string; kRaw: string; qn: Norm | null; kn: Norm | null; rope: { cos: string; sin: string }; capT: string | null;
    attnRaw: string; attnPost: Norm | null; mlpRaw: string; mlpPost: Norm | null;
  }
  const saved: Saved[] = [];
  /** The tensors of a layer's Saved the backward reads, by key (act.{layer}.{key} with `activations`). */
  const tensorsOf = (s: Saved): [string, string][] => {
    // Not the norms' outputs, sig or act: the backward half recomputes them elementwise from these, with the
    // same operations as the forward (so the same values), for 2 (hidden + intermediate) fewer floats a token.
    const out: [string, string][] = [
      ['hIn', s.hIn], ['n1.inv', s.n1.inv], ['qg', s.qg], ['kh', s.kh], ['vh', s.vh], ['pg', s.pg], ['ctx', s.ctx],
      ['hMid', s.hMid], ['n2.inv', s.n2.inv], ['gateOut', s.gateOut], ['upOut', s.upOut],
    ];
    if (s.qn !== null && s.kn !== null) out.push(['qRaw', s.qRaw], ['kRaw', s.kRaw], ['qn.inv', s.qn.inv], ['kn.inv', s.kn.inv]);
    if (s.capT !== null) out.push(['capT', s.capT]);
    if (s.attnPost !== null) out.push(['attnRaw', s.attnRaw], ['attnPost.inv', s.attnPost.inv]);
    if (s.mlpPost !== null) out.push(['mlpRaw', s.mlpRaw], ['mlpPost.inv', s.mlpPost.inv]);
    return out;
  };
  // Phi-3: one [q; k; v] product; the Linear records of q/k/v are then only shapes for the backward's split
  // (and likewise [gate; up]).
  const attnLinears = (i: number): Pick<Saved, 'qkv' | 'q' | 'k' | 'v' | 'o'> => ({
    qkv: fused ? lin(i, 'qkv_proj', (NH + 2 * KV) * D) : null,
    q: fused ? { name: '', w: '', outFeatures: NH * D } : lin(i, 'q_proj', NH * D),
    k: fused ? { name: '', w: '', outFeatures: KV * D } : lin(i, 'k_proj', KV * D),
    v: fused ? { name: '', w: '', outFeatures: KV * D } : lin(i, 'v_proj', KV * D),
    o: lin(i, 'o_proj', H),
  });
  const mlpLinears = (i: number): Pick<Saved, 'gateUp' | 'gate' | 'up' | 'down'> => ({
    gateUp: fused ? lin(i, 'gate_up_proj', 2 * I) : null,
    gate: fused ? { name: '', w: '', outFeatures: I } : lin(i, 'gate_proj', I),
    up: fused ? { name: '', w: '', outFeatures: I } : lin(i, 'up_proj', I),
    down: lin(i, 'down_proj', H),
  });
  // sig: sigmoid(gate) for SiLU; for the tanh GELU, tanh(sqrt(2/pi) (z + 0.044715 z^3)); act: the gated product.
  const gateAct = (gateOut: string, upOut: string): { sig: string; act: string } => {
    const sig = gelu ? geluTanhInner(g, gateOut) : g.op('Sigmoid', [gateOut]);
    return { sig, act: gelu ? geluTanhGate(g, gateOut, upOut) : g.op('Mul', [g.op('Mul', [gateOut, sig]), upOut]) };
  };
  if (acts === 'input') {
    // The backward only: each layer's Saved from the inputs the 'output' half gave (unknown shapes: the feeds').
    for (let i = first; i < last; i++) {
      const a = (key: string): string => g.input(activationName(i, key), 'float32', null);
      const normOf = (key: string): Norm => ({ y: '', inv: a(`${key}.inv`) });
      // The norms' outputs, the gate's sig and act, as the forward computes them.
      const withQkNorm = spec.qkNorm === true;
      const p = `model.layers.${i}`;
      const hIn = a('hIn');
      const hMid = a('hMid');
      const gateOut = a('gateOut');
      const upOut = a('upOut');
      const n2Weight = normW(`${p}.${spec.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`);
      const { sig, act } = gateAct(gateOut, upOut);
      saved.push({
        ...attnLinears(i), ...mlpLinears(i),
        hIn, n1: normWith(g, hIn, a('n1.inv'), normW(`${p}.input_layernorm.weight`)), qg: a('qg'), kh: a('kh'), vh: a('vh'), pg: a('pg'), ctx: a('ctx'),
        hMid, n2: normWith(g, hMid, a('n2.inv'), n2Weight), gateOut, upOut,
        sig, act,
        qRaw: withQkNorm ? a('qRaw') : '', kRaw: withQkNorm ? a('kRaw') : '', qn: withQkNorm ? normOf('qn') : null, kn: withQkNorm ? normOf('kn') : null,
        rope: ropeOf(i), capT: spec.attnSoftcap ? a('capT') : null,
        attnRaw: spec.sandwichNorms ? a('attnRaw') : '', attnPost: spec.sandwichNorms ? normOf('attnPost') : null,
        mlpRaw: spec.sandwichNorms ? a('mlpRaw') : '', mlpPost: spec.sandwichNorms ? normOf('mlpPost') : null,
      });
    }
  }
  for (let i = first; i < (acts === 'input' ? first : last); i++) {
    if (boundaries?.includes(i)) g.output(boundaryOutputName(i), h, 'float32', flat);
    const p = `model.layers.${i}`;
    const n1 = rmsNormKeep(g, h, normW(`${p}.input_layernorm.weight`), spec.rmsNormEps);
    const { qkv, q, k, v, o } = attnLinears(i);
    const [qf, kf, vf] = qkv !== null
      ? splitLast(g, fwd(n1.y, qkv, false), [NH * D, KV * D, KV * D])
      : [fwd(n1.y, q, spec.qkvBias), fwd(n1.y, k, spec.qkvBias), fwd(n1.y, v, spec.qkvBias)];
    const qRaw = toHeads(g, qf, d, NH, D);
    const kRaw = toHeads(g, kf, d, KV, D);
    // Qwen3 / Gemma 3: RMSNorm of each head over head_dim before the rotation.
    const qn = spec.qkNorm ? rmsNormKeep(g, qRaw, normW(`${p}.self_attn.q_norm.weight`), spec.rmsNormEps) : null;
    const kn = spec.qkNorm ? rmsNormKeep(g, kRaw, normW(`${p}.self_attn.k_norm.weight`), spec.rmsNormEps) : null;
    const rope = ropeOf(i);
    const qh = applyRope(g, qn?.y ?? qRaw, rope.cos, rope.sin, D);
    const kh = applyRope(g, kn?.y ?? kRaw, rope.cos, rope.sin, D);
    const vh = toHeads(g, vf, d, KV, D);
    // Query heads grouped per KV head ([B, KV, G*T, D]; head h uses KV head h / G, as repeat_kv).
    const gt = g.op('Mul', [d.t, g.constI64([G])]);
    const qg = g.op('Reshape', [qh, shapeOf(g, [d.b, KV, gt, D])]);
    let scores = g.op('Mul', [g.op('MatMul', [qg, g.op('Transpose', [kh], { perm: [0, 1, 3, 2] })]), scale]);
    // Gemma 2: scores -> cap tanh(scores / cap); tanh kept for the backward.
    const capT = spec.attnSoftcap ? g.op('Tanh', [g.op('Div', [scores, g.scalarF32(spec.attnSoftcap)])]) : null;
    if (capT !== null) scores = g.op('Mul', [capT, g.scalarF32(spec.attnSoftcap as number)]);
    const s4 = g.op('Reshape', [scores, shapeOf(g, [d.b, NH, d.t, d.t])]);
    const probs = g.op('Softmax', [g.op('Where', [maskOf(i), s4, g.scalarF32(-3.4028234663852886e38)])], { axis: -1 });
    const pg = g.op('Reshape', [probs, shapeOf(g, [d.b, KV, gt, d.t])]);
    const ctxg = g.op('MatMul', [pg, vh]);
    const ctx = fromHeads(g, g.op('Reshape', [ctxg, shapeOf(g, [d.b, NH, d.t, D])]), NH, D);
    const attnRaw = fwd(ctx, o, spec.oBias);
    // Gemma's sandwich norms: the attention / MLP output is normalised before it joins the residual.
    const attnPost = spec.sandwichNorms ? rmsNormKeep(g, attnRaw, normW(`${p}.post_attention_layernorm.weight`), spec.rmsNormEps) : null;
    const hMid = g.op('Add', [h, attnPost?.y ?? attnRaw]);

    const n2 = rmsNormKeep(g, hMid, normW(`${p}.${spec.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`), spec.rmsNormEps);
    const { gateUp, gate, up, down } = mlpLinears(i);
    const [gateOut, upOut] = gateUp !== null
      ? splitLast(g, fwd(n2.y, gateUp, false), [I, I])
      : [fwd(n2.y, gate, spec.mlpBias), fwd(n2.y, up, spec.mlpBias)];
    const { sig, act } = gateAct(gateOut, upOut);
    const mlpRaw = fwd(act, down, spec.mlpBias);
    const mlpPost = spec.sandwichNorms ? rmsNormKeep(g, mlpRaw, normW(`${p}.post_feedforward_layernorm.weight`), spec.rmsNormEps) : null;
    const hOut = g.op('Add', [hMid, mlpPost?.y ?? mlpRaw]);
    saved.push({
      hIn: h, n1, q, k, v, qkv, o, qg, kh, vh, pg, ctx, hMid, n2, gate, up, gateUp, down, gateOut, sig, upOut, act, qRaw, kRaw, qn, kn, rope, capT,
      attnRaw, attnPost, mlpRaw, mlpPost,
    });
    h = hOut;
  }
  if (boundaries !== null) {
    g.output(boundaryOutputName(last), h, 'float32', flat);
    return g;
  }
  if (acts === 'output') {
    g.output(boundaryOutputName(last), h, 'float32', flat);
    saved.forEach((s, j) => {
      for (const [key, value] of tensorsOf(s)) g.outputInPlace(activationName(first + j, key), value, 'float32');
    });
    return g;
  }
  let dh = withHead ? lossHead(g, w, spec, h) : g.input('grad_out', 'float32', flat);

  // ---- backward through the layers, down to the first scored one ----
  const gOf = (x: string): string => g.op('Reshape', [x, shapeOf(g, [d.b, KV, g.op('Mul', [d.t, g.constI64([G])]), D])]);
  const tr = (x: string): string => g.op('Transpose', [x], { perm: [0, 1, 3, 2] });
  for (let i = last - 1; i >= lo; i--) {
    const s = saved[i - first];
    const p = `model.layers.${i}`;
    // MLP. The residual passes dh on unchanged; down_proj's output gradient is dh itself (through Gemma's post-norm).
    const dMlp = s.mlpPost !== null ? rmsNormBack(g, dh, s.mlpRaw, s.mlpPost.inv, normW(`${p}.post_feedforward_layernorm.weight`)) : dh;
    score(i, s.down, s.act, dMlp, I);
    const dact = back(dMlp, s.down);
    let dup: string;
    let dgate: string;
    if (gelu) {
      // act = gelu(z) up, gelu(z) = 0.5 z (1 + t), t = tanh(c (z + a z^3)): gelu' = 0.5 (1 + t) + 0.5 z (1 - t^2) c (1 + 3 a z^2).
      const half = g.scalarF32(0.5);
      const onePlusT = g.op('Add', [g.scalarF32(1), s.sig]);
      const geluZ = g.op('Mul', [g.op('Mul', [s.gateOut, half]), onePlusT]);
      const z2 = g.op('Mul', [s.gateOut, s.gateOut]);
      const dInner = g.op('Mul', [g.op('Add', [g.scalarF32(1), g.op('Mul', [z2, g.scalarF32(3 * 0.044715)])]), g.scalarF32(Math.sqrt(2 / Math.PI))]);
      const dgelu = g.op('Add', [g.op('Mul', [onePlusT, half]), g.op('Mul', [g.op('Mul', [g.op('Mul', [s.gateOut, half]), oneMinusSquare(g, s.sig)]), dInner])]);
      dup = g.op('Mul', [dact, geluZ]);
      dgate = g.op('Mul', [g.op('Mul', [dact, s.upOut]), dgelu]);
    } else {
      dup = g.op('Mul', [dact, g.op('Mul', [s.gateOut, s.sig])]);
      // silu'(z) = sig(z) (1 + z (1 - sig(z)))
      const one = g.scalarF32(1);
      const dsilu = g.op('Mul', [s.sig, g.op('Add', [one, g.op('Mul', [s.gateOut, g.op('Sub', [one, s.sig])])])]);
      dgate = g.op('Mul', [g.op('Mul', [dact, s.upOut]), dsilu]);
    }
    let dn2: string;
    if (s.gateUp !== null) {
      // Phi-3: the fused weight's output gradient is [dgate, dup]; its rows are scored as one matrix.
      const dgu = g.op('Concat', [dgate, dup], { axis: -1 });
      score(i, s.gateUp, s.n2.y, dgu, H);
      dn2 = back(dgu, s.gateUp);
    } else {
      score(i, s.gate, s.n2.y, dgate, H);
      score(i, s.up, s.n2.y, dup, H);
      dn2 = g.op('Add', [back(dgate, s.gate), back(dup, s.up)]);
    }
    const preMlpNorm = `${p}.${spec.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`;
    const dMid = g.op('Add', [dh, rmsNormBack(g, dn2, s.hMid, s.n2.inv, normW(preMlpNorm))]);

    // Attention.
    const dAttn = s.attnPost !== null ? rmsNormBack(g, dMid, s.attnRaw, s.attnPost.inv, normW(`${p}.post_attention_layernorm.weight`)) : dMid;
    score(i, s.o, s.ctx, dAttn, NH * D);
    const dctxg = gOf(toHeads(g, back(dAttn, s.o), d, NH, D));
    const dpg = g.op('MatMul', [dctxg, tr(s.vh)]);
    const dv = g.op('MatMul', [tr(s.pg), dctxg]);
    const rowDot = g.op('ReduceSum', [g.op('Mul', [dpg, s.pg]), g.constI64([-1])], { keepdims: 1 });
    let dScores = g.op('Mul', [s.pg, g.op('Sub', [dpg, rowDot])]);
    if (s.capT !== null) dScores = g.op('Mul', [dScores, oneMinusSquare(g, s.capT)]);
    const dsg = g.op('Mul', [dScores, scale]);
    const dqg = g.op('MatMul', [dsg, s.kh]);
    const dk = g.op('MatMul', [tr(dsg), s.qg]);
    const dqh = g.op('Reshape', [dqg, shapeOf(g, [d.b, NH, d.t, D])]);
    let dqHeads = ropeBack(g, dqh, s.rope.cos, s.rope.sin, D);
    let dkHeads = ropeBack(g, dk, s.rope.cos, s.rope.sin, D);
    if (s.qn !== null && s.kn !== null) {
      dqHeads = rmsNormBack(g, dqHeads, s.qRaw, s.qn.inv, normW(`${p}.self_attn.q_norm.weight`));
      dkHeads = rmsNormBack(g, dkHeads, s.kRaw, s.kn.inv, normW(`${p}.self_attn.k_norm.weight`));
    }
    const dq = fromHeads(g, dqHeads, NH, D);
    const dkf = fromHeads(g, dkHeads, KV, D);
    const dvf = fromHeads(g, dv, KV, D);
    const dqkv = s.qkv !== null ? g.op('Concat', [dq, dkf, dvf], { axis: -1 }) : null;
    if (s.qkv !== null && dqkv !== null) {
      score(i, s.qkv, s.n1.y, dqkv, H);
    } else {
      score(i, s.q, s.n1.y, dq, H);
      score(i, s.k, s.n1.y, dkf, H);
      score(i, s.v, s.n1.y, dvf, H);
    }
    // Below the first scored layer only a segment's caller needs the gradient (for the segment below).
    if (i === lo && !(segment && lo > 0)) break;
    const dn1 = s.qkv !== null && dqkv !== null
      ? back(dqkv, s.qkv)
      : g.op('Add', [g.op('Add', [back(dq, s.q), back(dkf, s.k)]), back(dvf, s.v)]);
    dh = g.op('Add', [dMid, rmsNormBack(g, dn1, s.hIn, s.n1.inv, normW(`${p}.input_layernorm.weight`))]);
  }
  if (segment && lo > 0) g.output('grad_in', dh, 'float32', flat);
  return g;
}
