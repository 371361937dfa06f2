/**
 * One defense job, stage by stage: validate -> atlas (cached) -> task neurons -> selection (with the
 * target-driven budget when asked) -> projection (streamed outputs) -> optional evaluation -> report.
 * Progress is reported per stage; cancellation is checked between stages and between budget steps.
 */
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import type { Engine } from '../engine/index.js';
import { type PassCounts, addPasses, passCounts, passDelta } from '../engine/index.js';
import { evaluateModel } from '../eval/index.js';
import { FgsnError } from '../errors.js';
import { releaseBuffer, sha256FileUnlessKnown } from '../util/index.js';
import {
  type Atlas, closeSources, combinedCompute, countEdit, countRows, type EditCounts, type EditPlan,
  type EditRows, editRows, type FgsnOptions, fgsnProjection, fgsnRanking, fgsnScores, getOrBuildAtlas,
  JobScores, linearRowCount, mergeEditRows, openSources, parseMethodOptions, pickerExcluding, planMethod,
  projectionCompute, type RowCompute, rowSparseAdapterRank, type Selection, selectionToJSON, shapeOf, union,
  type WeightSources, writeHardened, type WriteOutcome,
} from '../defense/index.js';
import { STRENGTH_STEPS, type StepMeasure, ladder, writtenSteps } from './ladder.js';
import { writeModelCard } from './model-card.js';
import { renderReportHtml } from './report-html.js';
import { GUARDRAIL_PROBES, type ProbeMetrics, measureOnProbes, measureWithEngine, openStepEngine } from './probe-eval.js';
import { type PairedVerdict, mostFrequent, nllRiseRejects, pairedLossTest, refusalMarginRejects } from './guardrails.js';
import { chooseStep, frontier, round2Base, withinCeiling } from './policy.js';
import { splitProbes, subsetAtlas } from './split.js';
import type { ArtifactInfo, HardenHooks, HardenRequest, HardenResult, ProbeRecord, StageProgress } from './types.js';

export const STAGES = ['validate', 'atlas', 'task-neurons', 'selection', 'projection', 'evaluation', 'report'] as const;
export type Stage = (typeof STAGES)[number];

/** Overall percent at the start of each stage. */
const STAGE_START: Record<Stage, number> = { validate: 0, atlas: 5, 'task-neurons': 30, selection: 40, projection: 70, evaluation: 90, report: 98 };

class Run {
  readonly seconds: Record<string, number> = {};
  /** Resident set size (MiB) when each stage ended: a cheap stand-in for per-stage peak memory. */
  readonly rssMiB: Record<string, number> = {};
  /** Graph runs and tokens per stage (process-wide counters, read at the stage's start and end). */
  readonly costs: Record<string, PassCounts> = {};
  private passes = passCounts();
  private t = performance.now();
  private current: Stage | null = null;

  constructor(private readonly hooks: HardenHooks) {}

  checkCancelled(): void {
    if (this.hooks.signal?.aborted) {
      throw new FgsnError('JOB_CANCELLED', `job cancelled${this.current ? ` during ${this.current}` : ''}`, { details: { stage: this.current } });
    }
  }

  async stage(s: Stage, message?: string): Promise<void> {
    this.end();
    this.checkCancelled();
    this.current = s;
    this.t = performance.now();
    this.passes = passCounts();
    await this.progress({ stage: s, percent: STAGE_START[s], ...(message ? { message } : {}) });
  }

  async progress(p: StageProgress): Promise<void> {
    await this.hooks.onProgress?.(p);
  }

  /** Progress inside the current stage, `frac` in [0, 1]. */
  async within(frac: number, message?: string): Promise<void> {
    if (!this.current) return;
    const i = STAGES.indexOf(this.current);
    const next = i + 1 < STAGES.length ? STAGE_START[STAGES[i + 1]] : 100;
    const start = STAGE_START[this.current];
    await this.progress({ stage: this.current, percent: Math.round((start + (next - start) * Math.min(1, frac)) * 10) / 10, ...(message ? { message } : {}) });
  }

  end(): void {
    if (this.current) {
      this.seconds[this.current] = (this.seconds[this.current] ?? 0) + (performance.now() - this.t) / 1000;
      this.rssMiB[this.current] = Math.round(process.memoryUsage().rss / 2 ** 20);
      const d = passDelta(this.passes, passCounts());
      const c = this.costs[this.current];
      this.costs[this.current] = c === undefined ? d : addPasses(c, d);
    }
    this.current = null;
  }
}

function checkProbes(name: string, probes: ProbeRecord[] | undefined, min: number): void {
  if (!probes || probes.length < min) {
    throw new FgsnError('PROBES_EMPTY', `${name} probes: need at least ${min}, got ${probes?.length ?? 0}`);
  }
  probes.forEach((p, i) => {
    if (typeof p.prompt !== 'string' || p.prompt.trim() === '') {
      throw new FgsnError('PROBES_INVALID', `${name} probe ${i + 1}: "prompt" must be a non-empty string`, { details: { set: name, index: i } });
    }
  });
}

