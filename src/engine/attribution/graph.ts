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
import type { LinearModule, ModelSpec } from '../../checkpoint/types.js';
import { linearModules, linearWeightName } from '../../checkpoint/types.js';
import { FgsnError } from '../../errors.js';
import { checkSupported } from '../model/decoder-graph.js';
import {
  WeightTable, applyRope, attentionMask4d, dimsOf, linear, shapeOf, toHeads, type Dims, type WeightResolver,
} from '../onnx/blocks.js';
import { GraphBuilder } from '../onnx/graph-builder.js';
import { scaledRopeTables } from '../onnx/rope-graph.js';

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
   */
  mode?: 'full' | 'segment';
  /** Forward-only graph: outputs hidden.{l} [N, H], the residual entering layer l, for each l here. */
  boundaries?: number[];
}

export const directionInputName = (k: number, weight: string): string => `dir.${k}.${weight}`;
export const scoreOutputName = (k: number, weight: string): string => `score.${k}.${weight}`;
export const boundaryOutputName = (layer: number): string => `hidden.${layer}`;

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

export function buildAttributionGraph(spec: ModelSpec, resolve: WeightResolver, opts: AttributionGraphOptions): GraphBuilder {
  checkSupported(spec);
  const missing = (['qkNorm', 'fusedProjections', 'normWeightOffset', 'sandwichNorms', 'embedScale', 'attnScale', 'attnSoftcap', 'finalSoftcap', 'slidingLayers', 'localRopeTheta'] as const)
    .filter((f) => spec[f] !== undefined && spec[f] !== null && spec[f] !== false);
  if (missing.length > 0 || spec.hiddenAct !== 'silu') {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `attribution graph: ${spec.family} features not implemented in the backward: ${[...missing, spec.hiddenAct].join(', ')}`);
  }
  const L = spec.numLayers;
  const lo = opts.layerFrom ?? 0;
  const hi = opts.layerTo ?? L;
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && lo < hi && hi <= L) || !(opts.directionSets >= 1)) {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `attribution graph: bad layer range [${lo}, ${hi}) or direction count ${opts.directionSets} for a ${L}-layer model`);
  }
  const boundaries = opts.boundaries ?? null;
  if (boundaries !== null && (boundaries.length === 0 || boundaries.some((b) => !Number.isInteger(b) || b < 1 || b >= L))) {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `attribution graph: boundaries must be layers in [1, ${L}), got ${JSON.stringify(boundaries)}`);
  }
  const segment = opts.mode === 'segment';
  // Layers built: [first, last).
  const first = segment ? lo : 0;
  const last = boundaries !== null ? Math.max(...boundaries) : segment ? hi : L;
  const withHead = last === L;
  const K = opts.directionSets;
  const g = new GraphBuilder(`fgsn_${spec.family}_attribution`);
  const w = new WeightTable(g, resolve);
  const H = spec.hiddenSize;
  const D = spec.headDim;
  const NH = spec.numHeads;
  const KV = spec.numKvHeads;
  const G = NH / KV;
  const I = spec.intermediateSize;
  const V = spec.vocabSize;

  const inputIds = g.input('input_ids', 'int64', ['batch', 'tokens']);
  const attnMask = g.input('attention_mask', 'int64', ['batch', 'tokens']);
  const positionIds = g.input('position_ids', 'int64', ['batch', 'tokens']);
  const d: Dims = dimsOf(g, inputIds, attnMask);
  const mask = attentionMask4d(g, attnMask, d);
  const { cos, sin } = scaledRopeTables(g, positionIds, spec);
  const scale = g.scalarF32(1 / Math.sqrt(D));

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

  // ---- forward, keeping what the backward needs ----
  const flat = ['rows', H];
  let h = first === 0
    ? g.op('Reshape', [g.op('Gather', [w.f32('model.embed_tokens.weight'), inputIds], { axis: 0 }), g.constI64([-1, H])])
    : g.input('hidden_in', 'float32', flat);
  interface Saved {
    hIn: string; n1: Norm; q: Linear; k: Linear; v: Linear; o: Linear; qg: string; kh: string; vh: string; pg: string; ctx: string;
    hMid: string; n2: Norm; gate: Linear; up: Linear; down: Linear; gateOut: string; sig: string; upOut: string; act: string;
  }
  const saved: Saved[] = [];
  for (let i = first; i < last; i++) {
    if (boundaries?.includes(i)) g.output(boundaryOutputName(i), h, 'float32', flat);
    const p = `model.layers.${i}`;
    const n1 = rmsNormKeep(g, h, w.f32(`${p}.input_layernorm.weight`), spec.rmsNormEps);
    const q = lin(i, 'q_proj', NH * D);
    const k = lin(i, 'k_proj', KV * D);
    const v = lin(i, 'v_proj', KV * D);
    const o = lin(i, 'o_proj', H);
    const qh = applyRope(g, toHeads(g, fwd(n1.y, q, spec.qkvBias), d, NH, D), cos, sin, D);
    const kh = applyRope(g, toHeads(g, fwd(n1.y, k, spec.qkvBias), d, KV, D), cos, sin, D);
    const vh = toHeads(g, fwd(n1.y, v, spec.qkvBias), d, KV, D);
    // Query heads grouped per KV head ([B, KV, G*T, D]; head h uses KV head h / G, as repeat_kv).
    const gt = g.op('Mul', [d.t, g.constI64([G])]);
    const qg = g.op('Reshape', [qh, shapeOf(g, [d.b, KV, gt, D])]);
    const scores = g.op('Mul', [g.op('MatMul', [qg, g.op('Transpose', [kh], { perm: [0, 1, 3, 2] })]), scale]);
    const s4 = g.op('Reshape', [scores, shapeOf(g, [d.b, NH, d.t, d.t])]);
    const probs = g.op('Softmax', [g.op('Where', [mask, s4, g.scalarF32(-3.4028234663852886e38)])], { axis: -1 });
    const pg = g.op('Reshape', [probs, shapeOf(g, [d.b, KV, gt, d.t])]);
    const ctxg = g.op('MatMul', [pg, vh]);
    const ctx = fromHeads(g, g.op('Reshape', [ctxg, shapeOf(g, [d.b, NH, d.t, D])]), NH, D);
    const hMid = g.op('Add', [h, fwd(ctx, o, spec.oBias)]);

    const n2 = rmsNormKeep(g, hMid, w.f32(`${p}.post_attention_layernorm.weight`), spec.rmsNormEps);
    const gate = lin(i, 'gate_proj', I);
    const up = lin(i, 'up_proj', I);
    const down = lin(i, 'down_proj', H);
    const gateOut = fwd(n2.y, gate, spec.mlpBias);
    const upOut = fwd(n2.y, up, spec.mlpBias);
    const sig = g.op('Sigmoid', [gateOut]);
    const act = g.op('Mul', [g.op('Mul', [gateOut, sig]), upOut]);
    const hOut = g.op('Add', [hMid, fwd(act, down, spec.mlpBias)]);
    saved.push({ hIn: h, n1, q, k, v, o, qg, kh, vh, pg, ctx, hMid, n2, gate, up, down, gateOut, sig, upOut, act });
    h = hOut;
  }
  if (boundaries !== null) {
    g.output(boundaryOutputName(last), h, 'float32', flat);
    return g;
  }
  let dh = withHead ? lossHead(h) : g.input('grad_out', 'float32', flat);

  function lossHead(hTop: string): string {
    const normW = w.f32('model.norm.weight');
    const nf = rmsNormKeep(g, hTop, normW, spec.rmsNormEps);
    const headW = w.f32(spec.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
    const logits = linear(g, nf.y, headW);
    // Sum of weighted NLL; its gradient wrt the logits is (softmax - onehot) * weight.
    const targets = g.input('targets', 'int64', ['batch', 'tokens']);
    const lossWeights = g.input('loss_weights', 'float32', ['batch', 'tokens']);
    const tgt = g.op('Reshape', [targets, g.constI64([-1, 1])]);
    const wcol = g.op('Reshape', [lossWeights, g.constI64([-1, 1])]);
    const logp = g.op('LogSoftmax', [logits], { axis: -1 });
    const nll = g.op('Neg', [g.op('GatherElements', [logp, tgt], { axis: 1 })]);
    g.output('loss_sum', g.op('ReduceSum', [g.op('Mul', [nll, wcol])], { keepdims: 0 }), 'float32', []);
    const onehot = g.op('OneHot', [g.op('Reshape', [targets, g.constI64([-1])]), g.scalarI64(V), g.constF32([0, 1], [2])], { axis: -1 });
    const dlogits = g.op('Mul', [g.op('Sub', [g.op('Exp', [logp]), onehot]), wcol]);
    return rmsNormBack(g, g.op('MatMul', [dlogits, headW]), hTop, nf.inv, normW);
  }

  // ---- backward through the layers, down to the first scored one ----
  const gOf = (x: string): string => g.op('Reshape', [x, shapeOf(g, [d.b, KV, g.op('Mul', [d.t, g.constI64([G])]), D])]);
  const tr = (x: string): string => g.op('Transpose', [x], { perm: [0, 1, 3, 2] });
  for (let i = last - 1; i >= lo; i--) {
    const s = saved[i - first];
    const p = `model.layers.${i}`;
    // MLP. The residual passes dh on unchanged; down_proj's output gradient is dh itself.
    score(i, s.down, s.act, dh, I);
    const dact = back(dh, s.down);
    const dup = g.op('Mul', [dact, g.op('Mul', [s.gateOut, s.sig])]);
    // silu'(z) = sig(z) (1 + z (1 - sig(z)))
    const one = g.scalarF32(1);
    const dsilu = g.op('Mul', [s.sig, g.op('Add', [one, g.op('Mul', [s.gateOut, g.op('Sub', [one, s.sig])])])]);
    const dgate = g.op('Mul', [g.op('Mul', [dact, s.upOut]), dsilu]);
    score(i, s.gate, s.n2.y, dgate, H);
    score(i, s.up, s.n2.y, dup, H);
    const dn2 = g.op('Add', [back(dgate, s.gate), back(dup, s.up)]);
    const dMid = g.op('Add', [dh, rmsNormBack(g, dn2, s.hMid, s.n2.inv, w.f32(`${p}.post_attention_layernorm.weight`))]);

    // Attention.
    score(i, s.o, s.ctx, dMid, NH * D);
    const dctxg = gOf(toHeads(g, back(dMid, s.o), d, NH, D));
    const dpg = g.op('MatMul', [dctxg, tr(s.vh)]);
    const dv = g.op('MatMul', [tr(s.pg), dctxg]);
    const rowDot = g.op('ReduceSum', [g.op('Mul', [dpg, s.pg]), g.constI64([-1])], { keepdims: 1 });
    const dsg = g.op('Mul', [g.op('Mul', [s.pg, g.op('Sub', [dpg, rowDot])]), scale]);
    const dqg = g.op('MatMul', [dsg, s.kh]);
    const dk = g.op('MatMul', [tr(dsg), s.qg]);
    const dqh = g.op('Reshape', [dqg, shapeOf(g, [d.b, NH, d.t, D])]);
    const dq = fromHeads(g, ropeBack(g, dqh, cos, sin, D), NH, D);
    const dkf = fromHeads(g, ropeBack(g, dk, cos, sin, D), KV, D);
    const dvf = fromHeads(g, dv, KV, D);
    score(i, s.q, s.n1.y, dq, H);
    score(i, s.k, s.n1.y, dkf, H);
    score(i, s.v, s.n1.y, dvf, H);
    // Below the first scored layer only a segment's caller needs the gradient (for the segment below).
    if (i === lo && !(segment && lo > 0)) break;
    const dn1 = g.op('Add', [g.op('Add', [back(dq, s.q), back(dkf, s.k)]), back(dvf, s.v)]);
    dh = g.op('Add', [dMid, rmsNormBack(g, dn1, s.hIn, s.n1.inv, w.f32(`${p}.input_layernorm.weight`))]);
  }
  if (segment && lo > 0) g.output('grad_in', dh, 'float32', flat);
  return g;
}
