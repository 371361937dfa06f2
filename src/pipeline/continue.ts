/**
 * Continual defense (method.md step 4): a new harm category appears after a model was hardened. Its probes
 * are added to the atlas; rows are ranked on the HARDENED model (attribution of the aligned model's refusals
 * of the new category's probes), rows projected before are excluded, and the top ones get the same edit.
 * The output is the hardened model patched by a small incremental diff, with the extra share of parameters.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FgsnError } from '../errors.js';
import {
  addCategory, type Atlas, closeSources, countEdit, countRows, editRows, FGSN_DEFAULTS, type FgsnOptions,
  fgsnProjection, fgsnScores, findAtlas, JobScores, linearRowCount, openSources, parseMethodOptions,
  pickerExcluding, projectionCompute, resolveLayers, type RowCompute, type Selection, selectionFromJSON,
  selectionToJSON, union, type WeightSources, writeHardened,
} from '../defense/index.js';
import { evenSample } from '../util/index.js';
import type { Engine } from '../engine/index.js';
import { STRENGTH_STEPS, type StepMeasure, ladder, writtenSteps } from './ladder.js';
import { pairedLossTest } from './guardrails.js';
import { type ProbeContext, measureOnProbes, measureWithEngine, openStepEngine } from './probe-eval.js';
import { writeModelCard } from './model-card.js';
import { readHardenReport, reportedFgsnOptions } from './report-schema.js';
import { renderReportHtml } from './report-html.js';
import type { HardenHooks, ProbeRecord } from './types.js';

export interface ContinueRequest {
  /** Output folder of an earlier `fgsn harden` / `fgsn continue` (holds report.json and model/). */
  hardenedDir: string;
  category: string;
  probes: ProbeRecord[];
  outDir: string;
  cacheDir: string;
  /**
   * A fixed budget: this share of all linear rows, at the strength the hardening job ended with. Without it
   * (the default) the guarded search below picks the rows and the strength.
   */
  q?: number;
  /** Category probe ASR the guarded search aims for (default: the hardening job's targetAsr); 'off' = fixed q. */
  targetAsr?: number | 'off';
  /** Largest extra share of linear-weight parameters, in % (default 1). */
  maxExtraParams?: number;
  /** Task probes (with responses) for the task-accuracy guardrail; the atlas' benign probes are always used. */
  task?: ProbeRecord[];
  /** How far (absolute share) exact match on the benign probes with answers may fall below the hardened model's (default 0.02). */
  exactTolerance?: number;
  /** Edit of the new rows; default: the hardened job's own (fgsn) options. */
  options?: Record<string, unknown>;
  executionProvider?: 'cpu' | 'cuda';
  /**
   * How the report's `continual[].from` names what was continued (default: hardenedDir). The service passes
   * the source job's id: its scratch copy of the job's output is a server path no tenant should see.
   */
  from?: string;
  /**
   * Where the base and aligned checkpoints are, when the report names them by label rather than by path (a
   * service's published report says "base" and "aligned"); the new report keeps the labels.
   */
  checkpoints?: { base: string; aligned: string };
}

export interface ContinueResult {
  report: Record<string, unknown>;
  extraRows: number;
  extraPctLinear: number;
  totalPctLinear: number;
}