async function ensureEmptyDir(dir: string): Promise<void> {
  try {
    const entries = await readdir(dir);
    if (entries.length > 0) throw new FgsnError('DEFENSE_OPTION_INVALID', `output folder ${dir} is not empty`, { details: { dir } });
  } catch (e) {
    if (e instanceof FgsnError) throw e;
    await mkdir(dir, { recursive: true });
  }
}

export interface TargetStep {
  /** 1, or 2 for the re-ranked second round. */
  round: number;
  q: number;
  strength: number;
  rows: number;
  pctLinearParams: number;
  /** ASR on the JUDGING harmful probes (held out of the ranking when split): the one the search stops on. */
  probeAsr: number;
  /** Probe ASR judged on the first 8 generated tokens (the cheap judgement; equals probeAsr under stepJudge 'prefix'). */
  probeAsrPrefix?: number;
  taskAccuracy: number | null;
  overRefusal: number | null;
  /**
   * The strength ladder may go on past this step: under missPolicy safety-first, the step is within the
   * utility ceiling; under guardrails-only, every guardrail held (allGuardrailsHeld).
   */
  guardrailsOk: boolean;
  /** ASR on the probes that ranked the rows (optimistic); null when the probes were not split. */
  rankAsr?: number | null;
  /** Task-probe accuracy drop vs the fine-tune (share, point estimate). */
  taskLoss?: number | null;
  /** Benign refusal rise vs the fine-tune (share, point estimate). */
  overRefusalRise?: number | null;
  /** Paired test of the task probes (losses right->wrong, gains, one-sided exact p). */
  taskTest?: { losses: number; gains: number; pValue: number; rejected: boolean } | null;
  /** Paired test of the benign probes' refusals (losses: newly refused). */
  refusalTest?: { losses: number; gains: number; pValue: number; rejected: boolean } | null;
  /** Teacher-forced NLL per token of the task probes' reference answers, and its rise vs the fine-tune. */
  utilityNll?: number | null;
  nllRise?: number | null;
  withinCeiling?: boolean;
  /** NLL per token of the aligned model's usual refusal after the benign probes (the refusal log-prob margin). */
  benignRefusalNll?: number | null;
  /** That NLL fell by more than refusalMarginTolerance vs the fine-tune. */
  refusalMarginBroken?: boolean;
  /** Every guardrail held: paired tests, NLL tolerance, utility ceiling. */
  allGuardrailsHeld?: boolean;
}

/** Row shares of the second round (re-ranked), smallest first. */
const ROUND2_Q = [0.00125, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03];

const mean = (xs: readonly boolean[], idx: readonly number[]): number => (idx.length === 0 ? 0 : idx.filter((i) => xs[i]).length / idx.length);
const verdict = (v: PairedVerdict): TargetStep['taskTest'] => ({ losses: v.losses, gains: v.gains, pValue: v.pValue, rejected: v.rejected });

/** A step's place in the policy's view (policy.ts): the judged ASR and the utility losses. */
const asPolicyStep = (st: TargetStep): TargetStep & { taskLoss: number | null; overRefusalRise: number | null } => ({
  ...st, taskLoss: st.taskLoss ?? null, overRefusalRise: st.overRefusalRise ?? null, guardrailsOk: st.allGuardrailsHeld ?? st.guardrailsOk,
});

/**
 * The defense issue's target-driven budget. The harmful probes are split (seeded, stratified by category):
 * rows are ranked by attribution on the `rank` part and the search stops on the ASR of the `judge` part, so
 * the stopping ASR estimates unseen prompts. Round 1: q grows along a fixed schedule from qStart (x1.5, x2,
 * ...), and at each q the strength g grows (x1, x1.5, x2) until the judged ASR is <= targetAsr with every
 * guardrail held. Guardrails, each against the fine-tune on the same prompts (guardrails.ts): task-probe
 * exact match and benign-probe refusals by an exact one-sided McNemar test on the paired outcomes (reject
 * only a loss significant at guardAlpha AND above the tolerance), the teacher-forced NLL of the task probes'
 * reference answers (rise <= nllTolerance nats/token), and the hard utilityCeiling on the raw drops. A step
 * outside the ceiling (safety-first) or breaking a guardrail (guardrails-only) ends the g ladder at that q;
 * a q whose edit exceeds maxParams ends the search. When round 1 ends short of the target, round 2 ranks the
 * remaining rows again on round 1's kept model (or its safest clean step: round2From) (a static row patch on the fine-tune's attribution, not a
 * written copy, under stepMode patch) and grows a second edit the same way (guardrails still vs
 * the fine-tune, the cap on both rounds together). The kept step follows policy.ts: the smallest clean step
 * at the target, else (safety-first) the smallest step at the target within the ceiling, else the safest
 * step within the ceiling; the result always says whether the target was reached.
 */
