/**
 * Top left singular vectors of an alignment delta V [dOut, dIn], for the `subspace` projection.
 *
 * Cost: with m = min(dOut, dIn) up to `exactLimit`, the m x m Gram matrix is diagonalised exactly (cyclic
 * Jacobi, O(m³) per sweep). Larger matrices (a 14k x 4k MLP weight) use randomized subspace iteration with a
 * rank cap r: O(dOut·dIn·r) per power step, then an r x r Jacobi; the energy share is then measured against
 * ||V||_F², so a share the first r directions cannot reach is capped at r (reported as `capped`).
 * Both paths are deterministic (fixed-seed test matrix, sign convention on every vector).
 */
import { type Mat, matmul, matmulNT, matmulTN, row } from './matrix.js';

export interface SymEigen {
  values: Float64Array;
  /** Column k of the n x n row-major array is the eigenvector of values[k]; values descending. */
  vectors: Float64Array;
  n: number;
}

/** Cyclic Jacobi on a symmetric matrix (fp64); eigenvalues sorted descending. */
export function symmetricEigen(a: ArrayLike<number>, n: number, maxSweeps = 60): SymEigen {
  const A = Float64Array.from(a as ArrayLike<number>);
  const Vv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) Vv[i * n + i] = 1;
  let scale = 0;
  for (let k = 0; k < A.length; k++) scale += A[k] * A[k];
  const tol = 1e-22 * Math.max(scale, 1e-300);
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += A[p * n + q] * A[p * n + q];
    if (off <= tol) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const app = A[p * n + p];
        const aqq = A[q * n + q];
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k * n + p];
          const akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k];
          const aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = Vv[k * n + p];
          const vkq = Vv[k * n + q];
          Vv[k * n + p] = c * vkp - s * vkq;
          Vv[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => A[y * n + y] - A[x * n + x] || x - y);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = A[src * n + src];
    let big = 0;
    for (let k = 0; k < n; k++) if (Math.abs(Vv[k * n + src]) > Math.abs(big)) big = Vv[k * n + src];
    const sign = big < 0 ? -1 : 1;
    for (let k = 0; k < n; k++) vectors[k * n + dst] = sign * Vv[k * n + src];
  });
  return { values, vectors, n };
}

export interface LeftSingular {
  /** [dOut, k]: orthonormal columns. */
  u: Mat;
  /** Singular values of the kept directions. */
  sigma: number[];
  /** Share of ||V||_F² the kept directions hold. */
  energy: number;
  /** True when the rank cap stopped k before the requested share. */
  capped: boolean;
}

export interface SubspaceOptions {
  /** Keep the fewest directions holding this share of ||V||_F² (0 < share <= 1). */
  energyShare: number;
  /** Rank cap of the randomized path. */
  maxRank?: number;
  /** Largest min(dOut, dIn) diagonalised exactly. */
  exactLimit?: number;
  powerIterations?: number;
}

export function topLeftSingular(v: Mat, opts: SubspaceOptions): LeftSingular {
  const { energyShare } = opts;
  if (!(energyShare > 0 && energyShare <= 1)) throw new RangeError(`energy share must be in (0, 1], got ${energyShare}`);
  let total = 0;
  for (let k = 0; k < v.data.length; k++) total += v.data[k] * v.data[k];
  if (total === 0) return { u: { rows: v.rows, cols: 0, data: new Float32Array(0) }, sigma: [], energy: 1, capped: false };
  const m = Math.min(v.rows, v.cols);
  const exactLimit = opts.exactLimit ?? 512;
  let basis: Mat; // [dOut, r] orthonormal columns spanning candidate directions
  let eig: SymEigen;
  if (m <= exactLimit && v.rows <= v.cols) {
    basis = identity(v.rows);
    const g = matmulNT(v, v);
    eig = symmetricEigen(g.data, g.rows);
  } else if (m <= exactLimit) {
    // Right singular vectors from VᵀV; u_k = V v_k / sigma_k below.
    const g = matmulTN(v, v);
    eig = symmetricEigen(g.data, g.rows);
    return finish(leftFromRight(v, eig), total, energyShare, m, false);
  } else {
    const r = Math.min(opts.maxRank ?? 256, m);
    let q = orthonormalColumns(matmul(v, seededGaussian(v.cols, r, 0x5eed)));
    for (let it = 0; it < (opts.powerIterations ?? 2); it++) {
      q = orthonormalColumns(matmul(v, matmulTN(v, q)));
    }
    basis = q;
    const b = matmulTN(q, v); // [r, dIn]
    const g = matmulNT(b, b);
    eig = symmetricEigen(g.data, g.rows);
  }
  const r = eig.n;
  const uAll = new Float32Array(v.rows * r);
  for (let i = 0; i < v.rows; i++) {
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let t = 0; t < r; t++) s += basis.data[i * basis.cols + t] * eig.vectors[t * r + k];
      uAll[i * r + k] = s;
    }
  }
  const sig = Array.from(eig.values, (x) => Math.sqrt(Math.max(0, x)));
  return finish({ u: { rows: v.rows, cols: r, data: uAll }, sigma: sig }, total, energyShare, r, r < m);
}

