/**
 * RoPE scalings (checkpoint/rope.ts) on hand-checked cases: theta 10000 gives inv_freq = 10^(-8i/dim), so
 * every expected number below follows from the formulas in a line of arithmetic (worked in the comments).
 * Each type is checked below and beyond its original context where the two differ.
 */
import { describe, expect, it } from 'vitest';
import { dynamicTheta, parseRopeScaling, ropeParameters, ropeScalingJson, yarnCorrectionRange, type RopeScaling } from '../../src/checkpoint/rope.js';
import { ropeCosSin } from '../support/rope-reference.js';

const spec = (headDim: number, ropeScaling: RopeScaling | null, ropeTheta = 10000) => ({ headDim, ropeTheta, ropeScaling });
const near = (got: ArrayLike<number>, want: number[], digits = 7): void => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(got[i] / w, `index ${i}: ${got[i]} vs ${w}`).toBeCloseTo(1, digits - 1));
};
const ctx = { headDim: 8, maxPositionEmbeddings: 64 };

describe('rope scalings: inverse frequencies and attention factor', () => {
  it('none: 1 / theta^(2i/d)', () => {
    near(ropeParameters(spec(4, null), 1).invFreq, [1, 0.01]);
    expect(ropeParameters(spec(4, null), 1).attentionFactor).toBe(1);
  });

  it('linear: every frequency divided by factor, at any length', () => {
    for (const seqLen of [1, 10_000]) near(ropeParameters(spec(4, { type: 'linear', factor: 2 }), seqLen).invFreq, [0.5, 0.005]);
  });

  it('dynamic NTK: plain RoPE up to the original context, a larger base beyond it', () => {
    const r: RopeScaling = { type: 'dynamic', factor: 2, originalMaxPositions: 16 };
    near(ropeParameters(spec(4, r), 8).invFreq, [1, 0.01]);
    near(ropeParameters(spec(4, r), 16).invFreq, [1, 0.01]);
    // s = 32: theta' = 1e4 * (2 * 32 / 16 - 1)^(4 / 2) = 9e4, inv_1 = 1 / 300.
    expect(dynamicTheta(10000, 4, 2, 16, 32)).toBeCloseTo(90000, 6);
    near(ropeParameters(spec(4, r), 32).invFreq, [1, 1 / 300]);
    expect(ropeParameters(spec(4, r), 32).attentionFactor).toBe(1);
  });

  it('llama3: high frequencies kept, low ones divided by factor, the middle band smoothed', () => {
    const r: RopeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 1024 };
    // wavelengths 2 pi / inv = 6.28, 62.8 (< 1024/4: kept), 628.3 (between), 6283 (> 1024: / 8).
    // middle: s = (1024 / 628.3 - 1) / 3 = 0.20992; (1 - s) * 0.01 / 8 + s * 0.01 = 0.0030868.
    for (const seqLen of [10, 5000]) near(ropeParameters(spec(8, r), seqLen).invFreq, [1, 0.1, 0.003086760967, 0.000125]);
    expect(ropeParameters(spec(8, r), 10).attentionFactor).toBe(1);
  });

  it('yarn: ramp between extrapolation and interpolation over the correction range, attention factor 0.1 ln f + 1', () => {
    // dim 8, original 2048: dims rotating 32x / 1x in the context: 8 ln(2048 / (32 * 2 pi)) / (2 ln 1e4) = 1.008 -> 1,
    // 8 ln(2048 / 2 pi) / (2 ln 1e4) = 2.513 -> 3.
    expect(yarnCorrectionRange(8, 10000, 2048, 32, 1, true)).toEqual([1, 3]);
    const [lo, hi] = yarnCorrectionRange(8, 10000, 2048, 32, 1, false);
    expect(lo).toBeCloseTo(1.008, 3);
    expect(hi).toBeCloseTo(2.5132, 3);
    const r: RopeScaling = { type: 'yarn', factor: 4, originalMaxPositions: 2048, attentionFactor: 0.1 * Math.log(4) + 1, betaFast: 32, betaSlow: 1, truncate: true };
    // ramp (i - 1) / 2 clamped: 0, 0, 0.5, 1 -> 1, 0.1, 0.01 (0.5 / 4 + 0.5) = 0.00625, 0.001 / 4.
    for (const seqLen of [10, 100_000]) near(ropeParameters(spec(8, r), seqLen).invFreq, [1, 0.1, 0.00625, 0.00025]);
    expect(ropeParameters(spec(8, r), 10).attentionFactor).toBeCloseTo(1.1386294361, 9);
  });

  it('longrope: short factors up to the original context, long factors beyond, fixed attention factor', () => {
    const parsed = parseRopeScaling({ type: 'longrope', short_factor: [1, 2], long_factor: [4, 8] }, { headDim: 4, maxPositionEmbeddings: 64, topLevelOriginalMax: 16 }, 'c');
    // factor = 64 / 16 = 4: sqrt(1 + ln 4 / ln 16) = sqrt(1.5).
    expect(parsed).toEqual({ type: 'longrope', shortFactor: [1, 2], longFactor: [4, 8], originalMaxPositions: 16, attentionFactor: Math.sqrt(1.5) });
    const s = spec(4, parsed);
    near(ropeParameters(s, 16).invFreq, [1, 0.005]);
    near(ropeParameters(s, 17).invFreq, [0.25, 0.00125]);
    expect(ropeParameters(s, 17).attentionFactor).toBeCloseTo(1.2247448714, 9);
  });

  it('cos/sin tables carry positions times frequencies and the attention factor, cat(freqs, freqs)', () => {
    const r: RopeScaling = { type: 'yarn', factor: 4, originalMaxPositions: 2048, attentionFactor: 1.5, betaFast: 32, betaSlow: 1, truncate: true };
    const { cos, sin } = ropeCosSin(spec(8, r), 3);
    // position 2, i = 2 (inv 0.00625): angle 0.0125, in both halves.
    expect(cos[2 * 8 + 2]).toBeCloseTo(1.5 * Math.cos(0.0125), 6);
    expect(sin[2 * 8 + 6]).toBeCloseTo(1.5 * Math.sin(0.0125), 6);
    expect(cos[0]).toBeCloseTo(1.5, 6);
  });
});

