/**
 * Issue 15 item 3: upload validation runs off the API's event loop (a child with time and memory limits),
 * `validating` is a lease that expires (a validation whose API died can be redone or deleted), and
 * DELETE /v1/checkpoints/{id} exists, refused (409) while a queued or running job uses the checkpoint.
 * Also measures /healthz latency while a hostile upload (a header of 60,000 tensors) is validated.
 */
import { writeFile, mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataLayout } from '../../src/storage/layout.js';
import { tinyConfig } from '../checkpoint/fixtures.js';
import { KEYS, uploadFolder } from '../api/harness.js';
import { securitySetup, type SecuritySetup } from './fixtures.js';

let s: SecuritySetup;
beforeAll(async () => {
  s = await securitySetup();
});
afterAll(async () => {
  await s?.close();
});

/** A model folder whose safetensors header lists `n` one-float tensors the architecture does not have. */
async function hostileFolder(dir: string, n: number): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const header: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) header[`model.layers.${i}.extra.weight`] = { dtype: 'F32', shape: [1], data_offsets: [i * 4, i * 4 + 4] };
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  await writeFile(join(dir, 'model.safetensors'), Buffer.concat([len, h, Buffer.alloc(n * 4)]));
  await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig()));
  return ['config.json', 'model.safetensors'];
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const forceState = async (id: string, patch: Record<string, unknown>) => {
  const redis = s.h.built.ctx.redis;
  const key = s.h.built.ctx.records.key('ckpt', id);
  const r = JSON.parse((await redis.get(key)) as string) as Record<string, unknown>;
  await redis.set(key, JSON.stringify({ ...r, ...patch }));
};

describe('item 3: validation off the event loop, leases, DELETE', () => {
  it('/healthz stays fast while a hostile upload is validated (open-loop probe every 10 ms)', async () => {
    const dir = join(s.work.dir, 'hostile');
    const id = await uploadFolder(s.h, dir, await hostileFolder(dir, 60_000));
    const latencies: number[] = [];
    let done = false;
    const complete = s.h.json<{ code: string; details: { problems: unknown[]; problemCount: number } }>('POST', `/v1/checkpoints/${id}/complete`).finally(() => {
      done = true;
    });
    const probes: Promise<void>[] = [];
    // Open loop: a probe every 10 ms whether or not earlier ones answered, so a stall shows in every
    // probe sent during it (a closed loop would record one slow sample).
    while (!done) {
      const t0 = performance.now();
      probes.push(fetch(`${s.h.base}/healthz`).then(async (r) => {
        await r.text();
        latencies.push(performance.now() - t0);
      }));
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(probes);
    const r = await complete;
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('UPLOAD_INVALID');
    expect(r.body.details.problems.length).toBeLessThanOrEqual(100);
    expect(r.body.details.problemCount).toBeGreaterThan(100);
    latencies.sort((a, b) => a - b);
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    process.stdout.write(`[item3] /healthz during hostile validation: n=${latencies.length} p50=${p50.toFixed(1)} ms p99=${p99.toFixed(1)} ms max=${latencies.at(-1)?.toFixed(1)} ms\n`);
    expect(latencies.length).toBeGreaterThan(10);
    // Generous bound for a shared 2-core CI machine (the goal, 50 ms, is printed above); validating in
    // the API process stalled every probe for the whole validation (seconds).
    expect(p99).toBeLessThan(1000);
  });

  it('a validation whose lease expired (API killed mid-validation) is validated again by complete', async () => {
    const id = await uploadFolder(s.h, s.modelDir, await readdir(s.modelDir));
    await forceState(id, { state: 'validating', leaseUntil: new Date(Date.now() + 60_000).toISOString() });
    const live = await s.h.json('POST', `/v1/checkpoints/${id}/complete`);
    expect(live.status).toBe(409);
    expect((await s.h.json('DELETE', `/v1/checkpoints/${id}`)).status).toBe(409);
    await forceState(id, { state: 'validating', leaseUntil: new Date(Date.now() - 1000).toISOString() });
    const again = await s.h.json<{ state: string }>('POST', `/v1/checkpoints/${id}/complete`);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.state).toBe('ready');
  });

  it('a checkpoint stuck in validating with an expired lease can be deleted', async () => {
    const id = await uploadFolder(s.h, s.modelDir, await readdir(s.modelDir));
    await forceState(id, { state: 'validating', leaseUntil: new Date(Date.now() - 1000).toISOString() });
    expect((await s.h.json('DELETE', `/v1/checkpoints/${id}`)).status).toBe(204);
    expect((await s.h.json('GET', `/v1/checkpoints/${id}`)).status).toBe(404);
    await expect(stat(dataLayout(s.h.dataDir).upload(id))).rejects.toThrow();
  });

  it('DELETE is refused while a queued job uses the checkpoint, allowed after it is cancelled; other tenants get 404', async () => {
    const job = await s.h.json<{ id: string }>('POST', '/v1/jobs', { json: { finetuned: s.finetuned, reference: s.reference } });
    expect(job.status).toBe(202);
    expect((await s.h.json('DELETE', `/v1/checkpoints/${s.finetuned}`, { key: KEYS.b })).status).toBe(404);
    const refused = await s.h.json<{ code: string; details: { usedBy: string[] } }>('DELETE', `/v1/checkpoints/${s.finetuned}`);
    expect(refused.status).toBe(409);
    expect(refused.body.details.usedBy).toContain(`job ${job.body.id}`);
    // still usable after a refused delete
    expect((await s.h.json<{ state: string }>('GET', `/v1/checkpoints/${s.finetuned}`)).body.state).toBe('ready');
    expect((await s.h.json('POST', `/v1/jobs/${job.body.id}/cancel`)).status).toBe(202);
    expect((await s.h.json('DELETE', `/v1/checkpoints/${s.finetuned}`)).status).toBe(204);
    await expect(stat(dataLayout(s.h.dataDir).upload(s.finetuned))).rejects.toThrow();
    const after = await s.h.json<{ code: string }>('POST', '/v1/jobs', { json: { finetuned: s.finetuned, reference: s.reference } });
    expect(after.status).toBe(404);
  });

  it('checkpoints a reference points at cannot be deleted', async () => {
    const refs = await s.h.json<{ items: { aligned: { checkpointId: string } }[] }>('GET', '/v1/references', { key: KEYS.admin });
    const aligned = refs.body.items[0].aligned.checkpointId;
    expect((await s.h.json('DELETE', `/v1/checkpoints/${aligned}`, { key: KEYS.admin })).status).toBe(409);
  });
});
