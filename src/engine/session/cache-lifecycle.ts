/**
 * Lifecycle of the on-disk caches (engine graph entries `<cacheDir>/engine/<key>/`, safety atlases
 * `<cacheDir>/atlas/<id>/`): a size bound with least-recently-used eviction, entries in use never evicted,
 * leftovers of crashed builders removed.
 *
 * - Last use: an entry folder's mtime, set on every use (`touchEntry`), so recency survives restarts and is
 *   shared by every process using the cache.
 * - In use: a job or session that uses an entry registers a hold file `<entry>/.holders/<host>~<pid>~<n>`.
 *   Holds end on release, when the process's job ends (`releaseAllHolds`) or when the process dies (a hold of
 *   a dead pid on this host is ignored). A hold from another host (a cache folder shared between pods) is
 *   respected for FOREIGN_HOLD_MAX_MS after it was taken, since its pid cannot be checked from here.
 * - Mutual exclusion between taking a hold and evicting: a per-entry mutex `<root>/.locks/<key>` (mkdir is
 *   atomic across processes and on NFS), held for the few milliseconds of a check; an evictor renames the
 *   entry away under the mutex, so a holder either registered first (and the entry stays) or finds no entry
 *   (and builds it again). Evicting an entry whose files an onnxruntime session already loaded is harmless on
 *   POSIX filesystems (an unlinked file stays readable to those who opened or mapped it), so holds matter in
 *   the window between finding an entry and opening it, and for files opened later (attribution variants).
 * - Real cost: bytes a file occupies that removing the cache would free. A hard link into a checkpoint
 *   (st_nlink greater than the links inside the cache) frees nothing: it counts 0. A file whose every link
 *   lies in the cache (a copy, a generated graph, or a hard link whose checkpoint was deleted since) counts
 *   its size once, however many entries link it.
 */