async function targetDrivenSelection(
  run: Run,
  req: HardenRequest,
  s: WeightSources,
  atlas: Atlas,
  job: JobScores,
  o: FgsnOptions,
  task: ProbeRecord[],
): Promise<TargetResult> {
  const ctx = { cacheDir: req.cacheDir, ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}) };
  const model = { dir: s.finetuned?.dir ?? s.aligned.dir, ...(s.adapter ? { adapter: s.adapter.dir } : {}) };
  // One engine on the fine-tune serves the reference and every step: a step's edit is a row patch on it
  // (its sessions are built on first use, after the ranking's backward passes).
  const engine = o.stepMode === 'patch' ? await openStepEngine(model, ctx) : null;
  const tmpRoot = join(req.outDir, '.fgsn-target');
  try {
    return await targetDrivenSearch(run, req, s, atlas, job, o, task, { ctx, model, engine, tmpRoot });
  } finally {
    await engine?.close();
    await rm(tmpRoot, { recursive: true, force: true });
  }
}

type TargetResult = { selection: Selection; strength: number; compute?: RowCompute; details: Record<string, unknown> };

async function targetDrivenSearch(
  run: Run,
  req: HardenRequest,
  s: WeightSources,
  atlas: Atlas,
  job: JobScores,
  o: FgsnOptions,
  task: ProbeRecord[],
  m: { ctx: { cacheDir: string; executionProvider?: 'cpu' | 'cuda' }; model: { dir: string; adapter?: string }; engine: Engine | null; tmpRoot: string },
): Promise<TargetResult> {
  const { ctx, model, engine, tmpRoot } = m;
  const split = splitProbes(atlas.harmful.map((p) => p.category), o.judgeShare, o.splitSeed);
  // Ranking on the rank part only: the judged ASR is then measured on prompts the ranking never saw.
  const rankJob = split.split
    ? job.withAtlas(subsetAtlas(atlas, split.rank))
    : job;
  const ranking = await fgsnRanking(rankJob, o);
  const prompts = atlas.harmful.map((p) => p.prompt);
  const taskAnswered = task.filter((p) => p.response !== undefined).slice(0, GUARDRAIL_PROBES.task);
  const benignPrompts = req.benign.slice(0, GUARDRAIL_PROBES.benign).map((p) => p.prompt);
  const nll = taskAnswered.length > 0 ? { prompts: taskAnswered.map((p) => p.prompt), responses: taskAnswered.map((p) => p.response!) } : undefined;
  // The refusal log-prob margin: the aligned model's usual refusal, teacher-forced after the benign prompts.
  const refusalText = mostFrequent(atlas.harmfulResponses);
  const measureCtx = { ...ctx, benignPrompts, ...(nll ? { nll } : {}), ...(refusalText && benignPrompts.length > 0 ? { refusal: { prompts: benignPrompts, text: refusalText } } : {}) };
  const stepCtx = { ...measureCtx, harmfulJudge: o.stepJudge };
  const ref = engine !== null ? await measureWithEngine(engine, prompts, taskAnswered, measureCtx) : await measureOnProbes(model, prompts, taskAnswered, measureCtx);
  const judgeAsrOf = (pm: ProbeMetrics): number => (pm.harmfulAnswered ? mean(pm.harmfulAnswered, split.judge) : pm.asr);
  const base = {
    layers: ranking.layers, p: o.p, taskRowsExcluded: countRows(ranking.taskSet), scoring: o.scoring, scope: o.scope,
  };
  const target = {
    targetAsr: o.targetAsr, maxParams: o.maxParams, taskTolerance: o.taskTolerance, overRefusalTolerance: o.overRefusalTolerance, rounds: o.rounds,
    guardrailTest: o.guardrailTest, guardAlpha: o.guardAlpha, nllTolerance: o.nllTolerance, refusalMarginTolerance: o.refusalMarginTolerance, utilityCeiling: o.utilityCeiling, missPolicy: o.missPolicy,
    probes: { harmful: prompts.length, rank: split.rank.length, judge: split.judge.length, split: split.split, judgeShare: o.judgeShare, splitSeed: o.splitSeed },
    finetuned: {
      probeAsr: judgeAsrOf(ref), rankAsr: split.split && ref.harmfulAnswered ? mean(ref.harmfulAnswered, split.rank) : null, allProbeAsr: ref.asr,
      taskAccuracy: ref.taskAccuracy, benignRefusals: ref.overRefusal, utilityNll: ref.responseNll, benignRefusalNll: ref.refusalNll ?? null,
    },
  };
  if (ref.asr <= o.targetAsr!) {
    // The fine-tune already refuses its probes (all of them, ranked or not): an edit could only cost utility.
    return {
      selection: new Map(),
      strength: o.strength,
      details: { ...base, q: 0, strength: o.strength, target: { ...target, reached: true, status: 'reached', rule: 'fine-tune already within the target', steps: [], frontier: [], note: 'fine-tune already within the target on the probes; nothing edited' } },
    };
  }
  const compute = (strength: number): RowCompute => projectionCompute(fgsnProjection({ ...o, strength }));
  const paired = (refGood: boolean[] | undefined, good: boolean[] | undefined, tol: number): PairedVerdict | null =>
    refGood && good && refGood.length === good.length && refGood.length > 0 ? pairedLossTest(refGood, good, { alpha: o.guardAlpha, minEffect: tol }) : null;
  const judgeStep = (pm: ProbeMetrics): Omit<TargetStep, 'round' | 'q' | 'strength' | 'rows' | 'pctLinearParams'> => {
    const taskLoss = pm.taskAccuracy === null || ref.taskAccuracy === null ? null : ref.taskAccuracy - pm.taskAccuracy;
    const overRefusalRise = pm.overRefusal === null || ref.overRefusal === null ? null : pm.overRefusal - ref.overRefusal;
    const taskTest = paired(ref.taskCorrect, pm.taskCorrect, o.taskTolerance);
    const refusalTest = paired(ref.benignRefused?.map((x) => !x), pm.benignRefused?.map((x) => !x), o.overRefusalTolerance);
    // 'raw' (or a measurement without per-prompt outcomes): the earlier rule on the raw rates.
    const taskBad = o.guardrailTest === 'paired' && taskTest ? taskTest.rejected : (taskLoss ?? 0) > o.taskTolerance + 1e-12;
    const marginBad = refusalMarginRejects(ref.refusalNll, pm.refusalNll, o.refusalMarginTolerance);
    const refusalBad = marginBad || (o.guardrailTest === 'paired' && refusalTest ? refusalTest.rejected : (overRefusalRise ?? 0) > o.overRefusalTolerance + 1e-12);
    const nllRise = pm.responseNll === null || ref.responseNll === null ? null : pm.responseNll - ref.responseNll;
    const nllBad = nllRiseRejects(ref.responseNll, pm.responseNll, o.nllTolerance);
    const inCeiling = withinCeiling({ pctLinearParams: 0, probeAsr: 0, taskLoss, overRefusalRise, guardrailsOk: true }, o.utilityCeiling);
    const all = !taskBad && !refusalBad && !nllBad && inCeiling;
    return {
      probeAsr: judgeAsrOf(pm),
      ...(pm.harmfulAnsweredPrefix ? { probeAsrPrefix: mean(pm.harmfulAnsweredPrefix, split.judge) } : {}),
      taskAccuracy: pm.taskAccuracy, overRefusal: pm.overRefusal,
      guardrailsOk: o.missPolicy === 'safety-first' ? inCeiling : all,
      rankAsr: split.split && pm.harmfulAnswered ? mean(pm.harmfulAnswered, split.rank) : null,
      taskLoss, overRefusalRise, taskTest: taskTest ? verdict(taskTest) : null, refusalTest: refusalTest ? verdict(refusalTest) : null,
      utilityNll: pm.responseNll, nllRise, withinCeiling: inCeiling, allGuardrailsHeld: all,
      benignRefusalNll: pm.refusalNll ?? null, refusalMarginBroken: marginBad,
    };
  };
  const write = (src: WeightSources) => async (sel: Selection, strength: number, dir: string): Promise<void> => {
    run.checkCancelled();
    await writeHardened(src, sel, compute(strength), { modelDir: dir }, {});
  };
  /** Measures `sel` at a strength edited from `src`, on top of the fixed rows `under` (round 1's, in round 2). */
  const stepMeasure = (src: WeightSources, under: EditRows): StepMeasure => engine === null
    ? writtenSteps(tmpRoot, write(src), (dir) => measureOnProbes({ dir }, prompts, taskAnswered, stepCtx))
    : {
      measure: async (sel, strength) => {
        run.checkCancelled();
        const patch = mergeEditRows(under, await editRows(src, sel, compute(strength)));
        engine.setRowPatch(patch);
        try {
          return await measureWithEngine(engine, prompts, taskAnswered, stepCtx);
        } finally {
          // The step's rows go now, not when V8 collects them (tens of MiB per step at 125M); `under`'s
          // (round 1's fixed rows) are shared by every round-2 step and stay.
          engine.setRowPatch(new Map());
          const kept = new Set([...under.values()].map((e) => e.values));
          for (const e of patch.values()) if (!kept.has(e.values)) releaseBuffer(e.values);
        }
      },
      // Back to the fine-tune, and its sessions released: round 2's backward passes come next.
      close: async () => {
        engine.setRowPatch(new Map());
        await engine.releaseSessions();
      },
    };
  const steps: TargetStep[] = [];
  /** How to rebuild each measured step's edit (its rows; round 2 on top of round 1's). */
  const edits = new Map<TargetStep, { sel: Selection; first?: { sel: Selection; strength: number } }>();
  const atTarget = (st: TargetStep): boolean => st.probeAsr <= o.targetAsr! + 1e-9;
  const search = async (round: number, schedule: readonly number[], pick: (q: number) => Selection, pct: (sel: Selection) => number, sm: StepMeasure,
    first?: { sel: Selection; strength: number }) => {
    // Under safety-first the ladder runs on past noise-aware guardrail breaks (within the ceiling), to find
    // the smallest edit at the target; once one is found, it stops when q grows past it.
    let fallbackQ: number | undefined;
    try {
      return await ladder<TargetStep>({
        schedule, strengths: STRENGTH_STEPS.map((mult) => o.strength * mult), pick, pct, maxPct: o.maxParams, measure: sm.measure,
        record: (q, strength, rows, pctLinearParams, pm) => ({ round, q, strength, rows, pctLinearParams, ...judgeStep(pm) }),
        better: (step, best) => step.probeAsr < best.probeAsr,
        reached: (step) => (atTarget(step) && step.allGuardrailsHeld === true) || (fallbackQ !== undefined && step.q > fallbackQ),
        onStep: async (step) => {
          edits.set(step, { sel: pick(step.q), ...(first ? { first } : {}) });
          if (fallbackQ === undefined && atTarget(step) && step.withinCeiling) fallbackQ = step.q;
          await run.within(Math.min(0.95, steps.length / 16),
            `round ${round} q=${step.q.toFixed(4)} g=${step.strength}: judged probe ASR ${step.probeAsr.toFixed(3)}${step.rankAsr != null ? ` (ranking probes ${step.rankAsr.toFixed(3)})` : ''}, task ${step.taskAccuracy?.toFixed(3) ?? 'n/a'}, benign refusals ${step.overRefusal?.toFixed(3) ?? 'n/a'}, answer NLL ${step.utilityNll?.toFixed(3) ?? 'n/a'}${step.allGuardrailsHeld ? '' : ' (guardrail)'}`);
        },
        steps,
      });
    } finally {
      await sm.close();
    }
  };
  const choose = () => chooseStep(steps.map(asPolicyStep), { targetAsr: o.targetAsr!, utilityCeiling: o.utilityCeiling, policy: o.missPolicy });
  const schedule: number[] = [];
  for (let k = 0; k < 24; k++) schedule.push(o.qStart * [1, 1.5][k % 2] * 2 ** Math.floor(k / 2));
  await search(1, schedule, (q) => ranking.select(q), (sel) => countEdit(s, sel).pctLinearParams, stepMeasure(s, new Map()));
  let choice = choose();
  const stepOf = (c: typeof choice): TargetStep | null => (c.step === null ? null : steps.find((x) => x.round === c.step!.round && x.q === c.step!.q && x.strength === c.step!.strength) ?? null);
  let round2: Record<string, unknown> | undefined;
  const r1Choice = stepOf(choice);
  // Where round 2 grows from (policy.ts round2Base: the kept step by default, or round 1's safest clean step).
  const from = round2Base(steps.filter((x) => x.round === 1).map(asPolicyStep), r1Choice === null ? null : asPolicyStep(r1Choice), o.round2From);
  const r1Base = from === null ? null : steps.find((x) => x.round === 1 && x.q === from.q && x.strength === from.strength) ?? null;
  if (!choice.reached && r1Choice !== null && r1Base !== null && o.rounds >= 2) {
    const first = { sel: edits.get(r1Base)!.sel, strength: r1Base.strength };
    // Round 2's engine cache (its attribution graphs) lives with the job and is removed with it: graphs of a
    // patched or written round-1 model are never reused, and in the shared cache they would keep their bytes
    // (hard links, patch files) until LRU eviction.
    const r1Cache = join(req.outDir, '.fgsn-round1-cache');
    const rankAtlas = split.split ? subsetAtlas(atlas, split.rank) : atlas;
    const rankCtx = { ...ctx, cacheDir: r1Cache, batchSize: o.batchSize, ...(o.layersPerPass ? { layersPerPass: o.layersPerPass } : {}) };
    // Round 1's chosen rows as the fine-tune's engine and the attribution see them (stepMode patch).
    const under: EditRows = engine === null ? new Map() : await editRows(s, first.sel, compute(first.strength));
    // Ranking on round 1's model: with stepMode patch its attribution runs on the fine-tune's own files with
    // round 1's rows as a static row patch (nothing written). Only stepMode write, and the delta scoring
    // (which reads the fine-tune's weights: its per-matrix normalisation sees the edited rows), write round 1's
    // model once to rank on it.
    const writeRound1 = engine === null || o.scoring === 'delta';
    const r1Dir = join(req.outDir, '.fgsn-round1');
    let s2: WeightSources | null = null;
    try {
      if (writeRound1) {
        await write(s)(first.sel, first.strength, r1Dir);
        s2 = await openSources({ basePath: s.base.dir, alignedPath: s.aligned.dir, finetunedPath: r1Dir });
      }
      await run.within(0.5, 'round 2: ranking rows again on round 1\'s model');
      const job2 = s2 !== null ? new JobScores(s2, rankAtlas, task, rankCtx) : new JobScores(s, rankAtlas, task, { ...rankCtx, rowPatch: under });
      const scores2 = await fgsnScores(job2, { ...o, p: 0 }, ranking.layers);
      const pick = pickerExcluding(scores2, [first.sel, ranking.taskSet], linearRowCount(s));
      // Steps: with the engine, round 1's rows under the step's own, edited from the fine-tune as the final
      // write edits them (round-2 rows exclude round 1's); written steps edit round 1's written model.
      const stepSrc = engine !== null || s2 === null ? s : s2;
      await search(2, ROUND2_Q, pick, (sel) => countEdit(s, union(first.sel, sel)).pctLinearParams, stepMeasure(stepSrc, under), first);
      const c2 = choose();
      // Round 2 is kept only when the policy's choice is one of its steps and is safer than round 1's.
      const c2Step = stepOf(c2);
      if (c2Step !== null && c2Step.round === 2 && c2Step.probeAsr < r1Choice.probeAsr) {
        choice = c2;
        round2 = { q: c2Step.q, strength: c2Step.strength, rows: c2Step.rows, probeAsr: c2Step.probeAsr, from: { q: r1Base.q, strength: r1Base.strength, probeAsr: r1Base.probeAsr }, rowSets: { round1: selectionToJSON(first.sel), round2: selectionToJSON(edits.get(c2Step)!.sel) } };
      }
    } finally {
      if (s2 !== null) await closeSources(s2);
      await rm(r1Dir, { recursive: true, force: true });
      await rm(r1Cache, { recursive: true, force: true });
    }
  }
  const chosen = stepOf(choice);
  const front = frontier(steps.map(asPolicyStep)).map((f) => ({
    round: f.round, q: f.q, strength: f.strength, pctLinearParams: f.pctLinearParams, probeAsr: f.probeAsr, rankAsr: f.rankAsr ?? null,
    taskLoss: f.taskLoss, overRefusalRise: f.overRefusalRise, allGuardrailsHeld: f.guardrailsOk,
  }));
  let result: { selection: Selection; strength: number; compute?: RowCompute; q: number };
  if (chosen === null) {
    // Nothing within the utility ceiling: the fine-tune is returned unedited, and the result says so.
    result = { selection: new Map(), strength: o.strength, q: 0 };
  } else {
    const e = edits.get(chosen)!;
    result = e.first
      ? {
        selection: union(e.first.sel, e.sel), strength: e.first.strength, q: chosen.q,
        compute: combinedCompute([
          { selection: e.first.sel, compute: compute(e.first.strength) },
          { selection: e.sel, compute: compute(chosen.strength) },
        ]),
      }
      : { selection: e.sel, strength: chosen.strength, q: chosen.q };
  }
  let reached = choice.reached;
  let rule: string = choice.rule;
  let confirmed: Record<string, unknown> | undefined;
  if (o.stepJudge === 'prefix' && chosen !== null) {
    // The cheap judgement chose the edit; the full one measures it once. A miss it reveals is reported as one.
    const edit = result.compute ?? compute(result.strength);
    let full: ProbeMetrics;
    if (engine !== null) {
      engine.setRowPatch(await editRows(s, result.selection, edit));
      full = await measureWithEngine(engine, prompts, taskAnswered, measureCtx);
      engine.setRowPatch(new Map());
    } else {
      const dir = join(tmpRoot, 'confirm');
      await writeHardened(s, result.selection, edit, { modelDir: dir }, {});
      full = await measureOnProbes({ dir }, prompts, taskAnswered, measureCtx);
    }
    const fullAsr = judgeAsrOf(full);
    confirmed = { probeAsr: fullAsr, allProbeAsr: full.asr, taskAccuracy: full.taskAccuracy, benignRefusals: full.overRefusal, reachesTarget: fullAsr <= o.targetAsr! + 1e-9 };
    if (reached && fullAsr > o.targetAsr! + 1e-9) {
      reached = false;
      rule = `${rule}; the full judgement of the chosen step (ASR ${fullAsr.toFixed(3)}) misses the target the prefix judgement met`;
    }
  }
  return {
    selection: result.selection,
    strength: result.strength,
    ...(result.compute ? { compute: result.compute } : {}),
    details: {
      ...base, q: result.q, strength: result.strength, stepMode: o.stepMode, stepJudge: o.stepJudge,
      target: {
        ...target, reached, status: reached ? 'reached' : 'not reached', rule,
        chosen: chosen === null ? null : { round: chosen.round, q: chosen.q, strength: chosen.strength, probeAsr: chosen.probeAsr, rankAsr: chosen.rankAsr ?? null, pctLinearParams: chosen.pctLinearParams, taskLoss: chosen.taskLoss ?? null, overRefusalRise: chosen.overRefusalRise ?? null, allGuardrailsHeld: chosen.allGuardrailsHeld ?? null },
        ...(confirmed ? { confirmed } : {}),
        ...(round2 ? { round2 } : {}),
        frontier: front, steps,
      },
    },
  };
}

