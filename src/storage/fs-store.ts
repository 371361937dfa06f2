import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { FgsnError } from '../errors.js';
import { assertSafeKey } from './keys.js';
import type { BlobStore, ByteRange } from './types.js';

/** Objects are files under root; writes go to a temp name in the same folder and are renamed into place. */
export class FsBlobStore implements BlobStore {
  readonly kind = 'fs' as const;

  constructor(readonly root: string) {}

  private path(key: string): string {
    assertSafeKey(key);
    return join(this.root, ...key.split('/'));
  }

  private tempBeside(target: string): string {
    return join(dirname(target), `.tmp-${randomUUID()}`);
  }

  async putFile(key: string, filePath: string, opts: { move?: boolean } = {}): Promise<void> {
    const target = this.path(key);
    await mkdir(dirname(target), { recursive: true });
    if (opts.move) {
      try {
        await rename(filePath, target);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw storageError(`move to ${key}`, e);
      }
    }
    const tmp = this.tempBeside(target);
    try {
      await copyFile(filePath, tmp);
      await rename(tmp, target);
    } catch (e) {
      await rm(tmp, { force: true });
      throw storageError(`write ${key}`, e);
    }
  }

  async putBytes(key: string, body: Buffer | string): Promise<void> {
    const target = this.path(key);
    const tmp = this.tempBeside(target);
    try {
      await mkdir(dirname(target), { recursive: true });
      await writeFile(tmp, body);
      await rename(tmp, target);
    } catch (e) {
      await rm(tmp, { force: true });
      throw storageError(`write ${key}`, e);
    }
  }

  async getBytes(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storageError(`read ${key}`, e);
    }
  }

  async stat(key: string): Promise<{ bytes: number } | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { bytes: s.size } : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storageError(`stat ${key}`, e);
    }
  }

  async read(key: string, range?: ByteRange): Promise<Readable> {
    const p = this.path(key);
    if ((await this.stat(key)) === undefined) throw new FgsnError('NOT_FOUND', `no stored object ${key}`);
    return createReadStream(p, range ? { start: range.start, end: range.end } : {});
  }

  async list(prefix: string): Promise<string[]> {
    const root = this.path(prefix.replace(/\/+$/, ''));
    const out: string[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return;
        throw storageError(`list ${prefix}`, e);
      }
      for (const e of entries) {
        if (e.name.startsWith('.tmp-')) continue;
        if (e.isDirectory()) await walk(join(dir, e.name), `${rel}/${e.name}`);
        else if (e.isFile()) out.push(`${rel}/${e.name}`);
      }
    };
    await walk(root, prefix.replace(/\/+$/, ''));
    return out.sort();
  }

  async deletePrefix(prefix: string): Promise<void> {
    // Prefixes used by the service are whole folders ("jobs/<id>/"), which maps to one rm -r.
    const trimmed = prefix.replace(/\/+$/, '');
    await rm(this.path(trimmed), { recursive: true, force: true });
  }

  async checkWritable(): Promise<void> {
    const probe = join(this.root, `.probe-${randomUUID()}`);
    try {
      await mkdir(this.root, { recursive: true });
      await writeFile(probe, 'ok');
      await unlink(probe);
    } catch (e) {
      throw storageError(`write probe in ${this.root}`, e);
    }
  }

  async close(): Promise<void> {}
}

function storageError(what: string, e: unknown): FgsnError {
  return new FgsnError('STORAGE_ERROR', `storage failed to ${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}
