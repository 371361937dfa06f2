import { describe, expect, it } from 'vitest';
import { cosineStats, layerCurve, layerWeights, parseLayerList, selectBand } from '../../src/defense/math/layers.js';
import { type Mat, mat, matmul, matmulNT, matmulTN, transpose } from '../../src/defense/math/matrix.js';
import {
  attributionRowScores,
  contrastiveRowScores,
  deltaRowScores,
  normaliseRowScores,
  perClusterRowScores,
  safetyOutputRowScores,
  utilityAwareRowScores,
  wandaRowScores,
} from '../../src/defense/math/scores.js';
import { countRows, difference, pickerExcluding, topShare, union } from '../../src/defense/math/select.js';
import { gramRows, projectLoraB, projectRows, rowProjection, safeLoraCosine } from '../../src/defense/math/project.js';
import { orthonormalColumns, seededGaussian, symmetricEigen, topLeftSingular } from '../../src/defense/math/svd.js';

const f = (...x: number[]): Float32Array => Float32Array.from(x);
const idx = (...x: number[]): Uint32Array => Uint32Array.from(x);

describe('matrix products', () => {
  it('matmul / NT / TN agree with hand values', () => {
    const a = mat(2, 2, [1, 2, 3, 4]);
    const b = mat(2, 2, [5, 6, 7, 8]);
    expect([...matmul(a, b).data]).toEqual([19, 22, 43, 50]);
    expect([...matmulNT(a, b).data]).toEqual([17, 23, 39, 53]);
    expect([...matmulTN(a, b).data]).toEqual([26, 30, 38, 44]);
    expect([...transpose(mat(2, 3, [1, 2, 3, 4, 5, 6])).data]).toEqual([1, 4, 2, 5, 3, 6]);
  });
});

describe('safety layers', () => {
  it('cosine means: identical benign vectors give s_BB 1, orthogonal harmful s_BH 0', () => {
    const s = cosineStats([f(1, 0), f(2, 0), f(3, 0)], [f(0, 1)]);
    expect(s.sBB).toBeCloseTo(1, 6);
    expect(s.sBH).toBeCloseTo(0, 6);
    // pairs: (1,0)-(1,1)/√2 cos = 0.7071 and (1,0)-(0,1) = 0 -> s_BB of two = 0.
    const t = cosineStats([f(1, 0), f(0, 1)], [f(1, 1)]);
    expect(t.sBB).toBeCloseTo(0, 6);
    expect(t.sBH).toBeCloseTo(Math.SQRT1_2, 6);
  });

  it('curve, weights and band', () => {
    const curve = layerCurve(
      [[f(1, 0), f(1, 0)], [f(1, 0), f(1, 0)]],
      [[f(1, 0)], [f(0, 1)]],
    );
    expect(curve.gap[0]).toBeCloseTo(0, 6);
    expect(curve.gap[1]).toBeCloseTo(1, 6);
    // gaps 0.1, 0.3, 0.8, 0.7: rises 0.1, 0.2, 0.5, 0 -> /0.8
    const w = layerWeights([0.1, 0.3, 0.8, 0.7]);
    expect(w.map((x) => Number(x.toFixed(4)))).toEqual([0.125, 0.25, 0.625, 0]);
    expect(selectBand(w, 0.6)).toEqual([2]);
    expect(selectBand(w, 0.8)).toEqual([1, 2]);
    expect(selectBand(w, 1)).toEqual([0, 1, 2]);
    expect(layerWeights([0.2, 0.1, 0.05])).toEqual([1, 0, 0]);
    expect(layerWeights([-0.1, -0.2])).toEqual([0.5, 0.5]);
    expect(parseLayerList('3, 0-1', 4)).toEqual([0, 1, 3]);
    expect(() => parseLayerList('5', 4)).toThrow(/layer 5/);
  });
});

