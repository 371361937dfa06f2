/**
 * Conversions between the stored dtypes of safetensors files and float32, where all math happens.
 *
 * Safetensors data is little-endian; so are all platforms Node ships for (x64, arm64), so typed-array
 * views over the raw bytes are used directly. Narrowing (F32 -> BF16/F16) rounds to nearest, ties to
 * even, exactly like PyTorch's `.to(torch.bfloat16)` / `.half()`, so a tensor written back in its own dtype
 * is bit-identical to what PyTorch would have produced from the same float32 values.
 */
import { endianness } from 'node:os';
import { DTYPE_SIZE, type DType } from './types.js';

if (endianness() !== 'LE') {
  // Every view below reinterprets little-endian file bytes in place; a big-endian host would silently garble them.
  throw new Error('fgsn checkpoint layer requires a little-endian host');
}

/** Reused scratch views for single-value bit casts (no allocation per element). */
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Widening BF16 -> F32 is exact: the bf16 bits are the top half of the f32 bits. */
export function bf16ToF32(src: Uint16Array, out?: Float32Array): Float32Array {
  const n = src.length;
  const dst = out ?? new Float32Array(n);
  if (dst.length < n) throw new RangeError(`bf16ToF32: output holds ${dst.length} values, need ${n}`);
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
  const pairs = n >>> 1;
  if ((src.byteOffset & 3) === 0) {
    // Two values per 32-bit load (little-endian: the low half is the first value): ~3x faster than per u16.
    const words = new Uint32Array(src.buffer, src.byteOffset, pairs);
    for (let i = 0, j = 0; i < pairs; i++, j += 2) {
      const w = words[i];
      bits[j] = w << 16;
      bits[j + 1] = w & 0xffff0000;
    }
    if (n & 1) bits[n - 1] = src[n - 1] << 16;
    return dst;
  }
  for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
  return dst;
}

/** F32 -> BF16, round to nearest even; NaN stays NaN (quietened, sign and top payload bits kept). */
export function f32ToBf16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const n = src.length;
  const dst = out ?? new Uint16Array(n);
  if (dst.length < n) throw new RangeError(`f32ToBf16: output holds ${dst.length} values, need ${n}`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) dst[i] = bf16Bits(bits[i]);
  return dst;
}

function bf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x0040) & 0xffff;
  // Adding 0x7fff plus the lowest kept bit rounds half to even; the sum stays below 2^32 (max 0xffff7fff + 0x8000).
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** 64K-entry table of f32 bit patterns: every f16 decodes by one lookup (256 KB, built on first use). */
let f16Table: Uint32Array | null = null;

function buildF16Table(): Uint32Array {
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = f16BitsToF32Bits(h);
  return table;
}

function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) {
    // Subnormal f16 values are exact normal f32 values; let the FPU build the bits.
    return (sign | f32BitsOf(frac * 2 ** -24)) >>> 0;
  }
  // Inf/NaN keep their payload bits; normals rebias the exponent (15 -> 127).
  if (exp === 31) return (sign | 0x7f800000 | (frac << 13)) >>> 0;
  return (sign | ((exp + 112) << 23) | (frac << 13)) >>> 0;
}

/** Widening F16 -> F32 is exact (table lookup; NaN payloads preserved). */
export function f16ToF32(src: Uint16Array, out?: Float32Array): Float32Array {
  const n = src.length;
  const dst = out ?? new Float32Array(n);
  if (dst.length < n) throw new RangeError(`f16ToF32: output holds ${dst.length} values, need ${n}`);
  // Writing bit patterns (not floats) keeps NaN payloads intact: a float store may canonicalise them.
  const tableBits = (f16Table ??= buildF16Table());
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) bits[i] = tableBits[src[i]];
  return dst;
}

/** F32 -> F16, round to nearest even, with subnormals, overflow to Inf and NaN kept NaN. */
export function f32ToF16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const n = src.length;
  const dst = out ?? new Uint16Array(n);
  if (dst.length < n) throw new RangeError(`f32ToF16: output holds ${dst.length} values, need ${n}`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) dst[i] = f16Bits(bits[i]);
  return dst;
}

function f16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a >= 0x7f800000) {
    if (a === 0x7f800000) return sign | 0x7c00;
    return sign | 0x7e00 | ((a >>> 13) & 0x3ff);
  }
  // 65520 (0x477ff000) is halfway between the largest f16 (65504, odd mantissa) and 65536: ties go up to Inf.
  if (a >= 0x477ff000) return sign | 0x7c00;
  const e = a >>> 23;
  if (e < 113) {
    // Result is an f16 subnormal (or zero): value / 2^-24 = mant * 2^(e - 126), rounded half to even.
    const shift = 126 - e;
    if (shift > 24) return sign;
    const mant = (a & 0x7fffff) | 0x800000;
    let q = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q++;
    return sign | q;
  }
  let h = ((e - 112) << 10) | ((a >>> 13) & 0x3ff);
  const rem = a & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (and can reach Inf only above the 65520 bound).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

