/**
 * The harden worker: a BullMQ Worker whose processor runs sandboxed in child processes, plus the pieces
 * around it that need a long-lived process: cancel polling, webhook dispatch on terminal states, the
 * webhook delivery worker, stage metrics and graceful shutdown.
 */
import { rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { FgsnJobData, HardenJobResult } from './job-data.js';
import { observeFinished, workerMetrics } from './metrics.js';
import { HARDEN_QUEUE, cancelFlagKey } from './names.js';
import { RUNTIME_ENV, runtimeToEnv } from './runtime.js';
import { enforceCacheBound, ENGINE_PROCESS_EXEC_ARGV, withEngineProcessEnv } from '../engine/index.js';
import { describeJob } from './status.js';
import { expireJobRecord } from './queue.js';
import { dataLayout } from '../storage/index.js';
import { createWebhookQueue, enqueueWebhook, eventFor, startWebhookWorker, type WebhookSettings } from './webhooks.js';

export interface WorkerOptions {
  logger?: Logger;
  /** Registry for stage-duration and outcome metrics (the API's, when both run in one process). */
  registry?: Registry;
  /** How often active jobs' cancel flags are checked. */
  cancelPollMs?: number;
}

export interface RunningWorker {
  worker: Worker<FgsnJobData, HardenJobResult>;
  /** Waits for running jobs up to the shutdown timeout, then lets them go back to the queue as stalled. */
  close(): Promise<void>;
}

function processorLocation(): { file: string; execArgv: string[] } {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    // Running from the TypeScript sources: the child needs the same loader.
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    return { file: join(dirname(here), 'processor.ts'), execArgv: ['--import', tsx] };
  }
  return { file: join(dirname(here), 'processor.js'), execArgv: process.execArgv.filter((a) => !a.startsWith('--inspect')) };
}

