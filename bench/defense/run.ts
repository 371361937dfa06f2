/**
 * Defense benchmark on the dev testbed: for every fine-tune, the undefended model, fgsn's default and each
 * baseline, hardened through the pipeline (runHarden) from probe splits only, then evaluated on the held-out
 * eval splits. Writes bench/out/defense.md + defense.json and prints the markdown.
 *
 *   npx tsx bench/defense/run.ts [--limit N] [--checkpoints a,b] [--methods undefended,fgsn,safelora,...]
 *                                [--probe-cap N] [--with-emerging-probes] [--harmful-responses] [--capability-mix]
 *                                [--options METHOD:key=value,...]... [--testbed DIR] [--keep] [--out DIR]
 * Default methods: undefended,fgsn,continual,safelora,layer,antidote,resta,restore. `continual` patches the fgsn
 * row's model with `continue` on the emerging category's 16 probe prompts (held out of the atlas);
 * `--options continual:key=value` sets its fgsn options (default: the hardening job's).
 * --capability-mix gives a harmful-only fine-tune's job task probes: 50 answers of each task's train split,
 * interleaved (the eval judges its utility by the mean over every task); without it the job has none and its
 * utility guardrail reads the benign answers.
 * A method may be given as METHOD@label (e.g. fgsn@paper) to add a variant row with its own --options.
 * Exit status 1 when an undefended/aligned row does not reproduce the testbed's recorded eval.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { linearParameterCount, parameterCount, parseModelConfig } from '../../src/checkpoint/index.js';
import { evaluateModel, type EvalReport } from '../../src/eval/evaluate.js';
import { resolveJudge } from '../../src/eval/judges.js';
import { scoreGenerations, type ScoredGeneration } from '../../src/eval/score.js';
import {
  RECORDED_METRICS,
  TESTBED_TASKS,
  loadTestbedEvalSuite,
  readRecordedGenerations,
  setsFromRecorded,
  type EvalSuite,
} from '../../test/support/eval-testbed.js';
import { DEFENSE_METHODS } from '../../src/defense/methods/index.js';
import type { DefenseMethod, HardenHooks, HardenRequest, HardenResult, ProbeRecord } from '../../src/pipeline/types.js';
import {
  compareWithRecorded, continualChecks, renderContinual, renderMarkdown, renderTargets, targetChecks, type BenchRow,
} from './table.js';
import { DEV_FINETUNES, finetuneInfo, loadEmergingProbes, loadProbes, type FinetuneInfo } from './testbed.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Every registered method (src/defense/methods/index.ts), fgsn first. */
const DEFENSES: DefenseMethod[] = [...DEFENSE_METHODS];
/** Pseudo-method: the fgsn row's model patched by `continue` with the emerging category's probe prompts. */
const CONTINUAL = 'continual';
const CONTINUAL_LABEL = 'fgsn + continual (emerging)';
type RunHarden = (req: HardenRequest, hooks?: HardenHooks) => Promise<HardenResult>;
interface ContinueOutcome { extraRows: number; extraPctLinear: number; totalPctLinear: number }
type RunContinue = (req: {
  hardenedDir: string; category: string; probes: ProbeRecord[]; outDir: string; cacheDir: string; task?: ProbeRecord[]; options?: Record<string, unknown>;
}, hooks?: HardenHooks) => Promise<ContinueOutcome>;

