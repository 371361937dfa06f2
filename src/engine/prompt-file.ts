/** JSONL prompt files for `fgsn trace` / `fgsn generate`: one `{"prompt": "..."}` object per line. */
import { parseJsonl, readJsonlText } from '../util/index.js';

export interface PromptRecord {
  prompt: string;
  /** Every other field of the line, passed through (e.g. set, category). */
  extra: Record<string, unknown>;
}

/** Pure: parses JSONL text; blank lines are skipped, anything else must be an object with a string prompt. */
export function parsePromptLines(text: string, source: string): PromptRecord[] {
  return parseJsonl(text, { source, empty: `${source}: no prompts` }, (o, at) => {
    const { prompt, ...extra } = o;
    if (typeof prompt !== 'string') throw at.fail('expected an object with a string "prompt"');
    return { prompt, extra };
  });
}

export async function readPromptFile(path: string): Promise<PromptRecord[]> {
  return parsePromptLines(await readJsonlText(path, 'CHECKPOINT_NOT_FOUND'), path);
}
