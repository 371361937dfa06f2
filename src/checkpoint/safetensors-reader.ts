/**
 * Reads safetensors files by positional reads: the header once at open, then only the bytes a caller asks
 * for (a tensor or a row range of it). The file is never loaded whole, so memory tracks the largest tensor
 * (or row block) read, not the checkpoint.
 */
import { open, type FileHandle } from 'node:fs/promises';
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

  /** Raw little-endian bytes of a whole tensor (fresh, zero-offset storage). */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.tensor(name);
    return this.readAt(t.byteOffset, t.byteLength);
  }

  /**
   * Raw bytes of rows [rowStart, rowEnd) along the first dimension; a row is everything after it
   * (a 2-D weight's output rows; a 1-D tensor's elements). One contiguous positional read.
   */
  async readRowsBytes(name: string, rowStart: number, rowEnd: number): Promise<Uint8Array> {
    const t = this.tensor(name);
    const rowBytes = rowByteSize(t, this.path, rowStart, rowEnd);
    return this.readAt(t.byteOffset + rowStart * rowBytes, (rowEnd - rowStart) * rowBytes);
  }

  /** A whole tensor upcast to float32 (a view over the read buffer when already F32: no second copy). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.tensor(name);
    return toF32(t, await this.readAt(t.byteOffset, t.byteLength));
  }

  async readRowsF32(name: string, rowStart: number, rowEnd: number): Promise<Float32Array> {
    const t = this.tensor(name);
    return toF32(t, await this.readRowsBytes(name, rowStart, rowEnd));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private async readAt(position: number, length: number): Promise<Uint8Array> {
    if (this.closed) throw new FgsnError('CHECKPOINT_IO', `${this.path}: read after close`, { details: { file: this.path } });
    const buf = allocBytes(length);
    await readFully(this.fh, buf, position, this.path);
    return buf;
  }
}

function toF32(t: TensorInfo, bytes: Uint8Array): Float32Array {
  // allocBytes storage is fresh and aligned, so an F32 tensor can be viewed in place.
  if (t.dtype === 'F32') return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return decodeToF32(t.dtype, bytes);
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
