import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { HardenQueue, WebhookDelivery } from '../queue/index.js';
import type { BlobStore, DataLayout } from '../storage/index.js';
import type { ApiMetrics } from './metrics.js';
import type { Records } from './records.js';

/**
 * What route handlers share, created once per app and decorated onto the Fastify instance (one decorator
 * per member, so every route plugin reads `app.records`, `app.store`, ...). Helpers take this interface:
 * the instance itself satisfies it, and so does BuiltApp.ctx outside a request.
 */
export interface ApiContext {
  config: Config;
  redis: Redis;
  records: Records;
  store: BlobStore;
  /** Every path under FGSN_DATA_DIR. */
  layout: DataLayout;
  queue: HardenQueue;
  webhookQueue: Queue<WebhookDelivery>;
  registry: Registry;
  metrics: ApiMetrics;
}

export interface AuthContext {
  tenant: string;
  admin: boolean;
  keyHash: string;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    redis: Redis;
    records: Records;
    store: BlobStore;
    layout: DataLayout;
    queue: HardenQueue;
    webhookQueue: Queue<WebhookDelivery>;
    registry: Registry;
    metrics: ApiMetrics;
  }
  interface FastifyRequest {
    /** Set by the authenticated scope's onRequest hook (auth.ts) before any /v1 handler runs. */
    auth: AuthContext;
  }
}
