/** Bits shared by `fgsn harden` and `fgsn continue`: cache location and evaluation-set flags. */
import { join } from 'node:path';
import { FgsnError } from '../errors.js';
import { readProbes, type ProbeRecord } from '../probes.js';
import type { EvaluationRequest } from '../pipeline/index.js';

export function defaultCacheDir(): string {
  return process.env.FGSN_CACHE_DIR ?? join(process.cwd(), '.fgsn', 'cache');
}

/** Probes that must carry their expected answer (`response`, or a task file's `answer`). */
async function readAnswered(path: string): Promise<ProbeRecord[]> {
  const probes = await readProbes(path);
  const missing = probes.findIndex((p) => p.response === undefined);
  if (missing >= 0) throw new FgsnError('PROBES_INVALID', `${path}: record ${missing + 1} has no "response" (or "answer"): the expected answer`, { details: { file: path } });
  return probes;
}

export async function readEvalSets(values: Record<string, unknown>): Promise<EvaluationRequest | undefined> {
  const e: EvaluationRequest = {};
  if (typeof values['eval-harmful'] === 'string') e.harmful = await readProbes(values['eval-harmful']);
  if (typeof values['eval-emerging'] === 'string') e.emerging = await readProbes(values['eval-emerging']);
  if (typeof values['eval-lookalike'] === 'string') {
    e.lookalike = await readAnswered(values['eval-lookalike']);
  }
  const tasks = values['eval-task'];
  if (Array.isArray(tasks)) {
    e.tasks = {};
    for (const t of tasks as string[]) {
      const i = t.indexOf('=');
      if (i <= 0) throw new FgsnError('CLI_USAGE', `--eval-task needs NAME=FILE, got "${t}"`);
      e.tasks[t.slice(0, i)] = await readAnswered(t.slice(i + 1));
    }
  }
  return Object.keys(e).length > 0 ? e : undefined;
}
