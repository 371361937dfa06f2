/**
 * Cost of a harden job at real sizes (issue 11): writes synthetic bf16 trios (trio.ts: 125M-class and
 * TinyLlama-1.1B shapes, a planted safety direction), runs `fgsn harden` as a child process with the
 * default options (target-driven search) and with a fixed budget (`--target-asr off --q 0.01`), and prints
 * per stage: wall seconds, bytes written (/proc/<pid>/io write_bytes of the harden process tree), peak RSS
 * (VmHWM, reset at each stage through /proc/<pid>/clear_refs), and passes/tokens when the pipeline's report
 * carries them. Ratios measured in the same run:
 *   (a) harden wall / (I/O floor + compute floor): I/O floor = `cat` of the three checkpoints + writing the
 *       output's bytes, timed here; compute floor = FLOPs of the passes the method needs / onnxruntime MatMul
 *       FLOP/s measured here (bench/engine/timing.ts);
 *   (b) bytes written / output bytes.
 * And the peer a researcher would use: the same prefill and forward+backward (attribution) passes in PyTorch
 * eager (Debian's python3-torch, installed with apt-get when missing; the column is skipped, saying so, when
 * it cannot be), as tokens/s ratios fgsn / PyTorch.
 *
 *   npm run bench -- scale [--size 125m|1.1b|both] [--probes N] [--runs default,fixed] [--format model|diff]
 *                          [--keep DIR] [--no-peer] [--plain-env] [--json FILE]
 * --keep DIR keeps (and reuses) the trios in DIR; otherwise they are written to a temp folder and removed.
 * The harden child runs with ENGINE_PROCESS_ENV and ENGINE_PROCESS_EXEC_ARGV (as the worker's processors) unless
 * --plain-env.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ModelCheckpoint } from '../../src/checkpoint/index.js';
import { checkpointDifference, scoreSequences, type ScoredSequence } from '../../src/engine/attribution/index.js';
import { loadEngine } from '../../src/engine/engine.js';
import { ENGINE_PROCESS_EXEC_ARGV, withEngineProcessEnv } from '../../src/engine/session/session.js';
import { cacheBytes, cacheGroupRoots, scanCache } from '../../src/engine/session/cache-lifecycle.js';
import type { SyntheticModelOptions } from '../../test/support/synthetic/synthetic-model.js';
import { flopsPerToken, matmulGflops, tokenPrompts } from '../engine/timing.js';
import { floorTokens, type FloorReport } from './floor.js';
import { SHAPE_125M, SHAPE_1_1B, trioProbes, writeTrio } from './trio.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '125m' },
    probes: { type: 'string', default: '16' },
    runs: { type: 'string', default: 'fixed,default' },
    format: { type: 'string', default: 'model' },
    keep: { type: 'string' },
    'no-peer': { type: 'boolean' },
    // The child runs with the engine process environment (ENGINE_PROCESS_ENV), as the worker runs its
    // processors; --plain-env runs it with this process's environment only (a bare `fgsn harden`).
    'plain-env': { type: 'boolean' },
    json: { type: 'string' },
  },
});
const SIZES: Record<string, SyntheticModelOptions> = { '125m': SHAPE_125M, '1.1b': SHAPE_1_1B };
const sizes = values.size === 'both' ? ['125m', '1.1b'] : [values.size];
for (const s of sizes) if (!(s in SIZES)) throw new Error(`--size must be 125m, 1.1b or both, got "${values.size}"`);
const nProbes = Number(values.probes);
if (!Number.isInteger(nProbes) || nProbes < 2) throw new Error('--probes must be an integer >= 2');
const RUNS: Record<string, string[]> = { default: [], fixed: ['--target-asr', 'off', '--q', '0.01'] };
const runs = values.runs.split(',').map((r) => r.trim());
for (const r of runs) if (!(r in RUNS)) throw new Error(`--runs takes default and/or fixed, got "${r}"`);
if (!['model', 'diff'].includes(values.format)) throw new Error('--format is model or diff');

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

// ------------------------------------------------------------------ /proc readings

function procChildren(): Map<number, number[]> {
  const kids = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      kids.set(ppid, [...(kids.get(ppid) ?? []), Number(e)]);
    } catch {
      // exited
    }
  }
  return kids;
}

function tree(root: number): number[] {
  const kids = procChildren();
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(kids.get(out[i]) ?? []));
  return out;
}

function ioWrite(pid: number | 'self'): number {
  try {
    const m = /write_bytes: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function statusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function resetPeak(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM to the current RSS (Linux >= 4.0)
  } catch {
    // not permitted: the stage peak is then the run's peak so far
  }
}

function dirBytes(p: string): number {
  if (!existsSync(p)) return 0;
  const st = statSync(p);
  if (!st.isDirectory()) return st.size;
  return readdirSync(p).reduce((n, e) => n + dirBytes(join(p, e)), 0);
}

// ------------------------------------------------------------------ one harden run, measured

interface StageCost {
  stage: string;
  seconds: number;
  writeBytes: number;
  peakRss: number;
  passes: number | null;
  tokens: number | null;
}

interface RunCost {
  label: string;
  wallSeconds: number;
  exitCode: number | null;
  writeBytes: number;
  peakRss: number;
  stages: StageCost[];
  outputBytes: number;
  cacheBytesLeft: number;
  atlasBytes: number;
  scratchLeft: string[];
  report: Record<string, unknown> | null;
  stderrTail: string;
}

async function measuredHarden(label: string, trio: { base: string; aligned: string; finetuned: string }, probeDir: string, work: string, extra: string[]): Promise<RunCost> {
  const out = join(work, `out-${label}`);
  const cache = join(work, `cache-${label}`);
  const args = [...(values['plain-env'] ? [] : ENGINE_PROCESS_EXEC_ARGV), '--import', 'tsx', join(repo, 'src/cli/main.ts'), 'harden', '--base', trio.base, '--aligned', trio.aligned, '--finetuned', trio.finetuned,
    '--harmful', join(probeDir, 'harmful.jsonl'), '--benign', join(probeDir, 'benign.jsonl'), '--out', out, '--cache-dir', cache, '--format', values.format, ...extra];
  const selfBefore = ioWrite('self');
  const t0 = performance.now();
  const env = values['plain-env'] ? process.env : withEngineProcessEnv(process.env);
  const child = spawn(process.execPath, args, { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'], env });
  const pid = child.pid!;
  const stages: StageCost[] = [];
  let current = 'start';
  let stageStart = t0;
  let stageWriteStart = 0;
  let stagePeak = 0;
  let lastTreeWrite = 0;
  let runPeak = 0;
  const sample = (): void => {
    const pids = tree(pid);
    lastTreeWrite = pids.reduce((n, p) => n + ioWrite(p), 0);
    const rss = pids.reduce((n, p) => n + statusKb(p, 'VmRSS'), 0);
    stagePeak = Math.max(stagePeak, rss, statusKb(pid, 'VmHWM'));
    runPeak = Math.max(runPeak, stagePeak);
  };
  const closeStage = (next: string): void => {
    sample();
    stages.push({ stage: current, seconds: (performance.now() - stageStart) / 1000, writeBytes: lastTreeWrite - stageWriteStart, peakRss: stagePeak, passes: null, tokens: null });
    current = next;
    stageStart = performance.now();
    stageWriteStart = lastTreeWrite;
    for (const p of tree(pid)) resetPeak(p);
    stagePeak = 0;
  };
  const timer = setInterval(sample, 100);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => {
    const text = b.toString();
    stderr = (stderr + text).slice(-4000);
    for (const m of text.matchAll(/^\[\s*\d+%\] ([a-z-]+)/gm)) if (m[1] !== current) closeStage(m[1]);
  });
  const exitCode = await new Promise<number | null>((r) => child.on('close', r));
  clearInterval(timer);
  const wallSeconds = (performance.now() - t0) / 1000;
  // The reaped child's counters are added to this process's (Linux): the run's total, tail included.
  const writeBytes = ioWrite('self') - selfBefore;
  stages.push({ stage: current, seconds: (performance.now() - stageStart) / 1000, writeBytes: Math.max(0, writeBytes - stageWriteStart), peakRss: stagePeak, passes: null, tokens: null });
  const reportPath = join(out, 'report.json');
  const report = existsSync(reportPath) ? (JSON.parse(readFileSync(reportPath, 'utf8')) as Record<string, unknown>) : null;
  for (const s of stages) Object.assign(s, countersOf(report, s.stage));
  const atlasRoot = join(cache, 'atlas');
  const atlasId = (report?.atlas as { id?: string } | undefined)?.id;
  const atlasJson = atlasId === undefined ? '' : join(atlasRoot, atlasId, 'atlas.json');
  if (report !== null && atlasJson !== '' && existsSync(atlasJson)) report.atlasTokens = (JSON.parse(readFileSync(atlasJson, 'utf8')) as { tokens: unknown }).tokens;
  const scratchLeft = existsSync(out) ? readdirSync(out).filter((n) => n.startsWith('.')) : [];
  const outputBytes = dirBytes(join(out, 'model')) + dirBytes(join(out, 'diff.safetensors'));
  const r: RunCost = {
    label, wallSeconds, exitCode, writeBytes, peakRss: runPeak, stages: stages.filter((s) => s.stage !== 'start' || s.seconds > 0.5),
    outputBytes, cacheBytesLeft: cacheBytes(scanCache(cacheGroupRoots(join(cache, 'engine')))), atlasBytes: dirBytes(atlasRoot), scratchLeft, report, stderrTail: stderr.slice(-1500),
  };
  rmSync(out, { recursive: true, force: true });
  rmSync(cache, { recursive: true, force: true });
  if (stdout === '' && exitCode !== 0) r.stderrTail = stderr.slice(-1500);
  return r;
}

/**
 * Passes and tokens of a stage when the pipeline reports them (the report's `counters`/`cost` per stage, or a
 * stage's timing given as an object); null when this build does not count them.
 */
