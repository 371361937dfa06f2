/**
 * The Fastify application: the shared services (Redis records, the BullMQ queues, the artifact store, the
 * data layout, metrics) as decorators, the ops routes, and the /v1 route plugins inside one authenticated
 * scope. Building it connects nothing by itself.
 */
import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import type { Config } from '../config.js';
import { createHardenQueue, createWebhookQueue, type HardenQueue } from '../queue/index.js';
import { createBlobStore, dataLayout, type BlobStore } from '../storage/index.js';
import { authenticate } from './auth.js';
import type { ApiContext } from './context.js';
import { installErrorHandling, redisUnavailable } from './error-handler.js';
import { createApiMetrics } from './metrics.js';
import { Records } from './records.js';
import { artifactRoutes } from './routes/artifacts.js';
import { checkpointRoutes, sweepAbandonedUploads } from './routes/checkpoints.js';
import { jobEventRoutes } from './routes/job-events.js';
import { jobRoutes } from './routes/jobs.js';
import { opsRoutes } from './routes/ops.js';
import { probeSetRoutes } from './routes/probe-sets.js';
import { referenceRoutes } from './routes/references.js';
import { openApiObjectTransform, openApiRouteTransform, zodSerializerCompiler, zodValidatorCompiler } from './zod-schema.js';

export const API_VERSION = '0.1.0';

export interface AppOptions {
  logger?: Logger;
  /** Shared with an embedded worker so /metrics shows its stage durations. */
  registry?: Registry;
  /** For OpenAPI generation: build routes without ever connecting to Redis or storage. */
  offline?: boolean;
}

export interface BuiltApp {
  app: FastifyInstance;
  ctx: ApiContext;
  /** Closes the HTTP server (in-flight requests finish), then the queues and connections. */
  close(): Promise<void>;
}

