/**
 * Reads safetensors files by positional reads: the header once at open, then only the bytes a caller asks
 * for (a tensor or a row range of it). The file is never loaded whole, so memory tracks the largest tensor
 * (or row block) read, not the checkpoint.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { FgsnError } from '../errors.js';
import { decodeToF32 } from './dtypes.js';
import { allocBytes, ioError, readFully } from './io.js';
import { DEFAULT_MAX_HEADER_BYTES, parseSafetensorsHeader } from './safetensors-header.js';
import { DTYPE_SIZE, type TensorInfo } from './types.js';

export { DEFAULT_MAX_HEADER_BYTES, parseSafetensorsHeader, type ParsedHeader } from './safetensors-header.js';

export interface OpenOptions {
  /** Upper bound on the JSON header length; default 100 MB. Checked before anything is allocated. */
  maxHeaderBytes?: number;
}

export class SafetensorsFile {
  private closed = false;
  /** Encoded bytes of non-F32 reads (at most 8 MiB), reused across reads while the file is open (see readF32At). */
  private decodeScratch: Uint8Array | null = null;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly metadata: Record<string, string>,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    readonly dataStart: number,
    readonly fileSize: number,
  ) {}

  static async open(path: string, opts: OpenOptions = {}): Promise<SafetensorsFile> {
    const abs = resolve(path);
    const maxHeader = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    let fh: FileHandle;
    try {
      // Checked before open(): opening a FIFO or device would block or stream forever.
      if (!(await stat(abs)).isFile()) throw new FgsnError('CHECKPOINT_IO', `${abs}: not a regular file`, { details: { file: abs } });
      fh = await open(abs, 'r');
    } catch (e) {
      throw ioError(abs, e);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new FgsnError('CHECKPOINT_IO', `${abs}: not a regular file`, { details: { file: abs } });
      const fileSize = st.size;
      if (fileSize < 8) {
        throw new FgsnError('CHECKPOINT_FILE_TOO_SMALL', `${abs}: ${fileSize} bytes, a safetensors file has at least 8 (the header length)`, {
          details: { file: abs, bytes: fileSize },
        });
      }
      const lenBytes = allocBytes(8);
      await readFully(fh, lenBytes, 0, abs);
      // Read as a 64-bit integer and compare before converting: a claimed 2^60 never becomes an allocation.
      const headerLen = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
      if (headerLen > BigInt(maxHeader)) {
        throw new FgsnError('CHECKPOINT_HEADER_TOO_LARGE', `${abs}: header length ${headerLen} exceeds the limit of ${maxHeader} bytes`, {
          details: { file: abs, headerBytes: headerLen.toString(), limit: maxHeader },
        });
      }
      if (headerLen > BigInt(fileSize - 8)) {
        throw new FgsnError('CHECKPOINT_HEADER_TRUNCATED', `${abs}: header length ${headerLen} but only ${fileSize - 8} bytes follow`, {
          details: { file: abs, headerBytes: headerLen.toString(), fileSize },
        });
      }
      const header = allocBytes(Number(headerLen));
      await readFully(fh, header, 8, abs);
      const parsed = parseSafetensorsHeader(header, fileSize, abs);
      return new SafetensorsFile(fh, abs, parsed.metadata, parsed.tensors, parsed.dataStart, fileSize);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw ioError(abs, e);
    }
  }

  tensor(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) {
      throw new FgsnError('CHECKPOINT_TENSOR_NOT_FOUND', `${this.path}: no tensor named "${name}"`, { details: { file: this.path, tensor: name } });
    }
    return t;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  /**
   * Raw little-endian bytes of a whole tensor: fresh, zero-offset storage, or a prefix of `out` when given
   * (reusing one buffer across tensors avoids page-faulting fresh memory for every tensor).
   */
  async readBytes(name: string, out?: Uint8Array): Promise<Uint8Array> {
    const t = this.tensor(name);
    return this.readAt(t.byteOffset, t.byteLength, out);
  }

  /**
   * Raw bytes of rows [rowStart, rowEnd) along the first dimension; a row is everything after it
   * (a 2-D weight's output rows; a 1-D tensor's elements). One contiguous positional read.
   */
  async readRowsBytes(name: string, rowStart: number, rowEnd: number, out?: Uint8Array): Promise<Uint8Array> {
    const t = this.tensor(name);
    const rowBytes = rowByteSize(t, this.path, rowStart, rowEnd);
    return this.readAt(t.byteOffset + rowStart * rowBytes, (rowEnd - rowStart) * rowBytes, out);
  }

  /** A whole tensor upcast to float32, into a prefix of `out` when given. */
  async readF32(name: string, out?: Float32Array): Promise<Float32Array> {
    const t = this.tensor(name);
    return this.readF32At(t, t.byteOffset, t.byteLength, out);
  }

  async readRowsF32(name: string, rowStart: number, rowEnd: number, out?: Float32Array): Promise<Float32Array> {
    const t = this.tensor(name);
    const rowBytes = rowByteSize(t, this.path, rowStart, rowEnd);
    return this.readF32At(t, t.byteOffset + rowStart * rowBytes, (rowEnd - rowStart) * rowBytes, out);
  }

  /**
   * `out.length` raw bytes of the file from `position` (anywhere in the file, header included): the
   * sequential scans (hash and value checks) read through this.
   */
  async readRaw(position: number, out: Uint8Array): Promise<Uint8Array> {
    if (!Number.isSafeInteger(position) || position < 0 || position + out.byteLength > this.fileSize) {
      throw new RangeError(`readRaw: [${position}, ${position + out.byteLength}) is outside the ${this.fileSize} bytes of ${this.path}`);
    }
    return this.readAt(position, out.byteLength, out);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.decodeScratch = null;
    await this.fh.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new FgsnError('CHECKPOINT_IO', `${this.path}: read after close`, { details: { file: this.path } });
  }

  private async readAt(position: number, length: number, out?: Uint8Array): Promise<Uint8Array> {
    this.checkOpen();
    const buf = out === undefined ? allocBytes(length) : prefix(out, length, 'readBytes');
    await readFully(this.fh, buf, position, this.path);
    return buf;
  }

  /**
   * F32 data is read straight into the output. Other dtypes are read through a bounded scratch buffer and
   * decoded chunk by chunk, so converting a tensor never holds its encoded bytes and its f32 copy at once.
   */
  private async readF32At(t: TensorInfo, position: number, length: number, out?: Float32Array): Promise<Float32Array> {
    this.checkOpen();
    const item = DTYPE_SIZE[t.dtype];
    const n = length / item;
    const dst = out === undefined ? new Float32Array(n) : prefix(out, n, 'readF32');
    if (t.dtype === 'F32') {
      await readFully(this.fh, new Uint8Array(dst.buffer, dst.byteOffset, length), position, this.path);
      return dst;
    }
    const chunkElems = Math.max(1, Math.floor(DECODE_CHUNK_BYTES / item));
    const size = Math.min(length, chunkElems * item);
    // The file's scratch when free (calls on one file may overlap: a busy scratch is never shared). A fresh
    // one per call was a fresh zeroed mapping per call: 4.4 GB of them to read V of the 1.1B bench trio.
    const scratch = this.decodeScratch !== null && this.decodeScratch.byteLength >= size ? this.decodeScratch : allocBytes(Math.max(size, Math.min(DECODE_CHUNK_BYTES, 4 * size)));
    this.decodeScratch = null;
    try {
      for (let done = 0; done < n; done += chunkElems) {
        const count = Math.min(chunkElems, n - done);
        const bytes = scratch.subarray(0, count * item);
        await readFully(this.fh, bytes, position + done * item, this.path);
        decodeToF32(t.dtype, bytes, dst.subarray(done, done + count));
      }
    } finally {
      // Another call may have put a scratch back meanwhile: the larger one stays.
      const back = this.decodeScratch as Uint8Array | null;
      if (!this.closed && (back === null || back.byteLength < scratch.byteLength)) this.decodeScratch = scratch;
    }
    return dst;
  }
}

