/** Small filesystem helpers shared by the reader and writer: positional reads that never short-read silently. */
import type { FileHandle } from 'node:fs/promises';
import { FgsnError } from '../errors.js';

/** A single read() is limited to 2 GiB by libuv; larger tensors are read in slices. */
const MAX_READ = 1 << 30;

/**
 * Fills `dst` from `position`, looping over short reads. A file that ends early (truncated after it was
 * validated, or being rewritten) is an I/O error naming the file, not a buffer of zeros.
 */
export async function readFully(fh: FileHandle, dst: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < dst.byteLength) {
    const len = Math.min(dst.byteLength - done, MAX_READ);
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(dst, done, len, position + done));
    } catch (e) {
      throw ioError(path, e);
    }
    if (bytesRead === 0) {
      throw new FgsnError('CHECKPOINT_IO', `${path}: file ended at byte ${position + done}, expected ${dst.byteLength - done} more bytes`, {
        details: { file: path },
      });
    }
    done += bytesRead;
  }
}

/** Fresh, zero-offset storage (so typed-array views of any element size are aligned), not zero-filled. */
export function allocBytes(n: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(n);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

export function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'string'
    ? (e as { code: string }).code
    : undefined;
}

/** Maps a filesystem error to the catalogue: a missing path is NOT_FOUND, anything else IO. */
export function ioError(path: string, e: unknown): FgsnError {
  if (e instanceof FgsnError) return e;
  const code = errnoCode(e);
  const msg = e instanceof Error ? e.message : String(e);
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new FgsnError('CHECKPOINT_NOT_FOUND', `${path}: no such file or directory`, { details: { file: path }, cause: e });
  }
  return new FgsnError('CHECKPOINT_IO', `${path}: ${msg}`, { details: { file: path, errno: code }, cause: e });
}