function countersOf(report: Record<string, unknown> | null, stage: string): { passes: number | null; tokens: number | null } {
  const pick = (o: unknown): { passes: number | null; tokens: number | null } | null => {
    if (typeof o !== 'object' || o === null) return null;
    const rec = o as Record<string, unknown>;
    const num = (...keys: string[]): number | null => {
      let total: number | null = null;
      for (const k of keys) if (typeof rec[k] === 'number') total = (total ?? 0) + (rec[k] as number);
      return total;
    };
    const passes = num('passes') ?? num('forwardPasses', 'backwardPasses');
    const tokens = num('tokens') ?? num('forwardTokens', 'backwardTokens');
    return passes === null && tokens === null ? null : { passes, tokens };
  };
  if (report === null) return { passes: null, tokens: null };
  // The report's per-stage `costs` (forward/backward passes and tokens, src/engine/runtime/counters.ts).
  for (const key of ['costs', 'counters', 'cost', 'passes', 'timings']) {
    const v = (report[key] as Record<string, unknown> | undefined)?.[stage];
    const c = pick(v);
    if (c) return c;
  }
  return { passes: null, tokens: null };
}

// ------------------------------------------------------------------ floors

function timed(cmd: string): number {
  const t = performance.now();
  const r = spawnSync('bash', ['-c', cmd], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`${cmd} failed`);
  return (performance.now() - t) / 1000;
}

