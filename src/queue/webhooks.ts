/**
 * Webhook delivery on a job's terminal state. Deliveries are jobs of their own queue, so retries with
 * exponential backoff survive restarts and never block the harden workers.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Queue, UnrecoverableError, Worker, type ConnectionOptions } from 'bullmq';
import { WEBHOOK_QUEUE } from './names.js';
import { guardedLookup, PrivateAddressError, privateLiteral } from './webhook-address.js';
import type { JobStatus } from './status.js';

export type WebhookEvent = 'job.completed' | 'job.failed' | 'job.cancelled' | 'job.stage';

export interface WebhookDelivery {
  url: string;
  secret: string;
  event: WebhookEvent;
  job: JobStatus;
}

export const SIGNATURE_HEADER = 'x-fgsn-signature';

/** `sha256=<hex HMAC-SHA256 of the exact body bytes>`; the body carries the event id and time, so it is never reused. */
export function signWebhook(secret: string, body: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(body, 'utf8').digest('hex');
}

export function isHttpUrl(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

export function eventFor(state: JobStatus['state']): WebhookEvent | undefined {
  if (state === 'completed') return 'job.completed';
  if (state === 'failed') return 'job.failed';
  if (state === 'cancelled') return 'job.cancelled';
  return undefined;
}

/** One delivery attempt: throws on network errors and non-2xx answers (so BullMQ retries it). */
export async function deliverWebhook(d: WebhookDelivery, attempt: number, s: Pick<WebhookSettings, 'timeoutMs' | 'allowPrivate'>): Promise<number> {
  if (!isHttpUrl(d.url)) throw new UnrecoverableError(`webhook URL ${d.url} is not http(s)`);
  const url = new URL(d.url);
  const literal = s.allowPrivate ? undefined : privateLiteral(url);
  if (literal !== undefined) throw new UnrecoverableError(new PrivateAddressError(url.hostname, literal).message);
  const body = JSON.stringify({ id: randomUUID(), event: d.event, attempt, sentAt: new Date().toISOString(), job: d.job });
  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'user-agent': 'fgsn-webhook/1',
    [SIGNATURE_HEADER]: signWebhook(d.secret, body),
    'x-fgsn-event': d.event,
  };
  const status = await new Promise<number>((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { method: 'POST', headers, timeout: s.timeoutMs, ...(s.allowPrivate ? {} : { lookup: guardedLookup }) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`webhook ${d.url} timed out after ${s.timeoutMs} ms`)));
    req.on('error', (e) => reject(e instanceof PrivateAddressError ? new UnrecoverableError(e.message) : e));
    req.end(body);
  });
  // Redirects are not followed: a 3xx is an answer the receiver has to fix.
  if (status < 200 || status >= 300) throw new Error(`webhook ${d.url} answered ${status}`);
  return status;
}

export interface WebhookSettings {
  attempts: number;
  backoffMs: number;
  timeoutMs: number;
  /** Deliver to loopback/private addresses too (single-machine setups, tests). */
  allowPrivate: boolean;
}

export function createWebhookQueue(connection: ConnectionOptions, prefix: string): Queue<WebhookDelivery> {
  return new Queue<WebhookDelivery>(WEBHOOK_QUEUE, { connection, prefix });
}

/** Enqueues a delivery; the id makes a second enqueue of the same event a no-op. */
export async function enqueueWebhook(queue: Queue<WebhookDelivery>, d: WebhookDelivery, s: WebhookSettings): Promise<void> {
  // One delivery per job and event; a stage event per stage and attempt.
  const id = d.event === 'job.stage' ? `${d.job.id}-stage-${d.job.attempts.made}-${d.job.stage ?? 'none'}` : `${d.job.id}-${d.event}`;
  await queue.add(d.event, d, {
    jobId: id,
    attempts: s.attempts,
    backoff: { type: 'exponential', delay: s.backoffMs },
    removeOnComplete: { age: 24 * 3600 },
    removeOnFail: { age: 7 * 24 * 3600 },
  });
}

export function startWebhookWorker(connection: ConnectionOptions, prefix: string, s: WebhookSettings): Worker<WebhookDelivery> {
  return new Worker<WebhookDelivery>(WEBHOOK_QUEUE, async (job) => deliverWebhook(job.data, job.attemptsMade + 1, s), {
    connection,
    prefix,
    concurrency: 8,
  });
}
