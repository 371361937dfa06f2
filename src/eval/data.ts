/**
 * Reading evaluation sets from JSONL: harmful `{"prompt", "category"?}`, task and look-alike
 * `{"prompt", "answer"}`. Extra fields (the testbed's id, target, ...) are ignored.
 */
import { FgsnError } from '../errors.js';
import { parseJsonl, readJsonlText } from '../util/index.js';

export interface HarmfulItem {
  prompt: string;
  category?: string;
}

export interface TaskItem {
  prompt: string;
  answer: string;
}

export interface LookalikeItem {
  prompt: string;
  answer?: string;
}

function parseLines(text: string, file: string): Record<string, unknown>[] {
  return parseJsonl(text, { source: file, code: 'EVAL_DATA_INVALID' }, (o) => o);
}

function str(row: Record<string, unknown>, key: string, where: string, required: true): string;
function str(row: Record<string, unknown>, key: string, where: string, required: false): string | undefined;
function str(row: Record<string, unknown>, key: string, where: string, required: boolean): string | undefined {
  const v = row[key];
  if (v === undefined || v === null) {
    if (required) throw new FgsnError('EVAL_DATA_INVALID', `${where}: missing "${key}"`);
    return undefined;
  }
  if (typeof v !== 'string') throw new FgsnError('EVAL_DATA_INVALID', `${where}: "${key}" must be a string`);
  if (key === 'prompt' && v.trim().length === 0) throw new FgsnError('EVAL_DATA_INVALID', `${where}: empty prompt`);
  return v;
}

export function parseHarmfulJsonl(text: string, file = '<harmful>'): HarmfulItem[] {
  return parseLines(text, file).map((row, i) => {
    const where = `${file} record ${i + 1}`;
    const item: HarmfulItem = { prompt: str(row, 'prompt', where, true) };
    const category = str(row, 'category', where, false);
    if (category !== undefined) item.category = category;
    return item;
  });
}

export function parseTaskJsonl(text: string, file = '<task>'): TaskItem[] {
  return parseLines(text, file).map((row, i) => {
    const where = `${file} record ${i + 1}`;
    return { prompt: str(row, 'prompt', where, true), answer: str(row, 'answer', where, true) };
  });
}

export function parseLookalikeJsonl(text: string, file = '<lookalike>'): LookalikeItem[] {
  return parseLines(text, file).map((row, i) => {
    const where = `${file} record ${i + 1}`;
    const item: LookalikeItem = { prompt: str(row, 'prompt', where, true) };
    const answer = str(row, 'answer', where, false);
    if (answer !== undefined) item.answer = answer;
    return item;
  });
}

function readText(file: string): Promise<string> {
  return readJsonlText(file, 'EVAL_DATA_INVALID');
}

export async function readHarmfulFile(file: string): Promise<HarmfulItem[]> {
  return parseHarmfulJsonl(await readText(file), file);
}

export async function readTaskFile(file: string): Promise<TaskItem[]> {
  return parseTaskJsonl(await readText(file), file);
}

export async function readLookalikeFile(file: string): Promise<LookalikeItem[]> {
  return parseLookalikeJsonl(await readText(file), file);
}

/** First n items (n undefined: all). Used for quick runs; deterministic, no sampling. */
export function limitItems<T>(items: T[], n: number | undefined): T[] {
  return n === undefined ? items : items.slice(0, n);
}