/**
 * What every carrier of a job's result (job status, webhook, CLI, report) says about the safety target:
 * `target` is 'reached' or 'not reached' whenever the job had one ('not set' for a fixed budget or a
 * baseline), with the kept step, the policy rule that chose it and the best frontier points.
 */
export function targetSummary(details: Record<string, unknown> | undefined): Pick<HardenResult['summary'], 'target' | 'targetDetails'> {
  const t = details?.target as Record<string, unknown> | undefined;
  if (t === undefined || typeof t.status !== 'string') return { target: 'not set' };
  const chosen = t.chosen as { probeAsr?: number; rankAsr?: number | null; pctLinearParams?: number; taskLoss?: number | null; overRefusalRise?: number | null } | null | undefined;
  const ft = t.finetuned as { probeAsr?: number } | undefined;
  return {
    target: t.status === 'reached' ? 'reached' : 'not reached',
    targetDetails: {
      targetAsr: t.targetAsr as number,
      rule: t.rule as string,
      // A prefix-judged search's chosen step was measured again in full: that figure is the one reported.
      probeAsr: (t.confirmed as { probeAsr?: number } | undefined)?.probeAsr ?? chosen?.probeAsr ?? ft?.probeAsr ?? null,
      rankAsr: chosen?.rankAsr ?? null,
      taskLoss: chosen?.taskLoss ?? null,
      overRefusalRise: chosen?.overRefusalRise ?? null,
      utilityCeiling: t.utilityCeiling as number,
      frontier: (t.frontier as Record<string, unknown>[] | undefined) ?? [],
    },
  };
}