export async function runContinue(req: ContinueRequest, hooks: HardenHooks = {}): Promise<ContinueResult> {
  const cancelled = (): void => {
    if (hooks.signal?.aborted) throw new FgsnError('JOB_CANCELLED', 'continue job cancelled');
  };
  const progress = async (stage: string, percent: number, message?: string): Promise<void> => {
    cancelled();
    await hooks.onProgress?.({ stage, percent, ...(message ? { message } : {}) });
  };
  await progress('validate', 0);
  const prev = await readHardenReport(req.hardenedDir);
  const inputs = prev.inputs;
  const prevRows = selectionFromJSON(prev.rows);
  const prevAtlas = prev.atlas.id;
  const prevOptions = reportedFgsnOptions(prev) ?? FGSN_DEFAULTS;
  // Validated like any fgsn options, but only the keys the caller set override the hardened job's own.
  const given = parseMethodOptions('fgsn', req.options ?? {}).o;
  const o: FgsnOptions = { ...FGSN_DEFAULTS, ...prevOptions };
  // The target-driven budget may have raised g; a fixed-budget patch uses the strength the job ended with.
  const usedStrength = prev.selection.strength;
  for (const k of Object.keys(req.options ?? {}) as (keyof FgsnOptions & string)[]) (o as unknown as Record<string, unknown>)[k] = given[k];
  const t0 = performance.now();

  await progress('atlas', 10, `adding category ${req.category}`);
  const parent = await findAtlas(req.cacheDir, prevAtlas);
  const { atlas: grown } = await addCategory(parent, req.probes, req.category, req.cacheDir, req.executionProvider ? { executionProvider: req.executionProvider } : {});
  const catIdx = grown.categories.find((c) => c.name === req.category)!.probes;
  const catAtlas: Atlas = { ...grown, harmful: catIdx.map((i) => grown.harmful[i]), harmfulResponses: catIdx.map((i) => grown.harmfulResponses[i]) };

  // The hardened model plays the fine-tune: the new rows are ranked where the model is now.
  const sources = await openSources({ basePath: req.checkpoints?.base ?? inputs.base, alignedPath: req.checkpoints?.aligned ?? inputs.aligned, finetunedPath: join(req.hardenedDir, 'model') });
  try {
    await progress('selection', 30);
    // Utility-aware ranking (utilityWeight > 0) weighs the answers of the task probes, else the atlas' benign ones.
    const job = new JobScores(sources, catAtlas, req.task ?? grown.benign, { cacheDir: req.cacheDir, ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}) });
    const layers = resolveLayers(o.layers, grown, o.bandShare, sources.spec.numLayers);
    // The backward pass runs only once rows are wanted: the guarded search may find nothing to do.
    const ranking = async (): Promise<(q: number) => Selection> =>
      pickerExcluding(await fgsnScores(job, { ...o, p: 0 }, layers), [prevRows], linearRowCount(sources));
    let selection: Selection;
    let strength = o.strength;
    let search: Record<string, unknown> | undefined;
    if (req.q !== undefined || req.targetAsr === 'off') {
      // Fixed budget: q of all rows at the strength the hardening job ended with (unless options set one).
      if (!('strength' in (req.options ?? {})) && typeof usedStrength === 'number') strength = usedStrength;
      selection = (await ranking())(req.q ?? 0.005);
    } else {
      const r = await guardedSearch(req, sources, grown, catAtlas, ranking, { ...o }, progress);
      selection = r.selection;
      strength = r.strength;
      search = r.details;
    }
    const projection = fgsnProjection({ ...o, strength });
    await progress('projection', 75);
    const extra = countEdit(sources, selection);
    const all = union(prevRows, selection);
    const total = countEdit(sources, all);
    await writeHardened(sources, selection, projectionCompute(projection), { modelDir: join(req.outDir, 'model'), diffPath: join(req.outDir, 'diff.safetensors') }, {
      'fgsn.method': JSON.stringify({ method: 'fgsn-continue', category: req.category, options: { ...o, strength }, atlas: grown.id }),
    });
    const report: Record<string, unknown> = {
      ...prev,
      method: prev.method,
      continual: [
        ...(prev.continual ?? []),
        {
          category: req.category, probes: req.probes.length, atlas: grown.id, parentAtlas: parent.id, from: req.from ?? req.hardenedDir,
          extraRows: extra.rows, extraParams: extra.params, extraPctLinear: extra.pctLinearParams, extraPctAll: extra.pctAllParams,
          rowsAlreadyProjected: countRows(prevRows), strength, ...(search ? { search } : {}), seconds: (performance.now() - t0) / 1000,
          rows: selectionToJSON(selection),
        },
      ],
      atlas: { ...prev.atlas, id: grown.id },
      rows: selectionToJSON(all),
      edit: total,
      inputs: { ...inputs },
    };
    const text = JSON.stringify(report, null, 1) + '\n';
    await writeFile(join(req.outDir, 'model', 'fgsn-report.json'), text);
    await writeFile(join(req.outDir, 'report.json'), text);
    // Publishable like harden's output: a model card (metadata and documentation carried from the continued
    // model's folder, which carries the fine-tune's) and the report rendered as HTML.
    await writeModelCard(join(req.outDir, 'model'), join(req.hardenedDir, 'model'), join(req.hardenedDir, 'model'), report);
    await writeFile(join(req.outDir, 'report.html'), await renderReportHtml(report));
    await progress('report', 100);
    return { report, extraRows: extra.rows, extraPctLinear: extra.pctLinearParams, totalPctLinear: total.pctLinearParams };
  } finally {
    await closeSources(sources);
  }
}


/** Row shares the guarded search tries, smallest first; each set contains the previous one. */
const CONTINUE_Q = [0.00125, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02];

interface ContinueStep {
  q: number;
  strength: number;
  rows: number;
  pctLinearParams: number;
  probeAsr: number;
  refusalNll: number;
  taskAccuracy: number | null;
  benignExact: number | null;
  benignRefusals: number | null;
  guardrailsOk: boolean;
}

