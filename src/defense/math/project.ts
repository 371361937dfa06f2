/**
 * Step 3 of method.md: new values for the selected rows of one linear weight. V = W_aligned - W_base is the
 * alignment (safety) direction, D = W_finetuned - W_aligned the fine-tuning delta. Only rows in N change:
 *   W_out[i] = W_ft[i] + alpha * (W_aligned[i] + D'[i] - W_ft[i])      (gram, subspace, row, restore)
 *   W_out[i] = W_ft[i] + g * V[i]                                     (add)
 *   W_out[i] = W_aligned[i] + g * V[i]                                (realign: add on the row's aligned values)
 * realign undoes the fine-tuning delta on the rows the ranking says carry safety before pushing them along V:
 * add keeps that delta, which may be the very change that broke them, and has to outweigh it with g
 * (docs/method-choices.md, "Realign").
 */
import { type Mat, dot, frobenius, gatherRows, matmul, matmulNT, matmulTN, row, sameShape } from './matrix.js';
import { topLeftSingular } from './svd.js';

export const PROJECTION_MODES = ['gram', 'subspace', 'row', 'restore', 'add', 'realign'] as const;
export type ProjectionMode = (typeof PROJECTION_MODES)[number];

/** The modes' one-line help (CLI, OpenAPI), next to the list it describes. */
export const PROJECTION_MODE_HELP = 'Row edit: realign (W_aligned + g V: the row\'s fine-tuning delta undone, then pushed along V), add (W + g V), gram, subspace, row or restore (back to aligned)';

/**
 * Modes whose new row i reads only row i of the three matrices (gram and subspace read all of V and D): they
 * can be computed from the selected rows alone (projectRowsOnly).
 */
export function isRowLocal(mode: ProjectionMode): boolean {
  return mode === 'add' || mode === 'realign' || mode === 'row' || mode === 'restore';
}

export interface ProjectionOptions {
  mode: ProjectionMode;
  /** Strength alpha of the correction (all modes but add and realign); 1 = the plain projection. */
  alpha?: number;
  /** g of the add and realign modes. */
  strength?: number;
  /** subspace: share of ||V||_F² the kept singular directions hold. */
  energyShare?: number;
  /** subspace: rank cap of the randomized SVD on large matrices. */
  maxRank?: number;
}

export interface MatrixTriple {
  base: Mat;
  aligned: Mat;
  finetuned: Mat;
}

export interface ProjectionInfo {
  /** subspace: directions kept and their energy share. */
  rank?: number;
  energy?: number;
  capped?: boolean;
  /** gram: the normaliser ||V||_F (method.md: Dim() read as Frobenius norm, as Safe LoRA does). */
  normV?: number;
}

/** Rows `rows` (sorted) of the hardened weight, [rows.length, dIn]. */
export function projectRows(m: MatrixTriple, rows: Uint32Array, opts: ProjectionOptions): { values: Mat; info: ProjectionInfo } {
  sameShape(m.base, m.aligned, 'projectRows base/aligned');
  sameShape(m.aligned, m.finetuned, 'projectRows aligned/finetuned');
  const cols = m.aligned.cols;
  const out: Mat = { rows: rows.length, cols, data: new Float32Array(rows.length * cols) };
  if (rows.length === 0) return { values: out, info: {} };
  if (opts.mode === 'add' || opts.mode === 'realign') {
    const g = opts.strength ?? 1;
    for (let r = 0; r < rows.length; r++) {
      const i = rows[r];
      const al = row(m.aligned, i);
      const ba = row(m.base, i);
      const from = opts.mode === 'add' ? row(m.finetuned, i) : al;
      const o = r * cols;
      for (let j = 0; j < cols; j++) out.data[o + j] = from[j] + g * (al[j] - ba[j]);
    }
    return { values: out, info: {} };
  }
  const v = deltaOf(m.aligned, m.base);
  const d = deltaOf(m.finetuned, m.aligned);
  const { dPrime, info } = projectedDelta(v, d, rows, opts);
  const alpha = opts.alpha ?? 1;
  for (let r = 0; r < rows.length; r++) {
    const i = rows[r];
    const ft = row(m.finetuned, i);
    const al = row(m.aligned, i);
    const o = r * cols;
    for (let j = 0; j < cols; j++) out.data[o + j] = ft[j] + alpha * (al[j] + dPrime.data[o + j] - ft[j]);
  }
  return { values: out, info };
}

/**
 * projectRows of a row-local mode (isRowLocal) from the selected rows alone: `m` holds rows N of each matrix,
 * in order ([N.length, dIn] each); the result equals projectRows on the whole matrices, value for value.
 */
export function projectRowsOnly(m: MatrixTriple, opts: ProjectionOptions): Mat {
  if (!isRowLocal(opts.mode)) throw new RangeError(`projectRowsOnly: mode ${opts.mode} reads whole matrices`);
  return projectRows(m, Uint32Array.from({ length: m.finetuned.rows }, (_, i) => i), opts).values;
}