/** Single-value helpers for tests and scalar code paths. */
export function f32BitsOf(value: number): number {
  scratchF32[0] = value;
  return scratchU32[0];
}

export function f32FromBits(bits: number): number {
  scratchU32[0] = bits;
  return scratchF32[0];
}

/** Returns bytes whose byteOffset is a multiple of `align` (copying only when needed). */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

function elementCount(dtype: DType, bytes: Uint8Array): number {
  const size = DTYPE_SIZE[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} values (${size} bytes each)`);
  }
  return bytes.byteLength / size;
}

/**
 * Decodes little-endian `dtype` bytes to float32. Always returns fresh storage (or `out`), never a view
 * aliasing `bytes`, so callers may mutate the result. I64 values beyond 2^24 lose precision, as in any f32 cast.
 */
export function decodeToF32(dtype: DType, bytes: Uint8Array, out?: Float32Array): Float32Array {
  const n = elementCount(dtype, bytes);
  const dst = out ?? new Float32Array(n);
  if (dst.length < n) throw new RangeError(`decodeToF32: output holds ${dst.length} values, need ${n}`);
  const src = aligned(bytes, DTYPE_SIZE[dtype]);
  const buf = src.buffer;
  const off = src.byteOffset;
  switch (dtype) {
    case 'F32':
      dst.set(new Float32Array(buf, off, n));
      return dst;
    case 'BF16':
      return bf16ToF32(new Uint16Array(buf, off, n), dst);
    case 'F16':
      return f16ToF32(new Uint16Array(buf, off, n), dst);
    case 'F64':
      dst.set(new Float64Array(buf, off, n));
      return dst;
    case 'I64': {
      const v = new BigInt64Array(buf, off, n);
      for (let i = 0; i < n; i++) dst[i] = Number(v[i]);
      return dst;
    }
    case 'I32':
      dst.set(new Int32Array(buf, off, n));
      return dst;
    case 'I16':
      dst.set(new Int16Array(buf, off, n));
      return dst;
    case 'I8':
      dst.set(new Int8Array(buf, off, n));
      return dst;
    case 'U8':
      dst.set(new Uint8Array(buf, off, n));
      return dst;
    case 'BOOL':
      for (let i = 0; i < n; i++) dst[i] = src[i] !== 0 ? 1 : 0;
      return dst;
  }
}

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  I32: [-2147483648, 2147483647], I16: [-32768, 32767], I8: [-128, 127], U8: [0, 255],
};

/** Rounds half to even and clamps, like a saturating cast; NaN becomes 0. */
function toInt(v: number, lo: number, hi: number): number {
  if (Number.isNaN(v)) return 0;
  let r = Math.round(v);
  if (r - v === 0.5 && r % 2 !== 0) r -= 1;
  return r < lo ? lo : r > hi ? hi : r;
}

/**
 * Encodes float32 values as little-endian `dtype` bytes (fresh buffer). Floats round to nearest even;
 * integer dtypes round half to even and saturate (weights are never integers; this exists for buffers).
 */
export function encodeFromF32(dtype: DType, values: Float32Array): Uint8Array {
  const n = values.length;
  const out = new Uint8Array(n * DTYPE_SIZE[dtype]);
  const buf = out.buffer;
  switch (dtype) {
    case 'F32':
      new Float32Array(buf).set(values);
      return out;
    case 'BF16':
      f32ToBf16(values, new Uint16Array(buf));
      return out;
    case 'F16':
      f32ToF16(values, new Uint16Array(buf));
      return out;
    case 'F64':
      new Float64Array(buf).set(values);
      return out;
    case 'I64': {
      const v = new BigInt64Array(buf);
      for (let i = 0; i < n; i++) v[i] = BigInt(toInt(values[i], -(2 ** 63), 2 ** 63 - 1024));
      return out;
    }
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = values[i] !== 0 && !Number.isNaN(values[i]) ? 1 : 0;
      return out;
    default: {
      const [lo, hi] = INT_RANGE[dtype] as [number, number];
      const view =
        dtype === 'I32' ? new Int32Array(buf) : dtype === 'I16' ? new Int16Array(buf) : dtype === 'I8' ? new Int8Array(buf) : out;
      for (let i = 0; i < n; i++) view[i] = toInt(values[i], lo, hi);
      return out;
    }
  }
}

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set<DType>(['F64', 'F32', 'F16', 'BF16']);
