import type { Readable } from 'node:stream';

export interface ByteRange {
  /** Inclusive first byte. */
  start: number;
  /** Inclusive last byte. */
  end: number;
}

/**
 * Where artifacts live: a flat key space of immutable objects. Keys are `/`-separated and relative; the
 * backends never interpret them beyond that. A single putBytes is atomic (readers see all or nothing),
 * which is what publication of a job's artifacts relies on.
 */
export interface BlobStore {
  readonly kind: 'fs' | 's3';
  /** Stores a local file under key; `move` lets the fs backend rename instead of copying. */
  putFile(key: string, filePath: string, opts?: { move?: boolean }): Promise<void>;
  /** Stores a small object atomically. */
  putBytes(key: string, body: Buffer | string): Promise<void>;
  /** The object's bytes, or undefined when there is none. */
  getBytes(key: string): Promise<Buffer | undefined>;
  /** Size of the object, or undefined when there is none. */
  stat(key: string): Promise<{ bytes: number } | undefined>;
  /** Streams the object (or one byte range of it); throws NOT_FOUND when there is none. */
  read(key: string, range?: ByteRange): Promise<Readable>;
  /** Keys of every object under the folder-like prefix (`a/b` lists `a/b/...`), sorted. */
  list(prefix: string): Promise<string[]>;
  /** Removes every object whose key starts with prefix. */
  deletePrefix(prefix: string): Promise<void>;
  /** Throws STORAGE_ERROR when the store cannot take a write (readiness probe). */
  checkWritable(): Promise<void>;
  close(): Promise<void>;
}