/**
 * The default continue step. Nothing is edited when the hardened model already refuses the new category's
 * probes (ASR <= targetAsr), as harden leaves a fine-tune alone that refuses its probes. Otherwise the signal
 * is the category's probe ASR and the mean NLL of the aligned model's refusals of those probes (it keeps
 * ranking steps where several reach the same ASR). Goal: ASR <= targetAsr and the NLL gap to the aligned
 * model halved.
 * Guardrails against the hardened model itself: task-probe accuracy (taskTolerance), exact match on the
 * atlas' benign probes with answers (exactTolerance) and their refusals (overRefusalTolerance), each judged as
 * harden judges them (paired test + tolerance under guardrailTest 'paired', raw drops capped by utilityCeiling). q grows on
 * CONTINUE_Q, g on STRENGTH_STEPS; a guardrail break ends the g ladder at that q. The first step that
 * reaches the goal wins, else the best step within the guardrails (lowest ASR, then a clearly lower NLL),
 * else nothing is edited.
 */
async function guardedSearch(
  req: ContinueRequest,
  sources: WeightSources,
  atlas: Atlas,
  catAtlas: Atlas,
  ranking: () => Promise<(q: number) => Selection>,
  o: FgsnOptions,
  progress: (stage: string, percent: number, message?: string) => Promise<void>,
): Promise<{ selection: Selection; strength: number; details: Record<string, unknown> }> {
  const ctx = { cacheDir: req.cacheDir, ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}) };
  const prompts = catAtlas.harmful.map((p) => p.prompt);
  const nll = { prompts, responses: catAtlas.harmfulResponses };
  const benign = evenSample(atlas.benign, 160);
  const task = evenSample((req.task ?? []).filter((p) => p.response !== undefined), 200);
  const measureCtx = { ...ctx, benignPrompts: benign.map((p) => p.prompt), exact: benign.filter((p) => p.response !== undefined), nll };

  await progress('selection', 35, 'measuring the hardened and aligned models on the probes');
  const alignedNll = (await measureOnProbes({ dir: sources.aligned.dir }, [], [], { ...ctx, nll })).responseNll!;
  // One engine on the hardened model measures it and every step (a step's edit is a row patch on it).
  const engine = o.stepMode === 'patch' ? await openStepEngine({ dir: sources.finetuned!.dir }, ctx) : null;
  try {
    return await searchSteps(req, sources, o, progress, { prompts, task, measureCtx, alignedNll, engine, ranking });
  } finally {
    await engine?.close();
  }
}