function ioFloor(trio: { base: string; aligned: string; finetuned: string }, outputBytes: number, work: string): number {
  const files = [trio.base, trio.aligned, trio.finetuned].map((d) => join(d, 'model.safetensors'));
  const read = timed(`cat ${files.map((f) => `'${f}'`).join(' ')} > /dev/null`);
  const sink = join(work, 'io-floor.bin');
  // Writing the output's bytes (read from the page cache, like harden's source reads).
  const write = timed(`head -c ${outputBytes} '${files[2]}' > '${sink}' && sync -f '${sink}'`);
  rmSync(sink, { force: true });
  return read + write;
}

/** FLOPs of the passes the job needs (bench/scale/floor.ts says which), at the bench trio's context. */
function computeFloorFlops(spec: SyntheticModelOptions, run: RunCost, probes: number): number {
  const perToken = flopsPerToken({ ...spec, headDim: spec.headDim ?? spec.hiddenSize / spec.numHeads } as never, 48);
  const tokens = (run.report as { atlasTokens?: { harmful: number; benign: number } } | null)?.atlasTokens;
  return perToken * floorTokens(run.report as FloorReport | null, {
    harmfulTokens: tokens?.harmful ?? probes * (18 + 40),
    benignTokens: tokens?.benign ?? probes * 15,
    harmfulProbes: probes,
    benignProbes: probes,
  });
}

