/**
 * Strict probe loader: JSONL, one `{"prompt", "category"?, "response"?}` object per line. Blank lines are
 * skipped; anything else that is not such an object is PROBES_INVALID naming file and line. Other keys are
 * ignored, so dataset files that carry ids or references (the testbed's) load as they are; `answer` (the
 * key of task files) stands in for a missing `response`.
 */
import { optionalString, parseJsonl, promptField, readJsonlText } from './util/index.js';

/** One probe: JSONL `{"prompt", "category"?, "response"?}`. */
export interface ProbeRecord {
  prompt: string;
  category?: string;
  response?: string;
}

export function parseProbes(text: string, source = '<probes>'): ProbeRecord[] {
  return parseJsonl(text, { source, empty: `${source}: no probe records` }, (o, at) => {
    const rec: ProbeRecord = { prompt: promptField(o, at) };
    const category = optionalString(o, 'category', at);
    const response = optionalString(o, 'response', at);
    const answer = optionalString(o, 'answer', at);
    if (category !== undefined) rec.category = category;
    if (response !== undefined) rec.response = response;
    else if (answer !== undefined) rec.response = answer;
    return rec;
  });
}

export async function readProbes(path: string): Promise<ProbeRecord[]> {
  return parseProbes(await readJsonlText(path), path);
}
