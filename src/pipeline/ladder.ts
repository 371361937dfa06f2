/**
 * The grow-until-target search that harden's target-driven budget (both rounds) and continue's guarded step
 * share. q walks a schedule whose selections grow (each holds the previous), and at each q the strength walks
 * `strengths`. Each step measures the candidate edit on the probes (by default in memory: one engine loaded
 * once takes the edited rows as a row patch, see stepMeasure; no model is written). A step that breaks a guardrail ends the strength ladder at that q; a q whose edit exceeds maxPct
 * ends the search, and so does the first step that reaches the goal. The best step is the best within the
 * guardrails by `better`; steps come smallest edit first, so a tie keeps the smaller edit.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type Selection, countRows } from '../defense/index.js';
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
  /** Measures the model edited by `sel` at `strength` on the probes. */
  measure(sel: Selection, strength: number): Promise<ProbeMetrics>;
  /** The step's record (guardrailsOk decided here). */
  record(q: number, strength: number, rows: number, pctLinearParams: number, m: ProbeMetrics): S;
  better(step: S, best: S): boolean;
  reached(step: S): boolean;
  onStep?(step: S): Promise<void>;
  /** Every measured step is appended here (shared across rounds). */
  steps: S[];
}

export async function ladder<S extends { guardrailsOk: boolean }>(
  l: LadderSpec<S>,
): Promise<{ best: { sel: Selection; step: S } | null; reached: boolean }> {
  let best: { sel: Selection; step: S } | null = null;
  for (const q of l.schedule) {
    const sel = l.pick(q);
    const pct = l.pct(sel);
    if (pct > l.maxPct) break;
    const rows = countRows(sel);
    if (l.skipEmpty && rows === 0) continue;
    for (const strength of l.strengths) {
      const m = await l.measure(sel, strength);
      const step = l.record(q, strength, rows, pct, m);
      l.steps.push(step);
      await l.onStep?.(step);
      if (!step.guardrailsOk) break;
      if (best === null || l.better(step, best.step)) best = { sel, step };
      if (l.reached(step)) return { best, reached: true };
    }
  }
  return { best, reached: false };
}

/**
 * How a search measures its steps. 'patch' (default): the edited rows go to one engine as a row patch
 * (see openStepEngine), nothing is written. 'write': the old path, kept for the scale bench to compare: each step's
 * model is written into a scratch folder under tmpRoot, measured by a freshly loaded engine and deleted.
 */
export type StepMode = 'patch' | 'write';

export interface StepMeasure {
  measure(sel: Selection, strength: number): Promise<ProbeMetrics>;
  /** Removes the scratch folder (write mode); call when the search ends. */
  close(): Promise<void>;
}

export function writtenSteps(
  tmpRoot: string,
  write: (sel: Selection, strength: number, dir: string) => Promise<void>,
  measureDir: (dir: string) => Promise<ProbeMetrics>,
): StepMeasure {
  let n = 0;
  return {
    measure: async (sel, strength) => {
      const dir = join(tmpRoot, `step${n++}`);
      try {
        await write(sel, strength, dir);
        return await measureDir(dir);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    close: () => rm(tmpRoot, { recursive: true, force: true }),
  };
}