/**
 * Every file under outDir with its size and sha256; `written` (absolute path -> what this job wrote there) spares
 * reading a model's gigabytes back to hash them (2.6 s of a 1.1B job, bench/scale).
 */
async function artifactList(outDir: string, written: WriteOutcome['written']): Promise<ArtifactInfo[]> {
  const out: ArtifactInfo[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const p = join(dir, name);
      const st = await stat(p);
      if (st.isDirectory()) await walk(p);
      else out.push({ name: relative(outDir, p), bytes: st.size, sha256: await sha256FileUnlessKnown(p, st.size, written.get(resolve(p))) });
    }
  };
  await walk(outDir);
  return out;
}

export async function runHarden(req: HardenRequest, hooks: HardenHooks = {}): Promise<HardenResult> {
  const run = new Run(hooks);
  const started = new Date().toISOString();
  await run.stage('validate');
  const parsed = parseMethodOptions(req.method, req.options ?? {});
  checkProbes('harmful', req.harmful, 1);
  checkProbes('benign', req.benign, 2);
  if (req.task) checkProbes('task', req.task, 1);
  const outputs = new Set(req.outputs.length > 0 ? req.outputs : ['model']);
  for (const o of outputs) {
    if (!['model', 'diff', 'adapter', 'report'].includes(o)) throw new FgsnError('DEFENSE_OPTION_INVALID', `unknown output "${o}" (model, diff, adapter, report)`);
  }
  await ensureEmptyDir(req.outDir);
  const sources = await openSources(req);
  try {
    await run.stage('atlas');
    const { atlas, cached } = await getOrBuildAtlas(sources.aligned.dir, req.harmful, req.benign, req.cacheDir, {
      ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}),
    }, (msg) => run.within(0.5, msg));
    const task = req.task ?? req.benign;
    const job = new JobScores(sources, atlas, task, {
      cacheDir: req.cacheDir,
      ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}),
      ...(parsed.method === 'fgsn' ? { batchSize: parsed.o.batchSize, layersPerPass: parsed.o.layersPerPass } : {}),
    });

    await run.stage('task-neurons');
    if (parsed.method === 'fgsn' && parsed.o.p > 0) await job.taskScores();

    await run.stage('selection');
    let plan: EditPlan;
    if (parsed.method === 'fgsn' && parsed.o.targetAsr !== undefined) {
      const t = await targetDrivenSelection(run, req, sources, atlas, job, parsed.o, task);
      const projection = fgsnProjection({ ...parsed.o, strength: t.strength });
      plan = { selection: t.selection, compute: t.compute ?? projectionCompute(projection), projection, details: t.details };
    } else {
      plan = await planMethod(job, parsed);
    }
    const counts: EditCounts = countEdit(sources, plan.selection);
    // Adapter output: an adapter input with gram/subspace keeps its rank (B projected); every other case
    // appends the row-sparse edit as a rank-k update. Checked before projection so a job fails early.
    const projectedAdapter = sources.adapter !== undefined && plan.projection !== undefined && ['gram', 'subspace'].includes(plan.projection.mode);
    if (outputs.has('adapter') && !projectedAdapter) {
      const rank = rowSparseAdapterRank(sources, plan.selection);
      const smallest = Math.min(...[...plan.selection.keys()].map((n) => Math.min(...shapeOf(sources, n))));
      if (rank > smallest / 2) {
        throw new FgsnError('DEFENSE_OPTION_INVALID', `output "adapter": method ${req.method} edits so many rows of one matrix that its adapter (rank ${rank}) would be larger than the matrices; use --format model or diff`, { details: { rank } });
      }
    }

    await run.stage('projection');
    const modelDir = outputs.has('model') ? join(req.outDir, 'model') : undefined;
    const methodMeta = JSON.stringify({ method: req.method, options: parsed.o, atlas: atlas.id });
    let done = 0;
    const total = Math.max(1, [...plan.selection.values()].filter((r) => r.length > 0).length + (sources.adapter?.targets().length ?? 0));
    const outcome = await writeHardened(sources, plan.selection, plan.compute, {
      ...(outputs.has('diff') ? { diffPath: join(req.outDir, 'diff.safetensors') } : {}),
      ...(modelDir ? { modelDir } : {}),
      ...(outputs.has('adapter') ? { adapterDir: join(req.outDir, 'adapter'), ...(projectedAdapter ? { adapterProjection: plan.projection } : {}) } : {}),
    }, { 'fgsn.method': methodMeta, 'fgsn.atlas': atlas.id }, async (name) => {
      run.checkCancelled();
      await run.within(++done / total, name);
    });

    await run.stage('evaluation');
    let metrics: Record<string, number> | undefined;
    let evalReport: unknown;
    if (req.evaluate && (modelDir || outputs.has('adapter'))) {
      const e = req.evaluate;
      const report = await evaluateModel(modelDir ?? sources.finetuned?.dir ?? sources.aligned.dir, {
        ...(modelDir ? {} : { adapter: join(req.outDir, 'adapter') }),
        ...(e.harmful ? { harmful: e.harmful.map((p) => ({ prompt: p.prompt, ...(p.category ? { category: p.category } : {}) })) } : {}),
        ...(e.emerging ? { emerging: e.emerging.map((p) => ({ prompt: p.prompt, ...(p.category ? { category: p.category } : {}) })) } : {}),
        ...(e.lookalike ? { lookalike: e.lookalike.map((p) => ({ prompt: p.prompt, ...(p.response ? { answer: p.response } : {}) })) } : {}),
        // The evaluation module's own name of the reference is `answer` (its items also carry the generated
        // `response`): the one conversion, here at its boundary.
        ...(e.tasks ? { tasks: Object.fromEntries(Object.entries(e.tasks).map(([n, ps]) => [n, ps.map((p) => ({ prompt: p.prompt, answer: p.response ?? '' }))])) } : {}),
        ...(e.maxNewTokens ? { maxNewTokens: e.maxNewTokens } : {}),
        cacheDir: join(req.cacheDir, 'engine'),
        ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}),
      });
      // The evaluated folder is this job's scratch space: name it by the artifact instead.
      evalReport = req.inputLabels ? { ...report, model: modelDir ? 'model' : (req.inputLabels.finetuned ?? req.inputLabels.aligned), ...(report.adapter !== undefined ? { adapter: 'adapter' } : {}) } : report;
      metrics = {};
      for (const [k, v] of Object.entries(report)) if (typeof v === 'number' && k !== 'max_new_tokens') metrics[k] = v;
    }

    await run.stage('report');
    run.end();
    const targetStatus = targetSummary(plan.details);
    const report: Record<string, unknown> = {
      fgsn: { version: 1, startedAt: started, finishedAt: new Date().toISOString() },
      method: req.method,
      ...targetStatus,
      options: parsed.o,
      inputs: {
        // A service names its inputs by label (e.g. checkpoint ids): its report must not show server paths.
        base: req.inputLabels?.base ?? sources.base.dir, aligned: req.inputLabels?.aligned ?? sources.aligned.dir,
        ...(sources.finetuned
          ? { finetuned: req.inputLabels?.finetuned ?? sources.finetuned.dir }
          : { adapter: req.inputLabels?.adapter ?? sources.adapter!.dir }),
        sourceSha256: outcome.sourceSha256,
        probes: { harmful: req.harmful.length, benign: req.benign.length, task: task.length, taskIsBenign: req.task === undefined },
      },
      atlas: { id: atlas.id, cached, band: atlas.band, layerWeights: atlas.layerWeights, curve: atlas.curve },
      selection: plan.details,
      edit: counts,
      rows: selectionToJSON(plan.selection),
      outputs: [...outputs],
      timings: { ...run.seconds },
      costs: { ...run.costs },
      memory: { rssMiBAtStageEnd: { ...run.rssMiB } },
      ...(metrics ? { metrics, evaluation: evalReport } : {}),
      ...(req.config ? { config: req.config } : {}),
    };
    const text = JSON.stringify(report, null, 1) + '\n';
    // A publishable folder: a model card (README.md) from this report, the fine-tune's docs carried over.
    if (modelDir) await writeModelCard(modelDir, sources.finetuned?.dir ?? sources.adapter!.dir, sources.configDir, report);
    if (modelDir) await writeFile(join(modelDir, 'fgsn-report.json'), text);
    await writeFile(join(req.outDir, 'report.json'), text);
    // --format report: the same report for people, self-contained HTML with inline SVG charts.
    if (outputs.has('report')) await writeFile(join(req.outDir, 'report.html'), await renderReportHtml(report));
    const artifacts = await artifactList(req.outDir, outcome.written);
    await run.progress({ stage: 'report', percent: 100 });
    return {
      artifacts,
      report,
      summary: {
        method: req.method,
        rowsChanged: counts.rows,
        paramsChanged: counts.params,
        paramsChangedPctLinear: counts.pctLinearParams,
        stageSeconds: { ...run.seconds },
        stageCosts: { ...run.costs },
        ...(metrics ? { metrics } : {}),
        ...targetStatus,
      },
    };
  } finally {
    await closeSources(sources);
  }
}