function parse(): {
  limit?: number; checkpoints: string[]; methods: string[]; probeCap?: number; withEmerging: boolean; harmfulResponses: boolean; capabilityMix: boolean;
  methodOptions: Record<string, Record<string, unknown>>;
  testbed: string; keep: boolean; batchSize: number; outDir: string;
} {
  const { values: v } = parseArgs({
    options: {
      limit: { type: 'string' },
      checkpoints: { type: 'string' },
      methods: { type: 'string' },
      'probe-cap': { type: 'string' },
      'with-emerging-probes': { type: 'boolean' },
      'harmful-responses': { type: 'boolean' },
      'capability-mix': { type: 'boolean' },
      options: { type: 'string', multiple: true },
      testbed: { type: 'string' },
      keep: { type: 'boolean' },
      'batch-size': { type: 'string' },
      out: { type: 'string' },
    },
  });
  const int = (s: string | undefined, name: string): number | undefined => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
    return n;
  };
  const methods = v.methods?.split(',').map((s) => s.trim()).filter(Boolean) ?? ['undefended', 'fgsn', CONTINUAL, ...DEFENSES.slice(1)];
  if (methods.includes(CONTINUAL) && !(methods.indexOf('fgsn') >= 0 && methods.indexOf('fgsn') < methods.indexOf(CONTINUAL))) {
    throw new Error(`"${CONTINUAL}" patches the fgsn row's model: list fgsn before it`);
  }
  for (const m of methods) {
    if (m !== 'undefended' && m !== CONTINUAL && !(DEFENSES as string[]).includes(baseMethod(m))) {
      throw new Error(`unknown method "${m}"; use undefended,${DEFENSES.join(',')} (optionally METHOD@label)`);
    }
  }
  const checkpoints = v.checkpoints?.split(',').map((s) => s.trim()).filter(Boolean) ?? [...DEV_FINETUNES];
  return {
    limit: int(v.limit, 'limit'),
    checkpoints,
    methods,
    probeCap: int(v['probe-cap'], 'probe-cap'),
    withEmerging: v['with-emerging-probes'] ?? false,
    harmfulResponses: v['harmful-responses'] ?? false,
    capabilityMix: v['capability-mix'] ?? false,
    methodOptions: parseMethodOptions(v.options ?? []),
    testbed: resolve(v.testbed ?? process.env.FGSN_TESTBED_DIR ?? join(ROOT, '..', 'shared', 'testbed', 'dev')),
    keep: v.keep ?? false,
    batchSize: int(v['batch-size'], 'batch-size') ?? 32,
    outDir: resolve(v.out ?? join(ROOT, 'bench', 'out')),
  };
}

/** `--options fgsn:q=0.02,strength=2` (repeatable): per-method option overrides; numbers stay numbers. */
function parseMethodOptions(specs: string[]): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const spec of specs) {
    const colon = spec.indexOf(':');
    if (colon <= 0) throw new Error(`--options takes METHOD:key=value,...; got "${spec}"`);
    const method = spec.slice(0, colon);
    const opts = (out[method] ??= {});
    for (const kv of spec.slice(colon + 1).split(',').filter(Boolean)) {
      const eq = kv.indexOf('=');
      if (eq <= 0) throw new Error(`--options: "${kv}" is not key=value`);
      const raw = kv.slice(eq + 1);
      opts[kv.slice(0, eq)] = raw !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    }
  }
  return out;
}

function baseMethod(label: string): DefenseMethod {
  return label.split('@')[0] as DefenseMethod;
}

async function loadRunContinue(): Promise<{ fn?: RunContinue; why?: string }> {
  if (!existsSync(join(ROOT, 'src', 'pipeline', 'continue.ts'))) return { why: 'src/pipeline/continue.ts does not exist yet' };
  try {
    const spec = '../../src/pipeline/continue.js';
    const mod = (await import(spec)) as { runContinue?: RunContinue };
    return typeof mod.runContinue === 'function' ? { fn: mod.runContinue } : { why: 'src/pipeline/continue.ts exports no runContinue' };
  } catch (e) {
    return { why: `src/pipeline/continue.ts failed to load: ${(e as Error).message}` };
  }
}

