/** Parsing of NDJSON probe sets and the built-in default sets. */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { FgsnError } from '../errors.js';
import type { ProbeRecord } from '../pipeline/index.js';
import type { ProbeSetRecord } from './records.js';
import { ProbeLine } from './schemas.js';
import { jsonlLines } from '../util/index.js';

/** Every bad line is reported (up to a cap), with its 1-based number, so a client fixes the file in one go. */
export function parseProbeNdjson(text: string): ProbeRecord[] {
  const out: ProbeRecord[] = [];
  const problems: { line: number; message: string }[] = [];
  for (const l of jsonlLines(text)) {
    if ('problem' in l) {
      problems.push({ line: l.line, message: l.problem });
      continue;
    }
    const r = ProbeLine.safeParse(l.value);
    if (!r.success) {
      problems.push({ line: l.line, message: r.error.issues.map((x) => `${x.path.join('.') || '(line)'}: ${x.message}`).join('; ') });
      continue;
    }
    out.push(r.data);
  }
  if (problems.length > 0) {
    throw new FgsnError('PROBES_INVALID', `probe set has ${problems.length} bad line(s); first at line ${problems[0].line}: ${problems[0].message}`, {
      details: { problems: problems.slice(0, 50) },
    });
  }
  if (out.length === 0) throw new FgsnError('PROBES_EMPTY', 'the probe set holds no prompt');
  return out;
}

export function categoryCounts(records: ProbeRecord[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const r of records) c[r.category ?? 'uncategorized'] = (c[r.category ?? 'uncategorized'] ?? 0) + 1;
  return c;
}

export const DEFAULT_PROBE_SETS = { 'default-harmful': 'harmful', 'default-benign': 'benign' } as const;
export type DefaultProbeSetId = keyof typeof DEFAULT_PROBE_SETS;

function defaultProbeDir(): string {
  const beside = fileURLToPath(new URL('./default-probes/', import.meta.url));
  if (existsSync(beside)) return beside;
  // Compiled build (dist/api/probes.js): the JSONL files stay with the sources in src/api/.
  return fileURLToPath(new URL('../../src/api/default-probes/', import.meta.url));
}

const cache = new Map<string, ProbeRecord[]>();

export async function loadDefaultProbes(id: DefaultProbeSetId): Promise<ProbeRecord[]> {
  let r = cache.get(id);
  if (r === undefined) {
    r = parseProbeNdjson(await readFile(`${defaultProbeDir()}${DEFAULT_PROBE_SETS[id]}.jsonl`, 'utf8'));
    cache.set(id, r);
  }
  return r;
}

export async function defaultProbeSetRecord(id: DefaultProbeSetId): Promise<ProbeSetRecord> {
  const records = await loadDefaultProbes(id);
  return {
    id,
    tenant: '*',
    name: `built-in ${DEFAULT_PROBE_SETS[id]} probes`,
    kind: DEFAULT_PROBE_SETS[id],
    count: records.length,
    categories: categoryCounts(records),
    bytes: 0,
    createdAt: '2026-11-27T00:00:00.000Z',
  };
}

export function isDefaultProbeSet(id: string): id is DefaultProbeSetId {
  return Object.hasOwn(DEFAULT_PROBE_SETS, id);
}
