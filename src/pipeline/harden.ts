/**
 * One defense job, stage by stage: validate -> atlas (cached) -> task neurons -> selection (with the
 * target-driven budget when asked) -> projection (streamed outputs) -> optional evaluation -> report.
 * Progress is reported per stage; cancellation is checked between stages and between budget steps.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Engine } from '../engine/engine.js';
import { type PassCounts, addPasses, passCounts, passDelta } from '../engine/runtime/counters.js';
import { evaluateModel } from '../eval/evaluate.js';
import { FgsnError } from '../errors.js';
import { type EditCounts, type EditRows, type RowCompute, combinedCompute, countEdit, editRows, mergeEditRows, projectionCompute, writeHardened } from '../defense/apply.js';
import { type Atlas, getOrBuildAtlas } from '../defense/atlas.js';
import { type Selection, countRows, pickerExcluding, selectionToJSON, union } from '../defense/math/select.js';
import { type EditPlan, JobScores, fgsnProjection, fgsnRanking, fgsnScores, planMethod } from '../defense/methods.js';
import { type FgsnOptions, parseMethodOptions } from '../defense/options.js';
import { type WeightSources, closeSources, linearRowCount, openSources } from '../defense/io/sources.js';
import { STRENGTH_STEPS, type StepMeasure, ladder, writtenSteps } from './ladder.js';
import { type ProbeMetrics, measureOnProbes, measureWithEngine, openStepEngine } from './probe-eval.js';
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
  probeAsr: number;
  /** Probe ASR judged on the first 8 generated tokens (the cheap judgement; equals probeAsr under stepJudge 'prefix'). */
  probeAsrPrefix?: number;
  taskAccuracy: number | null;
  overRefusal: number | null;
  /** Utility guardrails held (task accuracy and benign refusals within tolerance of the fine-tune's). */
  guardrailsOk: boolean;
}

/** Row shares of the second round (re-ranked), smallest first. */
const ROUND2_Q = [0.00125, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03];

