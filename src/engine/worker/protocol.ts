/** Messages between RemoteEngine (caller thread) and the engine worker thread. */
import { FgsnError, type ErrorCode } from '../../errors.js';

export type Method = 'capture' | 'generate' | 'encodeChat' | 'decode' | 'info';

export interface Request {
  id: number;
  method: Method | 'close';
  args: unknown[];
}

export interface SerializedError {
  code?: ErrorCode;
  message: string;
  details?: unknown;
}

export type Response = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: SerializedError };

export function serializeError(e: unknown): SerializedError {
  if (e instanceof FgsnError) return { code: e.code, message: e.message, details: e.details };
  return { message: e instanceof Error ? e.message : String(e) };
}

export function deserializeError(s: SerializedError): Error {
  return s.code === undefined ? new FgsnError('ENGINE_RUN_FAILED', s.message) : new FgsnError(s.code, s.message, { details: s.details });
}

/** ArrayBuffers of typed arrays inside a result, moved instead of copied across threads. */
export function transferables(v: unknown, out: ArrayBuffer[] = [], seen = new Set<ArrayBuffer>()): ArrayBuffer[] {
  if (ArrayBuffer.isView(v)) {
    const b = v.buffer;
    // Only whole, unshared buffers can move; a view into a larger buffer is copied instead.
    if (b instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === b.byteLength && !seen.has(b)) {
      seen.add(b);
      out.push(b);
    }
  } else if (Array.isArray(v)) {
    for (const x of v) transferables(x, out, seen);
  } else if (v instanceof Map) {
    for (const x of v.values()) transferables(x, out, seen);
  } else if (v !== null && typeof v === 'object') {
    for (const x of Object.values(v)) transferables(x, out, seen);
  }
  return out;
}
