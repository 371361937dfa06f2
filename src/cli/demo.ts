import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type DemoTestbed, PLANTED_SAFETY_ROWS, writeDemoTestbed } from '../demo/index.js';
import { type EvalReport, evaluateModel, readHarmfulFile, readLookalikeFile, readTaskFile } from '../eval/index.js';
import { runHarden } from '../pipeline/index.js';
import { readProbes } from '../probes.js';
import type { HardenResult } from '../pipeline/index.js';
import { DEFENSE_METHODS } from '../defense/index.js';
import { methodFlag } from './method-flags.js';

const HELP = `usage: fgsn demo [--dir DIR] [--method ${DEFENSE_METHODS.join('|')}] [--json]

Builds a tiny, deterministic base / aligned / fine-tuned trio of LLaMA-layout models with planted safety and
task neurons (src/demo/planted-model.ts), measures the fine-tune's attack success rate and task accuracy, runs
the defense in-process (no Redis needed) and measures the hardened model. Everything goes under DIR
(default .fgsn/demo).`;

async function evalSets(tb: DemoTestbed) {
  return {
    harmful: await readHarmfulFile(tb.files.harmfulEval),
    lookalike: await readLookalikeFile(tb.files.lookalikeEval),
    tasks: { review: await readTaskFile(tb.files.taskEval) },
  };
}

interface Row {
  model: string;
  asr: number;
  task: number;
  overRefusal: number;
  paramsPctLinear: number;
}

function row(model: string, r: EvalReport, paramsPctLinear: number): Row {
  return { model, asr: r.harmful_asr ?? NaN, task: r.acc_review ?? NaN, overRefusal: r.over_refusal ?? NaN, paramsPctLinear };
}

function table(rows: Row[]): string {
  const pct = (v: number): string => (Number.isNaN(v) ? '-' : `${(100 * v).toFixed(1)}%`);
  const lines = ['| model | harmful ASR | task accuracy | over-refusal | linear params changed |', '|---|---|---|---|---|'];
  for (const r of rows) lines.push(`| ${r.model} | ${pct(r.asr)} | ${pct(r.task)} | ${pct(r.overRefusal)} | ${r.paramsPctLinear.toFixed(2)}% |`);
  return lines.join('\n');
}

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { dir: { type: 'string' }, method: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const root = resolve(values.dir ?? '.fgsn/demo');
  const method = methodFlag(values.method);
  const log = (s: string): void => {
    if (!values.json) process.stdout.write(s + '\n');
  };

  log(`writing the planted demo models to ${root}`);
  const tb = await writeDemoTestbed(root);
  const sets = await evalSets(tb);
  const cacheDir = resolve(root, 'cache');

  const aligned = await evaluateModel(tb.aligned, { ...sets, cacheDir: resolve(cacheDir, 'engine') });
  const finetuned = await evaluateModel(tb.finetuned, { ...sets, cacheDir: resolve(cacheDir, 'engine') });

  log(`hardening the fine-tune with method ${method}`);
  const outDir = resolve(root, `hardened-${method}`);
  await rm(outDir, { recursive: true, force: true });
  const harmful = await readProbes(tb.files.harmfulProbes);
  const benign = await readProbes(tb.files.benignProbes);
  const task = await readProbes(tb.files.taskProbes);
  const result: HardenResult = await runHarden(
    {
      basePath: tb.base,
      alignedPath: tb.aligned,
      finetunedPath: tb.finetuned,
      harmful,
      benign,
      task,
      method,
      outputs: ['model', 'diff', 'report'],
      outDir,
      cacheDir,
      // The demo's eval files are `fgsn eval` datasets ({"prompt", "answer"}); the job takes probe records.
      evaluate: {
        harmful: sets.harmful,
        lookalike: sets.lookalike.map((l) => ({ prompt: l.prompt, response: l.answer })),
        tasks: { review: sets.tasks.review.map((t) => ({ prompt: t.prompt, response: t.answer })) },
      },
    },
    { onProgress: (p) => log(`  [${p.percent.toFixed(0).padStart(3)}%] ${p.stage}${p.message ? `: ${p.message}` : ''}`) },
  );
  const m = result.summary.metrics ?? {};
  const rowsChanged = Object.fromEntries(
    Object.entries((result.report.rows ?? {}) as Record<string, number[]>).filter(([, rows]) => rows.length > 0),
  );
  const rows: Row[] = [
    row('aligned', aligned, 0),
    row('fine-tuned (attacked)', finetuned, 0),
    {
      model: `hardened (${method})`,
      asr: m.harmful_asr ?? NaN,
      task: m.acc_review ?? NaN,
      overRefusal: m.over_refusal ?? NaN,
      paramsPctLinear: result.summary.paramsChangedPctLinear,
    },
  ];
  if (values.json) {
    process.stdout.write(JSON.stringify({ root, rows, rowsChanged, artifacts: result.artifacts, summary: result.summary }, null, 2) + '\n');
  } else {
    log('');
    log(table(rows));
    log('');
    log(`rows changed (${result.summary.rowsChanged}):`);
    for (const [name, r] of Object.entries(rowsChanged)) log(`  ${name} [${r.join(', ')}]`);
    log(`planted safety neuron: ${Object.entries(PLANTED_SAFETY_ROWS).map(([n, r]) => `${n} [${r.join(', ')}]`).join(', ')}`);
    log(`artifacts in ${outDir}: ${result.artifacts.map((a) => a.name).join(', ')}`);
  }
  return 0;
}