describe('row scores', () => {
  const w = mat(2, 3, [1, -2, 0, 0, 1, 3]);
  it('wanda = |W|·||X|| row sums, normalised by the mean row score', () => {
    const s = wandaRowScores(w, f(1, 2, 3));
    expect([...s]).toEqual([5, 11]);
    expect([...normaliseRowScores(s, 0.5)].map((x) => Number(x.toFixed(4)))).toEqual([0.3125, 0.6875]);
  });
  it('contrastive keeps only features louder on harmful tokens', () => {
    // rms_H = [2, 1, 3], rms_B = [1, 1, 4] -> weights [1, 0, 0]
    const s = contrastiveRowScores(w, f(4, 1, 9), 1, f(4, 4, 64), 4);
    expect([...s]).toEqual([1, 0]);
  });
  it('delta-aware and attribution', () => {
    expect([...deltaRowScores(mat(2, 2, [1, -1, 0, 2]), f(3, 1))]).toEqual([4, 2]);
    expect([...attributionRowScores(f(0.5, -2))]).toEqual([-0.5, 2]);
  });
  it('V.x proxy: diagonal energy of the safety output, harmful minus benign', () => {
    // V rows [1, 0] and [1, 2]; mean squares harmful [4, 1], benign [1, 1] -> feature weights [3, 0]
    const v = mat(2, 2, [1, 0, 1, 2]);
    expect([...safetyOutputRowScores(v, f(8, 2), 2, f(3, 3), 3)]).toEqual([3, 3]);
    // benign-heavier feature 1 (weights [0, -1]) pushes row 1 below 0
    expect([...safetyOutputRowScores(v, f(2, 0), 2, f(3, 3), 3)]).toEqual([0, -4]);
    expect(() => safetyOutputRowScores(v, f(1), 1, f(1, 1), 1)).toThrow(RangeError);
  });
  it('per-cluster attribution: best per-token gain of each row over the clusters', () => {
    // cluster A (2 tokens) gains [2, 0, -1] per token, cluster B (4 tokens) gains [0, 1, -0.5]
    const s = perClusterRowScores([f(-4, 0, 2), f(0, -4, 2)], [2, 4]);
    expect([...s]).toEqual([2, 1, -0.5]);
    expect(() => perClusterRowScores([], [])).toThrow(RangeError);
    expect(() => perClusterRowScores([f(1, 2), f(1)], [1, 1])).toThrow(RangeError);
  });
  it('utility-aware attribution: per-token means, the answers\' NLL change weighed by w', () => {
    // harm sums over 2 tokens [-4, -2] -> means [-2, -1]; utility sums over 4 tokens [8, -4] -> means [2, -1]
    expect([...utilityAwareRowScores(f(-4, -2), 2, f(8, -4), 4, 0)]).toEqual([2, 1]);
    // w = 1: row 0 would raise the answers' NLL by 2 per token and drops below row 1
    expect([...utilityAwareRowScores(f(-4, -2), 2, f(8, -4), 4, 1)].map((x) => x + 0)).toEqual([0, 2]);
    expect([...utilityAwareRowScores(f(-4, -2), 2, f(8, -4), 4, 0.5)]).toEqual([1, 1.5]);
    expect(() => utilityAwareRowScores(f(1), 1, f(1, 2), 1, 1)).toThrow(RangeError);
  });
});

