import { mkdir, statfs } from 'node:fs/promises';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { Health } from '../schemas.js';

type Check = { ok: boolean; detail?: string };

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function check(fn: () => Promise<string | undefined>): Promise<Check> {
  try {
    const detail = await fn();
    return detail === undefined ? { ok: true } : { ok: true, detail };
  } catch (e) {
    return { ok: false, detail: e instanceof Error ? e.message : String(e) };
  }
}

/** Liveness, readiness and metrics: outside the authenticated scope (probes and scrapers carry no key). */
export const opsRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/healthz',
    { schema: { tags: ['ops'], operationId: 'getHealth', summary: 'Liveness: the process answers', security: [], response: { 200: Health } } },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['ops'],
        operationId: 'getReadiness',
        summary: 'Readiness: Redis answers, storage takes writes, the data disk has room',
        security: [],
        response: { 200: Health, 503: Health },
      },
    },
    async (_request, reply) => {
      const [redis, storage, disk] = await Promise.all([
        check(async () => {
          await withTimeout(app.redis.ping(), 2000, 'redis ping');
          return undefined;
        }),
        check(async () => {
          await withTimeout(app.store.checkWritable(), 5000, 'storage write');
          return app.store.kind;
        }),
        check(async () => {
          await mkdir(app.config.dataDir, { recursive: true });
          const s = await statfs(app.config.dataDir);
          const freeMb = Math.floor((s.bavail * s.bsize) / (1024 * 1024));
          if (freeMb < app.config.minFreeDiskMb) throw new Error(`${freeMb} MB free in ${app.config.dataDir}, below FGSN_MIN_FREE_DISK_MB=${app.config.minFreeDiskMb}`);
          return `${freeMb} MB free`;
        }),
      ]);
      const ok = redis.ok && storage.ok && disk.ok;
      return reply.status(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready', checks: { redis, storage, disk } });
    },
  );

  app.get('/metrics', { schema: { tags: ['ops'], operationId: 'getMetrics', summary: 'Prometheus metrics', security: [], produces: ['text/plain'] } }, async (_request, reply) => {
    // Bounded: collectors that read Redis give up with its command timeout; this is the backstop.
    return reply.type(app.registry.contentType).send(await withTimeout(app.registry.metrics(), 2 * app.config.redisCommandTimeoutMs + 1000, 'metrics collection'));
  });
};
