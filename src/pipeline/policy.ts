/**
 * What a target-driven defense job does when no measured step meets every guardrail at the safety target,
 * and what its result says. Safety first, never silent:
 *
 *  1. `guardrails`: the first (smallest) step that reaches the target with every guardrail held wins.
 *  2. Otherwise, under the default policy `safety-first`, the smallest edit that reaches the target while its
 *     utility losses (task-probe accuracy drop, benign refusal rise; point estimates) stay within the hard
 *     `utilityCeiling`;
 *  3. else the safest step (lowest judged probe ASR, then the smaller edit) within the ceiling;
 *  4. else nothing is edited.
 * Policy `guardrails-only` keeps the pre-2026-12 behaviour: the best step that holds every guardrail.
 * Whatever is chosen, the result carries `target: 'reached' | 'not reached'` and the best frontier points.
 */

export const MISS_POLICIES = ['safety-first', 'guardrails-only'] as const;
export type MissPolicy = (typeof MISS_POLICIES)[number];

export interface PolicyStep {
  pctLinearParams: number;
  /** ASR on the judging probes (the ones the search stops on). */
  probeAsr: number;
  /** Task-probe accuracy drop vs the fine-tune (share, positive = worse); null when not measured. */
  taskLoss: number | null;
  /** Benign-probe refusal rise vs the fine-tune (share, positive = worse); null when not measured. */
  overRefusalRise: number | null;
  /** Every guardrail held (noise-aware tests, NLL tolerance) and the step is within the ceiling. */
  guardrailsOk: boolean;
}

export type ChoiceRule = 'guardrails' | 'smallest edit at the target within the utility ceiling' | 'safest step within the utility ceiling' | 'best step within the guardrails' | 'nothing within the utility ceiling'
  | 'no step within the parameter cap';

export interface PolicyChoice<S> {
  step: S | null;
  rule: ChoiceRule;
  reached: boolean;
}

const EPS = 1e-9;

export function withinCeiling(s: PolicyStep, ceiling: number): boolean {
  return (s.taskLoss ?? 0) <= ceiling + EPS && (s.overRefusalRise ?? 0) <= ceiling + EPS;
}

/** Steps in measurement order (smallest edit first within a round). */
export function chooseStep<S extends PolicyStep>(steps: readonly S[], o: { targetAsr: number; utilityCeiling: number; policy: MissPolicy }): PolicyChoice<S> {
  if (steps.length === 0) return { step: null, rule: 'no step within the parameter cap', reached: false };
  const atTarget = (s: S): boolean => s.probeAsr <= o.targetAsr + EPS;
  const clean = steps.filter((s) => s.guardrailsOk);
  const cleanAtTarget = clean.filter(atTarget).sort((a, b) => a.pctLinearParams - b.pctLinearParams);
  if (cleanAtTarget.length > 0) return { step: cleanAtTarget[0], rule: 'guardrails', reached: true };
  const safest = (xs: S[]): S | null =>
    xs.reduce<S | null>((b, s) => (b === null || s.probeAsr < b.probeAsr - EPS || (Math.abs(s.probeAsr - b.probeAsr) <= EPS && s.pctLinearParams < b.pctLinearParams) ? s : b), null);
  if (o.policy === 'guardrails-only') {
    const b = safest(clean);
    return b === null ? { step: null, rule: 'nothing within the utility ceiling', reached: false } : { step: b, rule: 'best step within the guardrails', reached: false };
  }
  const ok = steps.filter((s) => withinCeiling(s, o.utilityCeiling));
  const reach = ok.filter(atTarget).sort((a, b) => a.pctLinearParams - b.pctLinearParams || a.probeAsr - b.probeAsr);
  if (reach.length > 0) return { step: reach[0], rule: 'smallest edit at the target within the utility ceiling', reached: true };
  const b = safest(ok);
  return b === null ? { step: null, rule: 'nothing within the utility ceiling', reached: false } : { step: b, rule: 'safest step within the utility ceiling', reached: false };
}

/**
 * The non-dominated steps over (edit size, judged probe ASR, task loss): no other step is at least as small,
 * as safe and as cheap with one of them strictly better. Sorted by edit size, at most `max` (the safest kept).
 */
export function frontier<S extends PolicyStep>(steps: readonly S[], max = 6): S[] {
  const loss = (s: S): number => Math.max(s.taskLoss ?? 0, s.overRefusalRise ?? 0);
  const dominated = (s: S): boolean =>
    steps.some((t) => t !== s && t.pctLinearParams <= s.pctLinearParams + EPS && t.probeAsr <= s.probeAsr + EPS && loss(t) <= loss(s) + EPS &&
      (t.pctLinearParams < s.pctLinearParams - EPS || t.probeAsr < s.probeAsr - EPS || loss(t) < loss(s) - EPS));
  const front = steps.filter((s) => !dominated(s));
  // Equal points (same size, ASR and loss) appear once.
  const seen = new Set<string>();
  const unique = front.filter((s) => {
    const k = `${s.pctLinearParams.toFixed(6)}|${s.probeAsr.toFixed(6)}|${loss(s).toFixed(6)}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  const bySafety = [...unique].sort((a, b) => a.probeAsr - b.probeAsr || a.pctLinearParams - b.pctLinearParams).slice(0, max);
  return bySafety.sort((a, b) => a.pctLinearParams - b.pctLinearParams);
}

/** The status line the CLI prints last and the summary's wording: one source for every carrier. */
export function targetLine(t: { target: 'reached' | 'not reached' | 'not set'; targetAsr?: number; probeAsr?: number; rule?: string; pctLinearParams?: number }): string {
  if (t.target === 'not set') return 'target: not set (fixed budget or baseline method)';
  const asr = t.probeAsr === undefined ? '' : ` judged probe ASR ${t.probeAsr.toFixed(3)} vs target ${t.targetAsr?.toFixed(3) ?? '?'}`;
  const pct = t.pctLinearParams === undefined ? '' : `, ${t.pctLinearParams.toFixed(2)} % of linear params`;
  return `target: ${t.target} (${asr.trim()}${pct}${t.rule ? `; ${t.rule}` : ''})`;
}

/**
 * The round-1 step a second, re-ranked round grows from. Round 2's steps are judged against the fine-tune
 * with round 1's tolerances, so grown from a step that already broke a guardrail none of them can be clean:
 * `clean` (default) takes the safest round-1 step that held every guardrail (lowest judged ASR, then the
 * smaller edit), `chosen` the step the miss policy kept; both give `chosen` when no round-1 step is clean.
 */
export function round2Base<S extends PolicyStep>(round1: readonly S[], chosen: S | null, from: 'clean' | 'chosen'): S | null {
  if (from === 'chosen') return chosen;
  const clean = round1.reduce<S | null>((b, s) => (s.guardrailsOk && (b === null || s.probeAsr < b.probeAsr - EPS
    || (Math.abs(s.probeAsr - b.probeAsr) <= EPS && s.pctLinearParams < b.pctLinearParams)) ? s : b), null);
  return clean ?? chosen;
}
