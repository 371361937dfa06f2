/** The public view of a job, built from its BullMQ state; shared by the API and the webhook sender. */
import type { Job } from 'bullmq';
import { estimatedFinishAt } from './events.js';
import { decodeCodedError, type CodedError, type FgsnJobData, type HardenJobResult, type HardenProgress } from './job-data.js';

export type PublicJobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export const PUBLIC_JOB_STATES: PublicJobState[] = ['queued', 'running', 'completed', 'failed', 'cancelled'];

export interface JobStatus {
  id: string;
  state: PublicJobState;
  stage: string | null;
  progress: number;
  attempts: { made: number; max: number };
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** Seconds per finished stage. */
  timings: Record<string, number>;
  summary: Record<string, unknown> | null;
  artifacts: { name: string; bytes: number; sha256: string }[] | null;
  error: CodedError | null;
  /** A cancel was asked for; a running job stops at its next stage boundary. */
  cancelRequested: boolean;
  request: Record<string, unknown>;
  /** Running jobs: when it should finish, extrapolated from its progress since it started; else null. */
  estimatedFinishAt: string | null;
}

const iso = (ms: number | undefined): string | null => (ms === undefined || ms === null || ms === 0 ? null : new Date(ms).toISOString());

export function mapState(bullState: string, error: CodedError | undefined, cancelRequested: boolean): PublicJobState {
  switch (bullState) {
    case 'active':
      return 'running';
    case 'completed':
      return 'completed';
    case 'failed':
      return error?.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed';
    case 'unknown':
      // Removed from the queue: only a cancel of a queued job does that.
      return cancelRequested ? 'cancelled' : 'failed';
    default:
      return 'queued';
  }
}

export async function describeJob(
  job: Job<FgsnJobData, HardenJobResult> | undefined,
  record: { id: string; createdAt: string; request: Record<string, unknown>; cancelRequested: boolean },
  /** The job's state read BEFORE `job` was loaded, so the data is never older than the state. */
  knownState?: string,
): Promise<JobStatus> {
  const base: JobStatus = {
    id: record.id,
    state: record.cancelRequested ? 'cancelled' : 'failed',
    stage: null,
    progress: 0,
    attempts: { made: 0, max: 0 },
    createdAt: record.createdAt,
    startedAt: null,
    finishedAt: null,
    timings: {},
    summary: null,
    artifacts: null,
    error: record.cancelRequested ? { code: 'JOB_CANCELLED', message: 'cancelled before it started' } : { code: 'INTERNAL', message: 'the job is no longer in the queue' },
    cancelRequested: record.cancelRequested,
    request: record.request,
    estimatedFinishAt: null,
  };
  if (job === undefined) return base;
  const bullState = knownState ?? (await job.getState());
  const error = decodeCodedError(job.failedReason);
  const state = mapState(bullState, error, record.cancelRequested);
  const progress = (typeof job.progress === 'object' && job.progress !== null ? job.progress : {}) as Partial<HardenProgress>;
  const result = job.returnvalue as HardenJobResult | null | undefined;
  const percent = state === 'completed' ? 100 : Math.round(Math.max(0, Math.min(100, progress.percent ?? 0)) * 10) / 10;
  return {
    ...base,
    estimatedFinishAt: estimatedFinishAt(state, job.processedOn, percent),
    state,
    stage: state === 'completed' ? 'done' : (progress.stage ?? null),
    progress: percent,
    attempts: { made: job.attemptsMade, max: job.opts.attempts ?? 1 },
    startedAt: iso(job.processedOn),
    finishedAt: state === 'completed' || state === 'failed' || state === 'cancelled' ? iso(job.finishedOn) : null,
    timings: result?.timings ?? progress.timings ?? {},
    summary: result?.summary ?? null,
    artifacts: state === 'completed' && result ? result.artifacts : null,
    // A retry in progress keeps the last attempt's error visible (with state queued/running).
    error: state === 'completed' ? null : (error ?? null),
  };
}
