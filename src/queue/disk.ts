/**
 * Disk admission of a harden job: before an attempt writes anything, the worker's data folder must have
 * room for the job's output (a hardened model is the checkpoint's size; the scratch search models of the
 * target-driven budget are too) plus the operator's margin FGSN_MIN_FREE_DISK_MB. The engine/atlas cache
 * is reclaimable space: entries not in use are evicted (least recently used first) before a job is refused.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { readdir, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { cacheBytes, enforceCacheBound, scanCache, cacheGroupRoots } from '../engine/index.js';
import { FgsnError } from '../errors.js';

const MiB = 1024 ** 2;

/** Bytes of the weight files (*.safetensors) of a model or adapter folder. */
export async function weightBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) {
    if (name.endsWith('.safetensors')) total += (await stat(join(dir, name))).size;
  }
  return total;
}

/** What an attempt needs free: its largest output (about one checkpoint) plus the configured margin. */
export function diskNeed(checkpointBytes: number, minFreeDiskMb: number): number {
  return checkpointBytes + minFreeDiskMb * MiB;
}

/** Bytes to reclaim so that `free` covers `need` (0 when it already does). */
export function diskShortfall(freeBytes: number, needBytes: number): number {
  return Math.max(0, needBytes - freeBytes);
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Throws DISK_SPACE_LOW when `dataDir` lacks `needBytes` free after evicting unused cache entries under
 * `cacheDir` (its engine/ and atlas/ folders) as far as the shortfall requires.
 */
export async function admitDisk(dataDir: string, cacheDir: string, needBytes: number): Promise<{ freeBytes: number; evicted: number }> {
  let free = await freeBytes(dataDir);
  let evicted = 0;
  const short = diskShortfall(free, needBytes);
  if (short > 0) {
    const root = join(cacheDir, 'engine');
    const held = cacheBytes(scanCache(cacheGroupRoots(root)));
    evicted = enforceCacheBound(root, Math.max(0, held - short)).evicted.length;
    free = await freeBytes(dataDir);
  }
  if (free < needBytes) {
    throw new FgsnError('DISK_SPACE_LOW', `${Math.floor(free / MiB)} MiB free in ${dataDir}; this job needs ${Math.ceil(needBytes / MiB)} MiB (output about the checkpoint's size plus FGSN_MIN_FREE_DISK_MB)`, {
      details: { freeBytes: free, needBytes, dataDir },
    });
  }
  return { freeBytes: free, evicted };
}

/**
 * This process's bytes written to storage (/proc/self/io write_bytes) and peak resident set (VmHWM), or
 * nulls where /proc is not Linux's. `resetPeak` starts a new peak (a pooled processor runs many jobs).
 */
export function processCost(resetPeak = false): { writeBytes: number | null; peakRssBytes: number | null } {
  const read = (path: string, re: RegExp): number | null => {
    try {
      const m = re.exec(readFileSync(path, 'utf8'));
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  };
  if (resetPeak) {
    try {
      writeFileSync('/proc/self/clear_refs', '5');
    } catch {
      // not Linux, or not permitted: the peak is then the process's lifetime peak
    }
  }
  const hwmKb = read('/proc/self/status', /VmHWM:\s+(\d+) kB/);
  return { writeBytes: read('/proc/self/io', /write_bytes: (\d+)/), peakRssBytes: hwmKb === null ? null : hwmKb * 1024 };
}

/** What an attempt cost this processor since `start` (processCost(true) when it began): bytes written, peak RSS. */
export function attemptCost(start: { writeBytes: number | null }): { bytesWritten: number | null; peakRssBytes: number | null } {
  const end = processCost();
  return {
    bytesWritten: end.writeBytes === null || start.writeBytes === null ? null : end.writeBytes - start.writeBytes,
    peakRssBytes: end.peakRssBytes,
  };
}
