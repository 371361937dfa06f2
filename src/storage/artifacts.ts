/**
 * Publication of a job's artifacts. Files go up under a fresh attempt folder, then one small manifest object
 * is written; readers only ever look through the manifest. Since a single object write is atomic on both
 * backends, a crashed or concurrent attempt can leave orphan blobs but never a visible partial artifact.
 */
import { randomUUID } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { FgsnError } from '../errors.js';
import { sha256FileUnlessKnown } from '../util/index.js';
import { assertSafeKey } from './keys.js';
import type { BlobStore } from './types.js';

export interface PublishedArtifact {
  /** Relative name inside the job's output, e.g. "model/model.safetensors". */
  name: string;
  bytes: number;
  sha256: string;
  /** Storage key of the bytes. */
  key: string;
}

export interface ArtifactManifest {
  jobId: string;
  attempt: string;
  publishedAt: string;
  artifacts: PublishedArtifact[];
}

const manifestKey = (jobId: string): string => `jobs/${jobId}/manifest.json`;

/** Every regular file under dir, as `/`-separated relative names, sorted. */
export async function listFilesRecursive(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) out.push(relative(dir, p).split(sep).join('/'));
    }
  };
  await walk(dir);
  return out.sort();
}

/**
 * Publishes every file under outDir. `known` carries hashes the producer already computed (matched by name
 * and size); other files are hashed here.
 */
export async function publishArtifacts(
  store: BlobStore,
  jobId: string,
  outDir: string,
  known: { name: string; bytes: number; sha256: string }[] = [],
  opts: { move?: boolean } = {},
): Promise<ArtifactManifest> {
  const attempt = randomUUID();
  const byName = new Map(known.map((k) => [k.name, k]));
  const artifacts: PublishedArtifact[] = [];
  for (const name of await listFilesRecursive(outDir)) {
    assertSafeKey(name);
    const path = join(outDir, ...name.split('/'));
    const bytes = (await stat(path)).size;
    const sha256 = await sha256FileUnlessKnown(path, bytes, byName.get(name));
    const key = `jobs/${jobId}/${attempt}/${name}`;
    await store.putFile(key, path, { move: opts.move });
    artifacts.push({ name, bytes, sha256, key });
  }
  const manifest: ArtifactManifest = { jobId, attempt, publishedAt: new Date().toISOString(), artifacts };
  await store.putBytes(manifestKey(jobId), JSON.stringify(manifest));
  return manifest;
}

export async function readManifest(store: BlobStore, jobId: string): Promise<ArtifactManifest | undefined> {
  const raw = await store.getBytes(manifestKey(jobId));
  if (raw === undefined) return undefined;
  try {
    return JSON.parse(raw.toString('utf8')) as ArtifactManifest;
  } catch (e) {
    throw new FgsnError('STORAGE_ERROR', `artifact manifest of job ${jobId} is unreadable`, { cause: e });
  }
}

export async function deleteJobArtifacts(store: BlobStore, jobId: string): Promise<void> {
  await store.deletePrefix(`jobs/${jobId}`);
}

/**
 * Removes what earlier, crashed attempts of a job left in the store (never listed: they are not in the
 * manifest). Called after a successful publication; keeps the manifest and the published attempt.
 */
export async function removeStaleAttempts(store: BlobStore, manifest: ArtifactManifest): Promise<number> {
  const keep = `jobs/${manifest.jobId}/${manifest.attempt}/`;
  const stale = [...new Set(
    (await store.list(`jobs/${manifest.jobId}`))
      .filter((k) => !k.startsWith(keep) && k !== manifestKey(manifest.jobId))
      .map((k) => k.split('/').slice(0, 3).join('/')),
  )];
  for (const prefix of stale) await store.deletePrefix(prefix);
  return stale.length;
}
