/**
 * FGSN (method.md steps 1-3, with the scorings of the defense issue): rank the rows of the linear weights by
 * how much they carry the safety behaviour the fine-tune broke, drop the task neurons, and project the top
 * share toward the aligned model. This folder holds the fixed-budget plan; the target-driven search that
 * grows q and g (src/pipeline/harden.ts) uses the same ranking.
 */
import { z } from 'zod';
import { projectionCompute } from '../../apply.js';
import { type Mat } from '../../math/matrix.js';
import { PROJECTION_MODES, PROJECTION_MODE_HELP, type ProjectionOptions } from '../../math/project.js';
import {
  attributionRowScores, contrastiveRowScores, deltaRowScores, normaliseRowScores, normsFromSquareSums, perClusterRowScores, safetyOutputRowScores, utilityAwareRowScores,
} from '../../math/scores.js';
import { type RowScores, type Selection, countRows, difference, topCountGlobal, topShare } from '../../math/select.js';
import { readFinetuned, readMat, shapeOf } from '../../io/sources.js';
import type { JobScores } from '../job-scores.js';
import { opt, optionError } from '../fields.js';
import { defineMethod, layerOf, linearNames, resolveLayers } from '../method.js';

export const SCORINGS = ['attribution', 'wanda', 'contrastive', 'delta', 'vx'] as const;
export type Scoring = (typeof SCORINGS)[number];

/** Words that switch the target-driven budget off (as does targetAsr 1). */
const TARGET_OFF = ['off', 'none'] as const;

export const fgsnOptions = z.strictObject({
  scoring: opt.oneOf(SCORINGS, 'How rows are ranked: attribution (gradient of the refusal NLL along V), wanda, contrastive (harmful vs benign activations), delta (fine-tuning delta), vx (safety output energy of V)', 'attribution'),
  q: opt.share('Fixed budget: share of rows in N_H (of all linear rows when scope is global, of each matrix otherwise). Used only with targetAsr off: the target-driven search starts from qStart', 0.01),
  scope: opt.oneOf(['global', 'per-matrix'], 'Where the top-q share is taken: over all linear rows, or within each matrix (Eq. 4-5 literally)', 'global'),
  p: opt.share('Share of each matrix\'s rows excluded as task neurons (N = N_H minus N_T)', 0),
  layers: opt.string('Layers edited: all, band (the atlas\' safety band at bandShare) or an explicit list such as 10-15', 'all', 'all|band|10-15'),
  bandShare: opt.share('Share of the layer-weight mass the safety band covers (layers band)', 0.6),
  // realign over add: chosen on the train splits (docs/method-choices.md, "Realign").
  mode: opt.oneOf(PROJECTION_MODES, PROJECTION_MODE_HELP, 'realign'),
  strength: opt.num('g of modes realign and add (the target-driven search may raise it up to 2x)', 3),
  alpha: opt.num('Projection factor of the gram/subspace/row modes', 1),
  energyShare: opt.share('Energy share of the subspace kept by mode subspace', 0.9),
  targetAsr: opt.shareOr(TARGET_OFF, 'Target-driven budget: grow the edit (q from qStart, and g up to 2x strength at each q) until the ASR on the harmful probes is <= targetAsr. off (or 1) uses the fixed q and strength', 0.02),
  qStart: opt.share('First q of the target-driven search', 0.0025),
  maxParams: opt.pos('Cap on parameters changed, % of linear-weight parameters', 3),
  taskTolerance: opt.share('Largest task-probe accuracy drop (absolute) the target-driven search accepts', 0.01),
  overRefusalTolerance: opt.share('Largest rise of refusals on the benign probes (absolute) the target-driven search accepts', 0.02),
  batchSize: opt.int('Attribution: sequences per backward batch', 16),
  layersPerPass: opt.int('Attribution: layers per backward pass (default: all at once)'),
  rounds: opt.int('Target-driven rounds: 2 re-ranks the remaining rows on round 1\'s model when round 1 misses the target', 2),
  round2From: opt.oneOf(['clean', 'chosen'], 'Which round-1 step round 2 grows from: clean = the safest step that held every guardrail (round 2 is judged against the fine-tune with the same tolerances, so from a step that broke one no round-2 step can be clean); chosen = the step the miss policy kept. Either falls back to chosen when round 1 has no clean step', 'chosen'),
  utilityWeight: opt.nonneg('Attribution only: weight of the task probes\' answer NLL in the ranking (0 = refusals alone); rows whose edit would also change the expected answers rank lower', 0),
  clusterScoring: opt.oneOf(['pooled', 'per-cluster'], 'Attribution over all harmful probes together (pooled), or per atlas sub-cluster, best per row (per-cluster)', 'pooled'),
  stepMode: opt.oneOf(['patch', 'write'], 'How a search step is measured: patch feeds the edited rows to one loaded engine (nothing written); write writes each step\'s model to a scratch folder', 'patch'),
  stepJudge: opt.oneOf(['full', 'prefix'], 'How a search step\'s probe ASR is judged: full (whole greedy answer) or prefix (first 8 tokens; the chosen edit is then measured in full once)', 'full'),
  guardrailTest: opt.oneOf(['paired', 'raw'], 'paired rejects a step only when its task or benign-refusal loss is significant (exact one-sided McNemar at guardAlpha) and above tolerance; raw: raw drop > tolerance', 'paired'),
  guardAlpha: opt.share('One-sided significance level of the paired guardrail tests', 0.05),
  nllTolerance: opt.nonneg('Largest rise (nats per token) of the teacher-forced NLL of the task probes\' reference answers', 0.01),
  utilityCeiling: opt.share('Hard utility ceiling (share): no step whose task drop or benign refusal rise exceeds it is ever kept', 0.05),
  missPolicy: opt.oneOf(['safety-first', 'guardrails-only'], 'When no step meets every guardrail at the target (src/pipeline/policy.ts)', 'safety-first'),
  judgeShare: opt.share('Share of the harmful probes held out of the ranking to judge (stop) the search on; 0 = rank and judge on all', 0.5),
  splitSeed: opt.int('Seed of the rank/judge split', 1),
  refusalMarginTolerance: opt.nonneg('Largest fall (nats per token) of the NLL of the aligned model\'s usual refusal after the benign probes: a step leaning toward refusing them breaks the over-refusal guardrail', 1),
});

