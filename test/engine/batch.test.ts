/** Pure helpers of the runtime: left padding, token weights, unpadding, length buckets, prompt files. */
import { describe, expect, it } from 'vitest';
import { leftPad, lengthBuckets, tokenWeights, unpadRows } from '../../src/engine/runtime/batch.js';
import { parsePromptLines } from '../../src/engine/prompt-file.js';
import { ropeInvFreq } from '../../src/engine/onnx/blocks.js';

describe('leftPad', () => {
  it('pads on the left, masks padding and numbers real tokens from 0', () => {
    const p = leftPad([[5, 6, 7], [9]], 0);
    expect(p.length).toBe(3);
    expect(Array.from(p.inputIds, Number)).toEqual([5, 6, 7, 0, 0, 9]);
    expect(Array.from(p.attentionMask, Number)).toEqual([1, 1, 1, 0, 0, 1]);
    expect(Array.from(p.positionIds, Number)).toEqual([0, 1, 2, 1, 1, 0]);
    expect(p.lengths).toEqual([3, 1]);
  });
});

describe('tokenWeights', () => {
  it('marks only the requested real tokens of each row', () => {
    const p = leftPad([[1, 2, 3, 4], [1, 2]], 0);
    // response tokens start at index 2 of row 0 and index 1 of row 1
    const w = tokenWeights(p, (b) => [2, 1][b], (b) => p.lengths[b]);
    expect(Array.from(w)).toEqual([0, 0, 1, 1, 0, 0, 0, 1]);
  });
});

describe('unpadRows', () => {
  it('returns the real rows of one batch entry', () => {
    const p = leftPad([[1, 2], [3]], 0);
    const data = Float32Array.from([10, 11, 20, 21, 30, 31, 40, 41]); // [B=2, T=2, F=2]
    expect(Array.from(unpadRows(data, p, 0, 2))).toEqual([10, 11, 20, 21]);
    expect(Array.from(unpadRows(data, p, 1, 2))).toEqual([40, 41]);
  });
});

describe('lengthBuckets', () => {
  it('groups indices of similar length, each index once', () => {
    const b = lengthBuckets([5, 1, 4, 1, 9], 2);
    expect(b).toEqual([[1, 3], [2, 0], [4]]);
  });

  it('with a memory bound, a bucket stops where its rows at its longest length pass the budget (one row at least)', () => {
    // Sorted: lengths 1 (i1), 1 (i3), 4 (i2), 5 (i0), 9 (i4); a row costs 10 bytes per position, budget 100.
    const bound = { budgetBytes: 100, rowBytes: (len: number) => 10 * len };
    // [i1, i3] = 2 x 10; adding i2 would make 3 x 40 > 100: new bucket; [i2, i0] = 2 x 50 = 100 fits; i4 would
    // make 3 x 90: alone. Under a budget smaller than one row, every row runs alone.
    expect(lengthBuckets([5, 1, 4, 1, 9], 8, bound)).toEqual([[1, 3], [2, 0], [4]]);
    expect(lengthBuckets([5, 1, 4, 1, 9], 8, { budgetBytes: 5, rowBytes: bound.rowBytes })).toEqual([[1], [3], [2], [0], [4]]);
    // The count cap still applies under a loose bound.
    expect(lengthBuckets([5, 1, 4, 1, 9], 2, { budgetBytes: 1e9, rowBytes: bound.rowBytes })).toEqual([[1, 3], [2, 0], [4]]);
    expect(lengthBuckets([1, 1, 1, 1, 1], 8, { budgetBytes: 30, rowBytes: bound.rowBytes })).toEqual([[0, 1, 2], [3, 4]]);
  });
});

describe('parsePromptLines', () => {
  it('reads prompts and keeps other fields', () => {
    expect(parsePromptLines('{"prompt":"a","set":"x"}\n\n{"prompt":"b"}\n', 'f')).toEqual([
      { prompt: 'a', extra: { set: 'x' } },
      { prompt: 'b', extra: {} },
    ]);
  });
  it('rejects bad lines and empty files with catalogue codes', () => {
    expect(() => parsePromptLines('{"prompt":1}', 'f')).toThrow(expect.objectContaining({ code: 'PROBES_INVALID' }));
    expect(() => parsePromptLines('nope', 'f')).toThrow(expect.objectContaining({ code: 'PROBES_INVALID' }));
    expect(() => parsePromptLines('\n', 'f')).toThrow(expect.objectContaining({ code: 'PROBES_EMPTY' }));
  });
});

describe('ropeInvFreq', () => {
  it('is 1 / theta^(2i/d)', () => {
    const v = ropeInvFreq(4, 10000);
    expect(v[0]).toBe(1);
    expect(v[1]).toBeCloseTo(0.01, 7);
  });
});
