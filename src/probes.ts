/**
 * Strict probe loader: JSONL, one `{"prompt", "category"?, "response"?}` object per line. Blank lines are
 * skipped; anything else that is not such an object is PROBES_INVALID naming file and line. Other keys are
 * ignored, so dataset files that carry ids or references (the testbed's) load as they are; `answer` (the
 * key of task files) stands in for a missing `response`.
 */
import { optionalString, parseJsonl, promptField, readJsonlText } from './util/index.js';

/**
 * One prompt line of a probe set, as every layer sees it once parsed at the edge (API upload, CLI file):
 * JSONL `{"prompt", "category"?, "response"?}`. `response` is the one name of the expected answer, the API's
 * public name; files whose key is `answer` are read into `response` by the parser. A root module, so that
 * every folder (defense, storage, pipeline, api) reads the same type without importing upward.
 */
export interface ProbeRecord {
  prompt: string;
  category?: string;
  /** The expected answer (task probes, benign look-alikes); absent on harmful probes. */
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