describe('selection', () => {
  const scores = new Map([
    ['b', f(0.9, 0.1, 0.5, 0.3)],
    ['a', f(0.2, 0.8)],
  ]);
  it('pickerExcluding: best rows outside the excluded sets, never padded with excluded ones', () => {
    const pick = pickerExcluding(scores, [new Map([['b', idx(0)]]), new Map([['a', idx(1)]])], 6);
    // without b0 (0.9) and a1 (0.8): b2 0.5, b3 0.3, a0 0.2, b1 0.1
    expect(pick(2 / 6)).toEqual(new Map([['a', idx()], ['b', idx(2, 3)]]));
    expect(pick(3 / 6)).toEqual(new Map([['a', idx(0)], ['b', idx(2, 3)]]));
    // asking for all 6 gives the 4 that are left
    expect(countRows(pick(1))).toBe(4);
    // the scores passed in are not modified
    expect([...scores.get('b')!]).toEqual([...f(0.9, 0.1, 0.5, 0.3)]);
  });
  it('global top-q ranks all matrices together', () => {
    const sel = topShare(scores, 0.5, 'global'); // 3 of 6 rows: b0 0.9, a1 0.8, b2 0.5
    expect([...sel.get('a')!]).toEqual([1]);
    expect([...sel.get('b')!]).toEqual([0, 2]);
  });
  it('per-matrix top-p and set difference N = N_H minus N_T', () => {
    const nh = topShare(scores, 0.5, 'per-matrix');
    expect([...nh.get('a')!]).toEqual([1]);
    expect([...nh.get('b')!]).toEqual([0, 2]);
    const nt = topShare(new Map([['a', f(0, 1)], ['b', f(0, 0, 1, 0)]]), 0.25, 'per-matrix');
    const n = difference(nh, nt);
    // round(0.25*2) = 1 task row per matrix: a loses row 1, b loses row 2.
    expect([...n.get('a')!]).toEqual([]);
    expect([...n.get('b')!]).toEqual([0]);
    expect(countRows(n)).toBe(1);
    expect([...union(n, new Map([['c', idx(4)]])).get('c')!]).toEqual([4]);
  });
  it('set difference removes exactly the task rows', () => {
    const n = difference(new Map([['m', idx(1, 3, 5, 7)]]), new Map([['m', idx(3, 4, 7)]]));
    expect([...n.get('m')!]).toEqual([1, 5]);
  });
});

/** Small fixed triple: base, aligned = base + V, finetuned = aligned + D. */
function triple(): { base: Mat; aligned: Mat; finetuned: Mat; v: Mat; d: Mat } {
  const base = mat(3, 2, [0, 0, 1, 1, 2, -1]);
  const v = mat(3, 2, [1, 0, 0, 1, 1, 1]);
  const d = mat(3, 2, [2, 3, -1, 1, 0, 4]);
  const aligned = mat(3, 2, base.data.map((x, k) => x + v.data[k]));
  const finetuned = mat(3, 2, aligned.data.map((x, k) => x + d.data[k]));
  return { base, aligned, finetuned, v, d };
}

