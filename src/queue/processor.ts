/**
 * The sandboxed BullMQ processor: runs in a child process of the worker, so a crash or an out-of-memory
 * kill of one job never takes the worker (or other jobs) down with it.
 */
import { UnrecoverableError, type SandboxedJob } from 'bullmq';
import { FgsnError, isFgsnError } from '../errors.js';
import { createBlobStore, type BlobStore } from '../storage/index.js';
import { ProgressEvents, type JobEvent } from './events.js';
import { encodeCodedError, type FgsnJobData, type HardenJobResult } from './job-data.js';
import { runContinueJob } from './run-continue.js';
import { pathScrubber, runHardenJob, scrubValue, type RunContext } from './run-job.js';
import { runtimeFromEnv } from './runtime.js';

// When the worker dies (even by SIGKILL) the IPC channel closes: leave with it rather than run orphaned.
process.on('disconnect', () => process.exit(1));

let store: BlobStore | undefined;

/** Input problems and deliberate stops are not retried; everything else may be transient. */
function isPermanent(e: FgsnError): boolean {
  return e.isUserError || e.code === 'PIPELINE_UNAVAILABLE' || e.code === 'ENGINE_EP_UNAVAILABLE' || e.code === 'CONFIG_INVALID';
}

export default async function process_(job: SandboxedJob<FgsnJobData, HardenJobResult>, _token?: string, signal?: AbortSignal): Promise<HardenJobResult> {
  const runtime = runtimeFromEnv();
  store ??= createBlobStore(runtime);
  // Events are shown to the tenant too: server paths become ids and file names.
  const scrub = pathScrubber(job.data.input, runtime.dataDir);
  const events = new ProgressEvents();
  // A sandboxed job's log() is a message to the worker (ordered with its progress and result messages).
  const log = async (e: JobEvent): Promise<void> => {
    await job.log(JSON.stringify(scrubValue(e, scrub)));
  };
  try {
    const ctx: RunContext = {
      attempt: job.attemptsMade + 1,
      dataDir: runtime.dataDir,
      store,
      executionProvider: runtime.executionProvider,
      ...(runtime.minFreeDiskMb !== undefined ? { minFreeDiskMb: runtime.minFreeDiskMb } : {}),
      signal,
      report: async (p) => {
        await job.updateProgress(p as unknown as object);
        const e = events.next(p);
        if (e) await log(e);
      },
    };
    // Same context, same events and error coding: only what the attempt runs differs by kind.
    const data = job.data;
    const result = data.kind === 'continue' ? await runContinueJob(data, ctx) : await runHardenJob(data, ctx);
    const at = new Date().toISOString();
    // A missed safety target is never silent: it is an event as well as the summary's `target`.
    if (result.summary.target === 'not reached') {
      await log({ type: 'warning', at, code: 'TARGET_NOT_REACHED', message: 'the job finished without reaching its safety target on the probes; see summary.targetDetails' });
    }
    await log({ type: 'state', at, state: 'completed' });
    return result;
  } catch (e) {
    const err = signal?.aborted && !(isFgsnError(e) && e.code === 'JOB_CANCELLED') ? new FgsnError('JOB_CANCELLED', 'the job was cancelled') : e;
    const coded = isFgsnError(err)
      ? scrubValue({ code: err.code, message: err.message, details: err.details }, scrub)
      : { code: 'INTERNAL', message: scrub(err instanceof Error ? err.message : String(err)) };
    const permanent = isFgsnError(err) && isPermanent(err);
    const retried = !permanent && job.attemptsMade + 1 < (job.opts.attempts ?? 1);
    const at = new Date().toISOString();
    await log({ type: 'error', at, code: coded.code, message: coded.message });
    await log({ type: 'state', at, state: coded.code === 'JOB_CANCELLED' ? 'cancelled' : retried ? 'retrying' : 'failed' });
    if (permanent) throw new UnrecoverableError(encodeCodedError(coded));
    throw new Error(encodeCodedError(coded));
  }
}