// ------------------------------------------------------------------ fgsn vs PyTorch passes

interface PassRates {
  prefillTokS: number;
  attributionTokS: number;
}

async function fgsnPasses(trio: { base: string; aligned: string; finetuned: string }, prefill: number[][], seqs: ScoredSequence[], batch: number, cacheRoot: string): Promise<PassRates> {
  const engine = await loadEngine(trio.aligned, { cacheDir: cacheRoot, maxSessions: 1 });
  let prefillS = Infinity;
  try {
    await engine.capture(prefill.slice(0, batch), { logits: 'last' }, { batchSize: batch });
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await engine.capture(prefill, { logits: 'last' }, { batchSize: batch });
      prefillS = Math.min(prefillS, (performance.now() - t) / 1000);
    }
  } finally {
    await engine.close();
  }
  const [base, aligned, ft] = await Promise.all([trio.base, trio.aligned, trio.finetuned].map((d) => ModelCheckpoint.open(d)));
  let attrS = Infinity;
  try {
    const opts = { directions: [checkpointDifference('safety', aligned, base), checkpointDifference('finetune', ft, aligned)], batchSize: batch, cacheRoot };
    await scoreSequences(aligned, null, seqs, opts); // graph built and cached
    for (let i = 0; i < 2; i++) attrS = Math.min(attrS, (await scoreSequences(aligned, null, seqs, opts)).seconds);
  } finally {
    await Promise.all([base, aligned, ft].map((c) => c.close()));
  }
  const tok = (xs: readonly (readonly number[])[]): number => xs.reduce((n, s) => n + s.length, 0);
  return { prefillTokS: tok(prefill) / prefillS, attributionTokS: tok(seqs.map((s) => s.ids)) / attrS };
}

/** Debian's python3-torch belongs to the system interpreter (a pyenv/venv python3 on PATH would not see it). */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