/** FGSN's options once parsed: `targetAsr` absent means the fixed budget (q, strength). */
export type FgsnOptions = Omit<z.output<typeof fgsnOptions>, 'targetAsr'> & { targetAsr?: number };

/**
 * `q` is the fixed budget; the target-driven search (on by default) starts from qStart and grows from there,
 * so a q given with the search on would be silently ignored: refused instead, with what to give (see
 * docs/method-choices.md).
 */
function finalize(o: z.output<typeof fgsnOptions>, given: ReadonlySet<string>): FgsnOptions {
  const { targetAsr, ...rest } = o;
  const target = typeof targetAsr === 'number' && targetAsr < 1 ? targetAsr : undefined;
  if (target !== undefined && given.has('q')) {
    throw optionError('fgsn', 'q', o.q, `is the fixed budget and is not used by the target-driven search (targetAsr ${target}), which starts from qStart: give targetAsr off to edit exactly q, or qStart to set where the search starts`);
  }
  return target !== undefined ? { ...rest, targetAsr: target } : rest;
}

/** Harmful-side row scores of FGSN on the chosen layers (higher = more safety-relevant). */
export async function fgsnScores(job: JobScores, o: FgsnOptions, layers: number[]): Promise<RowScores> {
  const { sources: s, atlas } = job;
  const names = linearNames(s).filter((n) => layers.includes(layerOf(n)));
  const out: RowScores = new Map();
  if (o.scoring === 'attribution' && o.clusterScoring === 'per-cluster') {
    // A row's score is its best per-token gain over the sub-clusters, so each cluster's own top rows compete.
    const clusters = await job.clusterGradDotV();
    for (const n of names) out.set(n, perClusterRowScores(clusters.map((c) => c.scores.get(n)!), clusters.map((c) => c.tokens)));
    return out;
  }
  if (o.scoring === 'attribution') {
    const g = await job.gradDotV();
    if (o.utilityWeight === 0) {
      for (const n of names) out.set(n, attributionRowScores(g.scores.get(n)!));
      return out;
    }
    // First-order decrease of (mean refusal NLL + w * mean NLL of the task probes' answers) when V is added
    // to the row: rows that would also change the expected answers rank lower.
    const u = await job.utilityGradDotV();
    for (const n of names) {
      out.set(n, utilityAwareRowScores(g.scores.get(n)!, g.tokens, u.scores.get(n)!, u.tokens, o.utilityWeight));
    }
    return out;
  }
  for (const n of names) {
    const lw = atlas.layerWeights[layerOf(n)];
    let raw: Float32Array;
    if (o.scoring === 'wanda') {
      raw = atlas.wanda.get(n)!;
    } else if (o.scoring === 'vx') {
      const [al, b] = await Promise.all([readMat(s.aligned, n), readMat(s.base, n)]);
      const v: Mat = { rows: al.rows, cols: al.cols, data: al.data.map((x, k) => x - b.data[k]) };
      // Already in units of the output's energy, comparable across matrices, and signed (benign-heavier rows
      // score below 0), so it is not mean-normalised; the layer weight still applies.
      const e = safetyOutputRowScores(v, atlas.harmfulSqSums.get(n)!, atlas.tokens.harmful, atlas.benignSqSums.get(n)!, atlas.tokens.benign);
      out.set(n, e.map((x) => x * lw));
      continue;
    } else if (o.scoring === 'contrastive') {
      raw = contrastiveRowScores(await readMat(s.aligned, n), atlas.harmfulSqSums.get(n)!, atlas.tokens.harmful, atlas.benignSqSums.get(n)!, atlas.tokens.benign);
    } else {
      const [ft, al] = await Promise.all([readFinetuned(s, n), readMat(s.aligned, n)]);
      const d: Mat = { rows: ft.rows, cols: ft.cols, data: ft.data.map((x, k) => x - al.data[k]) };
      raw = deltaRowScores(d, normsFromSquareSums(atlas.harmfulSqSums.get(n)!));
    }
    // Multi-scale score of method.md: normalised by the matrix mean, times the layer weight w(l).
    out.set(n, normaliseRowScores(raw, lw));
  }
  return out;
}

