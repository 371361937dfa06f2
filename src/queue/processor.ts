/**
 * The sandboxed BullMQ processor: runs in a child process of the worker, so a crash or an out-of-memory
 * kill of one job never takes the worker (or other jobs) down with it.
 */
import { UnrecoverableError, type SandboxedJob } from 'bullmq';
import { FgsnError, isFgsnError } from '../errors.js';
import { createBlobStore, type BlobStore } from '../storage/index.js';
import { encodeCodedError, type HardenJobData, type HardenJobResult } from './job-data.js';
import { pathScrubber, runHardenJob, scrubValue } from './run-job.js';
import { runtimeFromEnv } from './runtime.js';

// When the worker dies (even by SIGKILL) the IPC channel closes: leave with it rather than run orphaned.
process.on('disconnect', () => process.exit(1));

let store: BlobStore | undefined;

/** Input problems and deliberate stops are not retried; everything else may be transient. */
function isPermanent(e: FgsnError): boolean {
  return e.isUserError || e.code === 'PIPELINE_UNAVAILABLE' || e.code === 'ENGINE_EP_UNAVAILABLE' || e.code === 'CONFIG_INVALID';
}

export default async function process_(job: SandboxedJob<HardenJobData, HardenJobResult>, _token?: string, signal?: AbortSignal): Promise<HardenJobResult> {
  const runtime = runtimeFromEnv();
  store ??= createBlobStore(runtime);
  try {
    return await runHardenJob(job.data, {
      attempt: job.attemptsMade + 1,
      dataDir: runtime.dataDir,
      store,
      executionProvider: runtime.executionProvider,
      ...(runtime.minFreeDiskMb !== undefined ? { minFreeDiskMb: runtime.minFreeDiskMb } : {}),
      signal,
      report: async (p) => {
        await job.updateProgress(p as unknown as object);
      },
    });
  } catch (e) {
    const err = signal?.aborted && !(isFgsnError(e) && e.code === 'JOB_CANCELLED') ? new FgsnError('JOB_CANCELLED', 'the job was cancelled') : e;
    // Errors are shown to the tenant: server paths become ids and file names.
    const scrub = pathScrubber(job.data.input, runtime.dataDir);
    if (isFgsnError(err)) {
      const message = encodeCodedError(scrubValue({ code: err.code, message: err.message, details: err.details }, scrub));
      if (isPermanent(err)) throw new UnrecoverableError(message);
      throw new Error(message);
    }
    throw new Error(encodeCodedError({ code: 'INTERNAL', message: scrub(err instanceof Error ? err.message : String(err)) }));
  }
}