/** D'[N] for the projection modes (not add or realign), [rows.length, dIn]. */
export function projectedDelta(v: Mat, d: Mat, rows: Uint32Array, opts: ProjectionOptions): { dPrime: Mat; info: ProjectionInfo } {
  // gram/subspace only need V and D to share rows (D may be a LoRA B [dOut, r]); row needs equal shapes.
  if (v.rows !== d.rows) throw new RangeError(`projectedDelta: V has ${v.rows} rows, D has ${d.rows}`);
  switch (opts.mode) {
    case 'restore':
      return { dPrime: { rows: rows.length, cols: d.cols, data: new Float32Array(rows.length * d.cols) }, info: {} };
    case 'row':
      sameShape(v, d, 'row projection');
      return { dPrime: rowProjection(v, d, rows), info: {} };
    case 'gram':
      return gramRows(v, d, rows);
    case 'subspace': {
      const sv = topLeftSingular(v, { energyShare: opts.energyShare ?? 0.9, maxRank: opts.maxRank });
      // (U_k U_kᵀ D)[N] = U_k[N,:] (U_kᵀ D): never forms the dOut x dOut projector.
      const utd = matmulTN(sv.u, d);
      const dPrime = matmul(gatherRows(sv.u, rows), utd);
      return { dPrime, info: { rank: sv.u.cols, energy: sv.energy, capped: sv.capped } };
    }
    default:
      throw new RangeError(`projectedDelta: mode ${String(opts.mode)} has no D'`);
  }
}

/** D'[i] = (D[i]·V[i] / ||V[i]||²) V[i]; a row with V[i] = 0 has no safety direction and gets D'[i] = 0. */
export function rowProjection(v: Mat, d: Mat, rows: Uint32Array): Mat {
  const out: Mat = { rows: rows.length, cols: d.cols, data: new Float32Array(rows.length * d.cols) };
  for (let r = 0; r < rows.length; r++) {
    const vi = row(v, rows[r]);
    const vv = dot(vi, vi);
    if (vv === 0) continue;
    const c = dot(row(d, rows[r]), vi) / vv;
    for (let j = 0; j < d.cols; j++) out.data[r * d.cols + j] = c * vi[j];
  }
  return out;
}

/**
 * (C D)[N] with C = V Vᵀ / ||V||_F, never materialising C. Two association orders; the cheaper is used:
 * (V[N] Vᵀ) D costs 2·n·dOut·dIn, V[N] (Vᵀ D) costs dIn²·dOut + n·dIn².
 */
export function gramRows(v: Mat, d: Mat, rows: Uint32Array): { dPrime: Mat; info: ProjectionInfo } {
  const normV = frobenius(v);
  if (normV === 0) return { dPrime: { rows: rows.length, cols: d.cols, data: new Float32Array(rows.length * d.cols) }, info: { normV } };
  const n = rows.length;
  const costRowsFirst = 2 * n * v.rows * v.cols;
  const costGramFirst = v.cols * v.cols * v.rows + n * v.cols * v.cols;
  const vN = gatherRows(v, rows);
  const dPrime = costRowsFirst <= costGramFirst ? matmul(matmulNT(vN, v), d) : matmul(vN, matmulTN(v, d));
  const inv = 1 / normV;
  for (let k = 0; k < dPrime.data.length; k++) dPrime.data[k] *= inv;
  return { dPrime, info: { normV } };
}

function deltaOf(a: Mat, b: Mat): Mat {
  const out = new Float32Array(a.data.length);
  for (let k = 0; k < out.length; k++) out[k] = a.data[k] - b.data[k];
  return { rows: a.rows, cols: a.cols, data: out };
}

/**
 * LoRA form for gram/subspace: D = s·B·A, so P·D = s·(P·B)·A and only B changes: B'[N] = B[N] + alpha((P B)[N] - B[N]).
 * Returns the new rows of B, [rows.length, r].
 */
export function projectLoraB(v: Mat, b: Mat, rows: Uint32Array, opts: ProjectionOptions): { values: Mat; info: ProjectionInfo } {
  if (opts.mode !== 'gram' && opts.mode !== 'subspace') throw new RangeError(`LoRA form exists for gram and subspace, not ${opts.mode}`);
  if (v.rows !== b.rows) throw new RangeError(`projectLoraB: V has ${v.rows} rows, B has ${b.rows}`);
  const { dPrime: pb, info } = projectedDelta(v, b, rows, opts);
  const alpha = opts.alpha ?? 1;
  for (let r = 0; r < rows.length; r++) {
    const bi = row(b, rows[r]);
    for (let j = 0; j < b.cols; j++) pb.data[r * b.cols + j] = bi[j] + alpha * (pb.data[r * b.cols + j] - bi[j]);
  }
  return { values: pb, info };
}

/** Safe LoRA's layer test: cos(C D, D) over the flattened matrices (C = V Vᵀ / ||V||_F). */
export function safeLoraCosine(v: Mat, d: Mat): number {
  const all = Uint32Array.from({ length: v.rows }, (_, i) => i);
  const cd = gramRows(v, d, all).dPrime;
  const nd = frobenius(d);
  const ncd = frobenius(cd);
  if (nd === 0 || ncd === 0) return 1;
  return dot(cd.data, d.data) / (nd * ncd);
}
