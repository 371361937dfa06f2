/** Pure helpers of the attribution API on hand-checked cases: batch layout, response token count, layer chunks. */
import { describe, expect, it } from 'vitest';
import { attributionBatch, layerChunks, responseTokens } from '../../src/engine/attribution/index.js';
import { tinySpec } from './attribution/tiny-model.js';

describe('attributionBatch', () => {
  it('left-pads, targets the next token and weights only response predictions', () => {
    // Row 0: prompt [1, 5], response [6, 7]; row 1: prompt [1, 8, 9], response [4].
    const b = attributionBatch([{ ids: [1, 5, 6, 7], promptLength: 2 }, { ids: [1, 8, 9, 4], promptLength: 3 }, { ids: [1, 3], promptLength: 1 }], 0);
    expect(b.padded.length).toBe(4);
    expect(Array.from(b.padded.inputIds, Number)).toEqual([1, 5, 6, 7, 1, 8, 9, 4, 0, 0, 1, 3]);
    expect(Array.from(b.padded.attentionMask, Number)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1]);
    expect(Array.from(b.padded.positionIds, Number)).toEqual([0, 1, 2, 3, 0, 1, 2, 3, 1, 1, 0, 1]);
    expect(Array.from(b.targets, Number)).toEqual([5, 6, 7, 0, 8, 9, 4, 0, 0, 0, 3, 0]);
    expect(Array.from(b.lossWeights)).toEqual([0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0]);
  });

  it('counts response tokens (the first token is never predicted)', () => {
    expect(responseTokens({ ids: [1, 5, 6, 7], promptLength: 2 })).toBe(2);
    expect(responseTokens({ ids: [1, 5], promptLength: 2 })).toBe(0);
    expect(responseTokens({ ids: [1, 5, 6], promptLength: 0 })).toBe(2);
  });
});

describe('layerChunks', () => {
  const spec = tinySpec('llama');
  // One layer's linear weights: q 16x16, k 8x16, v 8x16, o 16x16, gate/up 24x16, down 16x24 = 1920 parameters.
  const layerBytes = 1920 * 4;
  it('fits as many layers per chunk as the direction budget allows, at least one', () => {
    expect(layerChunks(spec, 1, layerBytes * 2)).toEqual([[0, 2]]);
    expect(layerChunks(spec, 2, layerBytes * 2)).toEqual([[0, 1], [1, 2]]);
    expect(layerChunks(spec, 2, 1)).toEqual([[0, 1], [1, 2]]);
    expect(layerChunks({ ...spec, numLayers: 5 }, 1, layerBytes * 2)).toEqual([[0, 2], [2, 4], [4, 5]]);
  });
});
