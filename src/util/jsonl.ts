/**
 * The one JSONL reader: every probe, prompt, eval-set and stored-set file goes through it, so blank lines,
 * CRLF endings, line numbers and the wording of a bad line are the same wherever a file comes in. What a
 * record must hold (prompt, category, response...) is checked by the caller's `each`.
 */
import { readFile } from 'node:fs/promises';
import { FgsnError, type ErrorCode } from '../errors.js';

/** One non-blank line: its 1-based number and either its JSON object or why it is not one. */
export type JsonlLine = { line: number; value: Record<string, unknown> } | { line: number; problem: string };

/** Every non-blank line of `text` (CRLF or LF), parsed; never throws, for callers that report all bad lines. */
export function* jsonlLines(text: string): Generator<JsonlLine> {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      yield { line: i + 1, problem: `not JSON (${(e as Error).message})` };
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) yield { line: i + 1, problem: 'each line must be a JSON object' };
    else yield { line: i + 1, value: value as Record<string, unknown> };
  }
}

export interface JsonlOptions {
  /** File name (or `<probes>`) used in messages and details. */
  source: string;
  /** Error code of a bad line or an empty file. */
  code?: ErrorCode;
  /** Message for a file without records; default `${source}: no records`. `false`: an empty file is fine. */
  empty?: string | false;
}

/** Where a record came from, for the caller's own messages. */
export interface JsonlPlace {
  line: number;
  /** `${source}:${line}` */
  where: string;
  /** The coded error for a bad field of this record (same code and details as a bad line). */
  fail(message: string): FgsnError;
}

/**
 * Strict: each non-blank line must be a JSON object, mapped by `each` (which throws `at.fail(...)` for a bad
 * field); the first bad line is the error, named `${source}:${line}`.
 */
export function parseJsonl<T>(text: string, opts: JsonlOptions, each: (o: Record<string, unknown>, at: JsonlPlace) => T): T[] {
  const code = opts.code ?? 'PROBES_INVALID';
  const fail = (line: number) => (message: string) =>
    new FgsnError(code, `${opts.source}:${line}: ${message}`, { details: { file: opts.source, line } });
  const out: T[] = [];
  for (const l of jsonlLines(text)) {
    if ('problem' in l) throw fail(l.line)(l.problem);
    out.push(each(l.value, { line: l.line, where: `${opts.source}:${l.line}`, fail: fail(l.line) }));
  }
  if (out.length === 0 && opts.empty !== false) {
    throw new FgsnError(code === 'PROBES_INVALID' ? 'PROBES_EMPTY' : code, opts.empty ?? `${opts.source}: no records`, { details: { file: opts.source } });
  }
  return out;
}

/** Reads a file as UTF-8 for parseJsonl; a read failure is `code` naming the file. */
export async function readJsonlText(path: string, code: ErrorCode = 'PROBES_INVALID'): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new FgsnError(code, `${path}: cannot read (${(e as Error).message})`, { cause: e, details: { file: path } });
  }
}

/** A string field of a record: undefined when absent or null, else it must be a string. */
export function optionalString(o: Record<string, unknown>, key: string, at: JsonlPlace): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw at.fail(`"${key}" must be a string when present`);
  return v;
}

/** The record's prompt: a non-empty string. */
export function promptField(o: Record<string, unknown>, at: JsonlPlace): string {
  if (typeof o.prompt !== 'string' || o.prompt.trim() === '') throw at.fail('"prompt" must be a non-empty string');
  return o.prompt;
}
