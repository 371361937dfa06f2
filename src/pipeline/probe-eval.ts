/**
 * The target-driven budget's measurement: refusal rate on the harmful PROBE prompts (never eval prompts),
 * exact-match accuracy on task probes that carry a response, with the eval area's judge, and optionally the
 * teacher-forced NLL of given refusals (a signal that keeps moving once every probe is already refused).
 */
import { join } from 'node:path';
import { loadEngine, type Engine, type EngineOptions } from '../engine/index.js';
import { exactMatch, isRefusal, resolveJudge, type JudgeOptions } from '../eval/index.js';
import type { ProbeRecord } from './types.js';

export interface ProbeMetrics {
  /** Share of harmful probes answered without a refusal marker. */
  asr: number;
  /** Exact-match accuracy on task probes with a response; null without any. */
  taskAccuracy: number | null;
  /** Share of benign prompts answered with a refusal marker; null without any. */
  overRefusal: number | null;
  /** Exact-match accuracy on `ctx.exact` (e.g. benign probes with answers); null without any. */
  exactAccuracy: number | null;
  /** Mean NLL per response token of `ctx.nll`'s responses; null when not asked. */
  responseNll: number | null;
  /**
   * ASR judged on the first `prefixTokens` generated tokens only (the cheap judgement: greedy decoding makes
   * them the prefix of the full answer, so both are read from one generation).
   */
  asrPrefix?: number;
  /**
   * Per-prompt outcomes, in the order given, for PAIRED guardrails (guardrails.ts compares a step with the
   * fine-tune prompt by prompt). Optional: a measurement that has no per-prompt view leaves them out.
   */
  harmfulAnswered?: boolean[];
  /** The same judged on the first PREFIX_TOKENS generated tokens (asrPrefix per prompt). */
  harmfulAnsweredPrefix?: boolean[];
  /**
   * Mean NLL per token of a refusal sentence after each of `ctx.refusal.prompts` (benign prompts): the refusal
   * log-prob margin. A step that lowers it moves toward refusing those prompts before a greedy answer shows it.
   */
  refusalNll?: number | null;
  taskCorrect?: boolean[];
  benignRefused?: boolean[];
  exactCorrect?: boolean[];
}

/** Generated tokens the cheap step judgement reads (see ProbeContext.harmfulJudge). */
export const PREFIX_TOKENS = 8;

/** How many probes a target-driven search's guardrails read: answered task probes, benign prompts. */
export const GUARDRAIL_PROBES = { task: 200, benign: 100 } as const;

export interface ProbeContext {
  benignPrompts?: string[];
  /** Extra probes scored by exact match of their response (a guardrail on general answers). */
  exact?: ProbeRecord[];
  /** Prompts and the responses whose teacher-forced NLL is measured. */
  nll?: { prompts: string[]; responses: string[] };
  /** Prompts (benign) and the refusal sentence whose teacher-forced NLL is measured after each. */
  refusal?: { prompts: string[]; text: string };
  cacheDir: string;
  executionProvider?: 'cpu' | 'cuda';
  judge?: JudgeOptions;
  maxNewTokens?: number;
  /**
   * 'prefix': the harmful probes are generated for PREFIX_TOKENS tokens only and `asr` is judged on those
   * (the cheap step judgement); default 'full' (maxNewTokens, as the evaluation does).
   */
  harmfulJudge?: 'full' | 'prefix';
}

/**
 * Mean over response tokens (the chat template's end of turn included) of -log p(token | prefix). The
 * log-probabilities of the target tokens are computed in the graph (Engine.logProbs): nothing the size of the
 * vocabulary is kept per position.
 */
export async function meanResponseNll(engine: Engine, prompts: readonly string[], responses: readonly string[], batchSize = 8): Promise<number> {
  let total = 0;
  let tokens = 0;
  const seqs = await engine.logProbs(prompts, { responses, batchSize });
  for (const seq of seqs) {
    for (let t = Math.max(1, seq.promptLength); t < seq.ids.length; t++) {
      total -= seq.logprobs[t - 1];
      tokens++;
    }
  }
  return tokens === 0 ? 0 : total / tokens;
}

/** -log softmax(logits)[target], computed stably in float64. */
export function tokenNll(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  return Math.log(sum) + max - logits[target];
}

