/**
 * Finite-value checks on stored float bytes: no NaN or Inf goes into the service (validation of uploads and
 * `fgsn inspect`) or out of it (the safetensors writer). Checks work on the raw little-endian bits, one
 * integer mask per value, so they run at memory speed and never decode a copy.
 */
import { createHash } from 'node:crypto';
import { FgsnError } from '../errors.js';
import { allocBytes } from './io.js';
import type { ProblemSink } from './problems.js';
import type { SafetensorsFile } from './safetensors-reader.js';
import { DTYPE_SIZE, type DType, type TensorInfo } from './types.js';

/** Exponent-all-ones masks: a value is NaN or +-Inf exactly when its exponent bits are all set. */
const F32_EXP = 0x7f800000;
const BF16_EXP = 0x7f80;
const F16_EXP = 0x7c00;
const F64_EXP_HI = 0x7ff00000;

/** Values checked per aligned copy when the caller's bytes are not aligned to the item size. */
const UNALIGNED_CHUNK = 1 << 16;

/** Words per block of the branch-free pass; a block that hits is rescanned value by value. */
const BLOCK = 4096;

/**
 * Per-value exponent tests, for the block that hit (and for short tails). Kept separate from the fast pass
 * below, which only answers "any bad value in this block?".
 */
function firstInRange(dtype: DType, buf: ArrayBufferLike, off: number, from: number, to: number): number {
  switch (dtype) {
    case 'F32': {
      const u = new Uint32Array(buf, off, to);
      for (let i = from; i < to; i++) if ((u[i] & F32_EXP) === F32_EXP) return i;
      return -1;
    }
    case 'BF16':
    case 'F16': {
      const m = dtype === 'BF16' ? BF16_EXP : F16_EXP;
      const u = new Uint16Array(buf, off, to);
      for (let i = from; i < to; i++) if ((u[i] & m) === m) return i;
      return -1;
    }
    case 'F64': {
      // Little-endian: the sign/exponent half of value i is 32-bit word 2i + 1.
      const u = new Uint32Array(buf, off, 2 * to);
      for (let i = from; i < to; i++) if ((u[2 * i + 1] & F64_EXP_HI) === F64_EXP_HI) return i;
      return -1;
    }
    default:
      return -1;
  }
}

/**
 * The fast pass reads 32-bit words and ORs (exponent + 1) into an accumulator without branching: the sum
 * reaches the bit just above the exponent field only when every exponent bit was set. 16-bit dtypes test
 * both halves of a word at once. Measured here (bench/checkpoint/rw.ts's rewrite includes it) this is several
 * times faster than a compare-and-branch per value.
 */
function firstAligned(dtype: DType, buf: ArrayBufferLike, off: number, n: number): number {
  const wordsPerValue = dtype === 'F64' ? 2 : dtype === 'F32' ? 1 : 0.5;
  const words = Math.floor(n * wordsPerValue);
  const u = new Uint32Array(buf, off, words);
  for (let w0 = 0; w0 < words; w0 += BLOCK) {
    const w1 = Math.min(words, w0 + BLOCK);
    let acc = 0;
    if (dtype === 'F32') {
      for (let i = w0; i < w1; i++) acc |= ((u[i] >>> 23) & 0xff) + 1;
      acc &= 0x100;
    } else if (dtype === 'BF16') {
      for (let i = w0; i < w1; i++) {
        const w = u[i];
        acc |= (((w >>> 7) & 0xff) + 1) | (((w >>> 23) & 0xff) + 1);
      }
      acc &= 0x100;
    } else if (dtype === 'F16') {
      for (let i = w0; i < w1; i++) {
        const w = u[i];
        acc |= (((w >>> 10) & 0x1f) + 1) | (((w >>> 26) & 0x1f) + 1);
      }
      acc &= 0x20;
    } else {
      for (let i = w0 + 1; i < w1; i += 2) acc |= ((u[i] >>> 20) & 0x7ff) + 1;
      acc &= 0x800;
    }
    if (acc !== 0) return firstInRange(dtype, buf, off, w0 / wordsPerValue, Math.min(n, w1 / wordsPerValue));
  }
  // An odd 16-bit value count leaves one value after the last whole word.
  return firstInRange(dtype, buf, off, Math.floor(words / wordsPerValue), n);
}

/**
 * Index of the first NaN/Inf among the little-endian `dtype` values in `bytes`, or -1 (always -1 for integer
 * and bool dtypes). `bytes` may start at any offset; unaligned input is checked through a small aligned copy.
 */
export function firstNonFinite(dtype: DType, bytes: Uint8Array): number {
  const item = DTYPE_SIZE[dtype];
  const n = Math.floor(bytes.byteLength / item);
  if (dtype !== 'F32' && dtype !== 'BF16' && dtype !== 'F16' && dtype !== 'F64') return -1;
  // F64 is read as 32-bit words, so 4-byte alignment is what its view needs.
  if (bytes.byteOffset % Math.min(item, 4) === 0) return firstAligned(dtype, bytes.buffer, bytes.byteOffset, n);
  const scratch = new Uint8Array(Math.min(n, UNALIGNED_CHUNK) * item);
  for (let done = 0; done < n; done += UNALIGNED_CHUNK) {
    const count = Math.min(UNALIGNED_CHUNK, n - done);
    scratch.set(bytes.subarray(done * item, (done + count) * item));
    const i = firstAligned(dtype, scratch.buffer, 0, count);
    if (i >= 0) return done + i;
  }
  return -1;
}

