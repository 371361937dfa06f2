/** sha256 on a worker thread gives the main thread's digest, and a read failure keeps its code. */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { sha256File, sha256FileOffThread, sha256FileUnlessKnown } from '../../src/util/index.js';
import { tempDir } from '../engine/helpers.js';

const tmp = tempDir('fgsn-hash-');
afterAll(() => tmp.remove());

it('sha256FileOffThread equals sha256File and the digest of the bytes (empty, one chunk, several chunks)', async () => {
  for (const size of [0, 1000, (4 << 20) * 2 + 17]) {
    const bytes = Buffer.alloc(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 2654435761) >>> 24;
    const path = join(tmp.path, `f${size}`);
    writeFileSync(path, bytes);
    const want = createHash('sha256').update(bytes).digest('hex');
    expect(await sha256FileOffThread(path)).toBe(want);
    expect(await sha256File(path)).toBe(want);
  }
});

it('a missing file rejects with ENOENT', async () => {
  await expect(sha256FileOffThread(join(tmp.path, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
});

it('sha256FileUnlessKnown takes a known digest only for the same size, else reads the file', async () => {
  const path = join(tmp.path, 'known');
  writeFileSync(path, 'abc');
  const real = createHash('sha256').update('abc').digest('hex');
  expect(await sha256FileUnlessKnown(path, 3, { bytes: 3, sha256: 'written-digest' })).toBe('written-digest');
  expect(await sha256FileUnlessKnown(path, 3, { bytes: 4, sha256: 'written-digest' })).toBe(real);
  expect(await sha256FileUnlessKnown(path, 3, undefined)).toBe(real);
});
