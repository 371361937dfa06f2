import { Counter, Histogram, type Registry } from 'prom-client';
import type { JobStatus } from './status.js';

export interface WorkerMetrics {
  stageSeconds: Histogram<'stage'>;
  finished: Counter<'state'>;
}

/** Registered once per registry (the API and an embedded worker share one). */
const perRegistry = new WeakMap<Registry, WorkerMetrics>();

export function workerMetrics(registry: Registry): WorkerMetrics {
  let m = perRegistry.get(registry);
  if (m === undefined) {
    m = {
      stageSeconds: new Histogram({
        name: 'fgsn_stage_duration_seconds',
        help: 'Duration of each job stage (finished jobs)',
        labelNames: ['stage'],
        buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
        registers: [registry],
      }),
      finished: new Counter({ name: 'fgsn_jobs_finished_total', help: 'Jobs that reached a terminal state, by state', labelNames: ['state'], registers: [registry] }),
    };
    perRegistry.set(registry, m);
  }
  return m;
}

export function observeFinished(m: WorkerMetrics, status: JobStatus): void {
  m.finished.inc({ state: status.state });
  for (const [stage, seconds] of Object.entries(status.timings)) m.stageSeconds.observe({ stage }, seconds);
}
