/**
 * Probe sets in the blob store: NDJSON, one probe per line, addressed by key and checked by sha256 on read.
 * The API writes them (uploads, and the built-in sets on first use); workers read them by the reference
 * a job carries.
 */
import { parseJsonl, sha256Text } from '../util/index.js';
import { FgsnError } from '../errors.js';
import type { ProbeRecord } from '../probes.js';
import type { BlobStore } from './types.js';

export function probeNdjson(probes: ProbeRecord[]): string {
  return probes.map((p) => JSON.stringify(p)).join('\n');
}

export { sha256Text };

/** Stores a probe set; returns its key and sha256. */
export async function putProbeBlob(store: BlobStore, key: string, probes: ProbeRecord[]): Promise<{ key: string; sha256: string; bytes: number }> {
  const text = probeNdjson(probes);
  await store.putBytes(key, text);
  return { key, sha256: sha256Text(text), bytes: Buffer.byteLength(text) };
}

/** Reads a probe set and checks its sha256: a changed or missing blob is a coded failure, never other probes. */
export async function readProbeBlob(store: BlobStore, ref: { id: string; key: string; sha256: string }): Promise<ProbeRecord[]> {
  const raw = await store.getBytes(ref.key);
  if (raw === undefined) throw new FgsnError('PROBES_INVALID', `probe set ${ref.id} is no longer stored`, { details: { probeSet: ref.id } });
  const text = raw.toString('utf8');
  if (sha256Text(text) !== ref.sha256) throw new FgsnError('PROBES_INVALID', `probe set ${ref.id} changed after the job was submitted (sha256 differs)`, { details: { probeSet: ref.id } });
  // Written by probeNdjson from checked records (sha256 verified above): read back, not validated again.
  return parseJsonl(text, { source: `probe set ${ref.id}`, empty: false }, (o) => o as unknown as ProbeRecord);
}
