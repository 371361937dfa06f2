/**
 * Decoder building blocks (HF eager semantics) on top of GraphBuilder. Shared by the forward graph and the
 * attribution graph, so both compute the same numbers. The residual stream is kept flat as [N, hidden]
 * (N = batch * tokens) so every linear is a Gemm with transB=1 straight on the stored [out, in] weight:
 * no transposed weight copy is ever made.
 */
import type { DType } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import { GraphBuilder, elemCode, elemTypeOfDType, f, type ElemType } from './graph-builder.js';

/** Where the bytes of one weight live, relative to the folder the .onnx file is written to. */
export interface WeightRef {
  dtype: DType;
  shape: number[];
  location: string;
  offset: number;
  length: number;
}

export type WeightResolver = (name: string) => WeightRef | undefined;

/**
 * A static row patch of one weight: sorted unique row indices and the float32 bytes of their new rows
 * ([rows.length, d_in], external data beside the .onnx). The graph then sees
 * ScatterND(W, rows, values) wherever it reads W (onnxruntime folds it into the weight at session load).
 */
export interface StaticRowPatch {
  rows: Uint32Array;
  values: WeightRef;
}

export type PatchResolver = (name: string) => StaticRowPatch | undefined;

/**
 * The float type activations and weights are computed in: float32 (default, matches the golden activations
 * to 1e-4), or float16 for GPU providers (HF's fp16 semantics: norms and softmax in float32, the rest half).
 */
export type ComputeDtype = 'float32' | 'float16';

/** Compute-type views of checkpoint weights, each declared once (external data + a Cast where the stored dtype differs). */
export class WeightTable {
  private readonly values = new Map<string, string>();

  /**
   * `patches`: weights whose value is the stored one with some rows replaced (a static row patch, see
   * StaticRowPatch); every read through `as` / `f32` / `rowBlocks` sees the patched value, so a graph's
   * forward and backward both run on it without knowing.
   */
  constructor(private readonly g: GraphBuilder, private readonly resolve: WeightResolver, private readonly patches?: PatchResolver) {}

  has(name: string): boolean {
    return this.resolve(name) !== undefined;
  }

  ref(name: string): WeightRef {
    const r = this.resolve(name);
    if (r === undefined) throw new FgsnError('CHECKPOINT_TENSOR_NOT_FOUND', `weight "${name}" is not in the checkpoint`);
    return r;
  }

  /** The graph value holding `name` in its stored dtype (declared once). */
  stored(name: string): { value: string; elem: ElemType } {
    const r = this.ref(name);
    const t = elemTypeOfDType(r.dtype);
    const id = t === 'float32' ? name : `${name}::${r.dtype}`;
    if (!this.g.has(id)) this.g.externalInit(id, t, r.shape, { location: r.location, offset: r.offset, length: r.length });
    return { value: id, elem: t };
  }

  /**
   * `name` [rows, cols] in `to` as row blocks of at least `minBlockBytes` (in `to`) each (so under twice
   * that), every block its own external initializer over its slice of the stored bytes. Why: onnxruntime
   * prepacks each Gemm weight into a new buffer before it frees the unpacked one, so a session build briefly
   * holds one extra copy of its largest weight; for lm_head that was ~0.2x a bf16 checkpoint of RSS on top
   * of the 2x float32 floor. The lower bound keeps each block above glibc's largest mmap threshold (32 MiB),
   * so a released session hands it back to the OS instead of leaving it in the heap.
   */
  rowBlocks(name: string, minBlockBytes: number, to: ComputeDtype = 'float32'): string[] {
    return this.rowBlockSpans(name, minBlockBytes, to).map((b) => b.value);
  }

  /** rowBlocks with each block's first row and row count. */
  rowBlockSpans(name: string, minBlockBytes: number, to: ComputeDtype = 'float32'): { value: string; start: number; rows: number }[] {
    const r = this.ref(name);
    if (r.shape.length !== 2 || this.patchOf(name) !== undefined) return [{ value: this.as(name, to), start: 0, rows: r.shape[0] }];
    const [rows, cols] = r.shape;
    const blocks = Math.max(1, Math.floor((rows * cols * (to === 'float32' ? 4 : 2)) / minBlockBytes));
    if (blocks === 1) return [{ value: this.as(name, to), start: 0, rows }];
    const per = Math.ceil(rows / blocks);
    const rowBytes = r.length / rows;
    const t = elemTypeOfDType(r.dtype);
    const out: { value: string; start: number; rows: number }[] = [];
    for (let start = 0; start < rows; start += per) {
      const n = Math.min(per, rows - start);
      const id = `${name}::rows${start}`;
      if (!this.g.has(id)) this.g.externalInit(id, t, [n, cols], { location: r.location, offset: r.offset + start * rowBytes, length: n * rowBytes });
      out.push({ value: t === to ? id : this.g.op('Cast', [id], { to: elemCode(to) }, `${id}::${to}`), start, rows: n });
    }
    return out;
  }

