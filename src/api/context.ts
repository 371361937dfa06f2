import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { HardenQueue, WebhookDelivery } from '../queue/index.js';
import type { BlobStore } from '../storage/index.js';
import type { ApiMetrics } from './metrics.js';
import type { Records } from './records.js';

/** Everything route handlers use, created once per app. */
export interface ApiContext {
  config: Config;
  redis: Redis;
  records: Records;
  store: BlobStore;
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
  interface FastifyRequest {
    auth: AuthContext;
  }
}
