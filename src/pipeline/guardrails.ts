/**
 * Noise-aware guardrails for the defense search: pure statistics on PAIRED per-prompt outcomes (the same
 * probe prompts answered by the fine-tune and by a candidate step), so a step is rejected only when its loss
 * is real at a stated confidence, not when a raw difference of a few prompts crosses a threshold.
 *
 * Why paired and exact: on 128 benign prompts, 1 pp is 1.3 prompts; two models that differ on a handful of
 * prompts in both directions show a raw "loss" of 1-4 pp by chance alone. Only the discordant pairs
 * (right->wrong, wrong->right) carry information about a difference; under "no difference" each discordant
 * pair is a fair coin (McNemar), so the exact one-sided p-value is a binomial tail. No normal approximation:
 * the counts here are small.
 */

/** log C(n, k) via log-gamma-free summation of logs (exact enough for n up to millions, and n is small here). */
function logChoose(n: number, k: number): number {
  if (k < 0 || k > n) return -Infinity;
  const m = Math.min(k, n - k);
  let s = 0;
  for (let i = 1; i <= m; i++) s += Math.log(n - m + i) - Math.log(i);
  return s;
}

/** P(X >= k) for X ~ Binomial(n, p), exact (sum of terms in log space, so large n does not underflow). */
export function binomialUpperTail(k: number, n: number, p = 0.5): number {
  if (!Number.isInteger(k) || !Number.isInteger(n) || n < 0) throw new RangeError(`binomialUpperTail: integer k, n >= 0 expected (k=${k}, n=${n})`);
  if (!(p >= 0 && p <= 1)) throw new RangeError(`binomialUpperTail: p in [0, 1] expected (p=${p})`);
  if (k <= 0) return 1;
  if (k > n) return 0;
  if (p === 0) return 0;
  if (p === 1) return 1;
  const lp = Math.log(p);
  const lq = Math.log1p(-p);
  let s = 0;
  for (let i = k; i <= n; i++) s += Math.exp(logChoose(n, i) + i * lp + (n - i) * lq);
  return Math.min(1, s);
}

export interface PairedCounts {
  /** Prompts scored for both models. */
  n: number;
  /** Good for the reference, bad for the candidate (right->wrong; not refused -> refused). */
  losses: number;
  /** Bad for the reference, good for the candidate. */
  gains: number;
}

/** Count the discordant pairs; `good[i]` = the prompt's outcome is the desirable one (correct, not refused). */
export function pairedCounts(reference: readonly boolean[], candidate: readonly boolean[]): PairedCounts {
  if (reference.length !== candidate.length) {
    throw new RangeError(`pairedCounts: both models must be scored on the same prompts (${reference.length} vs ${candidate.length})`);
  }
  let losses = 0;
  let gains = 0;
  for (let i = 0; i < reference.length; i++) {
    if (reference[i] && !candidate[i]) losses++;
    else if (!reference[i] && candidate[i]) gains++;
  }
  return { n: reference.length, losses, gains };
}

/**
 * Exact one-sided McNemar p-value for "the candidate is worse": P(X >= losses) with X ~ Binomial(losses +
 * gains, 1/2), i.e. how often a fair coin over the discordant pairs gives at least this many losses.
 */
export function mcnemarOneSided(losses: number, gains: number): number {
  return binomialUpperTail(losses, losses + gains, 0.5);
}

export interface PairedTestOptions {
  /** One-sided significance level (default 0.05). */
  alpha: number;
  /** Smallest net loss, as a share of the prompts, worth rejecting a step for (e.g. 0.01 = 1 pp). */
  minEffect: number;
}

export interface PairedVerdict extends PairedCounts {
  /** (losses - gains) / n: the raw drop of the rate (positive = worse). */
  netLoss: number;
  pValue: number;
  /** The loss is real at alpha AND at least minEffect. */
  rejected: boolean;
}

/**
 * The guardrail: reject only when the candidate's loss is significant (exact one-sided McNemar at alpha)
 * and larger than the minimum effect. Without a single discordant pair nothing is rejected.
 */
export function pairedLossTest(reference: readonly boolean[], candidate: readonly boolean[], o: PairedTestOptions): PairedVerdict {
  const c = pairedCounts(reference, candidate);
  const netLoss = c.n === 0 ? 0 : (c.losses - c.gains) / c.n;
  const pValue = mcnemarOneSided(c.losses, c.gains);
  return { ...c, netLoss, pValue, rejected: pValue <= o.alpha && netLoss > o.minEffect + 1e-12 };
}

/** The rule this module replaces: reject when the raw rate drops by more than `tolerance` (absolute share). */
export function rawDropRejects(reference: readonly boolean[], candidate: readonly boolean[], tolerance: number): boolean {
  const c = pairedCounts(reference, candidate);
  return c.n > 0 && (c.losses - c.gains) / c.n > tolerance + 1e-12;
}

/** A continuous utility signal: mean NLL per token of reference answers; reject a rise above `tolerance` nats/token. */
export function nllRiseRejects(reference: number | null, candidate: number | null, tolerance: number): boolean {
  if (reference === null || candidate === null) return false;
  return candidate - reference > tolerance + 1e-12;
}

/**
 * Bootstrap false-rejection rate of a guardrail rule on measured paired outcomes: resample prompts with
 * replacement (`size` per draw, `draws` draws, seeded) from a NULL population built by flipping the sign of
 * each discordant pair at random (so the population has the measured discordance but no real difference),
 * and count how often `rejects` fires. With `null` false, the pairs are resampled as measured (the rule's
 * rejection rate at the measured effect).
 */
export function bootstrapRejectionRate(
  reference: readonly boolean[],
  candidate: readonly boolean[],
  rejects: (ref: boolean[], cand: boolean[]) => boolean,
  o: { size: number; draws: number; rand: () => number; null: boolean },
): number {
  const n = reference.length;
  if (n === 0 || o.draws <= 0) return 0;
  let hits = 0;
  for (let d = 0; d < o.draws; d++) {
    const ref: boolean[] = [];
    const cand: boolean[] = [];
    for (let k = 0; k < o.size; k++) {
      const i = Math.floor(o.rand() * n);
      let a = reference[i];
      let b = candidate[i];
      // A discordant pair swaps sides with probability 1/2: losses and gains become exchangeable.
      if (o.null && a !== b && o.rand() < 0.5) [a, b] = [b, a];
      ref.push(a);
      cand.push(b);
    }
    if (rejects(ref, cand)) hits++;
  }
  return hits / o.draws;
}

/**
 * The refusal log-prob margin guardrail: reject when the mean NLL of a refusal after the benign prompts
 * falls by more than `tolerance` nats/token (the candidate leans toward refusing them).
 */
export function refusalMarginRejects(reference: number | null | undefined, candidate: number | null | undefined, tolerance: number): boolean {
  if (reference === null || reference === undefined || candidate === null || candidate === undefined) return false;
  return reference - candidate > tolerance + 1e-12;
}

/** The most frequent string (the one that reached the top count first): the aligned model's usual refusal. */
export function mostFrequent(xs: readonly string[]): string | undefined {
  const counts = new Map<string, number>();
  let best: string | undefined;
  for (const x of xs) {
    const c = (counts.get(x) ?? 0) + 1;
    counts.set(x, c);
    if (best === undefined || c > counts.get(best)!) best = x;
  }
  return best;
}
