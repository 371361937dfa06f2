/**
 * One attempt of a harden job, as the sandboxed processor runs it: validate inputs, run the pipeline into
 * a private folder, publish the artifacts atomically. Progress and cancellation come through `ctx`.
 */
import { mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { validateCheckpointFolder } from '../checkpoint/index.js';
import { enforceCacheBound, releaseAllHolds } from '../engine/session/cache-lifecycle.js';
import { FgsnError } from '../errors.js';
import { admitDisk, diskNeed, processCost, weightBytes } from './disk.js';
import { runHarden } from '../pipeline/harden.js';
import { publishArtifacts, removeStaleAttempts } from '../storage/artifacts.js';
import type { BlobStore } from '../storage/index.js';
import type { HardenJobData, HardenJobResult, HardenProgress } from './job-data.js';

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

export async function runHardenJob(data: HardenJobData, ctx: RunContext): Promise<HardenJobResult> {
  const timings: Record<string, number> = {};
  let stage = 'validate';
  let stageStart = performance.now();
  const enter = async (next: string, percent: number): Promise<void> => {
    timings[stage] = Math.round((performance.now() - stageStart) / 10) / 100;
    stage = next;
    stageStart = performance.now();
    await ctx.report({ stage, percent, timings: { ...timings }, attempt: ctx.attempt });
  };
  await ctx.report({ stage, percent: 0, timings: {}, attempt: ctx.attempt });
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

  const cacheDir = join(ctx.dataDir, 'cache');
  // Refused before anything is written: the output is about the size of the checkpoint it is made from.
  await mkdir(ctx.dataDir, { recursive: true });
  await admitDisk(ctx.dataDir, cacheDir, diskNeed(await weightBytes(data.input.finetunedPath ?? data.input.alignedPath), ctx.minFreeDiskMb ?? 0));

  // A fresh folder per attempt: a retried attempt never sees (or publishes) files of a crashed one.
  const jobScratch = join(ctx.dataDir, 'work', data.jobId);
  const costAtStart = processCost(true);
  const outDir = join(jobScratch, `attempt-${ctx.attempt}-${process.pid}-${Date.now()}`);
  await mkdir(outDir, { recursive: true });
  try {
    await enter('pipeline', VALIDATE_END);
    const result = await runHarden(
      {
        ...data.input,
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
    const manifest = await publishArtifacts(ctx.store, data.jobId, outDir, result.artifacts, { move: ctx.store.kind === 'fs' });
    // Leftovers of crashed attempts (store blobs, scratch folders) were never visible; now they can go.
    await removeStaleAttempts(ctx.store, manifest).catch(() => undefined);
    await rm(join(ctx.dataDir, 'work', data.jobId), { recursive: true, force: true });
    timings[stage] = Math.round((performance.now() - stageStart) / 10) / 100;
    await ctx.report({ stage: 'done', percent: 100, timings: { ...timings }, attempt: ctx.attempt });
    const costAtEnd = processCost();
    return {
      artifacts: manifest.artifacts.map(({ name, bytes, sha256 }) => ({ name, bytes, sha256 })),
      summary: {
        ...result.summary,
        // What the attempt cost this processor: bytes it wrote (scratch, cache, artifacts) and its peak RSS.
        cost: {
          bytesWritten: costAtEnd.writeBytes === null || costAtStart.writeBytes === null ? null : costAtEnd.writeBytes - costAtStart.writeBytes,
          peakRssBytes: costAtEnd.peakRssBytes,
        },
      },
      timings,
    };
  } finally {
    // Scratch goes whatever the outcome (completed, failed, cancelled); the job folder too once no other
    // attempt (a stalled one recovered elsewhere) has a folder in it. The worker removes what a killed
    // processor left when the job ends (worker.ts).
    await rm(outDir, { recursive: true, force: true });
    await rmdir(jobScratch).catch(() => undefined);
    // This process's engines are closed: the cache entries it used may be evicted again.
    releaseAllHolds();
    try {
      enforceCacheBound(join(cacheDir, 'engine'));
    } catch {
      // bounding is housekeeping: the next job's admission and builds enforce it again
    }
  }
}
