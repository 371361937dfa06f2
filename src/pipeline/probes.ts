/**
 * Strict probe loader: JSONL, one `{"prompt", "category"?, "response"?}` object per line. Blank lines are
 * skipped; anything else that is not such an object is PROBES_INVALID naming file and line. Other keys are
 * ignored, so dataset files that carry ids or references (the testbed's) load as they are; `answer` (the
 * key of task files) stands in for a missing `response`.
 */
import { readFile } from 'node:fs/promises';
import { FgsnError } from '../errors.js';
import type { ProbeRecord } from './types.js';

export function parseProbes(text: string, source = '<probes>'): ProbeRecord[] {
  const out: ProbeRecord[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, k) => {
    const line = raw.trim();
    if (line === '') return;
    const where = `${source}:${k + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new FgsnError('PROBES_INVALID', `${where}: not JSON (${(e as Error).message})`, { details: { file: source, line: k + 1 } });
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      throw new FgsnError('PROBES_INVALID', `${where}: each line must be a JSON object`, { details: { file: source, line: k + 1 } });
    }
    const o = obj as Record<string, unknown>;
    if (typeof o.prompt !== 'string' || o.prompt.trim() === '') {
      throw new FgsnError('PROBES_INVALID', `${where}: "prompt" must be a non-empty string`, { details: { file: source, line: k + 1 } });
    }
    for (const key of ['category', 'response', 'answer'] as const) {
      if (o[key] !== undefined && o[key] !== null && typeof o[key] !== 'string') {
        throw new FgsnError('PROBES_INVALID', `${where}: "${key}" must be a string when present`, { details: { file: source, line: k + 1 } });
      }
    }
    const rec: ProbeRecord = { prompt: o.prompt };
    if (typeof o.category === 'string') rec.category = o.category;
    if (typeof o.response === 'string') rec.response = o.response;
    else if (typeof o.answer === 'string') rec.response = o.answer;
    out.push(rec);
  });
  if (out.length === 0) throw new FgsnError('PROBES_EMPTY', `${source}: no probe records`, { details: { file: source } });
  return out;
}

export async function readProbes(path: string): Promise<ProbeRecord[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new FgsnError('PROBES_INVALID', `${path}: cannot read (${(e as Error).message})`, { details: { file: path } });
  }
  return parseProbes(text, path);
}
