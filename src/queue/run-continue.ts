/**
 * One attempt of a continue job (POST /v1/jobs/{id}/continue), as the sandboxed processor runs it: copy the
 * source job's published report.json and model/ from the artifact store (fs or S3) into this attempt's
 * scratch, point the report at the server's checkpoint folders, run `fgsn continue` (pipeline/continue.ts)
 * into a private folder and publish the result as this job's own artifacts, like a harden job's.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { validateCheckpointFolder } from '../checkpoint/index.js';
import { FgsnError, isFgsnError } from '../errors.js';
import { findAtlas, getOrBuildAtlas, readHardenReport, runContinue } from '../pipeline/index.js';
import { dataLayout, publishArtifacts, readManifest, readProbeBlob, removeStaleAttempts, type BlobStore, type PublishedArtifact } from '../storage/index.js';
import { admitDisk, attemptCost, diskNeed, processCost } from './disk.js';
import { continuableArtifacts, type ContinueJobData, type HardenJobResult } from './job-data.js';
import { endAttempt, pathScrubber, stageTimer, throwIfCancelled, type RunContext } from './run-job.js';

const VALIDATE_END = 5;
const FETCH_END = 10;
const PIPELINE_END = 95;

/** Copies one published artifact to `path`, checking the sha256 the manifest lists as the bytes pass. */
async function fetchArtifact(store: BlobStore, a: PublishedArtifact, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const hash = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  await pipeline(await store.read(a.key), tap, createWriteStream(path));
  const got = hash.digest('hex');
  if (got !== a.sha256) throw new FgsnError('STORAGE_ERROR', `artifact ${a.name} of the source job does not match its sha256 in the manifest`, { details: { name: a.name } });
}

