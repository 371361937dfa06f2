/** mergeEditRows: the in-memory edit of round 1 plus a round-2 step, as one row patch (hand-checked). */
import { describe, expect, it } from 'vitest';
import { type EditRows, mergeEditRows } from '../../src/defense/apply.js';

describe('mergeEditRows', () => {
  it('merges the rows of a shared matrix in order, keeps the others, and b wins on a shared row', () => {
    const a: EditRows = new Map([
      ['w', { rows: Uint32Array.of(1, 4), values: Float32Array.of(10, 11, 40, 41) }],
      ['only-a', { rows: Uint32Array.of(0), values: Float32Array.of(1, 2) }],
    ]);
    const b: EditRows = new Map([
      ['w', { rows: Uint32Array.of(0, 4, 7), values: Float32Array.of(0, 1, 400, 401, 70, 71) }],
      ['only-b', { rows: Uint32Array.of(3), values: Float32Array.of(5, 6) }],
    ]);
    const m = mergeEditRows(a, b);
    expect([...m.keys()].sort()).toEqual(['only-a', 'only-b', 'w']);
    expect(Array.from(m.get('w')!.rows)).toEqual([0, 1, 4, 7]);
    expect(Array.from(m.get('w')!.values)).toEqual([0, 1, 10, 11, 400, 401, 70, 71]);
    expect(Array.from(m.get('only-a')!.values)).toEqual([1, 2]);
    expect(Array.from(m.get('only-b')!.rows)).toEqual([3]);
    // The inputs are left as they were.
    expect(Array.from(a.get('w')!.rows)).toEqual([1, 4]);
  });

  it('an empty side gives the other', () => {
    const b: EditRows = new Map([['w', { rows: Uint32Array.of(2), values: Float32Array.of(3, 4) }]]);
    expect(mergeEditRows(new Map(), b).get('w')).toBe(b.get('w'));
    expect(mergeEditRows(b, new Map()).get('w')).toBe(b.get('w'));
  });
});
