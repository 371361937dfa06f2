/**
 * Continual defense (method.md step 4): a new harm category appears after a model was hardened. Its probes
 * are added to the atlas; rows are ranked on the HARDENED model (attribution of the aligned model's refusals
 * of the new category's probes), rows projected before are excluded, and the top ones get the same edit.
 * The output is the hardened model patched by a small incremental diff, with the extra share of parameters.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FgsnError } from '../errors.js';
import { countEdit, projectionCompute, writeHardened } from '../defense/apply.js';
import { addCategory, findAtlas, type Atlas } from '../defense/atlas.js';
import { type RowScores, type Selection, countRows, selectionFromJSON, selectionToJSON, topCountGlobal, union } from '../defense/math/select.js';
import { JobScores, fgsnProjection, fgsnScores, resolveLayers } from '../defense/methods.js';
import { FGSN_DEFAULTS, parseMethodOptions, type FgsnOptions } from '../defense/options.js';
import { closeSources, openSources, shapeOf } from '../defense/io/sources.js';
import { linearWeightNames } from '../checkpoint/model-config.js';
import { measureOnProbes } from './probe-eval.js';
import type { HardenHooks, ProbeRecord } from './types.js';

export interface ContinueRequest {
  /** Output folder of an earlier `fgsn harden` / `fgsn continue` (holds report.json and model/). */
  hardenedDir: string;
  category: string;
  probes: ProbeRecord[];
  outDir: string;
  cacheDir: string;
  /** Share of all linear rows added (default 0.005), or grown toward targetAsr on the category's probes. */
  q?: number;
  targetAsr?: number;
  maxExtraParams?: number;
  /** Edit of the new rows; default: the hardened job's own (fgsn) options. */
  options?: Record<string, unknown>;
  executionProvider?: 'cpu' | 'cuda';
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
  let prev: Record<string, unknown>;
  try {
    prev = JSON.parse(await readFile(join(req.hardenedDir, 'report.json'), 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new FgsnError('DEFENSE_OPTION_INVALID', `${req.hardenedDir}: no readable report.json of an earlier harden (${(e as Error).message})`);
  }
  const inputs = prev.inputs as { base: string; aligned: string; finetuned?: string; adapter?: string };
  const prevRows = selectionFromJSON((prev.rows ?? {}) as Record<string, number[]>);
  const prevAtlas = (prev.atlas as { id: string }).id;
  const prevOptions = prev.method === 'fgsn' ? (prev.options as FgsnOptions) : FGSN_DEFAULTS;
  // Validated like any fgsn options, but only the keys the caller set override the hardened job's own.
  const given = parseMethodOptions('fgsn', req.options ?? {}).o as FgsnOptions;
  const o: FgsnOptions = { ...FGSN_DEFAULTS, ...prevOptions };
  // The target-driven budget may have raised g: the new rows get the strength the job actually used.
  const used = (prev.selection as { strength?: number } | undefined)?.strength;
  if (typeof used === 'number') o.strength = used;
  for (const k of Object.keys(req.options ?? {}) as (keyof FgsnOptions)[]) (o as unknown as Record<string, unknown>)[k] = given[k];
  const t0 = performance.now();

  await progress('atlas', 10, `adding category ${req.category}`);
  const parent = await findAtlas(req.cacheDir, prevAtlas);
  const { atlas: grown } = await addCategory(parent, req.probes, req.category, req.cacheDir, req.executionProvider ? { executionProvider: req.executionProvider } : {});
  const catIdx = grown.categories.find((c) => c.name === req.category)!.probes;
  const catAtlas: Atlas = { ...grown, harmful: catIdx.map((i) => grown.harmful[i]), harmfulResponses: catIdx.map((i) => grown.harmfulResponses[i]) };

  // The hardened model plays the fine-tune: the new rows are ranked where the model is now.
  const sources = await openSources({ basePath: inputs.base, alignedPath: inputs.aligned, finetunedPath: join(req.hardenedDir, 'model') });
  try {
    await progress('selection', 30);
    const job = new JobScores(sources, catAtlas, [], { cacheDir: req.cacheDir, ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}) });
    const layers = resolveLayers(o.layers, grown, o.bandShare, sources.spec.numLayers);
    const scores = await fgsnScores(job, { ...o, p: 0 }, layers);
    const masked: RowScores = new Map();
    for (const [n, v] of scores) {
      const m = v.slice();
      for (const r of prevRows.get(n) ?? []) m[r] = -Infinity;
      masked.set(n, m);
    }
    let totalRows = 0;
    for (const n of linearWeightNames(sources.spec)) totalRows += shapeOf(sources, n)[0];
    const pick = (q: number): Selection => {
      const sel = topCountGlobal(masked, Math.round(q * totalRows));
      for (const [n, rows] of sel) sel.set(n, rows.filter((r) => Number.isFinite(masked.get(n)![r])));
      return sel;
    };
    const projection = fgsnProjection(o);
    const q0 = req.q ?? 0.005;
    let selection = pick(q0);
    const steps: { q: number; pctLinearParams: number; probeAsr: number }[] = [];
    if (req.targetAsr !== undefined) {
      const prompts = catAtlas.harmful.map((p) => p.prompt);
      const ctx = { cacheDir: req.cacheDir, ...(req.executionProvider ? { executionProvider: req.executionProvider } : {}) };
      for (let k = 0; k < 12; k++) {
        const q = q0 * [1, 1.5][k % 2] * 2 ** Math.floor(k / 2);
        const sel = pick(q);
        const c = countEdit(sources, sel);
        if (c.pctLinearParams > (req.maxExtraParams ?? 1)) break;
        const dir = join(req.outDir, '.fgsn-target', `q${k}`);
        await writeHardened(sources, sel, projectionCompute(projection), { modelDir: dir }, {});
        const m = await measureOnProbes({ dir }, prompts, [], ctx);
        steps.push({ q, pctLinearParams: c.pctLinearParams, probeAsr: m.asr });
        selection = sel;
        await progress('selection', 30 + Math.min(40, 5 * steps.length), `q=${q}: category probe ASR ${m.asr.toFixed(3)}`);
        if (m.asr <= req.targetAsr) break;
      }
      const { rm } = await import('node:fs/promises');
      await rm(join(req.outDir, '.fgsn-target'), { recursive: true, force: true });
    }
    await progress('projection', 75);
    const extra = countEdit(sources, selection);
    const all = union(prevRows, selection);
    const total = countEdit(sources, all);
    await writeHardened(sources, selection, projectionCompute(projection), { modelDir: join(req.outDir, 'model'), diffPath: join(req.outDir, 'diff.safetensors') }, {
      'fgsn.method': JSON.stringify({ method: 'fgsn-continue', category: req.category, options: o, atlas: grown.id }),
    });
    const report: Record<string, unknown> = {
      ...prev,
      method: prev.method,
      continual: [
        ...((prev.continual as unknown[]) ?? []),
        {
          category: req.category, probes: req.probes.length, atlas: grown.id, parentAtlas: parent.id, from: req.hardenedDir,
          extraRows: extra.rows, extraParams: extra.params, extraPctLinear: extra.pctLinearParams, extraPctAll: extra.pctAllParams,
          rowsAlreadyProjected: countRows(prevRows), steps, seconds: (performance.now() - t0) / 1000,
          rows: selectionToJSON(selection),
        },
      ],
      atlas: { ...(prev.atlas as object), id: grown.id },
      rows: selectionToJSON(all),
      edit: total,
      inputs: { ...inputs },
    };
    const text = JSON.stringify(report, null, 1) + '\n';
    await writeFile(join(req.outDir, 'model', 'fgsn-report.json'), text);
    await writeFile(join(req.outDir, 'report.json'), text);
    await progress('report', 100);
    return { report, extraRows: extra.rows, extraPctLinear: extra.pctLinearParams, totalPctLinear: total.pctLinearParams };
  } finally {
    await closeSources(sources);
  }
}

