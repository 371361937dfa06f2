import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishArtifacts, readManifest, removeStaleAttempts } from '../../src/storage/artifacts.js';
import { FsBlobStore, S3BlobStore, type BlobStore } from '../../src/storage/index.js';
import { startLocalS3, type LocalS3 } from './s3rver.js';

async function collect(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

let work: string;
let s3: LocalS3;
const stores: Record<string, () => BlobStore> = {};

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'fgsn-store-'));
  s3 = await startLocalS3();
  stores.fs = () => new FsBlobStore(join(work, 'fsroot'));
  // Small part size so the multipart path is exercised with a few MB.
  stores.s3 = () => new S3BlobStore(s3.config, { multipartThreshold: 1024 * 1024, partSize: 5 * 1024 * 1024 });
});

afterAll(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

describe.each(['fs', 's3'])('%s blob store', (kind) => {
  it('round-trips small objects and reports missing ones', async () => {
    const store = stores[kind]();
    await store.putBytes('a/b.json', '{"x":1}');
    expect((await store.getBytes('a/b.json'))?.toString()).toBe('{"x":1}');
    expect(await store.stat('a/b.json')).toEqual({ bytes: 7 });
    expect(await store.getBytes('a/missing')).toBeUndefined();
    expect(await store.stat('a/missing')).toBeUndefined();
    await expect(store.read('a/missing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await store.close();
  });

  it('stores a multi-part file and serves byte ranges', async () => {
    const store = stores[kind]();
    const data = randomBytes(11 * 1024 * 1024 + 17);
    const src = join(work, `${kind}-big.bin`);
    await writeFile(src, data);
    await store.putFile('big/file.bin', src);
    expect(await store.stat('big/file.bin')).toEqual({ bytes: data.length });
    const whole = await collect(await store.read('big/file.bin'));
    expect(createHash('sha256').update(whole).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    const part = await collect(await store.read('big/file.bin', { start: 5 * 1024 * 1024 - 3, end: 5 * 1024 * 1024 + 4 }));
    expect(part.equals(data.subarray(5 * 1024 * 1024 - 3, 5 * 1024 * 1024 + 5))).toBe(true);
    await store.deletePrefix('big');
    expect(await store.stat('big/file.bin')).toBeUndefined();
    await store.close();
  });

  it('refuses keys that could escape the store', async () => {
    const store = stores[kind]();
    for (const key of ['../x', 'a/../../x', '/abs', 'a//b', '', 'a\\b']) {
      await expect(store.putBytes(key, 'x')).rejects.toMatchObject({ code: 'STORAGE_ERROR' });
    }
    await store.close();
  });

  it('publishes artifacts behind one manifest', async () => {
    const store = stores[kind]();
    const out = join(work, `${kind}-out`);
    await mkdir(join(out, 'model'), { recursive: true });
    await writeFile(join(out, 'model', 'config.json'), '{}');
    await writeFile(join(out, 'report.json'), '{"ok":true}');
    expect(await readManifest(store, 'job1')).toBeUndefined();
    const m = await publishArtifacts(store, 'job1', out, [], { move: true });
    expect(m.artifacts.map((a) => a.name)).toEqual(['model/config.json', 'report.json']);
    const sha = createHash('sha256').update('{"ok":true}').digest('hex');
    expect(m.artifacts[1]).toMatchObject({ bytes: 11, sha256: sha });
    expect(await readManifest(store, 'job1')).toEqual(m);
    expect((await collect(await store.read(m.artifacts[1].key))).toString()).toBe('{"ok":true}');
    await store.checkWritable();
    await store.close();
  });

  it('lists keys under a prefix and removes stale attempts of a job', async () => {
    const store = stores[kind]();
    await store.putBytes('jobs/j2/old-attempt/model/a.bin', 'x');
    await store.putBytes('jobs/j2/old-attempt/diff.safetensors', 'y');
    const out = join(work, `${kind}-out2`);
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'report.json'), '{}');
    const m = await publishArtifacts(store, 'j2', out);
    expect(await store.list('jobs/j2')).toEqual(
      ['jobs/j2/manifest.json', `jobs/j2/${m.attempt}/report.json`, 'jobs/j2/old-attempt/diff.safetensors', 'jobs/j2/old-attempt/model/a.bin'].sort(),
    );
    expect(await store.list('jobs/nothing')).toEqual([]);
    expect(await removeStaleAttempts(store, m)).toBe(1);
    expect(await store.list('jobs/j2')).toEqual(['jobs/j2/manifest.json', `jobs/j2/${m.attempt}/report.json`].sort());
    await store.close();
  });
});

it('fs store leaves no temp files behind after writes', async () => {
  const root = join(work, 'fs-clean');
  const store = new FsBlobStore(root);
  await store.putBytes('x/y', 'z');
  await store.checkWritable();
  expect(await readdir(join(root, 'x'))).toEqual(['y']);
  expect((await readdir(root)).filter((n) => n.startsWith('.'))).toEqual([]);
});