export interface FgsnRanking {
  scores: RowScores;
  taskSet: Selection;
  layers: number[];
  /** N = top-q(N_H) minus N_T for a given q. */
  select(q: number): Selection;
}

export async function fgsnRanking(job: JobScores, o: FgsnOptions): Promise<FgsnRanking> {
  const layers = resolveLayers(o.layers, job.atlas, o.bandShare, job.sources.spec.numLayers);
  const scores = await fgsnScores(job, o, layers);
  const taskSet: Selection = o.p > 0 ? topShare(await job.taskScores(), o.p, 'per-matrix') : new Map();
  // Task rows are removed before counting q when the scope is global, so q is the share actually edited;
  // per-matrix follows Eq. 4-5 literally (top-q of each matrix, then the difference).
  const select = (q: number): Selection => {
    if (o.scope === 'per-matrix') return difference(topShare(scores, q, 'per-matrix'), taskSet);
    const masked: RowScores = new Map();
    for (const [n, v] of scores) {
      const m = v.slice();
      for (const r of taskSet.get(n) ?? []) m[r] = -Infinity;
      masked.set(n, m);
    }
    let total = 0;
    for (const n of linearNames(job.sources)) total += shapeOf(job.sources, n)[0];
    return topCountGlobal(masked, Math.round(q * total));
  };
  return { scores, taskSet, layers, select };
}

export function fgsnProjection(o: FgsnOptions): ProjectionOptions {
  return { mode: o.mode, alpha: o.alpha, strength: o.strength, energyShare: o.energyShare };
}

export const fgsn = defineMethod({
  name: 'fgsn',
  summary: 'Fine-grained safety neurons: project the top-ranked rows toward the aligned model (target-driven budget by default)',
  options: fgsnOptions,
  finalize,
  // The fixed budget (q, strength). With a targetAsr the pipeline drives the search instead (it needs an
  // evaluator of the edited model) and calls fgsnRanking itself.
  async plan(job, o) {
    const r = await fgsnRanking(job, o);
    const selection = r.select(o.q);
    const projection = fgsnProjection(o);
    return {
      selection, compute: projectionCompute(projection), projection,
      details: { layers: r.layers, q: o.q, p: o.p, taskRowsExcluded: countRows(r.taskSet), scoring: o.scoring, scope: o.scope },
    };
  },
});