export function redisConnection(url: string): Redis {
  // BullMQ's blocking commands need unlimited retries per request.
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

export function startWorker(config: Config, opts: WorkerOptions = {}): RunningWorker {
  const log = opts.logger;
  const connection = redisConnection(config.redisUrl);
  const { file, execArgv } = processorLocation();
  const memory = config.worker.maxMemoryMb ? [`--max-old-space-size=${config.worker.maxMemoryMb}`] : [];
  const worker = new Worker<FgsnJobData, HardenJobResult>(HARDEN_QUEUE, file, {
    connection,
    prefix: config.queuePrefix,
    concurrency: config.worker.concurrency,
    lockDuration: config.worker.lockDurationMs,
    stalledInterval: config.worker.stalledIntervalMs,
    // A job whose worker died is put back once more than BullMQ's default before it is failed as lost.
    maxStalledCount: 2,
    useWorkerThreads: false,
    workerForkOptions: {
      execArgv: [...execArgv, ...ENGINE_PROCESS_EXEC_ARGV, ...memory],
      env: { ...withEngineProcessEnv(process.env), [RUNTIME_ENV]: runtimeToEnv(config) },
    },
  });
  try {
    // Leftovers of processors that died (builders' temporary folders) go, and the bound holds from the start.
    enforceCacheBound(dataLayout(config.dataDir).engineCache);
  } catch (e) {
    log?.warn({ err: e }, 'cache bound check failed');
  }
  const webhookSettings: WebhookSettings = config.webhook;
  const webhookQueue = createWebhookQueue(connection, config.queuePrefix);
  const webhookWorker = startWebhookWorker(connection, config.queuePrefix, webhookSettings);
  const metrics = opts.registry ? workerMetrics(opts.registry) : undefined;

  const active = new Set<string>();
  const checkCancel = async (id: string): Promise<void> => {
    if ((await connection.exists(cancelFlagKey(config.queuePrefix, id))) === 1) {
      worker.cancelJob(id, 'cancelled by the client');
    }
  };
  const poller = setInterval(() => {
    for (const id of active) checkCancel(id).catch((e) => log?.warn({ err: e, jobId: id }, 'cancel check failed'));
  }, opts.cancelPollMs ?? 500);
  poller.unref();

  const onTerminal = async (job: Job<FgsnJobData, HardenJobResult>): Promise<void> => {
    const status = await describeJob(job, {
      id: job.data.jobId,
      createdAt: new Date(job.timestamp).toISOString(),
      request: job.data.request,
      cancelRequested: false,
    });
    const event = eventFor(status.state);
    if (event === undefined) return; // a failed attempt that will be retried
    // The job ended (completed, failed or cancelled): its scratch goes, including what a processor killed
    // mid-attempt (out of memory) could not remove itself.
    await rm(dataLayout(config.dataDir).jobScratch(job.data.jobId), { recursive: true, force: true }).catch((e) => log?.warn({ err: e, jobId: job.data.jobId }, 'scratch removal failed'));
    log?.info({ jobId: status.id, state: status.state, error: status.error?.code }, 'job finished');
    // The API's record of the job goes with the queue entry after the retention period.
    await expireJobRecord(connection, config.queuePrefix, status.id, config.jobRetentionS);
    if (metrics) observeFinished(metrics, status);
    const hook = job.data.webhook;
    if (hook?.secret) await enqueueWebhook(webhookQueue, { url: hook.url, secret: hook.secret, event, job: status }, webhookSettings);
  };

  worker.on('active', (job) => {
    active.add(job.id as string);
    log?.info({ jobId: job.id, attempt: job.attemptsMade + 1 }, 'job started');
    checkCancel(job.id as string).catch(() => undefined);
  });
  worker.on('completed', (job) => {
    active.delete(job.id as string);
    onTerminal(job).catch((e) => log?.error({ err: e, jobId: job.id }, 'terminal handling failed'));
  });
  worker.on('failed', (job, err) => {
    if (!job) return;
    active.delete(job.id as string);
    log?.warn({ jobId: job.id, attempt: job.attemptsMade, reason: err.message }, 'job attempt failed');
    onTerminal(job).catch((e) => log?.error({ err: e, jobId: job.id }, 'terminal handling failed'));
  });
  // Stage webhooks (webhook.events includes 'stage'): one delivery per stage change, from the progress the
  // sandboxed processor reports; the last stage seen is kept per active job only.
  const lastStage = new Map<string, string>();
  worker.on('progress', (job, progress) => {
    const hook = job.data.webhook;
    const stage = (progress as { stage?: unknown }).stage;
    if (!hook?.secret || !hook.events?.includes('stage') || typeof stage !== 'string' || lastStage.get(job.id as string) === stage) return;
    lastStage.set(job.id as string, stage);
    describeJob(job, { id: job.data.jobId, createdAt: new Date(job.timestamp).toISOString(), request: job.data.request, cancelRequested: false }, 'active')
      .then((status) => enqueueWebhook(webhookQueue, { url: hook.url, secret: hook.secret!, event: 'job.stage', job: { ...status, stage } }, webhookSettings))
      .catch((e) => log?.warn({ err: e, jobId: job.id }, 'stage webhook not queued'));
  });
  worker.on('completed', (job) => lastStage.delete(job.id as string));
  worker.on('failed', (job) => {
    if (job) lastStage.delete(job.id as string);
  });
  worker.on('stalled', (jobId) => log?.warn({ jobId }, 'job stalled; put back in the queue'));
  worker.on('error', (e) => log?.error({ err: e }, 'worker error'));
  webhookWorker.on('failed', (job, err) => log?.warn({ jobId: job?.data.job.id, url: job?.data.url, attempt: job?.attemptsMade, reason: err.message }, 'webhook delivery failed'));
  webhookWorker.on('error', (e) => log?.error({ err: e }, 'webhook worker error'));

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      clearInterval(poller);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((r) => {
        timer = setTimeout(() => r('timeout'), config.shutdownTimeoutS * 1000);
      });
      const outcome = await Promise.race([worker.close().then(() => 'closed' as const), timedOut]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        log?.warn('shutdown timeout: leaving running jobs to be recovered as stalled');
        await worker.close(true);
      }
      await webhookWorker.close();
      await webhookQueue.close();
      connection.disconnect();
    })());
  return { worker, close };
}
