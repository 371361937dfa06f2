/**
 * The Fastify application: plugins (errors, auth, metrics, OpenAPI) and the /v1 routes over a context of
 * Redis records, the BullMQ queues and the artifact store. Building it connects nothing by itself.
 */
import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import type { Config } from '../config.js';
import { createHardenQueue, type HardenQueue } from '../queue/queue.js';
import { createWebhookQueue } from '../queue/webhooks.js';
import { createBlobStore, type BlobStore } from '../storage/index.js';
import type { ApiContext } from './context.js';
import { installErrorHandling } from './error-handler.js';
import { createApiMetrics } from './metrics.js';
import { Records } from './records.js';
import { artifactRoutes } from './routes/artifacts.js';
import { checkpointRoutes } from './routes/checkpoints.js';
import { jobRoutes } from './routes/jobs.js';
import { opsRoutes } from './routes/ops.js';
import { probeSetRoutes } from './routes/probe-sets.js';
import { referenceRoutes } from './routes/references.js';
import { zodValidatorCompiler } from './zod-schema.js';

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

/** Fastify's catch-all parameter is `*`, which OpenAPI cannot name: documented as {path}. */
function renameWildcard(schema: Record<string, unknown>, url: string): { schema: Record<string, unknown>; url: string } {
  if (!url.endsWith('/*') || schema === undefined) return { schema, url };
  const params = schema.params as { properties?: Record<string, unknown>; required?: string[] } | undefined;
  const properties = { ...(params?.properties ?? {}) };
  if ('*' in properties) {
    properties.path = { ...(properties['*'] as object), description: 'Artifact name as listed, e.g. model/model.safetensors' };
    delete properties['*'];
  }
  return {
    schema: { ...schema, params: { ...params, properties, required: (params?.required ?? []).map((r) => (r === '*' ? 'path' : r)) } },
    url: url.slice(0, -1) + ':path',
  };
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export async function buildApp(config: Config, opts: AppOptions = {}): Promise<BuiltApp> {
  const redis = new Redis(config.redisUrl, { lazyConnect: opts.offline === true, maxRetriesPerRequest: 3 });
  const queueConnection = new Redis(config.redisUrl, { lazyConnect: opts.offline === true, maxRetriesPerRequest: null });
  const store: BlobStore = createBlobStore(config);
  const queue: HardenQueue = createHardenQueue(queueConnection, config.queuePrefix);
  const webhookQueue = createWebhookQueue(queueConnection, config.queuePrefix);
  const registry = opts.registry ?? new Registry();
  const ctx: ApiContext = {
    config,
    redis,
    records: new Records(redis, config.queuePrefix),
    store,
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
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    ajv: { customOptions: { strict: false } },
  }) as unknown as FastifyInstance;
  app.setValidatorCompiler(zodValidatorCompiler);
  // Response schemas document; they do not filter what is sent.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  installErrorHandling(app);

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
        description:
          'Find and repair the safety neurons a fine-tune broke: upload a fine-tuned checkpoint, run a hardening job, download the repaired model, ' +
          'a row diff and a report. Errors are {code, message, hint, details, requestId}; codes are listed in src/errors.ts.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API key from FGSN_API_KEYS' } } },
      security: [{ bearer: [] }],
      tags: ['checkpoints', 'references', 'probe-sets', 'jobs', 'artifacts', 'ops'].map((name) => ({ name })),
    },
    transform: ({ schema, url }) => renameWildcard(schema as Record<string, unknown>, url),
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  await opsRoutes(app, ctx);
  await checkpointRoutes(app, ctx);
  await referenceRoutes(app, ctx);
  await probeSetRoutes(app, ctx);
  await jobRoutes(app, ctx);
  await artifactRoutes(app, ctx);

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
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
