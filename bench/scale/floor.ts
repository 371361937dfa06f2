/**
 * The compute floor's token count for bench/scale's ratio (a): token-forwards of the passes a harden job
 * needs (a forward+backward counts 3), read from the job's report.json and the atlas' token counts. Pure, so
 * that what it counts is unit-tested (test/bench/scale-floor.test.ts) against what the pipeline runs
 * (src/pipeline/harden.ts, probe-eval.ts, defense/methods/fgsn).
 */

import { GUARDRAIL_PROBES, PREFIX_TOKENS } from '../../src/pipeline/index.js';

/** The parts of a harden report the floor reads. */
export interface FloorReport {
  options?: { p?: number; utilityWeight?: number };
  selection?: {
    stepJudge?: string;
    target?: { steps?: { round?: number }[]; probes?: { harmful: number; rank: number }; confirmed?: unknown };
  };
}

export interface FloorInputs {
  /** The atlas' square-sum token counts: harmful prompt + response, benign prompts (atlas.json `tokens`). */
  harmfulTokens: number;
  benignTokens: number;
  harmfulProbes: number;
  benignProbes: number;
  /** Benign probes that carry an answer (the task guardrail's generation and answer NLL); bench/scale's have none. */
  answeredProbes?: number;
  promptTokens?: number;
  newTokens?: number;
}

/**
 * - Atlas: the aligned model's responses (one token-forward per generated token), one forward over the harmful
 *   sequences and one over the benign prompts.
 * - Attribution (forward+backward, 3x) over the harmful sequences: all of them for a fixed budget; the
 *   ranking share (`target.probes.rank / harmful`) once per round a target-driven search ran (round 2
 *   re-ranks on round 1's step). The task's own passes only where the options ask for them: task neurons
 *   (`p` > 0, one forward) and the utility gradient (`utilityWeight` > 0, forward+backward per round).
 * - A target-driven search measures the fine-tune once and every step: generation of the harmful probes
 *   (prompt + `newTokens`, or PREFIX_TOKENS under stepJudge 'prefix', whose chosen step is measured once more
 *   in full), of the benign prompts the over-refusal guardrail reads and of the answered task probes (their
 *   answers' NLL too), up to GUARDRAIL_PROBES each, and the refusal log-prob margin: the aligned model's refusal
 *   (`newTokens` long) teacher-forced after each of those benign prompts. Its prompts, like the answer NLL's,
 *   are the ones generation prefilled, so only the refusal's and the answers' tokens count (answers taken as
 *   `newTokens` long).
 */
export function floorTokens(report: FloorReport | null, x: FloorInputs): number {
  const prompt = x.promptTokens ?? 18;
  const gen = x.newTokens ?? 40;
  const atlas = x.harmfulProbes * gen + x.harmfulTokens + x.benignTokens;
  const target = report?.selection?.target;
  const p = report?.options?.p ?? 0;
  const utility = report?.options?.utilityWeight ?? 0;
  const taskNeurons = p > 0 ? x.benignTokens : 0;
  if (target === undefined) return atlas + taskNeurons + 3 * x.harmfulTokens + (utility > 0 ? 3 * x.benignTokens : 0);
  const steps = target.steps ?? [];
  const rounds = Math.max(1, ...steps.map((s) => s.round ?? 1));
  const rankShare = target.probes !== undefined && target.probes.harmful > 0 ? target.probes.rank / target.probes.harmful : 1;
  const attribution = rounds * 3 * (rankShare * x.harmfulTokens + (utility > 0 ? x.benignTokens : 0));
  const benign = Math.min(x.benignProbes, GUARDRAIL_PROBES.benign);
  const answered = Math.min(x.answeredProbes ?? 0, GUARDRAIL_PROBES.task);
  const measure = (harmfulNew: number): number =>
    x.harmfulProbes * (prompt + harmfulNew) + benign * (prompt + gen) + answered * (prompt + 2 * gen) + benign * gen;
  const prefix = report?.selection?.stepJudge === 'prefix';
  const measurements = measure(gen) + steps.length * measure(prefix ? PREFIX_TOKENS : gen) + (target.confirmed !== undefined ? measure(gen) : 0);
  return atlas + taskNeurons + attribution + measurements;
}
