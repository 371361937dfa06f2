import { Job, Queue, type ConnectionOptions } from 'bullmq';
import { MAX_JOB_EVENTS } from './events.js';
import type { FgsnJobData, HardenJobResult } from './job-data.js';
import { HARDEN_QUEUE } from './names.js';

export type HardenQueue = Queue<FgsnJobData, HardenJobResult>;

export function createHardenQueue(connection: ConnectionOptions, prefix: string): HardenQueue {
  return new Queue<FgsnJobData, HardenJobResult>(HARDEN_QUEUE, { connection, prefix });
}

export async function enqueueHarden(queue: HardenQueue, data: FgsnJobData, retry: { attempts: number; backoffMs: number; retentionS: number }): Promise<void> {
  await queue.add(data.kind ?? 'harden', data, {
    jobId: data.jobId,
    attempts: retry.attempts,
    backoff: { type: 'exponential', delay: retry.backoffMs },
    // Status and artifacts are read from the finished job, so it is kept for the retention period (the
    // job record expires with it, see jobRecordExpiry); then BullMQ drops it at its next cleanup.
    removeOnComplete: { age: retry.retentionS },
    removeOnFail: { age: retry.retentionS },
    // The job's event log (events.ts) is its BullMQ log: capped, and removed with the job.
    keepLogs: MAX_JOB_EVENTS,
  });
}

/** Sets the job record (and its cancel flag) to expire after the retention period; called once the job is terminal. */
export async function expireJobRecord(redis: { expire(key: string, seconds: number): Promise<number> }, prefix: string, jobId: string, retentionS: number): Promise<void> {
  await redis.expire(`${prefix}:job:${jobId}`, retentionS);
}

export async function getHardenJob(queue: HardenQueue, id: string): Promise<Job<FgsnJobData, HardenJobResult> | undefined> {
  return (await Job.fromId<FgsnJobData, HardenJobResult>(queue, id)) ?? undefined;
}

/** A page of a job's event log: events after index `after` (exclusive; -1 = from the start), oldest first. */
export async function getJobEvents(queue: HardenQueue, id: string, after: number, limit: number): Promise<{ lines: string[]; total: number }> {
  const start = after + 1;
  const { logs, count } = await queue.getJobLogs(id, start, start + limit - 1, true);
  return { lines: logs, total: count };
}
