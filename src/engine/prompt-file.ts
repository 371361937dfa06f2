/** JSONL prompt files for `fgsn trace` / `fgsn generate`: one `{"prompt": "..."}` object per line. */
import { readFile } from 'node:fs/promises';
import { FgsnError } from '../errors.js';

export interface PromptRecord {
  prompt: string;
  /** Every other field of the line, passed through (e.g. set, category). */
  extra: Record<string, unknown>;
}

/** Pure: parses JSONL text; blank lines are skipped, anything else must be an object with a string prompt. */
export function parsePromptLines(text: string, source: string): PromptRecord[] {
  const out: PromptRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new FgsnError('PROBES_INVALID', `${source}:${i + 1}: not valid JSON (${(e as Error).message})`, { details: { file: source, line: i + 1 } });
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v) || typeof (v as { prompt?: unknown }).prompt !== 'string') {
      throw new FgsnError('PROBES_INVALID', `${source}:${i + 1}: expected an object with a string "prompt"`, { details: { file: source, line: i + 1 } });
    }
    const { prompt, ...extra } = v as { prompt: string } & Record<string, unknown>;
    out.push({ prompt, extra });
  });
  if (out.length === 0) throw new FgsnError('PROBES_EMPTY', `${source}: no prompts`);
  return out;
}

export async function readPromptFile(path: string): Promise<PromptRecord[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new FgsnError('CHECKPOINT_NOT_FOUND', `cannot read prompt file ${path}: ${(e as Error).message}`, { cause: e, details: { file: path } });
  }
  return parsePromptLines(text, path);
}