/**
 * The defense issue's target-driven budget. Round 1: q grows along a fixed schedule from qStart (x1.5, x2,
 * ...), and at each q the strength g grows (x1, x1.5, x2) until the ASR on the harmful PROBE prompts is <=
 * targetAsr. A step that breaks a guardrail (task-probe accuracy more than taskTolerance below the
 * fine-tune's, or refusals of the benign probes more than overRefusalTolerance above it) ends the g ladder at
 * that q; a q whose edit exceeds maxParams ends the search. When round 1 ends short of the target, round 2
 * (`rounds` >= 2) ranks the remaining rows again by attribution on round 1's model (a first-order ranking is
 * only right near the model it was taken at) and grows a second edit the same way, with the guardrails still
 * measured against the fine-tune and the parameter cap on both rounds together; it is kept only if it lowers
 * the probe ASR. The result is the best step within the guardrails (fewest parameters on ties).
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
  const ranking = await fgsnRanking(job, o);
  const prompts = atlas.harmful.map((p) => p.prompt);
  const taskAnswered = task.filter((p) => p.response !== undefined).slice(0, 200);
  const benignPrompts = req.benign.slice(0, 100).map((p) => p.prompt);
  const probeCtx = { ...ctx, benignPrompts };
  const stepCtx = { ...probeCtx, harmfulJudge: o.stepJudge };
  const ref = engine !== null ? await measureWithEngine(engine, prompts, taskAnswered, probeCtx) : await measureOnProbes(model, prompts, taskAnswered, probeCtx);
  const base = {
    layers: ranking.layers, p: o.p, taskRowsExcluded: countRows(ranking.taskSet), scoring: o.scoring, scope: o.scope,
  };
  const target = {
    targetAsr: o.targetAsr, maxParams: o.maxParams, taskTolerance: o.taskTolerance, overRefusalTolerance: o.overRefusalTolerance, rounds: o.rounds,
    finetuned: { probeAsr: ref.asr, taskAccuracy: ref.taskAccuracy, benignRefusals: ref.overRefusal },
  };
  if (ref.asr <= o.targetAsr!) {
    // The fine-tune already refuses its probes: an edit could only cost utility (a benign fine-tune).
    return {
      selection: new Map(),
      strength: o.strength,
      details: { ...base, q: 0, strength: o.strength, target: { ...target, reached: true, steps: [], note: 'fine-tune already within the target on the probes; nothing edited' } },
    };
  }
  const guardrailsOk = (m: ProbeMetrics): boolean =>
    (m.taskAccuracy === null || ref.taskAccuracy === null || m.taskAccuracy >= ref.taskAccuracy - o.taskTolerance) &&
    (m.overRefusal === null || ref.overRefusal === null || m.overRefusal <= ref.overRefusal + o.overRefusalTolerance);
  const compute = (strength: number): RowCompute => projectionCompute(fgsnProjection({ ...o, strength }));
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
        engine.setRowPatch(mergeEditRows(under, await editRows(src, sel, compute(strength))));
        return measureWithEngine(engine, prompts, taskAnswered, stepCtx);
      },
      // Back to the fine-tune, and its sessions released: round 2's backward passes come next.
      close: async () => {
        engine.setRowPatch(new Map());
        await engine.releaseSessions();
      },
    };
  const steps: TargetStep[] = [];
  const search = async (round: number, schedule: readonly number[], pick: (q: number) => Selection, pct: (sel: Selection) => number, m: StepMeasure) => {
    try {
      return await ladder<TargetStep>({
        schedule, strengths: STRENGTH_STEPS.map((mult) => o.strength * mult), pick, pct, maxPct: o.maxParams, measure: m.measure,
        record: (q, strength, rows, pctLinearParams, pm) => ({
          round, q, strength, rows, pctLinearParams, probeAsr: pm.asr, ...(pm.asrPrefix !== undefined ? { probeAsrPrefix: pm.asrPrefix } : {}), taskAccuracy: pm.taskAccuracy, overRefusal: pm.overRefusal, guardrailsOk: guardrailsOk(pm),
        }),
        better: (step, best) => step.probeAsr < best.probeAsr,
        reached: (step) => step.probeAsr <= o.targetAsr!,
        onStep: (step) => run.within(Math.min(0.95, steps.length / 16),
          `round ${round} q=${step.q.toFixed(4)} g=${step.strength}: probe ASR ${step.probeAsr.toFixed(3)}, task ${step.taskAccuracy?.toFixed(3) ?? 'n/a'}, benign refusals ${step.overRefusal?.toFixed(3) ?? 'n/a'}`),
        steps,
      });
    } finally {
      await m.close();
    }
  };
  const schedule: number[] = [];
  for (let k = 0; k < 24; k++) schedule.push(o.qStart * [1, 1.5][k % 2] * 2 ** Math.floor(k / 2));
  const r1 = await search(1, schedule, (q) => ranking.select(q), (sel) => countEdit(s, sel).pctLinearParams, stepMeasure(s, new Map()));
  let reached = r1.reached;
  let result: { selection: Selection; strength: number; compute?: RowCompute; q: number } = r1.best
    ? { selection: r1.best.sel, strength: r1.best.step.strength, q: r1.best.step.q }
    : { selection: ranking.select(o.qStart), strength: o.strength, q: o.qStart };
  if (!reached && r1.best !== null && o.rounds >= 2) {
    const first = r1.best;
    // Round 2 ranks rows by attribution on round 1's model, which reads a model folder: written once here
    // (its steps are still row patches on the fine-tune's engine: round 1's rows plus the step's own).
    const r1Dir = join(req.outDir, '.fgsn-round1');
    await write(s)(first.sel, first.step.strength, r1Dir);
    const s2 = await openSources({ basePath: s.base.dir, alignedPath: s.aligned.dir, finetunedPath: r1Dir });
    try {
      await run.within(0.5, 'round 2: ranking rows again on round 1\'s model');
      const job2 = new JobScores(s2, atlas, task, { ...ctx, batchSize: o.batchSize, ...(o.layersPerPass ? { layersPerPass: o.layersPerPass } : {}) });
      const scores2 = await fgsnScores(job2, { ...o, p: 0 }, ranking.layers);
      const pick = pickerExcluding(scores2, [first.sel, ranking.taskSet], linearRowCount(s));
      const under = engine === null ? new Map() : await editRows(s, first.sel, compute(first.step.strength));
      const r2 = await search(2, ROUND2_Q, pick, (sel) => countEdit(s, union(first.sel, sel)).pctLinearParams, stepMeasure(s2, under));
      if (r2.best !== null && r2.best.step.probeAsr < first.step.probeAsr) {
        const second = r2.best;
        reached = r2.reached;
        result = {
          selection: union(first.sel, second.sel),
          strength: first.step.strength,
          q: first.step.q,
          compute: combinedCompute([
            { selection: first.sel, compute: compute(first.step.strength) },
            { selection: second.sel, compute: compute(second.step.strength) },
          ]),
        };
        Object.assign(target, { round2: { q: second.step.q, strength: second.step.strength, rows: second.step.rows, probeAsr: second.step.probeAsr, rowSets: { round1: selectionToJSON(first.sel), round2: selectionToJSON(second.sel) } } });
      }
    } finally {
      await closeSources(s2);
      await rm(r1Dir, { recursive: true, force: true });
    }
  }
  if (o.stepJudge === 'prefix' && r1.best !== null) {
    // The cheap judgement chose the edit; the full one measures it once (reported, not silently assumed).
    const edit = result.compute ?? compute(result.strength);
    let confirmed: ProbeMetrics;
    if (engine !== null) {
      engine.setRowPatch(await editRows(s, result.selection, edit));
      confirmed = await measureWithEngine(engine, prompts, taskAnswered, probeCtx);
    } else {
      const dir = join(tmpRoot, 'confirm');
      await writeHardened(s, result.selection, edit, { modelDir: dir }, {});
      confirmed = await measureOnProbes({ dir }, prompts, taskAnswered, probeCtx);
    }
    Object.assign(target, { confirmed: { probeAsr: confirmed.asr, taskAccuracy: confirmed.taskAccuracy, benignRefusals: confirmed.overRefusal, reachesTarget: confirmed.asr <= o.targetAsr! } });
  }
  return {
    selection: result.selection,
    strength: result.strength,
    ...(result.compute ? { compute: result.compute } : {}),
    details: { ...base, q: result.q, strength: result.strength, stepMode: o.stepMode, stepJudge: o.stepJudge, target: { ...target, reached, steps } },
  };
}

async function artifactList(outDir: string): Promise<ArtifactInfo[]> {
  const out: ArtifactInfo[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const p = join(dir, name);
      const st = await stat(p);
      if (st.isDirectory()) await walk(p);
      else {
        const h = createHash('sha256');
        for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
        out.push({ name: relative(outDir, p), bytes: st.size, sha256: h.digest('hex') });
      }
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
  if (outputs.has('adapter')) {
    if (req.adapterPath === undefined) throw new FgsnError('DEFENSE_OPTION_INVALID', 'output "adapter" needs a LoRA adapter input');
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
    if (outputs.has('adapter') && (plan.projection === undefined || !['gram', 'subspace'].includes(plan.projection.mode))) {
      throw new FgsnError('DEFENSE_OPTION_INVALID', `output "adapter" keeps the LoRA form only for projection modes gram and subspace (method ${req.method} uses ${plan.projection?.mode ?? 'an element-wise edit'})`);
    }

    await run.stage('projection');
    const modelDir = outputs.has('model') ? join(req.outDir, 'model') : undefined;
    const methodMeta = JSON.stringify({ method: req.method, options: parsed.o, atlas: atlas.id });
    let done = 0;
    const total = Math.max(1, [...plan.selection.values()].filter((r) => r.length > 0).length + (sources.adapter?.targets().length ?? 0));
    const outcome = await writeHardened(sources, plan.selection, plan.compute, {
      ...(outputs.has('diff') ? { diffPath: join(req.outDir, 'diff.safetensors') } : {}),
      ...(modelDir ? { modelDir } : {}),
      ...(outputs.has('adapter') ? { adapterDir: join(req.outDir, 'adapter'), adapterProjection: plan.projection } : {}),
    }, { 'fgsn.method': methodMeta, 'fgsn.atlas': atlas.id }, async (name) => {
      run.checkCancelled();
      await run.within(++done / total, name);
    });

    await run.stage('evaluation');
    let metrics: Record<string, number> | undefined;
    let evalReport: unknown;
    if (req.evaluate && (modelDir || outputs.has('adapter'))) {
      const e = req.evaluate;
      const report = await evaluateModel(modelDir ?? sources.aligned.dir, {
        ...(modelDir ? {} : { adapter: join(req.outDir, 'adapter') }),
        ...(e.harmful ? { harmful: e.harmful.map((p) => ({ prompt: p.prompt, ...(p.category ? { category: p.category } : {}) })) } : {}),
        ...(e.emerging ? { emerging: e.emerging.map((p) => ({ prompt: p.prompt, ...(p.category ? { category: p.category } : {}) })) } : {}),
        ...(e.lookalike ? { lookalike: e.lookalike.map((p) => ({ prompt: p.prompt, ...(p.response ? { answer: p.response } : {}) })) } : {}),
        ...(e.tasks ? { tasks: e.tasks } : {}),
        ...(e.maxNewTokens ? { maxNewTokens: e.maxNewTokens } : {}),
        cacheDir: join(req.cacheDir, 'engine'),
        ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}),
      });
      evalReport = report;
      metrics = {};
      for (const [k, v] of Object.entries(report)) if (typeof v === 'number' && k !== 'max_new_tokens') metrics[k] = v;
    }

    await run.stage('report');
    run.end();
    const report: Record<string, unknown> = {
      fgsn: { version: 1, startedAt: started, finishedAt: new Date().toISOString() },
      method: req.method,
      options: parsed.o,
      inputs: {
        base: sources.base.dir, aligned: sources.aligned.dir,
        ...(sources.finetuned ? { finetuned: sources.finetuned.dir } : { adapter: sources.adapter!.dir }),
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
    };
    const text = JSON.stringify(report, null, 1) + '\n';
    if (modelDir) await writeFile(join(modelDir, 'fgsn-report.json'), text);
    await writeFile(join(req.outDir, 'report.json'), text);
    const artifacts = await artifactList(req.outDir);
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
      },
    };
  } finally {
    await closeSources(sources);
  }
}
