import { describe, expect, it } from 'vitest';
import {
  bf16ToF32, decodeToF32, encodeFromF32, f16ToF32, f32BitsOf, f32FromBits, f32ToBf16, f32ToF16,
} from '../../src/checkpoint/dtypes.js';

const toBf16 = (bits: number): number => f32ToBf16(new Float32Array([f32FromBits(bits)]))[0];
const toF16 = (x: number): number => f32ToF16(new Float32Array([x]))[0];
const toF16Bits = (bits: number): number => f32ToF16(new Float32Array([f32FromBits(bits)]))[0];

describe('f32 -> bf16 (round to nearest even)', () => {
  it.each([
    ['1.0', 0x3f800000, 0x3f80],
    ['-0', 0x80000000, 0x8000],
    ['below half rounds down', 0x3f807fff, 0x3f80],
    ['tie, even kept bit -> down', 0x3f808000, 0x3f80],
    ['tie, odd kept bit -> up', 0x3f818000, 0x3f82],
    ['above half rounds up', 0x3f808001, 0x3f81],
    ['max finite f32 overflows to Inf', 0x7f7fffff, 0x7f80],
    ['largest value that stays finite', 0x7f7f7fff, 0x7f7f],
    ['+Inf', 0x7f800000, 0x7f80],
    ['-Inf', 0xff800000, 0xff80],
    ['quiet NaN', 0x7fc00000, 0x7fc0],
    ['signalling NaN stays NaN (not Inf)', 0x7f800001, 0x7fc0],
    ['negative NaN keeps sign', 0xffc00001, 0xffc0],
    ['smallest f32 subnormal -> 0', 0x00000001, 0x0000],
    ['subnormal tie to even (down)', 0x00008000, 0x0000],
    ['subnormal tie to even (up)', 0x00018000, 0x0002],
    ['largest f32 subnormal rounds into min normal', 0x007fffff, 0x0080],
  ])('%s', (_label, input, expected) => {
    expect(toBf16(input)).toBe(expected);
  });

  it('widens exactly: bf16 bits are the top half of f32 bits', () => {
    const out = bf16ToF32(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001, 0x7fc1]));
    expect(Array.from(new Uint32Array(out.buffer))).toEqual([0x3f800000, 0xc0000000, 0x7f800000, 0x00010000, 0x7fc10000]);
  });

  it('round-trips every non-NaN bf16 pattern', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToBf16(bf16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7fff) > 0x7f80) continue;
      if (back[h] !== h) throw new Error(`bf16 ${h.toString(16)} -> ${back[h].toString(16)}`);
    }
  });
});

describe('f32 <-> f16', () => {
  it.each([
    ['1.0', 1, 0x3c00],
    ['-2.0', -2, 0xc000],
    ['0.1', 0.1, 0x2e66],
    ['1/3', 1 / 3, 0x3555],
    ['largest finite', 65504, 0x7bff],
    ['just below the Inf tie', 65519.996, 0x7bff],
    ['tie at 65520 goes to Inf (odd mantissa)', 65520, 0x7c00],
    ['overflow', 1e6, 0x7c00],
    ['-Inf', -Infinity, 0xfc00],
    ['min normal', 2 ** -14, 0x0400],
    ['min subnormal', 2 ** -24, 0x0001],
    ['half of min subnormal ties to 0', 2 ** -25, 0x0000],
    ['just above half of min subnormal', 2 ** -25 * (1 + 2 ** -20), 0x0001],
    ['1.5 x min subnormal ties to even 2', 3 * 2 ** -25, 0x0002],
    ['largest subnormal', 1023 * 2 ** -24, 0x03ff],
    ['1023.5 x 2^-24 ties up into min normal', 1023.5 * 2 ** -24, 0x0400],
    ['underflow to -0', -1e-10, 0x8000],
  ])('%s', (_label, input, expected) => {
    expect(toF16(input)).toBe(expected);
  });

  it.each([
    ['1 + 2^-11 ties to even (down)', 0x3f801000, 0x3c00],
    ['1 + 3 * 2^-11 ties to even (up)', 0x3f803000, 0x3c02],
    ['1 + 2^-11 + tiny rounds up', 0x3f801001, 0x3c01],
    ['quiet NaN', 0x7fc00000, 0x7e00],
    ['signalling NaN stays NaN', 0x7f800001, 0x7e00],
    ['+Inf', 0x7f800000, 0x7c00],
  ])('%s (bit input)', (_label, input, expected) => {
    expect(toF16Bits(input)).toBe(expected);
  });

  it('widens to the exact values', () => {
    const out = f16ToF32(new Uint16Array([0x0001, 0x03ff, 0x0400, 0x7bff, 0xfc00, 0x3555, 0x8000]));
    expect(Array.from(out)).toEqual([2 ** -24, 1023 * 2 ** -24, 2 ** -14, 65504, -Infinity, 0.333251953125, -0]);
    expect(Number.isNaN(f16ToF32(new Uint16Array([0x7e00]))[0])).toBe(true);
  });

  it('round-trips every non-NaN f16 pattern', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToF16(f16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7fff) > 0x7c00) continue;
      if (back[h] !== h) throw new Error(`f16 ${h.toString(16)} -> ${back[h].toString(16)}`);
    }
  });

  it('always picks a nearest f16, ties to even (random f32 in range)', () => {
    let seed = 12345;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const xs = new Float32Array(20000);
    for (let i = 0; i < xs.length; i++) xs[i] = (rand() - 0.5) * 2 ** Math.floor(rand() * 44 - 28);
    const hs = f32ToF16(xs);
    const decoded = f16ToF32(new Uint16Array(Array.from(hs, (h) => h)));
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i];
      const h = hs[i];
      const err = Math.abs(x - decoded[i]);
      // Neighbours in magnitude: the next f16 up and down (same sign).
      for (const nb of [h + 1, h - 1]) {
        if ((nb & 0x7fff) >= 0x7c00 || (nb & 0x8000) !== (h & 0x8000) || nb < 0) continue;
        const nbErr = Math.abs(x - f16ToF32(new Uint16Array([nb]))[0]);
        if (nbErr < err || (nbErr === err && (h & 1) === 1)) throw new Error(`x=${x}: chose ${h.toString(16)}, ${nb.toString(16)} is nearer/even`);
      }
    }
  });
});

