/**
 * Chaos (issue 15): a private redis-server (AOF persistence) is stopped while a job runs and restarted;
 * meanwhile the API answers 503; after the restart the job finishes and is published exactly once, whole
 * (one attempt folder in the store, every listed artifact matching its sha256).
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KEYS, startHarness, uploadFolder, waitFor, type Harness } from '../api/harness.js';
import { testbedProbeNdjson } from '../api/testbed-probes.js';
import { TESTBED_DEV, describeTestbed, testbedPath } from '../support/testbed.js';
import { redisServerAvailable, startPrivateRedis, type PrivateRedis } from './redis-server.js';

const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];
type Job = { id: string; state: string; artifacts: { name: string; sha256: string }[] | null; error: unknown };

describeTestbed('chaos: Redis stopped mid-job and restarted', () => {
  let redis: PrivateRedis;
  let h: Harness;
  beforeAll(async () => {
    if (!redisServerAvailable()) return;
    redis = await startPrivateRedis();
    h = await startHarness({ worker: true, env: { REDIS_URL: redis.url, FGSN_ALLOWED_MODEL_DIRS: TESTBED_DEV, FGSN_REDIS_COMMAND_TIMEOUT_MS: '1000' } });
  });
  afterAll(async () => {
    await h?.close();
    await redis?.destroy();
  });

  it.skipIf(!redisServerAvailable())('the API answers 503 meanwhile; the job completes once, whole', async () => {
    const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { alignedPath: testbedPath('aligned'), basePath: testbedPath('base') } });
    const hp = await h.json<{ id: string }>('POST', '/v1/probe-sets?kind=harmful', { body: await testbedProbeNdjson('harmful_align_train.jsonl', 16), headers: { 'content-type': 'application/x-ndjson' } });
    const ft = await uploadFolder(h, testbedPath('ft_sst_p10'), MODEL_FILES);
    expect((await h.json('POST', `/v1/checkpoints/${ft}/complete`)).status).toBe(200);
    const sub = await h.json<Job>('POST', '/v1/jobs', { json: { finetuned: ft, reference: ref.body.id, probes: { harmful: hp.body.id }, outputs: ['diff', 'report'] } });
    expect(sub.status).toBe(202);
    await waitFor(async () => ((await h.json<Job>('GET', `/v1/jobs/${sub.body.id}`)).body.state === 'running' ? true : undefined), 'running', 120_000, 50);

    await redis.stop();
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const r = await h.req('GET', `/v1/jobs/${sub.body.id}`);
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).not.toBeNull();
      expect(performance.now() - t0).toBeLessThan(3000);
      await new Promise((res) => setTimeout(res, 1000));
    }
    await redis.start();

    const done = await waitFor(async () => {
      const r = await h.json<Job>('GET', `/v1/jobs/${sub.body.id}`);
      return r.status === 200 && ['completed', 'failed', 'cancelled'].includes(r.body.state) ? r.body : undefined;
    }, 'job terminal after restart', 500_000, 500);
    expect(done.state, JSON.stringify(done.error)).toBe('completed');
    // Published once: one attempt folder besides the manifest; every artifact whole.
    const keys = await h.built.ctx.store.list(`jobs/${sub.body.id}`);
    const attempts = new Set(keys.filter((k) => !k.endsWith('/manifest.json')).map((k) => k.split('/')[2]));
    expect(attempts.size).toBe(1);
    for (const a of done.artifacts ?? []) {
      const res = await h.req('GET', `/v1/jobs/${sub.body.id}/artifacts/${a.name}`);
      expect(res.status).toBe(200);
      expect(createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex')).toBe(a.sha256);
    }
  }, 900_000);
});