/** Waits up to `ms` for the connection (the API still starts without Redis, answering 503 until it is back). */
function untilReady(r: Redis, ms: number): Promise<void> {
  if (r.status === 'ready') return Promise.resolve();
  return new Promise((res) => {
    const done = (): void => {
      clearTimeout(timer);
      r.off('ready', done);
      res();
    };
    const timer = setTimeout(done, ms);
    r.once('ready', done);
  });
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export async function buildApp(config: Config, opts: AppOptions = {}): Promise<BuiltApp> {
  // Fail fast when Redis is away: no offline queue (a command fails at once while disconnected), a command
  // timeout and one retry, so a request answers 503 within about a second instead of hanging.
  const failFast = { lazyConnect: opts.offline === true, enableOfflineQueue: false, commandTimeout: config.redisCommandTimeoutMs, maxRetriesPerRequest: 1 };
  const redis = new Redis(config.redisUrl, failFast);
  const queueConnection = new Redis(config.redisUrl, failFast);
  // ioredis reports every failed reconnect as an 'error' event; requests see them as 503s.
  redis.on('error', () => undefined);
  queueConnection.on('error', () => undefined);
  if (opts.offline !== true) await Promise.all([untilReady(redis, 5000), untilReady(queueConnection, 5000)]);
  const store: BlobStore = createBlobStore(config);
  const queue: HardenQueue = createHardenQueue(queueConnection, config.queuePrefix);
  const webhookQueue = createWebhookQueue(queueConnection, config.queuePrefix);
  const registry = opts.registry ?? new Registry();
  const ctx: ApiContext = {
    config,
    redis,
    records: new Records(redis, config.queuePrefix),
    store,
    layout: dataLayout(config.dataDir),
    queue,
    webhookQueue,
    registry,
    metrics: createApiMetrics(registry, queue),
  };

  const app = Fastify({
    ...(opts.logger ? { loggerInstance: opts.logger as FastifyBaseLogger } : { logger: config.logLevel === 'silent' ? false : { level: config.logLevel } }),
    genReqId: (req) => {
      const h = req.headers['x-request-id'];
      return typeof h === 'string' && REQUEST_ID.test(h) ? h : randomUUID();
    },
    bodyLimit: 1024 * 1024,
    // Long names reach the route schemas (coded 400 in the service's error shape) instead of Fastify's own answer.
    routerOptions: { maxParamLength: 4096 },
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    ajv: { customOptions: { strict: false } },
  }) as unknown as FastifyInstance;
  app.setValidatorCompiler(zodValidatorCompiler);
  app.setSerializerCompiler(zodSerializerCompiler);
  installErrorHandling(app);
  // The shared services, one decorator each: route plugins read them from their instance (children see them).
  app
    .decorate('config', ctx.config)
    .decorate('redis', ctx.redis)
    .decorate('records', ctx.records)
    .decorate('store', ctx.store)
    .decorate('layout', ctx.layout)
    .decorate('queue', ctx.queue)
    .decorate('webhookQueue', ctx.webhookQueue)
    .decorate('registry', ctx.registry)
    .decorate('metrics', ctx.metrics);
  // BullMQ prints connection errors of a queue without an 'error' listener; requests already answer 503.
  for (const q of [queue, webhookQueue]) q.on('error', (e: Error) => app.log.debug({ err: e }, 'queue connection error'));

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    ctx.metrics.requests.observe({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'fgsn',
        version: API_VERSION,
        license: { name: 'MIT', url: 'https://opensource.org/license/mit' },
        description:
          'Find and repair the safety neurons a fine-tune broke: upload a fine-tuned checkpoint, run a hardening job, download the repaired model, ' +
          'a row diff and a report. Errors are {code, message, hint, details, requestId}; codes are listed in src/errors.ts.',
      },
      servers: [
        {
          url: '{scheme}://{host}',
          description: 'Where `fgsn serve` listens (FGSN_HOST / FGSN_PORT, default port 8080), or the deployment in front of it',
          variables: { scheme: { default: 'http', enum: ['http', 'https'] }, host: { default: 'localhost:8080' } },
        },
      ],
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API key from FGSN_API_KEYS' } } },
      security: [{ bearer: [] }],
      tags: [
        { name: 'checkpoints', description: 'Uploads of fine-tuned models and LoRA adapters: create, PUT files, complete (validated, then immutable)' },
        { name: 'references', description: 'Aligned models with their base, registered by an admin; what a job compares the fine-tune against' },
        { name: 'probe-sets', description: 'Harmful, benign and task prompts (NDJSON) that locate the safety neurons and evaluate the result' },
        { name: 'jobs', description: 'Hardening jobs: submit (idempotent), follow, cancel, delete' },
        { name: 'artifacts', description: 'What a completed job produced: the repaired model, a row diff, a report' },
        { name: 'ops', description: 'Liveness, readiness and Prometheus metrics (no key needed)' },
      ],
    },
    transform: openApiRouteTransform,
    transformObject: openApiObjectTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  await app.register(opsRoutes);
  // The /v1 API: one scope whose hooks run before every route registered in it (and only those).
  await app.register(async (v1) => {
    // Every /v1 request needs Redis (auth's rate limit, records, the queue): answer 503 at once while it is
    // disconnected rather than let the request find out command by command.
    v1.addHook('onRequest', async () => {
      if (opts.offline !== true && (redis.status !== 'ready' || queueConnection.status !== 'ready')) throw redisUnavailable();
    });
    v1.addHook('onRequest', authenticate(ctx));
    await v1.register(checkpointRoutes);
    await v1.register(referenceRoutes);
    await v1.register(probeSetRoutes);
    await v1.register(jobRoutes);
    await v1.register(jobEventRoutes);
    await v1.register(artifactRoutes);
  });

  // Abandoned uploads are removed after FGSN_UPLOAD_TTL_S (checked a few times per TTL, at most every 5 min).
  const sweeper =
    opts.offline === true
      ? undefined
      : setInterval(() => {
          sweepAbandonedUploads(ctx, app.log).catch((e: unknown) => app.log.warn({ err: e }, 'upload sweep failed'));
        }, Math.min(config.uploadTtlS * 250, 300_000));
  sweeper?.unref();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      clearInterval(sweeper);
      await app.close();
      await queue.close();
      await webhookQueue.close();
      await store.close();
      redis.disconnect();
      queueConnection.disconnect();
    })());
  return { app, ctx, close };
}

/** The OpenAPI 3.1 document of the API, as committed in openapi/openapi.json. */
export async function openApiDocument(config: Config): Promise<Record<string, unknown>> {
  const built = await buildApp({ ...config, logLevel: 'silent' }, { offline: true });
  try {
    await built.app.ready();
    return built.app.swagger() as unknown as Record<string, unknown>;
  } finally {
    await built.close();
  }
}
