/**
 * Evaluation of one model: greedy generation on the given sets, then the pure scorer.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadEngine } from '../engine/index.js';
import { FgsnError } from '../errors.js';
import type { HarmfulItem, LookalikeItem, TaskItem } from './data.js';
import { resolveJudge, type JudgeOptions } from './judges.js';
import type { JudgeConfig } from './markers.js';
import {
  RESERVED_SET_NAMES, scoreGenerations, type CategoryScore, type GenerationSets, type MetricName,
  type ScoredGeneration,
} from './score.js';

export const DEFAULT_MAX_NEW_TOKENS = 40;
export const DEFAULT_BATCH_SIZE = 32;

export interface EvalSets {
  harmful?: HarmfulItem[];
  emerging?: HarmfulItem[];
  lookalike?: LookalikeItem[];
  tasks?: Record<string, TaskItem[]>;
}

export interface EvalOptions extends EvalSets {
  adapter?: string;
  maxNewTokens?: number;
  batchSize?: number;
  judge?: JudgeOptions;
  executionProvider?: 'cpu' | 'cuda';
  cacheDir?: string;
  /** Write every judged response as JSONL (the testbed's generations format). */
  generationsFile?: string;
  /** Put the judged responses into the report too. */
  keepGenerations?: boolean;
  /** Prompts generated so far, after each batch (progress bars). */
  onProgress?: (done: number, total: number) => void;
}

/** Greedy text generation, one response per prompt, in order: what evaluation needs from the engine. */
export interface TextGenerator {
  generate(prompts: string[], options: { maxNewTokens: number; batchSize: number; onBatch?: (done: number, total: number) => void }): Promise<string[]>;
}

export type EvalReport = Partial<Record<MetricName, number>> & {
  model: string;
  adapter?: string;
  n: Record<string, number>;
  per_category: { harmful?: Record<string, CategoryScore>; emerging?: Record<string, CategoryScore> };
  judge: { preset: string; markers: number; marker_list: string[]; boundary: string; case_sensitive: boolean; compliance_prefix: string };
  max_new_tokens: number;
  seconds: { load: number; generate: number; score: number; total: number };
  generations_file?: string;
  generations?: ScoredGeneration[];
};

function flatten(sets: EvalSets): { set: string; index: number; prompt: string }[] {
  const out: { set: string; index: number; prompt: string }[] = [];
  const add = (set: string, items: { prompt: string }[] | undefined): void => {
    items?.forEach((it, index) => out.push({ set, index, prompt: it.prompt }));
  };
  add('harmful', sets.harmful);
  add('emerging', sets.emerging);
  add('lookalike', sets.lookalike);
  for (const [name, items] of Object.entries(sets.tasks ?? {})) add(`task:${name}`, items);
  return out;
}

function checkPositiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new FgsnError('EVAL_OPTION_INVALID', `${name} must be a positive integer, got ${v}`);
  return v;
}

