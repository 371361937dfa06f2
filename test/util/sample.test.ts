import { describe, expect, it } from 'vitest';
import { evenSample } from '../../src/util/sample.js';

describe('evenSample', () => {
  it('spreads over the whole list, order kept', () => {
    expect(evenSample([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 5)).toEqual([0, 2, 4, 6, 8]);
    expect(evenSample(['a', 'a', 'a', 'b', 'b', 'b'], 2)).toEqual(['a', 'b']);
  });
  it('returns everything when n covers the list, nothing for n <= 0', () => {
    expect(evenSample([1, 2, 3], 3)).toEqual([1, 2, 3]);
    expect(evenSample([1, 2, 3], 10)).toEqual([1, 2, 3]);
    expect(evenSample([1, 2, 3], 0)).toEqual([]);
  });
});