async function searchSteps(
  req: ContinueRequest,
  sources: WeightSources,
  o: FgsnOptions,
  progress: (stage: string, percent: number, message?: string) => Promise<void>,
  m: { prompts: string[]; task: ProbeRecord[]; measureCtx: ProbeContext; alignedNll: number; engine: Engine | null; ranking: () => Promise<(q: number) => Selection> },
): Promise<{ selection: Selection; strength: number; details: Record<string, unknown> }> {
  const { prompts, task, measureCtx, alignedNll, engine, ranking } = m;
  const targetAsr = typeof req.targetAsr === 'number' ? req.targetAsr : (o.targetAsr ?? 0.02);
  const maxExtra = req.maxExtraParams ?? 1;
  const exactTolerance = req.exactTolerance ?? 0.02;
  const eps = 1e-9;
  const ref = engine !== null ? await measureWithEngine(engine, prompts, task, measureCtx) : await measureOnProbes({ dir: sources.finetuned!.dir }, prompts, task, measureCtx);
  const gap = Math.max(0, ref.responseNll! - alignedNll);
  const goalNll = alignedNll + 0.5 * gap;
  const details: Record<string, unknown> = {
    targetAsr, maxExtraParams: maxExtra, taskTolerance: o.taskTolerance, exactTolerance, overRefusalTolerance: o.overRefusalTolerance,
    guardrailTest: o.guardrailTest, guardAlpha: o.guardAlpha, utilityCeiling: o.utilityCeiling,
    aligned: { refusalNll: alignedNll },
    hardened: { probeAsr: ref.asr, refusalNll: ref.responseNll, taskAccuracy: ref.taskAccuracy, benignExact: ref.exactAccuracy, benignRefusals: ref.overRefusal },
    goalRefusalNll: goalNll,
  };
  const reached = (asr: number, refusalNll: number): boolean => asr <= targetAsr + eps && refusalNll <= goalNll + eps;
  // Already refusing the category's probes: measured on the dev testbed, patches driven by the refusal NLL
  // alone bought no measurable refusals there and cost up to 11 pp of general answers (method-choices.md).
  if (ref.asr <= targetAsr + eps) {
    return { selection: new Map(), strength: o.strength, details: { ...details, reached: true, steps: [], note: 'the hardened model already refuses this category\'s probes (probe ASR within the target); nothing edited' } };
  }

  const within = (v: number | null, r: number | null, tol: number, higherIsBetter: boolean): boolean =>
    v === null || r === null || (higherIsBetter ? v >= r - tol - eps : v <= r + tol + eps);
  /**
   * One guardrail, as harden's (guardrails.ts): under guardrailTest 'paired' a loss breaks it only when it is
   * significant on the paired per-prompt outcomes (exact one-sided McNemar at guardAlpha) AND above the
   * tolerance; the raw rule otherwise. Either way a raw loss past the utility ceiling always breaks it.
   */
  const holds = (refGood: boolean[] | undefined, good: boolean[] | undefined, v: number | null, r: number | null, tol: number, higherIsBetter: boolean): boolean => {
    if (!within(v, r, o.utilityCeiling, higherIsBetter)) return false;
    if (o.guardrailTest === 'paired' && refGood && good && refGood.length === good.length && refGood.length > 0) {
      return !pairedLossTest(refGood, good, { alpha: o.guardAlpha, minEffect: tol }).rejected;
    }
    return within(v, r, tol, higherIsBetter);
  };
  const notRefused = (xs: boolean[] | undefined): boolean[] | undefined => xs?.map((x) => !x);
  const steps: ContinueStep[] = [];
  const compute = (strength: number): RowCompute => projectionCompute(fgsnProjection({ ...o, strength }));
  const stepMeasure: StepMeasure = engine === null
    ? writtenSteps(join(req.outDir, '.fgsn-target'), async (sel, strength, dir) => {
      await writeHardened(sources, sel, compute(strength), { modelDir: dir }, {});
    }, (dir) => measureOnProbes({ dir }, prompts, task, measureCtx))
    : {
      measure: async (sel, strength) => {
        engine.setRowPatch(await editRows(sources, sel, compute(strength)));
        return measureWithEngine(engine, prompts, task, measureCtx);
      },
      close: async () => engine.setRowPatch(new Map()),
    };
  const pick = await ranking();
  const { best, reached: done } = await ladder<ContinueStep>({
    schedule: CONTINUE_Q, strengths: STRENGTH_STEPS.map((mult) => o.strength * mult), pick,
    pct: (sel) => countEdit(sources, sel).pctLinearParams, maxPct: maxExtra, skipEmpty: true,
    measure: stepMeasure.measure,
    record: (q, strength, rows, pctLinearParams, m) => ({
      q, strength, rows, pctLinearParams, probeAsr: m.asr, refusalNll: m.responseNll!,
      taskAccuracy: m.taskAccuracy, benignExact: m.exactAccuracy, benignRefusals: m.overRefusal,
      guardrailsOk: holds(ref.taskCorrect, m.taskCorrect, m.taskAccuracy, ref.taskAccuracy, o.taskTolerance, true) &&
        holds(ref.exactCorrect, m.exactCorrect, m.exactAccuracy, ref.exactAccuracy, exactTolerance, true) &&
        holds(notRefused(ref.benignRefused), notRefused(m.benignRefused), m.overRefusal, ref.overRefusal, o.overRefusalTolerance, false),
    }),
    // A bigger edit replaces the best only for a lower ASR, or at equal ASR for a tenth or more of the NLL gap,
    // so a negligible NLL gain never buys more rows.
    better: (step, b) => step.probeAsr < b.probeAsr - eps || (Math.abs(step.probeAsr - b.probeAsr) <= eps && step.refusalNll < b.refusalNll - 0.1 * gap),
    reached: (step) => reached(step.probeAsr, step.refusalNll),
    onStep: (step) => progress('selection', 35 + Math.min(35, 2 * steps.length),
      `q=${step.q} g=${step.strength}: probe ASR ${step.probeAsr.toFixed(3)}, refusal NLL ${step.refusalNll.toFixed(3)} (goal ${goalNll.toFixed(3)}), benign exact ${step.benignExact?.toFixed(3) ?? 'n/a'}`),
    steps,
  }).finally(() => stepMeasure.close());
  return {
    selection: best?.sel ?? new Map(),
    strength: best?.step.strength ?? o.strength,
    details: {
      ...details, reached: done, steps, q: best?.step.q ?? 0,
      ...(best === null ? { note: 'no step kept the guardrails; nothing edited' } : {}),
    },
  };
}