/** "NaN", "+Inf" or "-Inf" for the value at `index` (which firstNonFinite found). */
export function nonFiniteKind(dtype: DType, bytes: Uint8Array, index: number): string {
  const item = DTYPE_SIZE[dtype];
  const v = new DataView(bytes.buffer, bytes.byteOffset + index * item, item);
  const x = dtype === 'F32' ? v.getFloat32(0, true) : dtype === 'F64' ? v.getFloat64(0, true) : null;
  if (x !== null) return Number.isNaN(x) ? 'NaN' : x > 0 ? '+Inf' : '-Inf';
  const h = v.getUint16(0, true);
  const mant = dtype === 'BF16' ? h & 0x7f : h & 0x3ff;
  return mant !== 0 ? 'NaN' : h & 0x8000 ? '-Inf' : '+Inf';
}

export function nonFiniteInput(t: TensorInfo, index: number, kind: string): FgsnError {
  return new FgsnError('CHECKPOINT_NON_FINITE', `${t.file}: tensor "${t.name}" holds ${kind} (element ${index}; ${t.dtype})`, {
    details: { file: t.file, tensor: t.name, element: index, value: kind },
  });
}

/** Bytes read per positional read of a scan: large enough for full disk speed, small enough to hold two. */
const SCAN_CHUNK = 8 << 20;

export interface ScanOptions {
  /** sha256 the whole file in the same pass. */
  hash: boolean;
  /** Report NaN/Inf in float tensors (one problem per tensor, its first bad value). */
  finite: boolean;
}

/**
 * One sequential pass over a validated safetensors file: hashes every byte and checks every float value,
 * reading each byte once (two 8 MiB buffers, the next read in flight while the current chunk is checked).
 * The header parser has already proved that the tensors tile the data section in offset order, so chunk
 * ends are moved back to element boundaries and each chunk is checked tensor by tensor.
 */
export async function scanSafetensorsFile(f: SafetensorsFile, opts: ScanOptions, sink: ProblemSink): Promise<{ sha256: string | null }> {
  const hash = opts.hash ? createHash('sha256') : null;
  const tensors = [...f.tensors.values()];
  const size = f.fileSize;
  if (!opts.hash && (!opts.finite || tensors.length === 0)) return { sha256: null };
  // Without hashing only the data section matters.
  const start = opts.hash ? 0 : f.dataStart;
  const bufs = [allocBytes(Math.min(SCAN_CHUNK, Math.max(1, size))), allocBytes(Math.min(SCAN_CHUNK, Math.max(1, size)))];
  const reported = new Set<string>();

  /** End of the chunk starting at `pos`: at most SCAN_CHUNK on, moved back to an element boundary. */
  const chunkEnd = (pos: number): number => {
    let end = Math.min(size, pos + SCAN_CHUNK);
    // Binary search for the tensor holding byte end - 1.
    let lo = 0;
    let hi = tensors.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const t = tensors[mid];
      if (end <= t.byteOffset) hi = mid - 1;
      else if (end >= t.byteOffset + t.byteLength) lo = mid + 1;
      else {
        const item = DTYPE_SIZE[t.dtype];
        const cut = t.byteOffset + Math.floor((end - t.byteOffset) / item) * item;
        // pos is always on an element boundary, and SCAN_CHUNK > any item size, so cut > pos unless t starts
        // at or before pos with fewer than one element left before end: impossible, but never stall.
        if (cut > pos) end = cut;
        break;
      }
    }
    return end;
  };

  let ti = 0;
  const check = (buf: Uint8Array, pos: number, end: number): void => {
    hash?.update(buf.subarray(0, end - pos));
    if (!opts.finite) return;
    while (ti < tensors.length && tensors[ti].byteOffset + tensors[ti].byteLength <= pos) ti++;
    for (let k = ti; k < tensors.length && tensors[k].byteOffset < end; k++) {
      const t = tensors[k];
      if (reported.has(t.name)) continue;
      const lo = Math.max(t.byteOffset, pos);
      const hi = Math.min(t.byteOffset + t.byteLength, end);
      const bytes = buf.subarray(lo - pos, hi - pos);
      const i = firstNonFinite(t.dtype, bytes);
      if (i >= 0) {
        reported.add(t.name);
        sink.report(nonFiniteInput(t, (lo - t.byteOffset) / DTYPE_SIZE[t.dtype] + i, nonFiniteKind(t.dtype, bytes, i)));
      }
    }
  };

  let pos = start;
  let which = 0;
  let end = chunkEnd(pos);
  let pending: Promise<Uint8Array> | null = pos < size ? f.readRaw(pos, bufs[which].subarray(0, end - pos)) : null;
  try {
    while (pending !== null) {
      const buf = await pending;
      const nextPos = end;
      const nextEnd = nextPos < size ? chunkEnd(nextPos) : nextPos;
      which ^= 1;
      pending = nextPos < size ? f.readRaw(nextPos, bufs[which].subarray(0, nextEnd - nextPos)) : null;
      check(buf, pos, end);
      pos = nextPos;
      end = nextEnd;
    }
  } catch (e) {
    // A STRICT sink throws from check(): let the read in flight finish before the caller closes the file.
    await pending?.catch(() => undefined);
    throw e;
  }
  return { sha256: hash === null ? null : hash.digest('hex') };
}