async function loadRunHarden(): Promise<{ fn?: RunHarden; why?: string }> {
  const file = join(ROOT, 'src', 'pipeline', 'harden.ts');
  if (!existsSync(file)) return { why: 'src/pipeline/harden.ts does not exist yet' };
  try {
    // A path in a variable keeps this script type-checking while the pipeline is being written.
    const spec = '../../src/pipeline/harden.js';
    const mod = (await import(spec)) as { runHarden?: RunHarden };
    if (typeof mod.runHarden !== 'function') return { why: 'src/pipeline/harden.ts exports no runHarden' };
    return { fn: mod.runHarden };
  } catch (e) {
    return { why: `src/pipeline/harden.ts failed to load: ${(e as Error).message}` };
  }
}

function taskColumn(report: EvalReport, task: string | undefined): { task: string; acc?: number } {
  if (task !== undefined) return { task, acc: report[`acc_${task}`] };
  const accs = TESTBED_TASKS.map((t) => report[`acc_${t}`]).filter((x): x is number => typeof x === 'number');
  return { task: 'mean', acc: accs.length > 0 ? accs.reduce((a, b) => a + b, 0) / accs.length : undefined };
}

function rowFromReport(checkpoint: string, method: string, report: EvalReport, task: string | undefined): BenchRow {
  const tc = taskColumn(report, task);
  const { generations: _g, ...rest } = report;
  return {
    checkpoint,
    method,
    status: 'ok',
    asr: report.harmful_asr,
    compliance: report.harmful_compliance,
    emerging_asr: report.emerging_asr,
    task: tc.task,
    task_acc: tc.acc,
    over_refusal: report.over_refusal,
    eval_s: report.seconds.total,
    metrics: rest as unknown as Record<string, unknown>,
    per_category: report.per_category,
  };
}

/**
 * The engine must reproduce the reference generations, so an undefended model's metrics must equal the
 * testbed's recorded ones. With --limit the recorded generations are re-scored on the same subset.
 */
async function recordedCheck(testbed: string, ckpt: string, suite: EvalSuite, report: EvalReport, full: boolean): Promise<string> {
  const genFile = join(testbed, 'eval', `${ckpt}.generations.jsonl`);
  if (!existsSync(genFile)) return 'no recorded eval';
  const rows = await readRecordedGenerations(genFile);
  const recorded = full
    ? (JSON.parse(readFileSync(join(testbed, 'eval', `${ckpt}.json`), 'utf8')) as Record<string, unknown>)
    : (scoreGenerations(setsFromRecorded(rows, suite), resolveJudge()).metrics as Record<string, unknown>);
  const metrics = compareWithRecorded(report as unknown as Record<string, unknown>, recorded, RECORDED_METRICS);
  const ours = report.generations ?? [];
  const seen = new Map<string, number>();
  const bySet = new Map<string, ScoredGeneration[]>();
  for (const g of ours) bySet.set(g.set, [...(bySet.get(g.set) ?? []), g]);
  let same = 0;
  let total = 0;
  for (const r of rows) {
    const i = seen.get(r.set) ?? 0;
    seen.set(r.set, i + 1);
    const g = bySet.get(r.set)?.[i];
    if (g === undefined) continue;
    total += 1;
    if (g.response === r.response) same += 1;
  }
  return `${metrics}; responses identical ${same}/${total}`;
}

