/** Two edit parts with different strengths, merged into one row compute: each row from its own part, in order. */
import { describe, expect, it } from 'vitest';
import { combinedCompute, projectionCompute } from '../../src/defense/apply.js';
import type { MatrixIO } from '../../src/defense/io/sources.js';
import { gatherRows, type Mat } from '../../src/defense/math/matrix.js';

const mat = (rows: number, cols: number, f: (i: number, j: number) => number): Mat =>
  ({ rows, cols, data: Float32Array.from({ length: rows * cols }, (_, k) => f(Math.floor(k / cols), k % cols)) });

describe('combinedCompute', () => {
  // base 0, aligned = V with V[i][j] = i + 1, fine-tune = 10 * i + j: add gives W_ft[i] + g * (i + 1)
  const io: MatrixIO = {
    name: 'w',
    cols: 2,
    base: async () => mat(4, 2, () => 0),
    aligned: async () => mat(4, 2, (i) => i + 1),
    finetuned: async () => mat(4, 2, (i, j) => 10 * i + j),
    selectedRows: async (rows) => ({ base: gatherRows(await io.base(), rows), aligned: gatherRows(await io.aligned(), rows), finetuned: gatherRows(await io.finetuned(), rows) }),
  };
  it('computes each row with the strength of the part that owns it', async () => {
    const compute = combinedCompute([
      { selection: new Map([['w', Uint32Array.of(0, 3)]]), compute: projectionCompute({ mode: 'add', strength: 1 }) },
      { selection: new Map([['w', Uint32Array.of(2)]]), compute: projectionCompute({ mode: 'add', strength: 2 }) },
    ]);
    const out = await compute(io, Uint32Array.of(0, 2, 3));
    // row 0: [0, 1] + 1 * 1; row 2: [20, 21] + 2 * 3; row 3: [30, 31] + 1 * 4
    expect([...out]).toEqual([1, 2, 26, 27, 34, 35]);
  });
  it('leaves a part out of matrices where it owns no row', async () => {
    const compute = combinedCompute([
      { selection: new Map([['other', Uint32Array.of(1)]]), compute: async () => { throw new Error('must not be called'); } },
      { selection: new Map([['w', Uint32Array.of(1)]]), compute: projectionCompute({ mode: 'add', strength: 3 }) },
    ]);
    expect([...(await compute(io, Uint32Array.of(1)))]).toEqual([16, 17]);
  });
});