import { randomBytes } from 'node:crypto';
import {
  lstatSync, mkdirSync, readdirSync, renameSync, rmSync, rmdirSync, statSync, statfsSync, unlinkSync,
  utimesSync, writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { cacheMaxBytesFromEnv } from '../../config.js';

/** Default bound when FGSN_CACHE_MAX_BYTES is unset: 20 GiB, or a quarter of the cache's filesystem if smaller. */
export const DEFAULT_CACHE_MAX_BYTES = 20 * 1024 ** 3;
export const DEFAULT_CACHE_DISK_SHARE = 0.25;
/** A hold from another host (pid not checkable) counts as live for this long after it was taken. */
export const FOREIGN_HOLD_MAX_MS = 24 * 3600 * 1000;
/** A builder's temporary folder of a live process is left alone for this long (it is being written). */
const TMP_MAX_AGE_MS = 6 * 3600 * 1000;
/** The per-entry mutex is held for milliseconds; one older than this belongs to a crashed process. */
const MUTEX_STALE_MS = 30_000;
/** A temporary folder whose pid is not alive here is removed once this old. */
const LEFTOVER_GRACE_MS = 10 * 60 * 1000;

const HOLDERS = '.holders';
const LOCKS = '.locks';
const HOST = hostname().replace(/[^A-Za-z0-9_.-]/g, '_');

// ---------------------------------------------------------------- pure planning (unit-tested)

export interface PlannedFile {
  /** `dev:ino`: files sharing it are one set of bytes. */
  inode: string;
  size: number;
  /** st_nlink: links anywhere on the filesystem. */
  nlink: number;
}

export interface PlannedEntry {
  id: string;
  lastUsedMs: number;
  held: boolean;
  files: PlannedFile[];
}

interface InodeUse {
  size: number;
  nlink: number;
  inCache: number;
}

function inodeUses(entries: readonly PlannedEntry[]): Map<string, InodeUse> {
  const m = new Map<string, InodeUse>();
  for (const e of entries) {
    for (const f of e.files) {
      const u = m.get(f.inode);
      if (u) u.inCache++;
      else m.set(f.inode, { size: f.size, nlink: f.nlink, inCache: 1 });
    }
  }
  return m;
}

/** Bytes that removing every entry would free: each inode whose links all lie in the cache, once. */
export function cacheBytes(entries: readonly PlannedEntry[]): number {
  let total = 0;
  for (const u of inodeUses(entries).values()) if (u.nlink <= u.inCache) total += u.size;
  return total;
}

/**
 * Entries to evict, in order (least recently used first, held entries skipped), until the real cost is at
 * most `maxBytes`. Stops early when only held entries remain (the bound is then exceeded by what is in use).
 */
export function planEviction(entries: readonly PlannedEntry[], maxBytes: number): { evict: string[]; bytesBefore: number; bytesAfter: number } {
  const uses = inodeUses(entries);
  let total = 0;
  for (const u of uses.values()) if (u.nlink <= u.inCache) total += u.size;
  const bytesBefore = total;
  const evict: string[] = [];
  const order = entries.filter((e) => !e.held).sort((a, b) => a.lastUsedMs - b.lastUsedMs || (a.id < b.id ? -1 : 1));
  for (const e of order) {
    if (total <= maxBytes) break;
    evict.push(e.id);
    for (const f of e.files) {
      const u = uses.get(f.inode)!;
      const counted = u.nlink <= u.inCache;
      u.inCache--;
      u.nlink--;
      // Links outside the cache (nlink - inCache) do not change: bytes counted once are freed with their
      // last cache link, bytes shared with a checkpoint stay uncounted.
      if (counted && u.inCache === 0) total -= u.size;
    }
  }
  return { evict, bytesBefore, bytesAfter: total };
}

/** The bound: FGSN_CACHE_MAX_BYTES when set (validated by src/config.ts), else the documented default. */
export function resolveCacheMaxBytes(configured: number | undefined, filesystemBytes: number | undefined): number {
  if (configured !== undefined) return configured;
  if (filesystemBytes === undefined || filesystemBytes <= 0) return DEFAULT_CACHE_MAX_BYTES;
  return Math.min(DEFAULT_CACHE_MAX_BYTES, Math.floor(filesystemBytes * DEFAULT_CACHE_DISK_SHARE));
}

// ---------------------------------------------------------------- processes and the mutex

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A hold or mutex owner `<host>~<pid>~...`: live when on this host with a live pid, or recent elsewhere. */
function ownerLive(name: string, mtimeMs: number, now: number): boolean {
  const [host, pidText] = name.split('~');
  const pid = Number(pidText);
  if (host === HOST && Number.isInteger(pid) && pid > 0) return pidAlive(pid);
  return now - mtimeMs < FOREIGN_HOLD_MAX_MS;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

function withEntryMutex<T>(root: string, key: string, fn: () => T): T {
  const locks = join(root, LOCKS);
  mkdirSync(locks, { recursive: true });
  const lock = join(locks, key);
  const owner = `${HOST}~${process.pid}`;
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(lock);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      try {
        const st = statSync(lock);
        const who = readdirSync(lock)[0];
        const stale = Date.now() - st.mtimeMs > MUTEX_STALE_MS || (who !== undefined && !ownerLive(who, Date.now(), Date.now()));
        if (stale) rmSync(lock, { recursive: true, force: true });
      } catch {
        // gone meanwhile: try again
      }
      if (attempt > 2000) throw new Error(`cache mutex ${lock} stays taken`);
      sleepMs(attempt < 20 ? 2 : 20);
    }
  }
  try {
    writeFileSync(join(lock, owner), '');
  } catch {
    // the owner file only helps break a crashed owner's mutex sooner
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- holds and use

/** Marks an entry as just used (its folder's mtime is its last use). */
export function touchEntry(dir: string): void {
  const now = new Date();
  try {
    utimesSync(dir, now, now);
  } catch {
    // an entry evicted meanwhile needs no touch
  }
}

export interface EntryHold {
  release(): void;
}

const processHolds = new Set<string>();
let holdCounter = 0;

/**
 * Registers this process as a user of the entry folder `dir` (checked with `complete`, e.g. its main file
 * exists) and touches it. Returns null when the entry is gone or incomplete: build it again.
 */
export function holdEntry(dir: string, complete: (dir: string) => boolean): EntryHold | null {
  const root = dirname(dir);
  const key = basename(dir);
  return withEntryMutex(root, key, () => {
    if (!complete(dir)) return null;
    try {
      mkdirSync(join(dir, HOLDERS));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return null;
    }
    const file = join(dir, HOLDERS, `${HOST}~${process.pid}~${++holdCounter}-${randomBytes(3).toString('hex')}`);
    try {
      writeFileSync(file, '');
    } catch {
      return null;
    }
    touchEntry(dir);
    processHolds.add(file);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        processHolds.delete(file);
        rmSync(file, { force: true });
      },
    };
  });
}

/** Ends every hold this process took (a job ended: its engines are closed). */
export function releaseAllHolds(): void {
  for (const f of processHolds) rmSync(f, { force: true });
  processHolds.clear();
}

function liveHolds(dir: string, now: number): number {
  let n = 0;
  let names: string[];
  try {
    names = readdirSync(join(dir, HOLDERS));
  } catch {
    return 0;
  }
  for (const name of names) {
    const p = join(dir, HOLDERS, name);
    try {
      if (ownerLive(name, lstatSync(p).mtimeMs, now)) n++;
      else unlinkSync(p);
    } catch {
      // released meanwhile
    }
  }
  return n;
}

// ---------------------------------------------------------------- scanning and eviction

/** The roots one bound covers: a harden cache folder's `engine/` and `atlas/` together, else the root alone. */
export function cacheGroupRoots(root: string): string[] {
  const name = basename(root);
  if (name === 'engine' || name === 'atlas') return [join(dirname(root), 'engine'), join(dirname(root), 'atlas')];
  return [root];
}