describe('projection modes', () => {
  it('row: keeps the component of D[i] along V[i]', () => {
    const { v, d } = triple();
    // row 0: D=(2,3), V=(1,0) -> (2,0); row 2: D=(0,4), V=(1,1) -> (2,2)
    expect([...rowProjection(v, d, idx(0, 2)).data]).toEqual([2, 0, 2, 2]);
  });
  it('gram: (V Vᵀ D)[N] / ||V||_F, both association orders agree', () => {
    const { v, d } = triple();
    // V Vᵀ = [[1,0,1],[0,1,1],[1,1,2]]; V Vᵀ D row 2 = D0 + D1 + 2 D2 = (1, 12); ||V||_F = 2
    const g = gramRows(v, d, idx(2)).dPrime;
    expect([...g.data].map((x) => Number(x.toFixed(5)))).toEqual([0.5, 6]);
    const all = gramRows(v, d, idx(0, 1, 2)).dPrime; // n = 3 >= dIn: the other order
    expect([...all.data].slice(4).map((x) => Number(x.toFixed(5)))).toEqual([0.5, 6]);
  });
  it('restore gives the aligned rows; other rows are not returned', () => {
    const t = triple();
    const out = projectRows(t, idx(1), { mode: 'restore' }).values;
    expect([...out.data]).toEqual([...t.aligned.data.subarray(2, 4)]);
  });
  it('alpha = 1 is the plain projection, alpha = 0 the fine-tune, alpha = 2 extrapolates', () => {
    const t = triple();
    const plain = projectRows(t, idx(0, 2), { mode: 'row' }).values.data;
    const one = projectRows(t, idx(0, 2), { mode: 'row', alpha: 1 }).values.data;
    expect([...one]).toEqual([...plain]);
    // row 0: W_al = (1,0), D' = (2,0) -> (3,0); ft = (3,3)
    expect([...plain.subarray(0, 2)]).toEqual([3, 0]);
    const zero = projectRows(t, idx(0), { mode: 'row', alpha: 0 }).values.data;
    expect([...zero]).toEqual([3, 3]);
    const two = projectRows(t, idx(0), { mode: 'row', alpha: 2 }).values.data;
    expect([...two]).toEqual([3, -3]);
  });
  it('add: W_ft[i] + g V[i]', () => {
    const t = triple();
    const out = projectRows(t, idx(2), { mode: 'add', strength: 2 }).values.data;
    // ft row 2 = base (2,-1) + V (1,1) + D (0,4) = (3,4); + 2 (1,1) = (5,6)
    expect([...out]).toEqual([5, 6]);
  });
  it('realign: W_aligned[i] + g V[i] (the row\'s fine-tuning delta undone), whatever the fine-tune did to it', () => {
    const t = triple();
    const out = projectRows(t, idx(2), { mode: 'realign', strength: 2 }).values.data;
    // aligned row 2 = base (2,-1) + V (1,1) = (3,0); + 2 (1,1) = (5,2); the fine-tune's D (0,4) is gone
    expect([...out]).toEqual([5, 2]);
    // g = 0 is restore
    expect([...projectRows(t, idx(1, 2), { mode: 'realign', strength: 0 }).values.data]).toEqual([...projectRows(t, idx(1, 2), { mode: 'restore' }).values.data]);
  });
  it('subspace is idempotent and keeps D when V spans everything', () => {
    const v = seededGaussian(6, 4, 7);
    const d = seededGaussian(6, 4, 9);
    const rows = idx(0, 1, 2, 3, 4, 5);
    const once = projectRowsFromVD(v, d, rows, 0.999999);
    const twice = projectRowsFromVD(v, once, rows, 0.999999);
    for (let k = 0; k < once.data.length; k++) expect(twice.data[k]).toBeCloseTo(once.data[k], 4);
    // rank-1 V: projector onto its single column direction u = (1,0,0)
    const v1 = mat(3, 2, [2, 1, 0, 0, 0, 0]);
    const d1 = mat(3, 2, [1, 2, 3, 4, 5, 6]);
    const p = projectRowsFromVD(v1, d1, idx(0, 1), 1);
    expect([...p.data].map((x) => Number(x.toFixed(5)))).toEqual([1, 2, 0, 0]);
  });
  it('gram is not idempotent (unlike subspace)', () => {
    const { v, d } = triple();
    const rows = idx(0, 1, 2);
    const once = gramRows(v, d, rows).dPrime;
    const twice = gramRows(v, once, rows).dPrime;
    expect(Math.abs(twice.data[5] - once.data[5])).toBeGreaterThan(0.1);
  });
  it('LoRA form: projecting B equals projecting the merged delta s·B·A', () => {
    const v = seededGaussian(5, 4, 3);
    const b = seededGaussian(5, 2, 4);
    const a = seededGaussian(2, 4, 5);
    const s = 2;
    const rows = idx(1, 3);
    for (const mode of ['gram', 'subspace'] as const) {
      const bNew = projectLoraB(v, b, rows, { mode, energyShare: 0.8 }).values;
      const d = matmul(b, a);
      d.data.forEach((x, k) => (d.data[k] = s * x));
      const base = mat(5, 4);
      const aligned = v;
      const finetuned = mat(5, 4, aligned.data.map((x, k) => x + d.data[k]));
      const merged = projectRows({ base, aligned, finetuned }, rows, { mode, energyShare: 0.8 }).values;
      const viaB = matmul(bNew, a);
      for (let k = 0; k < viaB.data.length; k++) {
        expect(aligned.data[rows[Math.floor(k / 4)] * 4 + (k % 4)] + s * viaB.data[k]).toBeCloseTo(merged.data[k], 4);
      }
    }
  });
  it('Safe LoRA cosine: 1 when D lies in span(V) along its top direction, 0 when orthogonal', () => {
    const v = mat(2, 2, [1, 0, 0, 0]);
    expect(safeLoraCosine(v, mat(2, 2, [3, 1, 0, 0]))).toBeCloseTo(1, 6);
    expect(safeLoraCosine(v, mat(2, 2, [0, 0, 1, 1]))).toBe(1); // C D = 0: nothing to project, reported as aligned
    expect(safeLoraCosine(v, mat(2, 2, [1, 0, 1, 0]))).toBeCloseTo(Math.SQRT1_2, 6);
  });
});