  /** The graph value holding `name` as float32 (bf16/f16 go through a Cast that constant folding removes). */
  f32(name: string): string {
    return this.as(name, 'float32');
  }

  /** The graph value holding `name` in `to` (a Cast from the stored dtype where they differ, folded at load). */
  as(name: string, to: ComputeDtype): string {
    const key = `${name}\u0000${to}`;
    const known = this.values.get(key);
    if (known !== undefined) return known;
    const p = this.patchOf(name);
    let v: string;
    if (p === undefined) {
      const { value, elem } = this.stored(name);
      v = elem === to ? value : this.g.op('Cast', [value], { to: elemCode(to) }, `${name}::${to}`);
    } else {
      // The scatter runs in float32 (the patch's values are float32 rows); a half view casts the result.
      v = to === 'float32' ? this.patchedF32(name, p) : this.g.op('Cast', [this.as(name, 'float32')], { to: elemCode(to) }, `${name}::patched::${to}`);
    }
    this.values.set(key, v);
    return v;
  }

  private patchOf(name: string): StaticRowPatch | undefined {
    const p = this.patches?.(name);
    return p === undefined || p.rows.length === 0 ? undefined : p;
  }

  /** ScatterND(W as float32, rows [k, 1], values [k, d_in]): all inputs constant, folded at session load. */
  private patchedF32(name: string, p: StaticRowPatch): string {
    const r = this.ref(name);
    const [dOut, dIn] = r.shape;
    const k = p.rows.length;
    if (r.shape.length !== 2 || p.values.dtype !== 'F32' || p.values.shape.length !== 2 || p.values.shape[0] !== k || p.values.shape[1] !== dIn || p.values.length !== k * dIn * 4) {
      throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `row patch of ${name}: ${k} rows of float32 [${p.values.shape.join(', ')}] do not fit the weight [${r.shape.join(', ')}]`);
    }
    for (let i = 0; i < k; i++) {
      // Strictly increasing and in range: a repeated index would make the scatter's result undefined.
      if (p.rows[i] >= dOut || (i > 0 && p.rows[i] <= p.rows[i - 1])) {
        throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `row patch of ${name}: rows must be sorted, unique and < ${dOut}`);
      }
    }
    const { value, elem } = this.stored(name);
    const w32 = elem === 'float32' ? value : this.g.op('Cast', [value], { to: elemCode('float32') }, `${name}::float32`);
    const idx = this.g.constI64(p.rows, [k, 1], `${name}::patch_rows`);
    const vals = this.g.externalInit(`${name}::patch_values`, 'float32', [k, dIn], { location: p.values.location, offset: p.values.offset, length: p.values.length });
    return this.g.op('ScatterND', [w32, idx, vals], undefined, `${name}::patched`);
  }
}

/** `x` cast to `to` (no node when `from` is already `to`). */
export function castTo(g: GraphBuilder, x: string, from: ComputeDtype, to: ComputeDtype): string {
  return from === to ? x : g.op('Cast', [x], { to: elemCode(to) });
}

/**
 * HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight. The normalization is always float32; in float16
 * compute, as HF does, x is upcast for it and the result cast back before the (half) weight multiplies it.
 */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number, compute: ComputeDtype = 'float32'): string {
  const x32 = castTo(g, x, compute, 'float32');
  const variance = g.op('ReduceMean', [g.op('Mul', [x32, x32])], { axes: [-1], keepdims: 1 });
  const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [variance, g.scalarF32(eps)])])]);
  return g.op('Mul', [castTo(g, g.op('Mul', [x32, inv]), 'float32', compute), weight]);
}

/** y = x @ W^T (+ b) for flat x [N, in] and W [out, in]. */
export function linear(g: GraphBuilder, x: string, w: string, bias?: string, alpha = 1): string {
  const inputs = bias === undefined ? [x, w] : [x, w, bias];
  return g.op('Gemm', inputs, alpha === 1 ? { transB: 1 } : { transB: 1, alpha: f(alpha) });
}

/** y = x @ W^T for W given as row blocks (see WeightTable.rowBlocks): one Gemm per block, concatenated. */
export function linearRowBlocks(g: GraphBuilder, x: string, blocks: string[]): string {
  if (blocks.length === 1) return linear(g, x, blocks[0]);
  return g.op('Concat', blocks.map((b) => linear(g, x, b)), { axis: -1 });
}

