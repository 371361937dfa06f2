/**
 * Dense row-major fp32 matrices and the few products the projections need. Sums accumulate in JS numbers
 * (fp64) and are stored back as fp32: long dot products over d_in ~ 4k-14k lose digits in fp32.
 */

export interface Mat {
  rows: number;
  cols: number;
  data: Float32Array;
}

export function mat(rows: number, cols: number, data?: ArrayLike<number>): Mat {
  if (data !== undefined && data.length !== rows * cols) {
    throw new RangeError(`matrix data holds ${data.length} values, shape [${rows}, ${cols}] needs ${rows * cols}`);
  }
  return { rows, cols, data: data === undefined ? new Float32Array(rows * cols) : Float32Array.from(data) };
}

/** View of row i (no copy). */
export function row(m: Mat, i: number): Float32Array {
  return m.data.subarray(i * m.cols, (i + 1) * m.cols);
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>, n = a.length): number {
  let s = 0;
  for (let k = 0; k < n; k++) s += a[k] * b[k];
  return s;
}

export function frobenius(m: Mat): number {
  let s = 0;
  const d = m.data;
  for (let k = 0; k < d.length; k++) s += d[k] * d[k];
  return Math.sqrt(s);
}

export function sub(a: Mat, b: Mat): Mat {
  sameShape(a, b, 'sub');
  const out = new Float32Array(a.data.length);
  for (let k = 0; k < out.length; k++) out[k] = a.data[k] - b.data[k];
  return { rows: a.rows, cols: a.cols, data: out };
}

export function sameShape(a: Mat, b: Mat, what: string): void {
  if (a.rows !== b.rows || a.cols !== b.cols) {
    throw new RangeError(`${what}: shapes [${a.rows}, ${a.cols}] and [${b.rows}, ${b.cols}] differ`);
  }
}

/** Rows `idx` of m, in the order given. */
export function gatherRows(m: Mat, idx: ArrayLike<number>): Mat {
  const out = new Float32Array(idx.length * m.cols);
  for (let r = 0; r < idx.length; r++) out.set(row(m, idx[r]), r * m.cols);
  return { rows: idx.length, cols: m.cols, data: out };
}

/** a · b ([n,k] x [k,m]); i-k-j loop order with an fp64 accumulator row. */
export function matmul(a: Mat, b: Mat): Mat {
  if (a.cols !== b.rows) throw new RangeError(`matmul: [${a.rows}, ${a.cols}] x [${b.rows}, ${b.cols}]`);
  const out = new Float32Array(a.rows * b.cols);
  const acc = new Float64Array(b.cols);
  for (let i = 0; i < a.rows; i++) {
    acc.fill(0);
    for (let k = 0; k < a.cols; k++) {
      const aik = a.data[i * a.cols + k];
      if (aik === 0) continue;
      const bo = k * b.cols;
      for (let j = 0; j < b.cols; j++) acc[j] += aik * b.data[bo + j];
    }
    out.set(acc, i * b.cols);
  }
  return { rows: a.rows, cols: b.cols, data: out };
}

/** a · bᵀ ([n,k] x [m,k]ᵀ): row-by-row dot products, cache-friendly for row-major inputs. */
export function matmulNT(a: Mat, b: Mat): Mat {
  if (a.cols !== b.cols) throw new RangeError(`matmulNT: [${a.rows}, ${a.cols}] x [${b.rows}, ${b.cols}]ᵀ`);
  const out = new Float32Array(a.rows * b.rows);
  for (let i = 0; i < a.rows; i++) {
    const ai = row(a, i);
    for (let j = 0; j < b.rows; j++) out[i * b.rows + j] = dot(ai, row(b, j), a.cols);
  }
  return { rows: a.rows, cols: b.rows, data: out };
}

/** aᵀ · b ([k,n]ᵀ x [k,m]). */
export function matmulTN(a: Mat, b: Mat): Mat {
  if (a.rows !== b.rows) throw new RangeError(`matmulTN: [${a.rows}, ${a.cols}]ᵀ x [${b.rows}, ${b.cols}]`);
  const acc = new Float64Array(a.cols * b.cols);
  for (let k = 0; k < a.rows; k++) {
    const ak = row(a, k);
    const bk = row(b, k);
    for (let i = 0; i < a.cols; i++) {
      const v = ak[i];
      if (v === 0) continue;
      const o = i * b.cols;
      for (let j = 0; j < b.cols; j++) acc[o + j] += v * bk[j];
    }
  }
  return { rows: a.cols, cols: b.cols, data: Float32Array.from(acc) };
}

export function transpose(m: Mat): Mat {
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out[j * m.rows + i] = m.data[i * m.cols + j];
  return { rows: m.cols, cols: m.rows, data: out };
}