function ensureTorch(): string | null {
  const probe = (): boolean => spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
  if (probe()) return null;
  process.stderr.write('python3-torch missing: apt-get install -y python3-torch ...\n');
  const r = spawnSync('apt-get', ['install', '-y', 'python3-torch'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.status === 0 && probe()) return null;
  return `python3-torch could not be installed (apt-get exit ${r.status}: ${(r.stderr?.toString() ?? '').trim().split('\n').pop() ?? ''})`;
}

function torchPasses(trio: { base: string; aligned: string; finetuned: string }, prefill: number[][], seqs: ScoredSequence[], batch: number, work: string): { rates: PassRates; version: string; threads: number } | string {
  const missing = ensureTorch();
  if (missing !== null) return missing;
  const specPath = join(work, 'torch-spec.json');
  writeFileSync(specPath, JSON.stringify({ ...trio, prefill, attribution: seqs.map((s) => ({ ids: s.ids, promptLength: s.promptLength })), batch, repeats: 2 }));
  const r = spawnSync(PYTHON, [join(repo, 'bench/scale/torch_peer.py'), specPath], { encoding: 'utf8', maxBuffer: 16 * MiB });
  if (r.status !== 0) return `the PyTorch peer failed: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`;
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { torch: string; threads: number; prefillTokens: number; prefillSeconds: number; attributionTokens: number; attributionSeconds: number };
  return { rates: { prefillTokS: j.prefillTokens / j.prefillSeconds, attributionTokS: j.attributionTokens / j.attributionSeconds }, version: j.torch, threads: j.threads };
}

// ------------------------------------------------------------------ main

const fmtB = (b: number): string => (b >= GiB ? `${(b / GiB).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`);
const pad = (s: string, n: number): string => s.padStart(n);

async function main(): Promise<void> {
  const root = values.keep ?? mkdtempSync(join(tmpdir(), 'fgsn-bench-scale-'));
  mkdirSync(root, { recursive: true });
  const results: Record<string, unknown>[] = [];
  try {
    // The compute floor's reference: the best MatMul rate this machine shows in the run. Measured at the start
    // and again after each harden run, since the rate of this kind of VM drifts (184-271 GFLOP/s at the start of
    // runs on 2026-12-04): a low reading alone would shrink (a) for nothing.
    let gflops = await matmulGflops(1024);
    console.log(`onnxruntime MatMul (1024^3, float32, cpu): ${gflops.toFixed(1)} GFLOP/s`);
    for (const size of sizes) {
      const spec = SIZES[size];
      const trioDir = join(root, `trio-${size}`);
      const trio = { base: join(trioDir, 'base'), aligned: join(trioDir, 'aligned'), finetuned: join(trioDir, 'finetuned') };
      if (!existsSync(join(trio.finetuned, 'model.safetensors'))) {
        const t = performance.now();
        rmSync(trioDir, { recursive: true, force: true });
        await writeTrio(trioDir, spec);
        console.log(`wrote the ${size} trio in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      }
      const ckptBytes = statSync(join(trio.aligned, 'model.safetensors')).size;
      const probes = trioProbes(nProbes, spec.vocabSize);
      const probeDir = join(root, `probes-${size}-${nProbes}`);
      mkdirSync(probeDir, { recursive: true });
      writeFileSync(join(probeDir, 'harmful.jsonl'), probes.harmful.map((p) => JSON.stringify(p)).join('\n') + '\n');
      writeFileSync(join(probeDir, 'benign.jsonl'), probes.benign.map((p) => JSON.stringify(p)).join('\n') + '\n');
      const work = join(root, `work-${size}`);
      mkdirSync(work, { recursive: true });
      console.log(`\n== ${size}: checkpoint ${fmtB(ckptBytes)} (bf16), ${nProbes} harmful + ${nProbes} benign probes, --format ${values.format}`);
      if (!values['no-peer']) {
        const batch = 8;
        const prefill = tokenPrompts(spec.vocabSize, 8, 64, 5);
        const seqs: ScoredSequence[] = tokenPrompts(spec.vocabSize, 8, 64, 6).map((ids) => ({ ids, promptLength: 32 }));
        const ours = await fgsnPasses(trio, prefill, seqs, batch, join(work, 'peer-cache'));
        // Printed before the peer runs: the fgsn figures survive a peer that is stopped.
        console.log(`fgsn: prefill ${ours.prefillTokS.toFixed(0)} tok/s, attribution ${ours.attributionTokS.toFixed(0)} tok/s; running the PyTorch peer...`);
        const theirs = torchPasses(trio, prefill, seqs, batch, work);
        console.log(`\n-- passes on the same checkpoint and token ids (8 x 64 tokens, batch ${batch}, float32 compute; best of 2-3 after a warm-up)`);
        console.log(`${'pass'.padEnd(30)}${pad('fgsn tok/s', 12)}${pad('PyTorch tok/s', 15)}${pad('fgsn/PyTorch', 14)}`);
        const row = (name: string, a: number, b: number | null): void =>
          console.log(`${name.padEnd(30)}${pad(a.toFixed(0), 12)}${pad(b === null ? 'skipped' : b.toFixed(0), 15)}${pad(b === null ? 'n/a' : (a / b).toFixed(2), 14)}`);
        const t = typeof theirs === 'string' ? null : theirs.rates;
        row('prefill (last logits)', ours.prefillTokS, t?.prefillTokS ?? null);
        row('attribution (fwd+bwd, 2 dirs)', ours.attributionTokS, t?.attributionTokS ?? null);
        if (typeof theirs === 'string') console.log(`PyTorch column skipped: ${theirs}`);
        else console.log(`PyTorch ${theirs.version} eager, ${theirs.threads} threads`);
        results.push({ size, peer: { fgsn: ours, torch: typeof theirs === 'string' ? { skipped: theirs } : theirs } });
        rmSync(join(work, 'peer-cache'), { recursive: true, force: true });
      }
      for (const label of runs) {
        const run = await measuredHarden(label, trio, probeDir, work, RUNS[label]);
        if (run.exitCode !== 0) {
          console.log(`harden (${label}) failed with exit ${run.exitCode}:\n${run.stderrTail}`);
          results.push({ size, run: label, failed: true, stderr: run.stderrTail });
          continue;
        }
        const after = await matmulGflops(1024);
        gflops = Math.max(gflops, after);
        const io = ioFloor(trio, Math.max(run.outputBytes, 1), work);
        const computeS = computeFloorFlops(spec, run, nProbes) / (gflops * 1e9);
        const steps = (run.report as FloorReport | null)?.selection?.target?.steps?.length ?? 0;
        console.log(`\n-- harden ${label} (${RUNS[label].join(' ') || 'default options'}): ${steps} search steps, exit ${run.exitCode}`);
        console.log(`${'stage'.padEnd(14)}${pad('wall s', 9)}${pad('written', 12)}${pad('peak RSS', 12)}${pad('xckpt', 7)}${pad('passes', 8)}${pad('tokens', 9)}`);
        for (const s of run.stages) {
          console.log(`${s.stage.padEnd(14)}${pad(s.seconds.toFixed(1), 9)}${pad(fmtB(s.writeBytes), 12)}${pad(fmtB(s.peakRss), 12)}${pad((s.peakRss / ckptBytes).toFixed(2), 7)}${pad(s.passes === null ? 'n/a' : String(s.passes), 8)}${pad(s.tokens === null ? 'n/a' : String(s.tokens), 9)}`);
        }
        console.log(`${'total'.padEnd(14)}${pad(run.wallSeconds.toFixed(1), 9)}${pad(fmtB(run.writeBytes), 12)}${pad(fmtB(run.peakRss), 12)}${pad((run.peakRss / ckptBytes).toFixed(2), 7)}`);
        const ratioA = run.wallSeconds / (io + computeS);
        const ratioB = run.writeBytes / Math.max(1, run.outputBytes);
        console.log(`output ${fmtB(run.outputBytes)}; cache left ${fmtB(run.cacheBytesLeft)} real cost (hard links into the trio count 0; atlas ${fmtB(run.atlasBytes)}); scratch left in the out folder: ${run.scratchLeft.length === 0 ? 'none' : run.scratchLeft.join(', ')}`);
        console.log(`(a) wall / (I/O floor ${io.toFixed(1)} s + compute floor ${computeS.toFixed(1)} s at ${gflops.toFixed(1)} GFLOP/s, the best MatMul rate so far; ${after.toFixed(1)} after this run) = ${ratioA.toFixed(2)}`);
        console.log(`(b) bytes written / output bytes = ${ratioB.toFixed(2)}  (written ${fmtB(run.writeBytes)}; output + atlas = ${fmtB(run.outputBytes + run.atlasBytes)}, ratio ${(run.writeBytes / Math.max(1, run.outputBytes + run.atlasBytes)).toFixed(2)})`);
        console.log(`peak RSS / checkpoint = ${(run.peakRss / ckptBytes).toFixed(2)}`);
        results.push({ size, run: label, checkpointBytes: ckptBytes, steps, ...run, report: undefined, ioFloorSeconds: io, computeFloorSeconds: computeS, ratioA, ratioB });
      }
      rmSync(work, { recursive: true, force: true });
    }
    if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 1) + '\n');
  } finally {
    if (values.keep === undefined) rmSync(root, { recursive: true, force: true });
  }
}

await main();
