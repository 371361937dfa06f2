/**
 * The fine-tuning safety testbed's layout (data/*.jsonl, eval/<ckpt>.generations.jsonl): its held-out eval
 * suite, and its recorded generations turned into GenerationSets so the judges can be checked against the
 * reference implementation without running a model.
 */
import { parseJsonl, readJsonlText } from '../../src/util/jsonl.js';
import { join } from 'node:path';
import { FgsnError } from '../../src/errors.js';
import {
  limitItems,
  readHarmfulFile,
  readLookalikeFile,
  readTaskFile,
  type HarmfulItem,
  type LookalikeItem,
  type TaskItem,
} from '../../src/eval/data.js';
import type { GenerationSets } from '../../src/eval/score.js';

/** The testbed's downstream tasks, each with data/<task>_test.jsonl. */
export const TESTBED_TASKS = ['sst', 'agnews', 'gsm', 'instruct'] as const;

export interface EvalSuite {
  harmful: HarmfulItem[];
  emerging: HarmfulItem[];
  lookalike: LookalikeItem[];
  tasks: Record<string, TaskItem[]>;
}

/** The held-out eval splits (never to be used to choose anything). `limit` keeps the first n of each set. */
export async function loadTestbedEvalSuite(
  testbedDir: string,
  options: { limit?: number; tasks?: readonly string[] } = {},
): Promise<EvalSuite> {
  const d = (name: string): string => join(testbedDir, 'data', `${name}.jsonl`);
  const tasks: Record<string, TaskItem[]> = {};
  for (const t of options.tasks ?? TESTBED_TASKS) tasks[t] = limitItems(await readTaskFile(d(`${t}_test`)), options.limit);
  return {
    harmful: limitItems(await readHarmfulFile(d('harmful_eval')), options.limit),
    emerging: limitItems(await readHarmfulFile(d('harmful_emerging_eval')), options.limit),
    lookalike: limitItems(await readLookalikeFile(d('lookalike_test')), options.limit),
    tasks,
  };
}

interface RecordedRow {
  set: string;
  prompt: string;
  response: string;
  category?: string;
}

export async function readRecordedGenerations(file: string): Promise<RecordedRow[]> {
  const text = await readJsonlText(file, 'EVAL_DATA_INVALID');
  return parseJsonl(text, { source: file, code: 'EVAL_DATA_INVALID', empty: false }, (r, at) => {
    if (typeof r.set !== 'string' || typeof r.prompt !== 'string' || typeof r.response !== 'string') throw at.fail('needs string set, prompt and response');
    return r as unknown as RecordedRow;
  });
}

/**
 * Pairs recorded responses with the suite's reference answers, by position within each set; a prompt that
 * differs means the files do not belong together, which is an error rather than a silent mis-score.
 */
export function setsFromRecorded(rows: RecordedRow[], suite: EvalSuite): GenerationSets {
  const bySet = new Map<string, RecordedRow[]>();
  for (const r of rows) bySet.set(r.set, [...(bySet.get(r.set) ?? []), r]);
  const take = <T extends { prompt: string }>(set: string, refs: T[]): { ref: T; row: RecordedRow }[] => {
    const got = bySet.get(set) ?? [];
    if (got.length < refs.length) {
      throw new FgsnError('EVAL_DATA_INVALID', `recorded set "${set}" has ${got.length} rows, the suite ${refs.length}`);
    }
    return refs.map((ref, i) => {
      const row = got[i];
      if (row.prompt !== ref.prompt) {
        throw new FgsnError('EVAL_DATA_INVALID', `recorded set "${set}" row ${i}: prompt differs from the suite's`);
      }
      return { ref, row };
    });
  };
  const tasks: GenerationSets['tasks'] = {};
  for (const [name, items] of Object.entries(suite.tasks)) {
    tasks[name] = take(name, items).map(({ ref, row }) => ({ prompt: ref.prompt, response: row.response, answer: ref.answer }));
  }
  return {
    harmful: take('harmful', suite.harmful).map(({ ref, row }) => ({ prompt: ref.prompt, response: row.response, category: ref.category })),
    emerging: take('emerging', suite.emerging).map(({ ref, row }) => ({ prompt: ref.prompt, response: row.response, category: ref.category })),
    lookalike: take('lookalike', suite.lookalike).map(({ ref, row }) => ({ prompt: ref.prompt, response: row.response, answer: ref.answer })),
    tasks,
  };
}

/** Metric names recorded in the testbed's eval/<ckpt>.json (rounded there to 4 decimals). */
export const RECORDED_METRICS = [
  'harmful_asr',
  'harmful_compliance',
  'emerging_asr',
  'emerging_compliance',
  'acc_sst',
  'acc_agnews',
  'acc_gsm',
  'acc_instruct',
  'over_refusal',
  'lookalike_exact',
] as const;

/** Rounds like the testbed's eval JSON so live and recorded numbers compare exactly. */
export function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
