import { Job, Queue, type ConnectionOptions } from 'bullmq';
import type { HardenJobData, HardenJobResult } from './job-data.js';
import { HARDEN_QUEUE } from './names.js';

export type HardenQueue = Queue<HardenJobData, HardenJobResult>;

export function createHardenQueue(connection: ConnectionOptions, prefix: string): HardenQueue {
  return new Queue<HardenJobData, HardenJobResult>(HARDEN_QUEUE, { connection, prefix });
}

export async function enqueueHarden(queue: HardenQueue, data: HardenJobData, retry: { attempts: number; backoffMs: number }): Promise<void> {
  await queue.add('harden', data, {
    jobId: data.jobId,
    attempts: retry.attempts,
    backoff: { type: 'exponential', delay: retry.backoffMs },
    // Kept: status and artifacts are read from the finished job.
    removeOnComplete: false,
    removeOnFail: false,
  });
}

export async function getHardenJob(queue: HardenQueue, id: string): Promise<Job<HardenJobData, HardenJobResult> | undefined> {
  return (await Job.fromId<HardenJobData, HardenJobResult>(queue, id)) ?? undefined;
}