function projectRowsFromVD(v: Mat, d: Mat, rows: Uint32Array, share: number): Mat {
  const base = mat(v.rows, v.cols);
  const finetuned = mat(v.rows, v.cols, v.data.map((x, k) => x + d.data[k]));
  const out = projectRows({ base, aligned: v, finetuned }, rows, { mode: 'subspace', energyShare: share }).values;
  return mat(out.rows, out.cols, out.data.map((x, k) => x - v.data[rows[Math.floor(k / v.cols)] * v.cols + (k % v.cols)]));
}

describe('eigen / SVD', () => {
  it('Jacobi diagonalises a hand-checked 2x2', () => {
    const e = symmetricEigen([2, 1, 1, 2], 2);
    expect(e.values[0]).toBeCloseTo(3, 10);
    expect(e.values[1]).toBeCloseTo(1, 10);
    expect(Math.abs(e.vectors[0])).toBeCloseTo(Math.SQRT1_2, 10);
  });
  it('exact and randomized paths find the same top directions by energy share', () => {
    // V = u1 * 10 * v1ᵀ + u2 * 1 * v2ᵀ with orthonormal u's: 99% of energy in one direction.
    const u = orthonormalColumns(seededGaussian(40, 2, 11));
    const w = orthonormalColumns(seededGaussian(30, 2, 12));
    const v = mat(40, 30);
    for (let i = 0; i < 40; i++) for (let j = 0; j < 30; j++) {
      v.data[i * 30 + j] = 10 * u.data[i * 2] * w.data[j * 2] + u.data[i * 2 + 1] * w.data[j * 2 + 1];
    }
    const exact = topLeftSingular(v, { energyShare: 0.95 });
    expect(exact.u.cols).toBe(1);
    expect(exact.sigma[0]).toBeCloseTo(10, 3);
    const both = topLeftSingular(v, { energyShare: 0.999 });
    expect(both.u.cols).toBe(2);
    const rand = topLeftSingular(v, { energyShare: 0.999, exactLimit: 4, maxRank: 6 });
    expect(rand.u.cols).toBe(2);
    expect(rand.sigma[1]).toBeCloseTo(1, 3);
    // same projector: |<u1_exact, u1_rand>| = 1
    let c = 0;
    for (let i = 0; i < 40; i++) c += exact.u.data[i] * rand.u.data[i * 2];
    expect(Math.abs(c)).toBeCloseTo(1, 4);
    // tall matrix (dOut > dIn) goes through VᵀV
    const tall = topLeftSingular(mat(3, 1, [3, 4, 0]), { energyShare: 1 });
    expect([...tall.u.data].map((x) => Number(x.toFixed(5)))).toEqual([0.6, 0.8, 0]);
  });
});

describe('k-means', () => {
  it('separates two obvious groups deterministically', async () => {
    const { kmeans } = await import('../../src/defense/math/kmeans.js');
    const pts = [f(0, 0), f(0, 1), f(10, 10), f(10, 11), f(1, 0)];
    const a = kmeans(pts, 2, 7);
    const b = kmeans(pts, 2, 7);
    expect(a.assignment).toEqual(b.assignment);
    expect(a.assignment[0]).toBe(a.assignment[1]);
    expect(a.assignment[0]).toBe(a.assignment[4]);
    expect(a.assignment[2]).toBe(a.assignment[3]);
    expect(a.assignment[0]).not.toBe(a.assignment[2]);
    expect([...a.sizes].sort()).toEqual([2, 3]);
    expect(kmeans(pts, 9).centroids.length).toBe(5);
  });
});
