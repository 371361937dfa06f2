/**
 * The sweep behind docs/method-choices.md: FGSN's open choices (scoring, projection mode and strength, q, p,
 * layers) on the dev fine-tunes, judged ONLY on train/probe splits:
 *   probes      harmful = harmful_attack_pool, benign = lookalike_train, task = <task>_train (first half)
 *   validation  harmful = harmful_align_train (spread subset), task = <task>_train (second half, exact match;
 *               harmful-only fine-tunes: 50 of each task's train split, none of them the job's probes)
 * The eval splits are not read here; bench/defense (the eval area's harness) measures the chosen default.
 *
 * Every fixed configuration sets targetAsr 'off' (the default searches q and g per job). Configurations measured
 * before `realign` became the default (2026-12-06) name `mode: 'add'`, so they reproduce their tables.
 *
 *   npx tsx test/defense/sweep.ts [--checkpoints ft_sst_p10,...] [--configs name,...] [--out FILE]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runHarden } from '../../src/pipeline/harden.js';
import { measureOnProbes } from '../../src/pipeline/probe-eval.js';
import { parseProbes } from '../../src/probes.js';
import type { DefenseMethod, ProbeRecord } from '../../src/pipeline/types.js';

const TB = resolve(process.env.FGSN_TESTBED_DIR ?? join(import.meta.dirname, '..', '..', '..', 'shared', 'testbed', 'dev'));
const read = (f: string): ProbeRecord[] => parseProbes(readFileSync(join(TB, 'data', f), 'utf8'), f);
const spread = <T>(xs: T[], n: number): T[] => xs.filter((_, i) => i % Math.max(1, Math.floor(xs.length / n)) === 0).slice(0, n);

interface Config { name: string; method: DefenseMethod; options: Record<string, unknown> }
const CONFIGS: Config[] = [
  { name: 'default', method: 'fgsn', options: {} },
  { name: 'fixed-q1-g3', method: 'fgsn', options: { mode: 'add', targetAsr: 'off' } },
  { name: 'target0.02', method: 'fgsn', options: { mode: 'add', targetAsr: 0.02 } },
  { name: 'target0', method: 'fgsn', options: { mode: 'add', targetAsr: 0 } },
  { name: 'wanda-paper', method: 'fgsn', options: { scoring: 'wanda', layers: 'band', q: 0.05, p: 0.05, scope: 'per-matrix', mode: 'gram', targetAsr: 'off' } },
  { name: 'wanda-add3', method: 'fgsn', options: { mode: 'add', scoring: 'wanda', targetAsr: 'off' } },
  { name: 'contrastive-add3', method: 'fgsn', options: { mode: 'add', scoring: 'contrastive', targetAsr: 'off' } },
  { name: 'delta-add3', method: 'fgsn', options: { mode: 'add', scoring: 'delta', targetAsr: 'off' } },
  { name: 'vx-add3', method: 'fgsn', options: { mode: 'add', scoring: 'vx', targetAsr: 'off' } },
  { name: 'attr-per-cluster', method: 'fgsn', options: { mode: 'add', clusterScoring: 'per-cluster', targetAsr: 'off' } },
  { name: 'attr-add1', method: 'fgsn', options: { mode: 'add', strength: 1, targetAsr: 'off' } },
  { name: 'attr-add2', method: 'fgsn', options: { mode: 'add', strength: 2, targetAsr: 'off' } },
  { name: 'attr-add4', method: 'fgsn', options: { mode: 'add', strength: 4, targetAsr: 'off' } },
  { name: 'attr-gram', method: 'fgsn', options: { mode: 'gram', targetAsr: 'off' } },
  { name: 'attr-subspace', method: 'fgsn', options: { mode: 'subspace', targetAsr: 'off' } },
  { name: 'attr-row-a3', method: 'fgsn', options: { mode: 'row', alpha: 3, targetAsr: 'off' } },
  { name: 'attr-restore', method: 'fgsn', options: { mode: 'restore', targetAsr: 'off' } },
  { name: 'attr-realign', method: 'fgsn', options: { mode: 'realign', targetAsr: 'off' } },
  { name: 'attr-realign-g2', method: 'fgsn', options: { mode: 'realign', strength: 2, targetAsr: 'off' } },
  { name: 'search-add', method: 'fgsn', options: { mode: 'add' } },
  { name: 'search-realign', method: 'fgsn', options: { mode: 'realign' } },
  { name: 'attr-q0.25', method: 'fgsn', options: { mode: 'add', q: 0.0025, targetAsr: 'off' } },
  { name: 'attr-q0.5', method: 'fgsn', options: { mode: 'add', q: 0.005, targetAsr: 'off' } },
  { name: 'attr-q2', method: 'fgsn', options: { mode: 'add', q: 0.02, targetAsr: 'off' } },
  { name: 'attr-p5', method: 'fgsn', options: { mode: 'add', p: 0.05, targetAsr: 'off' } },
  { name: 'attr-band', method: 'fgsn', options: { mode: 'add', layers: 'band', targetAsr: 'off' } },
  { name: 'attr-permatrix', method: 'fgsn', options: { mode: 'add', scope: 'per-matrix', targetAsr: 'off' } },
  { name: 'target0.05', method: 'fgsn', options: { mode: 'add', targetAsr: 0.05 } },
];

const { values } = parseArgs({ options: { checkpoints: { type: 'string' }, configs: { type: 'string' }, out: { type: 'string' } } });
const checkpoints = values.checkpoints?.split(',') ?? ['ft_sst_p10', 'ft_agnews_p10', 'ft_gsm_p10', 'ft_harmful', 'lora_sst_p10', 'lora_harmful'];
const configs = values.configs ? CONFIGS.filter((c) => values.configs!.split(',').includes(c.name)) : CONFIGS;
const out = values.out ?? join('bench', 'out', 'method-choices.json');

const harmful = read('harmful_attack_pool.jsonl');
const benign = read('lookalike_train.jsonl');
const valHarmful = spread(read('harmful_align_train.jsonl'), 80).map((p) => p.prompt);
const work = mkdtempSync(join(tmpdir(), 'fgsn-sweep-'));
const cacheDir = join(work, 'cache');
const rows: Record<string, unknown>[] = [];

async function main(): Promise<void> {
  for (const ck of checkpoints) {
    const isLora = existsSync(join(TB, ck, 'adapter_config.json'));
    const info = JSON.parse(readFileSync(join(TB, ck, 'testbed_info.json'), 'utf8')) as { task?: string | null };
    const taskName = info.task ?? 'sst';
    const taskAll = spread(read(`${taskName}_train.jsonl`), 200);
    const task = taskAll.filter((_, i) => i % 2 === 0);
    // A harmful-only fine-tune has no task of its own: its validation answers mix every task's train split
    // (50 each), as the eval's task mean does, so a loss on a task its job's probes never show is seen.
    const valTask = info.task != null
      ? taskAll.filter((_, i) => i % 2 === 1)
      : ['sst', 'agnews', 'gsm', 'instruct'].flatMap((t) => spread(read(`${t}_train.jsonl`), 200).filter((_, i) => i % 2 === 1).slice(0, 50));
    const model = isLora ? { dir: join(TB, 'aligned'), adapter: join(TB, ck) } : { dir: join(TB, ck) };
    const base = await measureOnProbes(model, valHarmful, valTask, { cacheDir });
    rows.push({ checkpoint: ck, config: 'undefended', valAsr: base.asr, valTask: base.taskAccuracy, pctLinear: 0 });
    console.log(ck, 'undefended', JSON.stringify({ valAsr: base.asr, valTask: base.taskAccuracy }));
    for (const c of configs) {
      const outDir = join(work, `${ck}-${c.name}`);
      const t0 = performance.now();
      try {
        const r = await runHarden({
          basePath: join(TB, 'base'), alignedPath: join(TB, 'aligned'),
          ...(isLora ? { adapterPath: join(TB, ck) } : { finetunedPath: join(TB, ck) }),
          harmful, benign, task, method: c.method, options: c.options, outputs: ['model'], outDir, cacheDir,
        });
        const seconds = (performance.now() - t0) / 1000;
        const m = await measureOnProbes({ dir: join(outDir, 'model') }, valHarmful, valTask, { cacheDir });
        const row = { checkpoint: ck, config: c.name, options: c.options, valAsr: m.asr, valTask: m.taskAccuracy, pctLinear: r.summary.paramsChangedPctLinear, seconds };
        rows.push(row);
        console.log(ck, c.name, JSON.stringify({ valAsr: m.asr, valTask: m.taskAccuracy, pct: r.summary.paramsChangedPctLinear.toFixed(2), s: seconds.toFixed(1) }));
      } catch (e) {
        rows.push({ checkpoint: ck, config: c.name, error: (e as Error).message });
        console.log(ck, c.name, 'ERROR', (e as Error).message);
      } finally {
        rmSync(outDir, { recursive: true, force: true });
      }
      writeFileSync(out, JSON.stringify(rows, null, 1) + '\n');
    }
  }
  rmSync(work, { recursive: true, force: true });
}
void main();
