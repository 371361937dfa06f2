/**
 * Disk admission of a job: the need (about one checkpoint plus the margin), and a refusal with
 * DISK_SPACE_LOW only after the unused cache entries were evicted to make room.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { holdEntry, releaseAllHolds } from '../../src/engine/session/cache-lifecycle.js';
import { FgsnError } from '../../src/errors.js';
import { admitDisk, diskNeed, diskShortfall, processCost, weightBytes } from '../../src/queue/disk.js';

describe('disk admission', () => {
  const dirs: string[] = [];
  afterEach(() => {
    releaseAllHolds();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('needs the checkpoint weights plus the margin; the shortfall is what is missing', async () => {
    const d = mkdtempSync(join(tmpdir(), 'fgsn-disk-'));
    dirs.push(d);
    writeFileSync(join(d, 'model-00001.safetensors'), Buffer.alloc(3000));
    writeFileSync(join(d, 'model-00002.safetensors'), Buffer.alloc(1000));
    writeFileSync(join(d, 'tokenizer.json'), Buffer.alloc(500));
    expect(await weightBytes(d)).toBe(4000);
    expect(diskNeed(4000, 2)).toBe(4000 + 2 * 1024 ** 2);
    expect(diskShortfall(10, 4)).toBe(0);
    expect(diskShortfall(4, 10)).toBe(6);
  });

  it('admits a job that fits; refuses one that does not with DISK_SPACE_LOW, after evicting unused cache entries', async () => {
    const data = mkdtempSync(join(tmpdir(), 'fgsn-disk-'));
    dirs.push(data);
    const cache = join(data, 'cache');
    const entry = (root: string, key: string, file: string) => {
      mkdirSync(join(cache, root, key), { recursive: true });
      writeFileSync(join(cache, root, key, file), Buffer.alloc(4096));
      return join(cache, root, key);
    };
    const unused = entry('engine', 'old', 'model.onnx');
    const inUse = entry('atlas', 'live', 'atlas.json');
    expect(holdEntry(inUse, (d) => existsSync(join(d, 'atlas.json')))).not.toBeNull();
    expect((await admitDisk(data, cache, 1)).evicted).toBe(0);
    expect(existsSync(unused)).toBe(true);
    const refused = await admitDisk(data, cache, Number.MAX_SAFE_INTEGER).then(() => null, (e: unknown) => e);
    expect(refused).toBeInstanceOf(FgsnError);
    expect((refused as FgsnError).code).toBe('DISK_SPACE_LOW');
    expect((refused as FgsnError).status).toBe(507);
    expect(existsSync(unused)).toBe(false);
    expect(existsSync(inUse)).toBe(true);
  });
});

describe('processCost', () => {
  it('counts bytes this process writes to storage and reports its peak RSS', async () => {
    const { closeSync, fsyncSync, openSync, writeSync } = await import('node:fs');
    const before = processCost(true);
    if (before.writeBytes === null) return; // not Linux: nothing to read
    const d = mkdtempSync(join(tmpdir(), 'fgsn-cost-'));
    try {
      const fd = openSync(join(d, 'f.bin'), 'w');
      writeSync(fd, Buffer.alloc(4 * 1024 ** 2, 1));
      fsyncSync(fd);
      closeSync(fd);
      const after = processCost();
      expect(after.writeBytes! - before.writeBytes).toBeGreaterThanOrEqual(4 * 1024 ** 2);
      expect(after.peakRssBytes).toBeGreaterThan(0);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
