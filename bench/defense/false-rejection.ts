/**
 * How often does a guardrail reject a step for a loss that is not there? On the dev testbed, per fine-tune:
 * a few fixed-budget fgsn steps (hardened through runHarden, `targetAsr=off`) and the fine-tune are scored
 * prompt by prompt on a POOL of train-split probes (the guardrail's own kind of probes, more of them than a
 * job sees). Then the probes are bootstrapped: draws of `--size` prompts (a job's guardrail sample) from
 *  - the NULL population: every discordant pair's direction flipped at random (same churn, no real loss);
 *    the share of draws a rule rejects is its false-rejection rate at this churn;
 *  - the population as measured: the share of draws a rule rejects at the step's real effect.
 * Rules: the earlier one (raw drop > 1 pp) and the paired one (exact one-sided McNemar at alpha 0.05 and a
 * net loss > 1 pp), on task exact match (benign answers for the harmful-only fine-tunes) and on benign
 * refusals (look-alike prompts, tolerance 2 pp). Also printed: each step's rise of the teacher-forced NLL of
 * the reference answers on the pool (nats/token), to size nllTolerance. Train splits only.
 *
 *   npx tsx bench/defense/false-rejection.ts [--checkpoints lora_harmful,ft_harmful] [--steps 0.005:3,0.01:3,0.01:6]
 *                                             [--size 200] [--draws 4000] [--pool 400] [--out DIR]
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getOrBuildAtlas } from '../../src/defense/atlas.js';
import { bootstrapRejectionRate, mostFrequent, pairedCounts, pairedLossTest, rawDropRejects } from '../../src/pipeline/guardrails.js';
import { runHarden } from '../../src/pipeline/harden.js';
import { measureOnProbes, type ProbeMetrics } from '../../src/pipeline/probe-eval.js';
import { evenSample } from '../../src/util/sample.js';
import { mulberry32 } from '../../src/util/prng.js';
import { finetuneInfo, loadProbes } from './testbed.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: v } = parseArgs({
  options: {
    checkpoints: { type: 'string' }, steps: { type: 'string' }, size: { type: 'string' }, draws: { type: 'string' }, pool: { type: 'string' },
    out: { type: 'string' }, testbed: { type: 'string' },
  },
});
const testbed = resolve(v.testbed ?? process.env.FGSN_TESTBED_DIR ?? join(ROOT, '..', 'shared', 'testbed', 'dev'));
const checkpoints = (v.checkpoints ?? 'lora_harmful,ft_harmful').split(',').filter(Boolean);
const steps = (v.steps ?? '0.005:3,0.01:3,0.01:6').split(',').map((s) => s.split(':').map(Number) as [number, number]);
const size = Number(v.size ?? 200);
const draws = Number(v.draws ?? 4000);
const poolSize = Number(v.pool ?? 400);
const outDir = resolve(v.out ?? join(ROOT, 'bench', 'out', 'false-rejection'));
mkdirSync(outDir, { recursive: true });
const cacheDir = join(outDir, 'cache');

const TASK_TOL = 0.01;
const REFUSAL_TOL = 0.02;
const ALPHA = 0.05;

interface Line { checkpoint: string; step: string; guard: string; pool: number; losses: number; gains: number; effectPp: number; rawNull: number; pairedNull: number; rawReal: number; pairedReal: number }
const lines: Line[] = [];
const nllLines: string[] = [];

function rates(checkpoint: string, step: string, guard: string, ref: boolean[], cand: boolean[], tol: number): Line {
  const raw = (a: boolean[], b: boolean[]): boolean => rawDropRejects(a, b, tol);
  const paired = (a: boolean[], b: boolean[]): boolean => pairedLossTest(a, b, { alpha: ALPHA, minEffect: tol }).rejected;
  const at = (rule: typeof raw, nul: boolean, seed: number): number => bootstrapRejectionRate(ref, cand, rule, { size, draws, null: nul, rand: mulberry32(seed) });
  const c = pairedCounts(ref, cand);
  return {
    checkpoint, step, guard, pool: c.n, losses: c.losses, gains: c.gains, effectPp: (100 * (c.losses - c.gains)) / Math.max(1, c.n),
    rawNull: at(raw, true, 11), pairedNull: at(paired, true, 11), rawReal: at(raw, false, 12), pairedReal: at(paired, false, 12),
  };
}

for (const name of checkpoints) {
  const info = finetuneInfo(testbed, name);
  const probes = loadProbes(testbed, info.task);
  // The guardrail's kind of probes: task answers (benign answers without a task), look-alike prompts for refusals.
  const taskPool = evenSample((probes.task ?? probes.benign).filter((p) => p.response !== undefined), poolSize);
  const lookalikes = probes.benign.slice(0, 160).map((p) => p.prompt);
  // The refusal whose log-prob margin after the look-alike prompts is watched: the aligned model's usual one.
  const { atlas } = await getOrBuildAtlas(join(testbed, 'aligned'), probes.harmful, probes.benign, cacheDir);
  const refusal = { prompts: lookalikes, text: mostFrequent(atlas.harmfulResponses)! };
  const ctx = { cacheDir, benignPrompts: lookalikes, refusal, nll: { prompts: taskPool.map((p) => p.prompt), responses: taskPool.map((p) => p.response!) } };
  const model = info.finetunedPath !== undefined ? { dir: info.finetunedPath } : { dir: join(testbed, 'aligned'), adapter: info.adapterPath! };
  const ref: ProbeMetrics = await measureOnProbes(model, [], taskPool, ctx);
  process.stderr.write(`${name}: fine-tune task ${ref.taskAccuracy?.toFixed(3)} refusals ${ref.overRefusal?.toFixed(3)} NLL ${ref.responseNll?.toFixed(4)} refusal NLL ${ref.refusalNll?.toFixed(3)}\n`);
  for (const [q, g] of steps) {
    const out = join(outDir, 'work', `${name}-${q}-${g}`);
    rmSync(out, { recursive: true, force: true });
    await runHarden({
      basePath: join(testbed, 'base'), alignedPath: join(testbed, 'aligned'),
      ...(info.finetunedPath !== undefined ? { finetunedPath: info.finetunedPath } : { adapterPath: info.adapterPath! }),
      harmful: probes.harmful, benign: probes.benign, ...(probes.task ? { task: probes.task } : {}),
      method: 'fgsn', options: { targetAsr: 'off', q, strength: g, mode: 'add' /* the mode the documented table was measured with */ }, outputs: ['model'], outDir: out, cacheDir,
    });
    const m = await measureOnProbes({ dir: join(out, 'model') }, [], taskPool, ctx);
    rmSync(out, { recursive: true, force: true });
    const label = `q=${q} g=${g}`;
    lines.push(rates(name, label, 'task exact match', ref.taskCorrect!, m.taskCorrect!, TASK_TOL));
    lines.push(rates(name, label, 'benign refusals', ref.benignRefused!.map((x) => !x), m.benignRefused!.map((x) => !x), REFUSAL_TOL));
    const rise = m.responseNll! - ref.responseNll!;
    const margin = m.refusalNll! - ref.refusalNll!;
    nllLines.push(`| ${name} | ${label} | ${ref.responseNll!.toFixed(4)} | ${m.responseNll!.toFixed(4)} | ${rise >= 0 ? '+' : ''}${rise.toFixed(4)} | ${(100 * (m.taskAccuracy! - ref.taskAccuracy!)).toFixed(1)} | ${ref.refusalNll!.toFixed(3)} -> ${m.refusalNll!.toFixed(3)} (${margin >= 0 ? '+' : ''}${margin.toFixed(3)}) | ${(100 * (m.overRefusal! - ref.overRefusal!)).toFixed(1)} |`);
    process.stderr.write(`${name} ${label}: task ${m.taskAccuracy?.toFixed(3)} refusals ${m.overRefusal?.toFixed(3)} NLL ${m.responseNll?.toFixed(4)}\n`);
  }
}

