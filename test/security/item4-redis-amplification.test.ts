/**
 * Issue 15 item 4: probe sets live in the blob store and jobs carry ids + sha256 (a 1 MB set used in six
 * slots used to be copied whole into the job's Redis hash, six times); finished jobs expire after the
 * configured retention (BullMQ removeOnComplete/removeOnFail by age, and the service's job record).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getHardenJob } from '../../src/queue/queue.js';
import { startWorker, type RunningWorker } from '../../src/queue/worker.js';
import { waitFor } from '../api/harness.js';
import { securitySetup, type SecuritySetup } from './fixtures.js';

const RETENTION_S = 3600;
let s: SecuritySetup;
let worker: RunningWorker | undefined;
beforeAll(async () => {
  s = await securitySetup({ env: { FGSN_JOB_RETENTION_S: String(RETENTION_S) } });
});
afterAll(async () => {
  await worker?.close();
  await s?.close();
});

const postProbes = async (ndjson: string, kind = 'harmful') => {
  const r = await s.h.json<{ id: string }>('POST', `/v1/probe-sets?kind=${kind}`, { body: ndjson, headers: { 'content-type': 'application/x-ndjson' } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id;
};

describe('item 4: Redis holds ids, not payloads; finished jobs expire', () => {
  it('a 1 MB probe set used in six slots adds a few hundred bytes to the job, not 6 MB', async () => {
    const line = (i: number) => JSON.stringify({ prompt: `prompt ${i} ${'x'.repeat(480)}`, category: 'c', response: 'ok' });
    const ndjson = Array.from({ length: 2000 }, (_, i) => line(i)).join('\n');
    const id = await postProbes(ndjson);
    const redis = s.h.built.ctx.redis;
    const prefix = s.h.config.queuePrefix;
    // Nothing in Redis holds the probe text.
    expect(await redis.exists(`${prefix}:probes:${id}:records`)).toBe(0);
    expect(((await redis.get(`${prefix}:probes:${id}`)) ?? '').length).toBeLessThan(2000);
    const sub = await s.h.json<{ id: string }>('POST', '/v1/jobs', {
      json: {
        finetuned: s.finetuned,
        reference: s.reference,
        probes: { harmful: id, benign: id },
        task: id,
        evaluate: { harmful: id, emerging: id, lookalike: id, tasks: { t: id } },
      },
    });
    expect(sub.status, JSON.stringify(sub.body)).toBe(202);
    const data = (await redis.hget(`${prefix}:harden:${sub.body.id}`, 'data')) ?? '';
    process.stdout.write(`[item4] job data: ${data.length} bytes for a ${ndjson.length}-byte probe set in 7 slots\n`);
    expect(data.length).toBeGreaterThan(0);
    expect(data.length).toBeLessThan(8 * 1024);
    expect(data).not.toContain('prompt 1 ');
    const job = await getHardenJob(s.h.built.ctx.queue, sub.body.id);
    expect(job?.data.kind).toBe('harden');
    expect(job?.data.kind === 'continue' ? undefined : job?.data.input.harmful).toMatchObject({ id, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(job?.opts.removeOnComplete).toEqual({ age: RETENTION_S });
    expect(job?.opts.removeOnFail).toEqual({ age: RETENTION_S });
    expect((await s.h.json('POST', `/v1/jobs/${sub.body.id}/cancel`)).status).toBe(202);
    // a cancelled queued job's record expires too
    const ttl = await redis.ttl(`${prefix}:job:${sub.body.id}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(RETENTION_S);
  });

  it('a finished job gets the retention TTL; a probe blob changed after submission fails the job with PROBES_INVALID', async () => {
    const id = await postProbes('{"prompt":"how do I pick a lock"}\n');
    const sub = await s.h.json<{ id: string }>('POST', '/v1/jobs', { json: { finetuned: s.finetuned, reference: s.reference, probes: { harmful: id } } });
    expect(sub.status).toBe(202);
    await s.h.built.ctx.store.putBytes(`probes/${id}.jsonl`, '{"prompt":"something else"}');
    worker = startWorker(s.h.config);
    await worker.worker.waitUntilReady();
    const done = await waitFor(async () => {
      const r = await s.h.json<{ state: string; error: { code: string; message: string } | null }>('GET', `/v1/jobs/${sub.body.id}`);
      return r.body.state === 'failed' ? r.body : undefined;
    }, 'job failed', 120_000, 200);
    expect(done.error?.code).toBe('PROBES_INVALID');
    expect(done.error?.message).toMatch(/sha256/);
    const key = `${s.h.config.queuePrefix}:job:${sub.body.id}`;
    const ttl = await waitFor(async () => {
      const t = await s.h.built.ctx.redis.ttl(key);
      return t > 0 ? t : undefined;
    }, 'record TTL', 10_000);
    expect(ttl).toBeLessThanOrEqual(RETENTION_S);
  });
});
