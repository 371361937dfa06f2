import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { HardenQueue } from '../queue/index.js';

export interface ApiMetrics {
  requests: Histogram<'method' | 'route' | 'status'>;
  bytesIn: Counter;
  bytesOut: Counter;
  rateLimited: Counter;
}

/** A registry per app instance (tests build several apps in one process). */
export function createApiMetrics(registry: Registry, queue: HardenQueue): ApiMetrics {
  collectDefaultMetrics({ register: registry, prefix: 'fgsn_process_' });
  new Gauge({
    name: 'fgsn_jobs',
    help: 'Jobs in the queue by state (failed includes cancelled)',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      // Without Redis the gauge keeps its last values: /metrics still answers (bounded by the command timeout).
      const c = await queue.getJobCounts('waiting', 'prioritized', 'delayed', 'waiting-children', 'active', 'completed', 'failed').catch(() => undefined);
      if (c === undefined) return;
      this.set({ state: 'queued' }, (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0) + (c['waiting-children'] ?? 0));
      this.set({ state: 'running' }, c.active ?? 0);
      this.set({ state: 'completed' }, c.completed ?? 0);
      this.set({ state: 'failed' }, c.failed ?? 0);
    },
  });
  new Gauge({
    name: 'fgsn_queue_depth',
    help: 'Jobs waiting for a worker (waiting + delayed retries)',
    registers: [registry],
    async collect() {
      const c = await queue.getJobCounts('waiting', 'prioritized', 'delayed').catch(() => undefined);
      if (c === undefined) return;
      this.set((c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0));
    },
  });
  return {
    requests: new Histogram({
      name: 'fgsn_http_request_duration_seconds',
      help: 'HTTP request latency by route',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [registry],
    }),
    bytesIn: new Counter({ name: 'fgsn_upload_bytes_total', help: 'Bytes received in checkpoint uploads', registers: [registry] }),
    bytesOut: new Counter({ name: 'fgsn_artifact_bytes_total', help: 'Bytes of artifacts sent', registers: [registry] }),
    rateLimited: new Counter({ name: 'fgsn_rate_limited_total', help: 'Requests refused by the per-key rate limit', registers: [registry] }),
  };
}