describe('decodeToF32 / encodeFromF32', () => {
  it('decodes from an unaligned byte offset (copying)', () => {
    const buf = new Uint8Array(1 + 8);
    buf.set(new Uint8Array(new Float32Array([1.5, -2]).buffer), 1);
    expect(Array.from(decodeToF32('F32', buf.subarray(1)))).toEqual([1.5, -2]);
    const h = new Uint8Array(1 + 4);
    h.set(new Uint8Array(new Uint16Array([0x3c00, 0xc000]).buffer), 1);
    expect(Array.from(decodeToF32('F16', h.subarray(1)))).toEqual([1, -2]);
    expect(Array.from(decodeToF32('BF16', h.subarray(1)))).toEqual([f32FromBits(0x3c000000), f32FromBits(0xc0000000)]);
  });

  it('decodes integer, bool and f64 dtypes', () => {
    expect(Array.from(decodeToF32('I64', new Uint8Array(new BigInt64Array([-3n, 7n]).buffer)))).toEqual([-3, 7]);
    expect(Array.from(decodeToF32('I32', new Uint8Array(new Int32Array([-5, 9]).buffer)))).toEqual([-5, 9]);
    expect(Array.from(decodeToF32('I16', new Uint8Array(new Int16Array([-5, 9]).buffer)))).toEqual([-5, 9]);
    expect(Array.from(decodeToF32('I8', new Uint8Array([0xff, 3])))).toEqual([-1, 3]);
    expect(Array.from(decodeToF32('U8', new Uint8Array([0xff, 3])))).toEqual([255, 3]);
    expect(Array.from(decodeToF32('BOOL', new Uint8Array([0, 2])))).toEqual([0, 1]);
    expect(Array.from(decodeToF32('F64', new Uint8Array(new Float64Array([0.25, 1e300]).buffer)))).toEqual([0.25, Infinity]);
  });

  it('never aliases the input for F32', () => {
    const bytes = new Uint8Array(new Float32Array([1, 2]).buffer);
    const out = decodeToF32('F32', bytes);
    out[0] = 9;
    expect(new Float32Array(bytes.buffer)[0]).toBe(1);
  });

  it('refuses a byte length that is not whole elements', () => {
    expect(() => decodeToF32('F32', new Uint8Array(6))).toThrow(RangeError);
  });

  it('encodes every dtype and round-trips through decode', () => {
    const v = new Float32Array([0, 1, -2, 3.5, 100]);
    for (const dt of ['F32', 'F64', 'F16', 'BF16'] as const) expect(Array.from(decodeToF32(dt, encodeFromF32(dt, v)))).toEqual(Array.from(v));
    // Half to even, saturating (checked on the raw int32s: 2^31 - 1 is not a float32).
    expect(Array.from(new Int32Array(encodeFromF32('I32', new Float32Array([2.5, 3.5, -1.5, 1e10])).buffer))).toEqual([2, 4, -2, 2147483647]);
    expect(Array.from(decodeToF32('U8', encodeFromF32('U8', new Float32Array([-4, 300, 7.2]))))).toEqual([0, 255, 7]);
    expect(Array.from(decodeToF32('I64', encodeFromF32('I64', new Float32Array([-7, 2 ** 40]))))).toEqual([-7, 2 ** 40]);
    expect(Array.from(encodeFromF32('BOOL', new Float32Array([0, 0.5, NaN])))).toEqual([0, 1, 0]);
    expect(f32BitsOf(1)).toBe(0x3f800000);
  });
});
