/**
 * One attempt of a harden job, as the sandboxed processor runs it: validate inputs, run the pipeline into
 * a private folder, publish the artifacts atomically. Progress and cancellation come through `ctx`.
 */
import { mkdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, relative, sep } from 'node:path';
import { validateCheckpointFolder } from '../checkpoint/index.js';
import { enforceCacheBound, releaseAllHolds } from '../engine/index.js';
import { FgsnError } from '../errors.js';
import { admitDisk, attemptCost, diskNeed, processCost, weightBytes } from './disk.js';
import { runHarden } from '../pipeline/index.js';
import { publishArtifacts, readProbeBlob, removeStaleAttempts } from '../storage/index.js';
import type { BlobStore } from '../storage/index.js';
import type { HardenJobData, HardenJobInput, HardenJobResult, HardenProgress, ProbeRef } from './job-data.js';
import type { EvaluationRequest, HardenRequest, ProbeRecord } from '../pipeline/index.js';
import { dataLayout } from '../storage/index.js';

export interface RunContext {
  attempt: number;
  dataDir: string;
  store: BlobStore;
  executionProvider: 'cpu' | 'cuda';
  /** FGSN_MIN_FREE_DISK_MB: margin kept free beyond the job's own output (default 0). */
  minFreeDiskMb?: number;
  signal?: AbortSignal;
  report(p: HardenProgress): Promise<void>;
}

/** Share of the overall progress each stage of an attempt covers. */
const VALIDATE_END = 5;
const PIPELINE_END = 95;

export function throwIfCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new FgsnError('JOB_CANCELLED', 'the job was cancelled');
}

/**
 * Tenants see ids and file names, never server paths: an upload folder (<data>/uploads/<id>/files) becomes
 * the checkpoint id, another folder of the data dir its relative path, any other folder (a server-side
 * reference) its last name; leftovers of the data and temp folders become ".".
 */
export function pathScrubber(input: { basePath: string; alignedPath: string; finetunedPath?: string; adapterPath?: string }, dataDir: string): (text: string) => string {
  const publicName = (p: string): string => {
    const upload = dataLayout(dataDir).uploadOf(p);
    if (upload !== undefined) return [upload.checkpointId, ...upload.rest].join('/');
    const rel = relative(dataDir, p).split(sep);
    return rel[0] !== '..' && rel[0] !== '' ? rel.join('/') : basename(p);
  };
  const pairs: [string, string][] = [input.basePath, input.alignedPath, input.finetunedPath, input.adapterPath]
    .filter((p): p is string => p !== undefined)
    .map((p) => [p, publicName(p)]);
  pairs.push([dataDir, '.'], [tmpdir(), '.']);
  // Longest first: a folder inside the data dir is replaced before the data dir itself.
  pairs.sort((a, b) => b[0].length - a[0].length);
  return (text) => pairs.reduce((t, [from, to]) => t.split(from).join(to), text);
}

/** Rewrites a JSON-ish value through the scrubber (strings only). */
export function scrubValue<T>(value: T, scrub: (text: string) => string): T {
  try {
    return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'string' ? scrub(v) : typeof v === 'bigint' ? String(v) : v))) as T;
  } catch {
    return JSON.parse(scrub(JSON.stringify(String(value)))) as T;
  }
}

/** The job's probe-set references, read from the blob store (sha256-checked) into the pipeline's request. */
export async function resolveProbes(store: BlobStore, input: HardenJobInput): Promise<Omit<HardenRequest, 'outDir' | 'cacheDir' | 'executionProvider'>> {
  const read = (ref: ProbeRef | undefined): Promise<ProbeRecord[] | undefined> => (ref === undefined ? Promise.resolve(undefined) : readProbeBlob(store, ref));
  const e = input.evaluate;
  let evaluate: EvaluationRequest | undefined;
  if (e !== undefined) {
    evaluate = {};
    const [harmful, emerging, lookalike] = await Promise.all([read(e.harmful), read(e.emerging), read(e.lookalike)]);
    if (harmful) evaluate.harmful = harmful;
    if (emerging) evaluate.emerging = emerging;
    if (lookalike) evaluate.lookalike = lookalike;
    if (e.maxNewTokens !== undefined) evaluate.maxNewTokens = e.maxNewTokens;
    if (e.tasks) {
      evaluate.tasks = {};
      for (const [name, ref] of Object.entries(e.tasks)) {
        evaluate.tasks[name] = (await read(ref)) ?? [];
      }
    }
  }
  return {
    ...input,
    harmful: (await read(input.harmful)) as ProbeRecord[],
    benign: (await read(input.benign)) as ProbeRecord[],
    task: await read(input.task),
    evaluate,
  };
}