function isTemporary(name: string): RegExpExecArray | null {
  // engine: .tmp-<key>-<pid>-<ms>; atlas: <id>.tmp-<pid>-<ms>; eviction: .evict-<key>-<pid>-<ms>
  return /(?:^\.tmp-[^-]+-|^\.evict-[^-]+-|\.tmp-)(\d+)-(\d+)$/.exec(name);
}

function filesOf(dir: string, out: PlannedFile[]): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (name === HOLDERS) continue;
    const p = join(dir, name);
    try {
      const st = lstatSync(p);
      if (st.isDirectory()) filesOf(p, out);
      else out.push({ inode: `${st.dev}:${st.ino}`, size: st.size, nlink: st.nlink });
    } catch {
      // removed meanwhile
    }
  }
}

export interface ScannedEntry extends PlannedEntry {
  root: string;
  key: string;
}

export function scanCache(roots: readonly string[], now = Date.now()): ScannedEntry[] {
  const entries: ScannedEntry[] = [];
  for (const root of roots) {
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      continue;
    }
    for (const key of names) {
      if (key.startsWith('.') || isTemporary(key)) continue;
      const dir = join(root, key);
      let st;
      try {
        st = statSync(dir);
      } catch {
        continue;
      }
      if (!st.isDirectory()) continue;
      const files: PlannedFile[] = [];
      filesOf(dir, files);
      entries.push({ id: dir, root, key, lastUsedMs: st.mtimeMs, held: liveHolds(dir, now) > 0, files });
    }
  }
  return entries;
}

/** Removes temporary folders of builders and evictors that died (dead pid on this host, or old). */
export function removeLeftovers(roots: readonly string[], now = Date.now()): string[] {
  const removed: string[] = [];
  for (const root of roots) {
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      continue;
    }
    for (const name of names) {
      const m = isTemporary(name);
      if (!m) continue;
      const p = join(root, name);
      const pid = Number(m[1]);
      let age = 0;
      try {
        age = now - lstatSync(p).mtimeMs;
      } catch {
        continue;
      }
      // The pid in a name is only checkable on this host, and a cache folder may be shared: a dead pid's folder
      // goes after LEFTOVER_GRACE_MS (a live builder elsewhere finishes long before), any after TMP_MAX_AGE_MS.
      if ((age > LEFTOVER_GRACE_MS && !pidAlive(pid)) || age > TMP_MAX_AGE_MS) {
        rmSync(p, { recursive: true, force: true });
        removed.push(p);
      }
    }
  }
  return removed;
}

function evictEntry(e: ScannedEntry): boolean {
  const tomb = join(e.root, `.evict-${e.key}-${process.pid}-${Date.now()}`);
  const moved = withEntryMutex(e.root, e.key, () => {
    if (liveHolds(e.id, Date.now()) > 0) return false;
    try {
      renameSync(e.id, tomb);
      return true;
    } catch {
      return false;
    }
  });
  if (moved) rmSync(tomb, { recursive: true, force: true });
  return moved;
}

export interface BoundResult {
  maxBytes: number;
  bytesBefore: number;
  bytesAfter: number;
  evicted: string[];
  leftovers: string[];
}

function filesystemBytes(path: string): number | undefined {
  for (let p = path; ; p = dirname(p)) {
    try {
      const s = statfsSync(p);
      return s.blocks * s.bsize;
    } catch {
      if (dirname(p) === p) return undefined;
    }
  }
}

/** The bound for a cache folder: FGSN_CACHE_MAX_BYTES, else the default on the filesystem holding it. */
export function cacheMaxBytesFor(root: string, env: NodeJS.ProcessEnv = process.env): number {
  return resolveCacheMaxBytes(cacheMaxBytesFromEnv(env), filesystemBytes(root));
}

/**
 * Enforces the bound on the cache group of `root` (see cacheGroupRoots): leftovers removed, then least
 * recently used entries not held evicted until the real cost is within `maxBytes` (default: cacheMaxBytesFor).
 */
export function enforceCacheBound(root: string, maxBytes?: number): BoundResult {
  const roots = cacheGroupRoots(root);
  const bound = maxBytes ?? cacheMaxBytesFor(root);
  const leftovers = removeLeftovers(roots);
  const entries = scanCache(roots);
  const plan = planEviction(entries, bound);
  const byId = new Map(entries.map((e) => [e.id, e]));
  const evicted: string[] = [];
  for (const id of plan.evict) if (evictEntry(byId.get(id)!)) evicted.push(id);
  const bytesAfter = evicted.length === plan.evict.length ? plan.bytesAfter : cacheBytes(scanCache(roots));
  for (const r of roots) {
    try {
      rmdirSync(join(r, LOCKS));
    } catch {
      // in use or absent
    }
  }
  return { maxBytes: bound, bytesBefore: plan.bytesBefore, bytesAfter, evicted, leftovers };
}