/** PEFT LoRA branch: (x @ A^T) @ B^T * scaling, with A [r, in] and B [out, r]. */
export function loraBranch(g: GraphBuilder, x: string, a: string, b: string, scaling: number): string {
  return linear(g, linear(g, x, a), b, undefined, scaling);
}

/** silu(gate) * up. */
export function siluGate(g: GraphBuilder, gate: string, up: string): string {
  return g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
}

/** inv_freq = 1 / theta^(arange(0, d, 2) / d), rounded to float32 as torch computes it. */
export function ropeInvFreq(headDim: number, theta: number): Float32Array {
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) out[i] = 1 / Math.pow(theta, Math.fround((2 * i) / headDim));
  return out;
}

/** cos/sin tables [B, 1, T, D] for position_ids [B, T] (int64): emb = cat(freqs, freqs). */
export function ropeTables(g: GraphBuilder, positionIds: string, headDim: number, theta: number): { cos: string; sin: string } {
  const inv = g.constF32(ropeInvFreq(headDim, theta), [headDim / 2], 'inv_freq');
  const pos = g.op('Unsqueeze', [g.op('Cast', [positionIds], { to: elemCode('float32') }), g.constI64([2])]);
  const freqs = g.op('Mul', [pos, inv]);
  const emb = g.op('Concat', [freqs, freqs], { axis: -1 });
  const axis1 = g.constI64([1]);
  return {
    cos: g.op('Unsqueeze', [g.op('Cos', [emb]), axis1]),
    sin: g.op('Unsqueeze', [g.op('Sin', [emb]), axis1]),
  };
}

/** rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]). */
export function rotateHalf(g: GraphBuilder, x: string, headDim: number): string {
  const [x1, x2] = g.node('Split', [x, g.constI64([headDim / 2, headDim / 2])], { outputs: 2, attrs: { axis: -1 } });
  return g.op('Concat', [g.op('Neg', [x2]), x1], { axis: -1 });
}

export function applyRope(g: GraphBuilder, x: string, cos: string, sin: string, headDim: number): string {
  return g.op('Add', [g.op('Mul', [x, cos]), g.op('Mul', [rotateHalf(g, x, headDim), sin])]);
}

/** Dynamic sizes shared by all layers: 1-D int64 tensors of length 1. */
export interface Dims {
  b: string;
  t: string;
  /** past + current length (keys). */
  s: string;
}

export function dimsOf(g: GraphBuilder, inputIds: string, attentionMask: string): Dims {
  const ids = g.op('Shape', [inputIds]);
  const am = g.op('Shape', [attentionMask]);
  const slice = (v: string, i: number): string => g.op('Slice', [v, g.constI64([i]), g.constI64([i + 1])]);
  return { b: slice(ids, 0), t: slice(ids, 1), s: slice(am, 1) };
}

/** A shape tensor from a mix of fixed sizes and 1-D dynamic sizes. */
export function shapeOf(g: GraphBuilder, parts: (number | string)[]): string {
  return g.op('Concat', parts.map((p) => (typeof p === 'number' ? g.constI64([p]) : p)), { axis: 0 });
}

/**
 * Boolean mask [B, 1, T, S]: key s is visible to query t when it is not padding and s <= P + t (P = S - T,
 * the cached length): causal in absolute cache positions, so prefill and decode share it.
 */
export function attentionMask4d(g: GraphBuilder, attentionMask: string, d: Dims): string {
  const scalar = (v: string): string => g.op('Squeeze', [v, g.constI64([0])]);
  const s = scalar(d.s);
  const p = g.op('Sub', [s, scalar(d.t)]);
  const one = g.scalarI64(1);
  const kpos = g.op('Range', [g.scalarI64(0), s, one]);
  const qpos = g.op('Range', [p, s, one]);
  const causal = g.op('LessOrEqual', [g.op('Unsqueeze', [kpos, g.constI64([0])]), g.op('Unsqueeze', [qpos, g.constI64([1])])]);
  const pad = g.op('Unsqueeze', [g.op('Cast', [attentionMask], { to: elemCode('bool') }), g.constI64([1, 2])]);
  return g.op('And', [pad, causal]);
}

export interface AttentionShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Type of q/k/v and of the context (default float32); masking and softmax are float32 either way. */
  compute?: ComputeDtype;
}

/**
 * Grouped-query attention core. q [B, NH, T, D], k/v [B, KV, S, D] (already roped and concatenated with the
 * cache). Query heads are grouped per KV head by a reshape (head h uses KV head h / G, as repeat_kv), so keys
 * and values are never repeated in memory. Masked scores are set to float32 min (HF adds finfo.min): a row
 * with no visible key (a padding query) stays finite instead of turning into NaN. In float16 compute the
 * scores are upcast before masking and softmax (HF: softmax(..., dtype=float32).to(query.dtype)).
 * Returns the context flattened to [N, NH * D].
 */