export async function runHardenJob(data: HardenJobData, ctx: RunContext): Promise<HardenJobResult> {
  const { timings, enter } = await stageTimer(ctx);
  throwIfCancelled(ctx.signal);

  const inputs: [string, string][] = [
    ['base', data.input.basePath],
    ['aligned', data.input.alignedPath],
    ...(data.input.finetunedPath ? [['finetuned', data.input.finetunedPath] as [string, string]] : []),
    ...(data.input.adapterPath ? [['adapter', data.input.adapterPath] as [string, string]] : []),
  ];
  for (const [role, path] of inputs) {
    const v = await validateCheckpointFolder(path);
    if (!v.ok) {
      const first = v.problems[0];
      throw new FgsnError(first?.code ?? 'CHECKPOINT_IO', `${role} checkpoint is invalid: ${first?.message ?? 'unknown problem'}`, {
        details: { role, problems: v.problems.map((p) => ({ code: p.code, message: p.message })) },
      });
    }
    throwIfCancelled(ctx.signal);
  }

  const layout = dataLayout(ctx.dataDir);
  const cacheDir = layout.cache;
  // Refused before anything is written: the output is about the size of the checkpoint it is made from.
  await mkdir(ctx.dataDir, { recursive: true });
  await admitDisk(layout.root, layout.cache, diskNeed(await weightBytes(data.input.finetunedPath ?? data.input.alignedPath), ctx.minFreeDiskMb ?? 0));

  // A fresh folder per attempt: a retried attempt never sees (or publishes) files of a crashed one.
  const jobScratch = layout.jobScratch(data.jobId);
  const costAtStart = processCost(true);
  const outDir = join(jobScratch, `attempt-${ctx.attempt}-${process.pid}-${Date.now()}`);
  await mkdir(outDir, { recursive: true });
  try {
    await enter('pipeline', VALIDATE_END);
    const input = await resolveProbes(ctx.store, data.input);
    const result = await runHarden(
      {
        ...input,
        // Artifacts go to tenants: the report names the inputs by role, never by server path.
        inputLabels: input.inputLabels ?? {
          base: 'base', aligned: 'aligned',
          ...(data.input.finetunedPath ? { finetuned: 'finetuned' } : {}), ...(data.input.adapterPath ? { adapter: 'adapter' } : {}),
        },
        outDir,
        cacheDir,
        executionProvider: ctx.executionProvider,
      },
      {
        signal: ctx.signal,
        onProgress: async (p) => {
          const percent = VALIDATE_END + ((PIPELINE_END - VALIDATE_END) * Math.max(0, Math.min(100, p.percent))) / 100;
          await ctx.report({ stage: p.stage, percent, message: p.message, timings: { ...timings }, attempt: ctx.attempt });
        },
      },
    );
    throwIfCancelled(ctx.signal);
    for (const [name, seconds] of Object.entries(result.summary.stageSeconds ?? {})) timings[`pipeline.${name}`] = seconds;
    // Costs beside the seconds: graph runs and the tokens they processed, per stage (counts, not seconds).
    for (const [name, c] of Object.entries(result.summary.stageCosts ?? {})) {
      for (const [k, v] of Object.entries(c)) if (v > 0) timings[`pipeline.${name}.${k}`] = v;
    }
    await enter('publish', PIPELINE_END);
    // The reports name their inputs: by id and file name only once published (re-hashed below).
    const scrub = pathScrubber(data.input, ctx.dataDir);
    const rewritten = new Set<string>();
    for (const name of ['report.json', 'model/fgsn-report.json']) {
      const path = join(outDir, ...name.split('/'));
      const text = await readFile(path, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      await writeFile(path, scrub(text));
      rewritten.add(name);
    }
    const known = result.artifacts.filter((a) => !rewritten.has(a.name));
    const manifest = await publishArtifacts(ctx.store, data.jobId, outDir, known, { move: ctx.store.kind === 'fs' });
    // Leftovers of crashed attempts (store blobs, scratch folders) were never visible; now they can go.
    await removeStaleAttempts(ctx.store, manifest).catch(() => undefined);
    await rm(jobScratch, { recursive: true, force: true });
    await enter('done', 100);
    return {
      artifacts: manifest.artifacts.map(({ name, bytes, sha256 }) => ({ name, bytes, sha256 })),
      summary: {
        ...result.summary,
        // What the attempt cost this processor: bytes it wrote (scratch, cache, artifacts) and its peak RSS.
        cost: attemptCost(costAtStart),
      },
      timings,
    };
  } finally {
    // Scratch goes whatever the outcome (completed, failed, cancelled); the job folder too once no other
    // attempt (a stalled one recovered elsewhere) has a folder in it. The worker removes what a killed
    // processor left when the job ends (worker.ts).
    await endAttempt(outDir, jobScratch, layout.engineCache);
  }
}

/**
 * The end of an attempt, whatever its outcome: its scratch folder goes, the job folder too once no other
 * attempt has a folder in it, and this process's engines being closed, the cache entries it used may be
 * evicted again (the bound enforced now; the next job's admission and builds enforce it too).
 */
export async function endAttempt(attemptDir: string, jobScratch: string, engineCache: string): Promise<void> {
  await rm(attemptDir, { recursive: true, force: true });
  await rmdir(jobScratch).catch(() => undefined);
  releaseAllHolds();
  try {
    enforceCacheBound(engineCache);
  } catch {
    // bounding is housekeeping
  }
}

/**
 * An attempt's stages: `enter(next, percent)` closes the current stage's timing and reports the next one;
 * `timings` holds seconds per finished stage. Reports stage 'validate' at 0 % on creation.
 */
export async function stageTimer(ctx: Pick<RunContext, 'report' | 'attempt'>): Promise<{ timings: Record<string, number>; enter(next: string, percent: number): Promise<void> }> {
  const timings: Record<string, number> = {};
  let stage = 'validate';
  let stageStart = performance.now();
  await ctx.report({ stage, percent: 0, timings: {}, attempt: ctx.attempt });
  return {
    timings,
    enter: async (next, percent) => {
      timings[stage] = Math.round((performance.now() - stageStart) / 10) / 100;
      stage = next;
      stageStart = performance.now();
      await ctx.report({ stage, percent, timings: { ...timings }, attempt: ctx.attempt });
    },
  };
}