describe('parseRopeScaling', () => {
  it('reads the configs of Llama 3.1 / 3.2, Qwen2.5 yarn, linear and dynamic (also under the older "type")', () => {
    expect(parseRopeScaling({ rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }, ctx, 'c'))
      .toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
    expect(parseRopeScaling({ factor: 4, original_max_position_embeddings: 32768, type: 'yarn' }, ctx, 'c'))
      .toEqual({ type: 'yarn', factor: 4, originalMaxPositions: 32768, attentionFactor: 0.1 * Math.log(4) + 1, betaFast: 32, betaSlow: 1, truncate: true });
    expect(parseRopeScaling({ type: 'linear', factor: 2 }, ctx, 'c')).toEqual({ type: 'linear', factor: 2 });
    expect(parseRopeScaling({ type: 'dynamic', factor: 2 }, ctx, 'c')).toEqual({ type: 'dynamic', factor: 2, originalMaxPositions: 64 });
    expect(parseRopeScaling({ rope_type: 'default' }, ctx, 'c')).toBeNull();
    expect(parseRopeScaling(null, ctx, 'c')).toBeNull();
  });

  it('yarn with mscale / mscale_all_dim takes their ratio as attention factor', () => {
    const r = parseRopeScaling({ type: 'yarn', factor: 40, mscale: 1, mscale_all_dim: 0.5, original_max_position_embeddings: 4096 }, ctx, 'c');
    expect(r?.type === 'yarn' && r.attentionFactor).toBeCloseTo((0.1 * Math.log(40) + 1) / (0.05 * Math.log(40) + 1), 12);
  });

  it('round-trips through the JSON we write', () => {
    for (const raw of [
      { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
      { type: 'yarn', factor: 4, original_max_position_embeddings: 32 },
      { type: 'longrope', short_factor: [1, 1, 1, 1], long_factor: [2, 2, 3, 3], original_max_position_embeddings: 16, attention_factor: 1.2 },
      { type: 'linear', factor: 2 },
      { type: 'dynamic', factor: 3 },
    ]) {
      const r = parseRopeScaling(raw, ctx, 'c');
      expect(parseRopeScaling(ropeScalingJson(r), ctx, 'c')).toEqual(r);
    }
  });

  it('refuses unknown types with a coded error naming the feature, and bad fields as invalid config', () => {
    expect(() => parseRopeScaling({ type: 'su', factor: 2 }, ctx, 'c')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_ARCH_UNSUPPORTED', message: expect.stringContaining('"su"') }));
    expect(() => parseRopeScaling({ type: 'linear' }, ctx, 'c')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_CONFIG_INVALID' }));
    expect(() => parseRopeScaling({ type: 'linear', factor: Number.NaN }, ctx, 'c')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_CONFIG_INVALID' }));
    expect(() => parseRopeScaling({ type: 'longrope', short_factor: [1], long_factor: [1, 2, 3, 4] }, ctx, 'c')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_CONFIG_INVALID' }));
    expect(() => parseRopeScaling({ rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8 }, ctx, 'c'))
      .toThrow(expect.objectContaining({ code: 'CHECKPOINT_CONFIG_INVALID' }));
  });
});