export async function runContinueJob(data: ContinueJobData, ctx: RunContext): Promise<HardenJobResult> {
  const input = data.input;
  const { timings, enter } = await stageTimer(ctx);
  throwIfCancelled(ctx.signal);
  for (const [role, path] of [['base', input.basePath], ['aligned', input.alignedPath]] as const) {
    const v = await validateCheckpointFolder(path);
    if (!v.ok) {
      const first = v.problems[0];
      throw new FgsnError(first?.code ?? 'CHECKPOINT_IO', `${role} checkpoint is invalid: ${first?.message ?? 'unknown problem'}`);
    }
  }
  // The API checked the source when the job was submitted; its artifacts may have expired or been deleted since.
  const manifest = await readManifest(ctx.store, input.sourceJobId);
  if (manifest === undefined || !continuableArtifacts(manifest.artifacts)) {
    throw new FgsnError('SOURCE_JOB_NO_MODEL', `job ${input.sourceJobId} has no published model folder and report.json (any more)`);
  }
  const needed = manifest.artifacts.filter((a) => a.name === 'report.json' || a.name.startsWith('model/'));
  const modelBytes = needed.reduce((n, a) => n + a.bytes, 0);

  const layout = dataLayout(ctx.dataDir);
  await mkdir(ctx.dataDir, { recursive: true });
  // The source copy plus an output of about the same size.
  await admitDisk(layout.root, layout.cache, diskNeed(2 * modelBytes, ctx.minFreeDiskMb ?? 0));
  const jobScratch = layout.jobScratch(data.jobId);
  const costAtStart = processCost(true);
  const attemptDir = join(jobScratch, `attempt-${ctx.attempt}-${process.pid}-${Date.now()}`);
  const sourceDir = join(attemptDir, 'source');
  const outDir = join(attemptDir, 'out');
  await mkdir(outDir, { recursive: true });
  try {
    await enter('fetch', VALIDATE_END);
    for (const a of needed) {
      await fetchArtifact(ctx.store, a, join(sourceDir, ...a.name.split('/')));
      throwIfCancelled(ctx.signal);
    }
    const prev = await readHardenReport(sourceDir);
    const [probes, task] = await Promise.all([readProbeBlob(ctx.store, input.probes), input.task ? readProbeBlob(ctx.store, input.task) : undefined]);
    const ep = { executionProvider: ctx.executionProvider };
    // The atlas lives in the worker's cache, which may have been evicted or be another machine's: a harden
    // job's atlas is rebuilt from the same probe sets (same inputs, same id). An atlas grown by an earlier
    // continue cannot be rebuilt from the sets of the first job alone.
    try {
      await findAtlas(layout.cache, prev.atlas.id);
    } catch (e) {
      if (!(isFgsnError(e) && e.code === 'ATLAS_NOT_FOUND') || input.atlasProbes === undefined || (prev.continual ?? []).length > 0) throw e;
      await enter('atlas', FETCH_END);
      const [harmful, benign] = await Promise.all([readProbeBlob(ctx.store, input.atlasProbes.harmful), readProbeBlob(ctx.store, input.atlasProbes.benign)]);
      const { atlas } = await getOrBuildAtlas(input.alignedPath, harmful, benign, layout.cache, ep);
      if (atlas.id !== prev.atlas.id) throw e;
    }
    throwIfCancelled(ctx.signal);

    await enter('pipeline', FETCH_END);
    const result = await runContinue(
      {
        hardenedDir: sourceDir, category: input.category, probes, outDir, cacheDir: layout.cache, ...ep,
        // The published report names the inputs by role (never by server path): continue opens them here.
        checkpoints: { base: input.basePath, aligned: input.alignedPath }, from: input.sourceJobId,
        ...(task ? { task } : {}), ...(input.q !== undefined ? { q: input.q } : {}), ...(input.targetAsr !== undefined ? { targetAsr: input.targetAsr } : {}),
        ...(input.maxExtraParams !== undefined ? { maxExtraParams: input.maxExtraParams } : {}),
        ...(input.exactTolerance !== undefined ? { exactTolerance: input.exactTolerance } : {}), ...(input.options ? { options: input.options } : {}),
      },
      {
        signal: ctx.signal,
        onProgress: async (p) => {
          const percent = FETCH_END + ((PIPELINE_END - FETCH_END) * Math.max(0, Math.min(100, p.percent))) / 100;
          await ctx.report({ stage: p.stage, percent, message: p.message, timings: { ...timings }, attempt: ctx.attempt });
        },
      },
    );
    throwIfCancelled(ctx.signal);

    await enter('publish', PIPELINE_END);
    // Only what was asked for goes out; the step folders of the guarded search never do.
    const outputs = new Set(input.outputs ?? ['model', 'diff', 'report']);
    await rm(join(outDir, '.fgsn-target'), { recursive: true, force: true });
    if (!outputs.has('model')) await rm(join(outDir, 'model'), { recursive: true, force: true });
    if (!outputs.has('diff')) await rm(join(outDir, 'diff.safetensors'), { force: true });
    if (!outputs.has('report')) {
      await rm(join(outDir, 'report.json'), { force: true });
      await rm(join(outDir, 'report.html'), { force: true });
    }
    // What the pipeline writes names the inputs by role and the source by job id; the scrubber is the
    // backstop for a path in a message (as for harden's reports).
    const scrub = pathScrubber(input, ctx.dataDir);
    for (const name of ['report.json', 'report.html', 'model/fgsn-report.json', 'model/README.md']) {
      const path = join(outDir, ...name.split('/'));
      const text = await readFile(path, 'utf8').catch(() => undefined);
      if (text !== undefined) await writeFile(path, scrub(text));
    }
    const published = await publishArtifacts(ctx.store, data.jobId, outDir, [], { move: ctx.store.kind === 'fs' });
    await removeStaleAttempts(ctx.store, published).catch(() => undefined);
    await rm(jobScratch, { recursive: true, force: true });
    await enter('done', 100);
    const last = (result.report.continual as Record<string, unknown>[]).at(-1) ?? {};
    const search = last.search as { reached?: boolean } | undefined;
    return {
      artifacts: published.artifacts.map(({ name, bytes, sha256 }) => ({ name, bytes, sha256 })),
      summary: {
        kind: 'continue', continuedFrom: input.sourceJobId, category: input.category,
        extraRows: result.extraRows, extraPctLinear: result.extraPctLinear, totalPctLinear: result.totalPctLinear,
        ...(search ? { target: search.reached === true ? 'reached' : 'not reached' } : { target: 'not set' }),
        cost: attemptCost(costAtStart),
      },
      timings,
    };
  } finally {
    await endAttempt(attemptDir, jobScratch, layout.engineCache);
  }
}
