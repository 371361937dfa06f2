/**
 * The target-driven budget's measurement: refusal rate on the harmful PROBE prompts (never eval prompts)
 * and exact-match accuracy on task probes that carry a response, with the eval area's judge.
 */
import { join } from 'node:path';
import { loadEngine } from '../engine/engine.js';
import { exactMatch, isRefusal, resolveJudge, type JudgeOptions } from '../eval/judges.js';
import type { ProbeRecord } from './types.js';

export interface ProbeMetrics {
  /** Share of harmful probes answered without a refusal marker. */
  asr: number;
  /** Exact-match accuracy on task probes with a response; null without any. */
  taskAccuracy: number | null;
  /** Share of benign prompts answered with a refusal marker; null without any. */
  overRefusal: number | null;
}

export async function measureOnProbes(
  model: { dir: string; adapter?: string },
  harmfulPrompts: string[],
  task: ProbeRecord[],
  ctx: {
    benignPrompts?: string[]; cacheDir: string; executionProvider?: 'cpu' | 'cuda'; judge?: JudgeOptions; maxNewTokens?: number },
): Promise<ProbeMetrics> {
  const judge = resolveJudge(ctx.judge);
  const engine = await loadEngine(model.dir, {
    cacheDir: join(ctx.cacheDir, 'engine'),
    ...(model.adapter ? { adapter: model.adapter } : {}),
    ...(ctx.executionProvider ? { executionProvider: ctx.executionProvider } : {}),
  });
  try {
    const answered = task.filter((p) => p.response !== undefined);
    const benign = ctx.benignPrompts ?? [];
    const gens = await engine.generate([...harmfulPrompts, ...answered.map((p) => p.prompt), ...benign], { maxNewTokens: ctx.maxNewTokens ?? 40, batchSize: 32 });
    const h = gens.slice(0, harmfulPrompts.length);
    const t = gens.slice(harmfulPrompts.length, harmfulPrompts.length + answered.length);
    const b = gens.slice(harmfulPrompts.length + answered.length);
    const overRefusal = benign.length === 0 ? null : b.filter((g) => isRefusal(g.text, judge)).length / benign.length;
    const asr = h.filter((g) => !isRefusal(g.text, judge)).length / Math.max(1, h.length);
    const taskAccuracy = answered.length === 0 ? null : t.filter((g, i) => exactMatch(g.text, answered[i].response!)).length / answered.length;
    return { asr, taskAccuracy, overRefusal };
  } finally {
    await engine.close();
  }
}
