import { Job, Queue, type ConnectionOptions } from 'bullmq';
import type { HardenJobData, HardenJobResult } from './job-data.js';
import { HARDEN_QUEUE } from './names.js';

export type HardenQueue = Queue<HardenJobData, HardenJobResult>;

export function createHardenQueue(connection: ConnectionOptions, prefix: string): HardenQueue {
  return new Queue<HardenJobData, HardenJobResult>(HARDEN_QUEUE, { connection, prefix });
}

export async function enqueueHarden(queue: HardenQueue, data: HardenJobData, retry: { attempts: number; backoffMs: number; retentionS: number }): Promise<void> {
  await queue.add('harden', data, {
    jobId: data.jobId,
    attempts: retry.attempts,
    backoff: { type: 'exponential', delay: retry.backoffMs },
    // Status and artifacts are read from the finished job, so it is kept for the retention period (the
    // job record expires with it, see jobRecordExpiry); then BullMQ drops it at its next cleanup.
    removeOnComplete: { age: retry.retentionS },
    removeOnFail: { age: retry.retentionS },
  });
}

/** Sets the job record (and its cancel flag) to expire after the retention period; called once the job is terminal. */
export async function expireJobRecord(redis: { expire(key: string, seconds: number): Promise<number> }, prefix: string, jobId: string, retentionS: number): Promise<void> {
  await redis.expire(`${prefix}:job:${jobId}`, retentionS);
}

export async function getHardenJob(queue: HardenQueue, id: string): Promise<Job<HardenJobData, HardenJobResult> | undefined> {
  return (await Job.fromId<HardenJobData, HardenJobResult>(queue, id)) ?? undefined;
}