/** Size of the scratch buffer for decoding non-F32 tensors: large enough for full-speed reads. */
const DECODE_CHUNK_BYTES = 8 << 20;

function prefix<T extends Uint8Array | Float32Array>(out: T, n: number, what: string): T {
  if (out.length < n) throw new RangeError(`${what}: output holds ${out.length} elements, need ${n}`);
  return out.subarray(0, n) as T;
}

/** Validates a row range of `t` and returns the byte size of one row. */
export function rowByteSize(t: TensorInfo, file: string, rowStart: number, rowEnd: number): number {
  if (t.shape.length === 0) {
    throw new FgsnError('CHECKPOINT_ROW_RANGE_INVALID', `${file}: tensor "${t.name}" is a scalar and has no rows`, { details: { file, tensor: t.name } });
  }
  const rows = t.shape[0];
  if (!Number.isSafeInteger(rowStart) || !Number.isSafeInteger(rowEnd) || rowStart < 0 || rowStart > rowEnd || rowEnd > rows) {
    throw new FgsnError('CHECKPOINT_ROW_RANGE_INVALID', `${file}: rows [${rowStart}, ${rowEnd}) are not inside the ${rows} rows of tensor "${t.name}"`, {
      details: { file, tensor: t.name, rowStart, rowEnd, rows },
    });
  }
  return rows === 0 ? 0 : t.byteLength / rows;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function itemSize(t: TensorInfo): number {
  return DTYPE_SIZE[t.dtype];
}