/** Builds the report from responses in `flatten` order. Pure apart from the clock values passed in. */
export function buildReport(
  sets: EvalSets,
  responses: string[],
  judge: JudgeConfig,
  meta: { model: string; adapter?: string; maxNewTokens: number; seconds: Omit<EvalReport['seconds'], 'score' | 'total'> },
): { report: EvalReport; generations: ScoredGeneration[] } {
  const t0 = performance.now();
  const order = flatten(sets);
  if (responses.length !== order.length) {
    throw new FgsnError('INTERNAL', `generator returned ${responses.length} responses for ${order.length} prompts`);
  }
  const resp = new Map<string, string[]>();
  order.forEach((o, i) => {
    const list = resp.get(o.set) ?? [];
    list[o.index] = responses[i];
    resp.set(o.set, list);
  });
  const gen: GenerationSets = {};
  if (sets.harmful) gen.harmful = sets.harmful.map((h, i) => ({ ...h, response: resp.get('harmful')?.[i] ?? '' }));
  if (sets.emerging) gen.emerging = sets.emerging.map((h, i) => ({ ...h, response: resp.get('emerging')?.[i] ?? '' }));
  if (sets.lookalike) gen.lookalike = sets.lookalike.map((h, i) => ({ ...h, response: resp.get('lookalike')?.[i] ?? '' }));
  if (sets.tasks) {
    gen.tasks = {};
    for (const [name, items] of Object.entries(sets.tasks)) {
      gen.tasks[name] = items.map((t, i) => ({ ...t, response: resp.get(`task:${name}`)?.[i] ?? '' }));
    }
  }
  const scores = scoreGenerations(gen, judge);
  const score = (performance.now() - t0) / 1000;
  const report: EvalReport = {
    model: meta.model,
    ...(meta.adapter !== undefined ? { adapter: meta.adapter } : {}),
    ...scores.metrics,
    n: scores.n,
    per_category: scores.perCategory,
    judge: {
      preset: judge.preset,
      markers: judge.markers.length,
      marker_list: [...judge.markers],
      boundary: judge.boundary,
      case_sensitive: judge.caseSensitive,
      compliance_prefix: judge.compliancePrefix,
    },
    max_new_tokens: meta.maxNewTokens,
    seconds: { ...meta.seconds, score, total: meta.seconds.load + meta.seconds.generate + score },
  };
  return { report, generations: scores.generations };
}

/** Evaluates with any greedy generator (the engine in production). */
export async function evaluateWithGenerator(
  generator: TextGenerator,
  meta: { model: string; adapter?: string; loadSeconds?: number },
  options: EvalOptions,
): Promise<EvalReport> {
  const judge = resolveJudge(options.judge);
  const maxNewTokens = checkPositiveInt('maxNewTokens', options.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS);
  const batchSize = checkPositiveInt('batchSize', options.batchSize ?? DEFAULT_BATCH_SIZE);
  for (const name of Object.keys(options.tasks ?? {})) {
    // Checked before generating: acc_<task> and n.<task> must not collide with the safety sets.
    if (RESERVED_SET_NAMES.has(name)) throw new FgsnError('EVAL_OPTION_INVALID', `task name "${name}" is reserved for a safety set`);
  }
  const prompts = flatten(options).map((o) => o.prompt);
  if (prompts.length === 0) throw new FgsnError('EVAL_OPTION_INVALID', 'nothing to evaluate: give at least one set');
  const t0 = performance.now();
  const responses = await generator.generate(prompts, { maxNewTokens, batchSize, ...(options.onProgress ? { onBatch: options.onProgress } : {}) });
  const generate = (performance.now() - t0) / 1000;
  const { report, generations } = buildReport(options, responses, judge, {
    model: meta.model,
    ...(meta.adapter !== undefined ? { adapter: meta.adapter } : {}),
    maxNewTokens,
    seconds: { load: meta.loadSeconds ?? 0, generate },
  });
  if (options.generationsFile !== undefined) {
    await mkdir(dirname(options.generationsFile), { recursive: true });
    await writeFile(options.generationsFile, generations.map((g) => JSON.stringify(g)).join('\n') + '\n');
    report.generations_file = options.generationsFile;
  }
  if (options.keepGenerations) report.generations = generations;
  return report;
}

/** Loads the model (plus optional PEFT adapter) in the engine and evaluates it with greedy decoding. */
export async function evaluateModel(modelDir: string, options: EvalOptions = {}): Promise<EvalReport> {
  const t0 = performance.now();
  const engine = await loadEngine(modelDir, {
    ...(options.adapter !== undefined ? { adapter: options.adapter } : {}),
    ...(options.executionProvider !== undefined ? { executionProvider: options.executionProvider } : {}),
    ...(options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {}),
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    const generator: TextGenerator = {
      async generate(prompts, o) {
        const out = await engine.generate(prompts, o);
        return out.map((r) => r.text);
      },
    };
    return await evaluateWithGenerator(
      generator,
      { model: modelDir, ...(options.adapter !== undefined ? { adapter: options.adapter } : {}), loadSeconds },
      options,
    );
  } finally {
    await engine.close();
  }
}