function leftFromRight(v: Mat, eig: SymEigen): { u: Mat; sigma: number[] } {
  const n = eig.n;
  const sigma = Array.from(eig.values, (x) => Math.sqrt(Math.max(0, x)));
  const u = new Float32Array(v.rows * n);
  const vk = new Float64Array(v.cols);
  for (let k = 0; k < n; k++) {
    if (!(sigma[k] > 0)) continue;
    for (let j = 0; j < v.cols; j++) vk[j] = eig.vectors[j * n + k];
    for (let i = 0; i < v.rows; i++) {
      const ri = row(v, i);
      let s = 0;
      for (let j = 0; j < v.cols; j++) s += ri[j] * vk[j];
      u[i * n + k] = s / sigma[k];
    }
  }
  return { u: { rows: v.rows, cols: n, data: u }, sigma };
}

function finish(
  full: { u: Mat; sigma: number[] },
  total: number,
  share: number,
  available: number,
  rankLimited: boolean,
): LeftSingular {
  let acc = 0;
  let k = 0;
  while (k < full.sigma.length && k < available && acc < share * total * (1 - 1e-9)) {
    if (!(full.sigma[k] > 0)) break;
    acc += full.sigma[k] * full.sigma[k];
    k++;
  }
  const rows = full.u.rows;
  const cols = full.u.cols;
  const u = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) for (let t = 0; t < k; t++) u[i * k + t] = full.u.data[i * cols + t];
  return { u: { rows, cols: k, data: u }, sigma: full.sigma.slice(0, k), energy: acc / total, capped: rankLimited && acc < share * total * (1 - 1e-9) };
}

function identity(n: number): Mat {
  const d = new Float32Array(n * n);
  for (let i = 0; i < n; i++) d[i * n + i] = 1;
  return { rows: n, cols: n, data: d };
}

/** Modified Gram-Schmidt over columns, twice (re-orthogonalisation keeps fp32 columns orthonormal). */
export function orthonormalColumns(m: Mat): Mat {
  const { rows, cols } = m;
  const colsData: Float64Array[] = [];
  for (let k = 0; k < cols; k++) {
    const c = new Float64Array(rows);
    for (let i = 0; i < rows; i++) c[i] = m.data[i * cols + k];
    for (let pass = 0; pass < 2; pass++) {
      for (const prev of colsData) {
        let d = 0;
        for (let i = 0; i < rows; i++) d += prev[i] * c[i];
        for (let i = 0; i < rows; i++) c[i] -= d * prev[i];
      }
    }
    let n2 = 0;
    for (let i = 0; i < rows; i++) n2 += c[i] * c[i];
    if (n2 < 1e-24) continue;
    const inv = 1 / Math.sqrt(n2);
    for (let i = 0; i < rows; i++) c[i] *= inv;
    colsData.push(c);
  }
  const out = new Float32Array(rows * colsData.length);
  colsData.forEach((c, k) => {
    for (let i = 0; i < rows; i++) out[i * colsData.length + k] = c[i];
  });
  return { rows, cols: colsData.length, data: out };
}

/** Deterministic N(0,1) matrix (mulberry32 + Box-Muller). */
export function seededGaussian(rows: number, cols: number, seed: number): Mat {
  let s = seed >>> 0;
  const rand = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const d = new Float32Array(rows * cols);
  for (let k = 0; k < d.length; k++) {
    const u1 = rand() || 1e-12;
    d[k] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * rand());
  }
  return { rows, cols, data: d };
}