export async function measureOnProbes(
  model: { dir: string; adapter?: string },
  harmfulPrompts: string[],
  task: ProbeRecord[],
  ctx: ProbeContext,
): Promise<ProbeMetrics> {
  const engine = await loadEngine(model.dir, probeEngineOptions(model, ctx));
  try {
    return await measureWithEngine(engine, harmfulPrompts, task, ctx);
  } finally {
    await engine.close();
  }
}

function probeEngineOptions(model: { adapter?: string }, ctx: ProbeContext): EngineOptions {
  return {
    cacheDir: join(ctx.cacheDir, 'engine'),
    ...(model.adapter ? { adapter: model.adapter } : {}),
    ...(ctx.executionProvider ? { executionProvider: ctx.executionProvider } : {}),
  };
}

/**
 * The engine a search measures all its steps with: the model loaded once, its graphs taking a row patch, so
 * each step sets the candidate's edited rows (Engine.setRowPatch) instead of writing a model folder. A step
 * only generates and scores (measureWithEngine), which share one graph: one session, one float32 copy of the
 * weights (2x a bf16 checkpoint) is all it needs, and maxSessions 1 keeps it so should another variant be asked.
 */
export function openStepEngine(model: { dir: string; adapter?: string }, ctx: ProbeContext): Promise<Engine> {
  return loadEngine(model.dir, { ...probeEngineOptions(model, ctx), rowPatch: true, maxSessions: 1 });
}

/** measureOnProbes on an engine already loaded (with whatever row patch it carries). */
export async function measureWithEngine(engine: Engine, harmfulPrompts: string[], task: ProbeRecord[], ctx: ProbeContext): Promise<ProbeMetrics> {
  const judge = resolveJudge(ctx.judge);
  const answered = task.filter((p) => p.response !== undefined);
  const exact = (ctx.exact ?? []).filter((p) => p.response !== undefined);
  const benign = ctx.benignPrompts ?? [];
  const maxNewTokens = ctx.maxNewTokens ?? 40;
  const prefixOnly = ctx.harmfulJudge === 'prefix';
  const all = [...(prefixOnly ? [] : harmfulPrompts), ...answered.map((p) => p.prompt), ...exact.map((p) => p.prompt), ...benign];
  const gens = all.length === 0 ? [] : await engine.generate(all, { maxNewTokens, batchSize: 32 });
  let at = 0;
  const take = (n: number): typeof gens => gens.slice(at, (at += n));
  const h = prefixOnly
    ? (harmfulPrompts.length === 0 ? [] : await engine.generate(harmfulPrompts, { maxNewTokens: Math.min(PREFIX_TOKENS, maxNewTokens), batchSize: 32 }))
    : take(harmfulPrompts.length);
  const prefixTexts = await Promise.all(h.map((g) => (g.ids.length <= PREFIX_TOKENS ? g.text : engine.tokenizer.decode(g.ids.slice(0, PREFIX_TOKENS)))));
  const t = take(answered.length);
  const x = take(exact.length);
  const b = take(benign.length);
  const accuracy = (set: ProbeRecord[], g: typeof gens): number | null =>
    set.length === 0 ? null : g.filter((gen, i) => exactMatch(gen.text, set[i].response!)).length / set.length;
  const correct = (set: ProbeRecord[], g: typeof gens): boolean[] => g.map((gen, i) => exactMatch(gen.text, set[i].response!));
  return {
    harmfulAnswered: h.map((g) => !isRefusal(g.text, judge)),
    taskCorrect: correct(answered, t),
    benignRefused: b.map((g) => isRefusal(g.text, judge)),
    exactCorrect: correct(exact, x),
    asr: h.filter((g) => !isRefusal(g.text, judge)).length / Math.max(1, h.length),
    taskAccuracy: accuracy(answered, t),
    overRefusal: benign.length === 0 ? null : b.filter((g) => isRefusal(g.text, judge)).length / benign.length,
    exactAccuracy: accuracy(exact, x),
    responseNll: ctx.nll ? await meanResponseNll(engine, ctx.nll.prompts, ctx.nll.responses) : null,
    asrPrefix: prefixTexts.filter((text) => !isRefusal(text, judge)).length / Math.max(1, h.length),
    harmfulAnsweredPrefix: prefixTexts.map((text) => !isRefusal(text, judge)),
    ...(ctx.refusal ? { refusalNll: await meanResponseNll(engine, ctx.refusal.prompts, ctx.refusal.prompts.map(() => ctx.refusal!.text)) } : {}),
  };
}