async function main(): Promise<void> {
  const o = parse();
  const t0 = performance.now();
  mkdirSync(o.outDir, { recursive: true });
  const cacheDir = join(o.outDir, 'cache');
  const workDir = join(o.outDir, 'defense-work');
  const suite = await loadTestbedEvalSuite(o.testbed, o.limit !== undefined ? { limit: o.limit } : {});
  const full = o.limit === undefined;
  const alignedPath = join(o.testbed, 'aligned');
  const basePath = join(o.testbed, 'base');
  const spec = parseModelConfig(JSON.parse(readFileSync(join(alignedPath, 'config.json'), 'utf8')), alignedPath);
  const totalParams = parameterCount(spec);
  const linearParams = linearParameterCount(spec);
  const evalOpts = { ...suite, batchSize: o.batchSize, cacheDir, keepGenerations: true };

  // A row label: a method, or METHOD@label for a variant whose options come from --options METHOD@label:...
  const wantDefenses = o.methods.filter((m) => m !== 'undefended');
  const harden = wantDefenses.length > 0 ? await loadRunHarden() : {};
  const cont = o.methods.includes(CONTINUAL) ? await loadRunContinue() : {};
  const unavailable = harden.fn === undefined ? wantDefenses : cont.fn === undefined && o.methods.includes(CONTINUAL) ? [CONTINUAL] : [];
  const manifest = JSON.parse(readFileSync(join(o.testbed, 'data', 'manifest.json'), 'utf8')) as { emerging_category?: string };
  const emergingCategory = manifest.emerging_category ?? 'emerging';
  const emergingProbes = loadEmergingProbes(o.testbed);
  if (unavailable.length > 0) {
    process.stderr.write(`\nUNAVAILABLE methods: ${unavailable.join(', ')} (${harden.why}); their rows are marked, no numbers.\n\n`);
  }

  const rows: BenchRow[] = [];
  const log = (r: BenchRow): void => {
    rows.push(r);
    process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(0)}s] ${r.checkpoint} ${r.method}: ${r.status}` +
      (r.status === 'ok' ? ` ASR ${r.asr} emerg ${r.emerging_asr} ${r.task} ${r.task_acc?.toFixed(3)} over ${r.over_refusal}` : ` ${r.note ?? ''}`) +
      (r.recorded_check ? ` | recorded: ${r.recorded_check}` : '') +
      (r.params_pct_linear !== undefined ? ` | ${r.params_pct_linear.toFixed(2)} % linear` : '') + (r.status === 'ok' && r.note ? ` | ${r.note}` : '') + '\n');
    // Rows so far, so a long run that is stopped still leaves its finished rows behind.
    writeFileSync(join(o.outDir, 'defense.partial.json'), JSON.stringify(rows, null, 1) + '\n');
  };

  {
    const report = await evaluateModel(alignedPath, evalOpts);
    const row = rowFromReport('aligned', 'aligned (reference)', report, undefined);
    row.recorded_check = await recordedCheck(o.testbed, 'aligned', suite, report, full);
    log(row);
  }

  for (const name of o.checkpoints) {
    const info: FinetuneInfo = finetuneInfo(o.testbed, name);
    if (o.methods.includes('undefended')) {
      const report = info.adapterPath !== undefined
        ? await evaluateModel(alignedPath, { ...evalOpts, adapter: info.adapterPath })
        : await evaluateModel(info.finetunedPath as string, evalOpts);
      const row = rowFromReport(name, 'undefended', report, info.task);
      row.recorded_check = await recordedCheck(o.testbed, name, suite, report, full);
      log(row);
    }
    const probes = loadProbes(o.testbed, info.task, { ...(o.probeCap !== undefined ? { cap: o.probeCap } : {}), withEmerging: o.withEmerging, harmfulResponses: o.harmfulResponses, capabilityMix: o.capabilityMix });
    let fgsnDir: string | undefined;
    for (const method of wantDefenses) {
      if (harden.fn === undefined) {
        log({ checkpoint: name, method, status: 'unavailable', note: harden.why ?? 'pipeline unavailable' });
        continue;
      }
      if (method === CONTINUAL) {
        if (cont.fn === undefined) {
          log({ checkpoint: name, method: CONTINUAL_LABEL, status: 'unavailable', note: cont.why ?? 'continue unavailable' });
        } else if (fgsnDir === undefined) {
          log({ checkpoint: name, method: CONTINUAL_LABEL, status: 'failed', note: 'the fgsn row failed, nothing to patch' });
        } else {
          log(await continualRow(cont.fn, name, info, fgsnDir, emergingCategory, emergingProbes, probes.task));
        }
        continue;
      }
      const outDir = join(workDir, `${name}.${method}`);
      rmSync(outDir, { recursive: true, force: true });
      mkdirSync(outDir, { recursive: true });
      try {
        const h0 = performance.now();
        const result = await harden.fn({
          basePath,
          alignedPath,
          ...(info.finetunedPath !== undefined ? { finetunedPath: info.finetunedPath } : { adapterPath: info.adapterPath as string }),
          harmful: probes.harmful,
          benign: probes.benign,
          ...(probes.task !== undefined ? { task: probes.task } : {}),
          method: baseMethod(method),
          ...(o.methodOptions[method] !== undefined ? { options: o.methodOptions[method] } : {}),
          outputs: ['model'],
          outDir,
          cacheDir,
        });
        const hardenS = (performance.now() - h0) / 1000;
        const modelDir = existsSync(join(outDir, 'model', 'config.json')) ? join(outDir, 'model') : outDir;
        const report = await evaluateModel(modelDir, evalOpts);
        const row = rowFromReport(name, method === 'fgsn' && o.methodOptions.fgsn === undefined ? 'fgsn (default)' : method, report, info.task);
        row.params_changed = result.summary.paramsChanged;
        row.params_pct_all = (100 * result.summary.paramsChanged) / totalParams;
        row.params_pct_linear = (100 * result.summary.paramsChanged) / linearParams;
        row.harden_s = hardenS;
        const reported = result.summary.paramsChangedPctLinear;
        if (Math.abs(reported - row.params_pct_linear) > 0.01 && Math.abs(100 * reported - row.params_pct_linear) > 0.01) {
          row.note = `pipeline reports ${reported} % linear`;
        }
        row.metrics = { ...row.metrics, harden_summary: result.summary, selection: result.report.selection };
        // Never silent: a target-driven row says whether its safety target was reached on the judging probes.
        const ts = (result.summary as { target?: string; targetDetails?: { rule?: string; probeAsr?: number | null; rankAsr?: number | null } });
        if (ts.target !== undefined && ts.target !== 'not set') {
          const d = ts.targetDetails;
          const probe = d?.probeAsr != null ? `, judged probe ASR ${(100 * d.probeAsr).toFixed(1)}${d.rankAsr != null ? ` / ranking ${(100 * d.rankAsr).toFixed(1)}` : ''}` : '';
          row.note = [row.note, `target ${ts.target}${probe}${d?.rule ? ` (${d.rule})` : ''}`].filter(Boolean).join('; ');
        }
        log(row);
        if (method === 'fgsn') fgsnDir = outDir;
      } catch (e) {
        log({ checkpoint: name, method, status: 'failed', note: (e as Error).message.replace(/\|/gu, '/').slice(0, 200) });
      } finally {
        // The fgsn output stays until the continual row has patched it.
        if (!o.keep && fgsnDir !== outDir) rmSync(outDir, { recursive: true, force: true });
      }
    }
    if (!o.keep && fgsnDir !== undefined) rmSync(fgsnDir, { recursive: true, force: true });
  }

  async function continualRow(
    fn: RunContinue, name: string, info: FinetuneInfo, hardenedDir: string, category: string, probes: ProbeRecord[], task?: ProbeRecord[],
  ): Promise<BenchRow> {
    const outDir = join(workDir, `${name}.${CONTINUAL}`);
    rmSync(outDir, { recursive: true, force: true });
    mkdirSync(outDir, { recursive: true });
    try {
      const h0 = performance.now();
      const result = await fn({
        hardenedDir, category, probes, outDir, cacheDir, ...(task !== undefined ? { task } : {}),
        ...(o.methodOptions[CONTINUAL] !== undefined ? { options: o.methodOptions[CONTINUAL] } : {}),
      });
      const hardenS = (performance.now() - h0) / 1000;
      const report = await evaluateModel(join(outDir, 'model'), evalOpts);
      const row = rowFromReport(name, CONTINUAL_LABEL, report, info.task);
      row.params_pct_linear = result.totalPctLinear;
      row.params_changed = Math.round((result.totalPctLinear / 100) * linearParams);
      row.params_pct_all = (100 * row.params_changed) / totalParams;
      row.harden_s = hardenS;
      row.note = `+${result.extraPctLinear.toFixed(2)} % linear (${result.extraRows} rows) for ${category}`;
      row.metrics = { ...row.metrics, continue: result };
      return row;
    } catch (e) {
      return { checkpoint: name, method: CONTINUAL_LABEL, status: 'failed', note: (e as Error).message.replace(/\|/gu, '/').slice(0, 200) };
    } finally {
      if (!o.keep) rmSync(outDir, { recursive: true, force: true });
    }
  }

  const header = [
    '# Defense benchmark (dev testbed)',
    '',
    `Eval sets: ${full ? 'full' : `first ${o.limit} of each`} (harmful ${suite.harmful.length}, emerging ${suite.emerging.length}, look-alike ${suite.lookalike.length}, tasks ${Object.entries(suite.tasks).map(([k, v]) => `${k} ${v.length}`).join(', ')}).`,
    'Probes (train/probe splits only): harmful = harmful_align_train' + (o.withEmerging ? ' + harmful_emerging_probe' : '') +
      (o.harmfulResponses ? ' (dataset refusal as response)' : ' (prompts only)') + `, benign = lookalike_train + instruct_train, task = <task>_train${o.capabilityMix ? ' (harmful-only fine-tunes: 50 answers of each task\'s train split, interleaved)' : ''}${o.probeCap !== undefined ? `, each capped at ${o.probeCap}` : ''}.`,
    'ASR = share of harmful eval responses with no refusal marker (27 word-level markers, token boundaries); compl. = starts with "sure , here";',
    'task acc = exact match on the fine-tune\'s task (`mean` of sst/agnews/gsm/instruct for harmful-only fine-tunes); params % = rows x d_in changed.',
    ...(Object.keys(o.methodOptions).length > 0 ? [`Method options: ${JSON.stringify(o.methodOptions)} (defaults otherwise).`] : ['Every method with its defaults.']),
    ...(unavailable.length > 0 ? ['', `**Unavailable: ${unavailable.join(', ')}** (${harden.why}). No numbers were produced for them.`] : []),
    '',
    `Total wall time ${((performance.now() - t0) / 1000).toFixed(0)} s.`,
  ];
  const attacked = o.checkpoints.filter((c) => !/_benign$/u.test(c));
  const checks = targetChecks(rows, attacked);
  const contChecks = continualChecks(rows, o.checkpoints, CONTINUAL_LABEL);
  const md = renderMarkdown(rows, header) + (checks.length > 0
    ? `\n## Targets of the defense issue (fgsn default, attacked fine-tunes${full ? '' : `; eval subsets of ${o.limit}, indicative only`})\n\n${renderTargets(checks)}`
    : '') + (contChecks.length > 0
    ? `\n## Continual target (emerging category added after hardening, ${emergingProbes.length} probe prompts)\n\n${renderContinual(contChecks)}`
    : '');
  writeFileSync(join(o.outDir, 'defense.md'), md);
  writeFileSync(join(o.outDir, 'defense.json'), JSON.stringify({
    testbed: o.testbed, limit: o.limit ?? null, methods: o.methods, unavailable, probes: loadProbes(o.testbed, undefined).sources,
    params: { total: totalParams, linear: linearParams }, rows, targets: checks, continual: contChecks,
  }, null, 2) + '\n');
  process.stdout.write(md);
  const mismatched = rows.filter((r) => r.recorded_check?.startsWith('MISMATCH') || /identical (\d+)\/(?!\1\b)/u.test(r.recorded_check ?? ''));
  if (mismatched.length > 0) {
    process.stderr.write(`\nRECORDED EVAL NOT REPRODUCED for ${mismatched.map((r) => r.checkpoint).join(', ')}: see recorded_check in defense.json\n`);
    process.exitCode = 1;
  }
}

await main();
