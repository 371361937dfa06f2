/**
 * Blocks of the families beyond the llama layout (HF eager semantics, modeling_<family>.py), shared by the
 * forward graph and the attribution graph: Gemma's (1 + w) RMSNorm weight, GeGLU with the tanh GELU, soft
 * capping, sliding-window masks, attention with a configurable scale and score cap, and splitting Phi-3's fused
 * projections. Each is a pure function of graph values; the llama path does not go through any of them.
 */
import { FgsnError } from '../../errors.js';
import { castTo, shapeOf, type AttentionShape, type ComputeDtype, type Dims } from './blocks.js';
import { GraphBuilder, elemCode } from './graph-builder.js';

/** Gemma stores RMSNorm weights as offsets from 1: the norm multiplies by (1 + w). Folded at load. */
export function offsetNormWeight(g: GraphBuilder, w: string, compute: ComputeDtype): string {
  return g.op('Add', [w, castTo(g, g.scalarF32(1), 'float32', compute)]);
}

/** gelu_pytorch_tanh(gate) * up: 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))). */
export function geluTanhGate(g: GraphBuilder, gate: string, up: string, compute: ComputeDtype = 'float32'): string {
  const c = (v: number): string => castTo(g, g.scalarF32(v), 'float32', compute);
  const z3 = g.op('Mul', [g.op('Mul', [gate, gate]), gate]);
  const inner = g.op('Mul', [g.op('Add', [gate, g.op('Mul', [z3, c(0.044715)])]), c(Math.sqrt(2 / Math.PI))]);
  const gelu = g.op('Mul', [g.op('Mul', [gate, c(0.5)]), g.op('Add', [g.op('Tanh', [inner]), c(1)])]);
  return g.op('Mul', [gelu, up]);
}

/** cap * tanh(x / cap) (float32 x). */
export function softcap(g: GraphBuilder, x: string, cap: number): string {
  return g.op('Mul', [g.op('Tanh', [g.op('Div', [x, g.scalarF32(cap)])]), g.scalarF32(cap)]);
}

/**
 * Boolean mask [B, 1, T, S] as attentionMask4d, restricted to the last `window` positions: key s is visible to
 * query q when q - window < s <= q (transformers' sliding_window_overlay), positions taken in the cache, where
 * left padding shifts query and key alike.
 */
export function slidingMask4d(g: GraphBuilder, causal: string, d: Dims, window: number): string {
  const scalar = (v: string): string => g.op('Squeeze', [v, g.constI64([0])]);
  const s = scalar(d.s);
  const p = g.op('Sub', [s, scalar(d.t)]);
  const one = g.scalarI64(1);
  const kpos = g.op('Unsqueeze', [g.op('Range', [g.scalarI64(0), s, one]), g.constI64([0])]);
  const qpos = g.op('Unsqueeze', [g.op('Range', [p, s, one]), g.constI64([1])]);
  const inWindow = g.op('Greater', [kpos, g.op('Sub', [qpos, g.scalarI64(window)])]);
  return g.op('And', [causal, inWindow]);
}

export interface FamilyAttention extends AttentionShape {
  /** Score scale (default 1 / sqrt(head_dim)). */
  scale: number;
  /** cap * tanh(scores / cap) before masking. */
  softcap: number | null;
}

/**
 * gqaAttention (blocks.ts) with the score scale and soft cap as parameters (Gemma): same grouping of query heads
 * per KV head, float32 masking and softmax. Returns the context flattened to [N, NH * D].
 */
export function familyAttention(g: GraphBuilder, q: string, k: string, v: string, mask: string, d: Dims, a: FamilyAttention): string {
  const compute = a.compute ?? 'float32';
  const groups = a.numHeads / a.numKvHeads;
  const gt = g.op('Mul', [d.t, g.constI64([groups])]);
  const qg = g.op('Reshape', [q, shapeOf(g, [d.b, a.numKvHeads, gt, a.headDim])]);
  const kt = g.op('Transpose', [k], { perm: [0, 1, 3, 2] });
  const scale = castTo(g, g.scalarF32(a.scale), 'float32', compute);
  let scores = castTo(g, g.op('Mul', [g.op('MatMul', [qg, kt]), scale]), compute, 'float32');
  if (a.softcap !== null) scores = softcap(g, scores, a.softcap);
  const s4 = g.op('Reshape', [scores, shapeOf(g, [d.b, a.numHeads, d.t, d.s])]);
  const masked = g.op('Where', [mask, s4, g.scalarF32(-3.4028234663852886e38)]);
  const probs = castTo(g, g.op('Softmax', [masked], { axis: -1 }), 'float32', compute);
  const pg = g.op('Reshape', [probs, shapeOf(g, [d.b, a.numKvHeads, gt, d.s])]);
  const ctx = g.op('MatMul', [pg, v]);
  const ctx4 = g.op('Reshape', [ctx, shapeOf(g, [d.b, a.numHeads, d.t, a.headDim])]);
  const bthd = g.op('Transpose', [ctx4], { perm: [0, 2, 1, 3] });
  return g.op('Reshape', [bthd, g.constI64([-1, a.numHeads * a.headDim])]);
}

/** Splits the last axis of x into consecutive parts of the given sizes (Phi-3's qkv_proj / gate_up_proj outputs). */
export function splitLast(g: GraphBuilder, x: string, sizes: number[]): string[] {
  if (sizes.some((s) => !(s > 0))) throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `bad split sizes ${JSON.stringify(sizes)}`);
  return g.node('Split', [x, g.constI64(sizes)], { outputs: sizes.length, attrs: { axis: -1 } });
}

/** x * factor with the factor in the compute dtype (HF multiplies Gemma's embedding scale in the hidden dtype). */
export function scaleBy(g: GraphBuilder, x: string, factor: number, compute: ComputeDtype): string {
  const c = compute === 'float32' ? g.scalarF32(factor) : g.op('Cast', [g.scalarF32(factor)], { to: elemCode(compute) });
  return g.op('Mul', [x, c]);
}