export function gqaAttention(g: GraphBuilder, q: string, k: string, v: string, mask: string, d: Dims, a: AttentionShape): string {
  const compute = a.compute ?? 'float32';
  const groups = a.numHeads / a.numKvHeads;
  const gt = g.op('Mul', [d.t, g.constI64([groups])]);
  const qg = g.op('Reshape', [q, shapeOf(g, [d.b, a.numKvHeads, gt, a.headDim])]);
  const kt = g.op('Transpose', [k], { perm: [0, 1, 3, 2] });
  const scale = castTo(g, g.scalarF32(1 / Math.sqrt(a.headDim)), 'float32', compute);
  const scores = castTo(g, g.op('Mul', [g.op('MatMul', [qg, kt]), scale]), compute, 'float32');
  const s4 = g.op('Reshape', [scores, shapeOf(g, [d.b, a.numHeads, d.t, d.s])]);
  const masked = g.op('Where', [mask, s4, g.scalarF32(-3.4028234663852886e38)]);
  const probs = castTo(g, g.op('Softmax', [masked], { axis: -1 }), 'float32', compute);
  const pg = g.op('Reshape', [probs, shapeOf(g, [d.b, a.numKvHeads, gt, d.s])]);
  const ctx = g.op('MatMul', [pg, v]);
  const ctx4 = g.op('Reshape', [ctx, shapeOf(g, [d.b, a.numHeads, d.t, a.headDim])]);
  const bthd = g.op('Transpose', [ctx4], { perm: [0, 2, 1, 3] });
  return g.op('Reshape', [bthd, g.constI64([-1, a.numHeads * a.headDim])]);
}

/** Flat [N, heads*D] -> [B, heads, T, D]. */
export function toHeads(g: GraphBuilder, x: string, d: Dims, heads: number, headDim: number): string {
  const r = g.op('Reshape', [x, shapeOf(g, [d.b, d.t, heads, headDim])]);
  return g.op('Transpose', [r], { perm: [0, 2, 1, 3] });
}

/** Sum over valid tokens of x^2 per feature: x [N, F], weights [N, 1] (1 for counted tokens) -> [F]. */
export function weightedSquareSum(g: GraphBuilder, x: string, tokenWeights: string): string {
  const sq = g.op('Mul', [g.op('Mul', [x, x]), tokenWeights]);
  return g.op('ReduceSum', [sq, g.constI64([0])], { keepdims: 0 });
}

/** The last position of [B, T, F] (left padding puts every row's last token at T-1) -> [B, F]. */
export function lastToken(g: GraphBuilder, x3: string, d: Dims): string {
  const last = g.op('Sub', [g.op('Squeeze', [d.t, g.constI64([0])]), g.scalarI64(1)]);
  return g.op('Gather', [x3, last], { axis: 1 });
}

/** Flat [N, F] -> [B, T, F]. */
export function unflatten(g: GraphBuilder, x: string, d: Dims, features: number): string {
  return g.op('Reshape', [x, shapeOf(g, [d.b, d.t, features])]);
}

/** Graph input names of a row patch on weight `name`: patched row indices [k] int64, their new rows [k, in] float32. */
export function rowPatchInputNames(name: string): { rows: string; values: string } {
  return { rows: `patch.${name}.rows`, values: `patch.${name}.values` };
}

/**
 * A row patch applied in the graph: `y` (= x @ W^T (+ b), any LoRA branch included) with the output columns
 * of the patched rows replaced by x @ R^T (+ b[rows]), R being the new rows fed as a graph input. So a
 * search step changes a few small input tensors instead of the weights, one session serves every step, and
 * the mapped checkpoint stays untouched. With k = 0 rows the scatter writes nothing: the output is `y` as is.
 */
export function patchedRows(g: GraphBuilder, x: string, y: string, name: string, dIn: number, bias: string | undefined, compute: ComputeDtype): string {
  const names = rowPatchInputNames(name);
  const rows = g.input(names.rows, 'int64', [`k:${name}`]);
  const values = castTo(g, g.input(names.values, 'float32', [`k:${name}`, dIn]), 'float32', compute);
  // MatMul on the transposed rows rather than Gemm: Gemm refuses an empty B on some providers.
  let u = g.op('MatMul', [x, g.op('Transpose', [values], { perm: [1, 0] })]);
  if (bias !== undefined) u = g.op('Add', [u, g.op('Gather', [bias, rows], { axis: 0 })]);
  const idx = g.op('Expand', [g.op('Unsqueeze', [rows, g.constI64([0])]), g.op('Shape', [u])]);
  return g.op('ScatterElements', [y, idx, u], { axis: 1 });
}
