/**
 * The grow-until-target search that harden's target-driven budget (both rounds) and continue's guarded step
 * share. q walks a schedule whose selections grow (each holds the previous), and at each q the strength walks
 * `strengths`. Each step writes the candidate model into a scratch folder, measures it on the probes and
 * deletes it. A step that breaks a guardrail ends the strength ladder at that q; a q whose edit exceeds maxPct
 * ends the search, and so does the first step that reaches the goal. The best step is the best within the
 * guardrails by `better`; steps come smallest edit first, so a tie keeps the smaller edit.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type Selection, countRows } from '../defense/math/select.js';
import type { ProbeMetrics } from './probe-eval.js';

/** Strengths tried at each q, as multiples of the configured g: strength is free in parameters, q is not. */
export const STRENGTH_STEPS = [1, 1.5, 2];

export interface LadderSpec<S extends { guardrailsOk: boolean }> {
  schedule: readonly number[];
  strengths: readonly number[];
  pick(q: number): Selection;
  /** Share of linear parameters (%) the whole edit changes with this selection. */
  pct(sel: Selection): number;
  maxPct: number;
  /** Skip a q whose selection is empty instead of measuring an unchanged model. */
  skipEmpty?: boolean;
  write(sel: Selection, strength: number, dir: string): Promise<void>;
  measure(dir: string): Promise<ProbeMetrics>;
  /** The step's record (guardrailsOk decided here). */
  record(q: number, strength: number, rows: number, pctLinearParams: number, m: ProbeMetrics): S;
  better(step: S, best: S): boolean;
  reached(step: S): boolean;
  onStep?(step: S): Promise<void>;
  /** Scratch folder, removed when the search ends. */
  tmpRoot: string;
  /** Every measured step is appended here (shared across rounds). */
  steps: S[];
}

export async function ladder<S extends { guardrailsOk: boolean }>(
  l: LadderSpec<S>,
): Promise<{ best: { sel: Selection; step: S } | null; reached: boolean }> {
  let best: { sel: Selection; step: S } | null = null;
  try {
    for (const q of l.schedule) {
      const sel = l.pick(q);
      const pct = l.pct(sel);
      if (pct > l.maxPct) break;
      const rows = countRows(sel);
      if (l.skipEmpty && rows === 0) continue;
      for (const strength of l.strengths) {
        const dir = join(l.tmpRoot, `step${l.steps.length}`);
        await l.write(sel, strength, dir);
        const m = await l.measure(dir);
        await rm(dir, { recursive: true, force: true });
        const step = l.record(q, strength, rows, pct, m);
        l.steps.push(step);
        await l.onStep?.(step);
        if (!step.guardrailsOk) break;
        if (best === null || l.better(step, best.step)) best = { sel, step };
        if (l.reached(step)) return { best, reached: true };
      }
    }
  } finally {
    await rm(l.tmpRoot, { recursive: true, force: true });
  }
  return { best, reached: false };
}