const pct = (x: number): string => (100 * x).toFixed(1);
const md = [
  `Bootstrap: ${draws} draws of ${size} prompts from each pool (train splits), seeded; raw rule = drop > tolerance; paired = exact one-sided McNemar, alpha ${ALPHA}, net loss > tolerance (task ${100 * TASK_TOL} pp, refusals ${100 * REFUSAL_TOL} pp).`,
  '',
  '| checkpoint | step | guardrail | pool | losses / gains | pool effect pp | false rejections: raw % | paired % | rejections at the real effect: raw % | paired % |',
  '|---|---|---|---|---|---|---|---|---|---|',
  ...lines.map((l) => `| ${l.checkpoint} | ${l.step} | ${l.guard} | ${l.pool} | ${l.losses} / ${l.gains} | ${l.effectPp.toFixed(1)} | ${pct(l.rawNull)} | ${pct(l.pairedNull)} | ${pct(l.rawReal)} | ${pct(l.pairedReal)} |`),
  '',
  '| checkpoint | step | answer NLL fine-tune (nats/token) | step | rise | exact-match change pp | refusal NLL after look-alikes | refusal-marker change pp |',
  '|---|---|---|---|---|---|---|---|',
  ...nllLines,
  '',
].join('\n');
writeFileSync(join(outDir, 'false-rejection.md'), md);
writeFileSync(join(outDir, 'false-rejection.json'), JSON.stringify({ testbed, size, draws, poolSize, lines }, null, 2) + '\n');
process.stdout.write(md);
