/**
 * Issue 15 item 6: with Redis down the API answers 503 SERVICE_UNAVAILABLE with Retry-After within about a
 * second (no offline queue, command timeouts), /healthz stays up and /metrics stays bounded in time; when
 * Redis is back, requests succeed again. Uses a private redis-server that the test stops and restarts.
 */
import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uploadFolder, waitFor } from '../api/harness.js';
import { securitySetup, type SecuritySetup } from './fixtures.js';
import { redisServerAvailable, startPrivateRedis, type PrivateRedis } from './redis-server.js';

let redis: PrivateRedis;
let s: SecuritySetup;

beforeAll(async () => {
  redis = await startPrivateRedis();
  s = await securitySetup({ env: { REDIS_URL: redis.url, FGSN_REDIS_COMMAND_TIMEOUT_MS: '1000' } });
});
afterAll(async () => {
  await s?.close();
  await redis?.destroy();
});

async function timed(p: () => Promise<Response>): Promise<{ res: Response; ms: number; body: Record<string, unknown> }> {
  const t0 = performance.now();
  const res = await p();
  const text = await res.text();
  return { res, ms: performance.now() - t0, body: text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

describe.skipIf(!redisServerAvailable())('item 6: Redis down', () => {
  it('answers 503 + Retry-After fast, keeps /healthz and a bounded /metrics, and recovers', async () => {
    const job = await s.h.json<{ id: string }>('POST', '/v1/jobs', { json: { finetuned: s.finetuned, reference: s.reference } });
    expect(job.status).toBe(202);
    await redis.stop();
    const calls: [string, () => Promise<Response>][] = [
      ['GET job', () => s.h.req('GET', `/v1/jobs/${job.body.id}`)],
      ['POST job', () => s.h.req('POST', '/v1/jobs', { json: { finetuned: s.finetuned, reference: s.reference } })],
      ['GET checkpoints', () => s.h.req('GET', '/v1/checkpoints')],
      ['POST checkpoint', () => s.h.req('POST', '/v1/checkpoints', { json: {} })],
    ];
    for (const [what, call] of calls) {
      const r = await timed(call);
      process.stdout.write(`[item6] ${what} with Redis down: ${r.res.status} in ${r.ms.toFixed(0)} ms\n`);
      expect(r.res.status, what).toBe(503);
      expect(r.body.code, what).toBe('SERVICE_UNAVAILABLE');
      expect(Number(r.res.headers.get('retry-after')), what).toBeGreaterThan(0);
      // generous: the budget is ~1 s (command timeout); the bug was 8.7 s and 20 s
      expect(r.ms, what).toBeLessThan(3000);
    }
    const health = await timed(() => fetch(`${s.h.base}/healthz`));
    expect(health.res.status).toBe(200);
    const metrics = await timed(() => fetch(`${s.h.base}/metrics`));
    process.stdout.write(`[item6] /metrics with Redis down: ${metrics.res.status} in ${metrics.ms.toFixed(0)} ms\n`);
    expect(metrics.ms).toBeLessThan(5000);
    const ready = await timed(() => fetch(`${s.h.base}/readyz`));
    expect(ready.res.status).toBe(503);

    await redis.start();
    const back = await waitFor(async () => {
      const r = await s.h.json<{ id: string; state: string }>('GET', `/v1/jobs/${job.body.id}`);
      return r.status === 200 ? r : undefined;
    }, 'API back after Redis restart', 30_000, 200);
    expect(back.body.state).toBe('queued');
    const id = await uploadFolder(s.h, s.modelDir, await readdir(s.modelDir));
    expect(id).toMatch(/^ckpt/);
  });
});
