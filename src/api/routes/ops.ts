import { mkdir, statfs } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import type { ApiContext } from '../context.js';
import { Health } from '../schemas.js';
import { toJsonSchema } from '../zod-schema.js';

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

export async function opsRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const health = toJsonSchema(Health, 'output');
  app.get('/healthz', { schema: { tags: ['ops'], summary: 'Liveness: the process answers', security: [], response: { 200: health } } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    { schema: { tags: ['ops'], summary: 'Readiness: Redis answers, storage takes writes, the data disk has room', security: [], response: { 200: health, 503: health } } },
    async (_request, reply) => {
      const [redis, storage, disk] = await Promise.all([
        check(async () => {
          await withTimeout(ctx.redis.ping(), 2000, 'redis ping');
          return undefined;
        }),
        check(async () => {
          await withTimeout(ctx.store.checkWritable(), 5000, 'storage write');
          return ctx.store.kind;
        }),
        check(async () => {
          await mkdir(ctx.config.dataDir, { recursive: true });
          const s = await statfs(ctx.config.dataDir);
          const freeMb = Math.floor((s.bavail * s.bsize) / (1024 * 1024));
          if (freeMb < ctx.config.minFreeDiskMb) throw new Error(`${freeMb} MB free in ${ctx.config.dataDir}, below FGSN_MIN_FREE_DISK_MB=${ctx.config.minFreeDiskMb}`);
          return `${freeMb} MB free`;
        }),
      ]);
      const ok = redis.ok && storage.ok && disk.ok;
      return reply.status(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready', checks: { redis, storage, disk } });
    },
  );

  app.get('/metrics', { schema: { tags: ['ops'], summary: 'Prometheus metrics', security: [], produces: ['text/plain'] } }, async (_request, reply) => {
    // Bounded: collectors that read Redis give up with its command timeout; this is the backstop.
    return reply.type(ctx.registry.contentType).send(await withTimeout(ctx.registry.metrics(), 2 * ctx.config.redisCommandTimeoutMs + 1000, 'metrics collection'));
  });
}
