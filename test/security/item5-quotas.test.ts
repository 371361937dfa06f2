/**
 * Issue 15 item 5: per-tenant quotas (checkpoints, bytes stored, probe sets, concurrent jobs) answer a coded
 * 429 QUOTA_EXCEEDED naming the quota; abandoned uploads are swept after their TTL (files, records and
 * quota usage); an upload that would leave less than the configured free disk is refused with 507.
 */
import { request as httpRequest } from 'node:http';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sweepAbandonedUploads } from '../../src/api/routes/checkpoints.js';
import { dataLayout } from '../../src/storage/layout.js';
import { KEYS, uploadFolder } from '../api/harness.js';
import { securitySetup, type SecuritySetup } from './fixtures.js';

let s: SecuritySetup;
let folderBytes = 0;
beforeAll(async () => {
  s = await securitySetup({
    env: { FGSN_QUOTA_CHECKPOINTS: '3', FGSN_QUOTA_PROBE_SETS: '1', FGSN_QUOTA_CONCURRENT_JOBS: '1', FGSN_UPLOAD_TTL_S: '3600', FGSN_UPLOAD_MAX_BYTES: String(2 ** 52), FGSN_QUOTA_BYTES: String(50 * 1024 ** 2) },
  });
  for (const f of await readdir(s.modelDir)) folderBytes += (await stat(join(s.modelDir, f))).size;
});
afterAll(async () => {
  await s?.close();
});

type Err = { code: string; details: { quota: string; limit: number; used: number } };

describe('item 5: quotas, upload TTL, free disk', () => {
  it('bytes stored: counted per tenant, refused past the quota, released on delete', async () => {
    const used = Number(await s.h.built.ctx.redis.get(s.h.built.ctx.records.key('tenant', 'tenant-a', 'bytes')));
    expect(used).toBe(folderBytes);
    const c = await s.h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const big = Buffer.alloc(50 * 1024 ** 2);
    const r = await s.h.json<Err>('PUT', `/v1/checkpoints/${c.body.id}/files/model.safetensors`, { body: big, headers: { 'content-type': 'application/octet-stream' } });
    expect(r.status).toBe(429);
    expect(r.body).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { quota: 'bytes' } });
    expect((await s.h.json('DELETE', `/v1/checkpoints/${c.body.id}`)).status).toBe(204);
  });

  it('checkpoints: the fourth upload of tenant a is refused; tenant b is not affected', async () => {
    await uploadFolder(s.h, s.modelDir, ['config.json']);
    await uploadFolder(s.h, s.modelDir, ['config.json']);
    const r = await s.h.json<Err>('POST', '/v1/checkpoints', { json: {} });
    expect(r.status).toBe(429);
    expect(r.body).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { quota: 'checkpoints', limit: 3 } });
    expect((await s.h.json('POST', '/v1/checkpoints', { key: KEYS.b, json: {} })).status).toBe(201);
  });

  it('abandoned uploads are swept after the TTL, freeing the quota', async () => {
    const open = (await s.h.json<{ items: { id: string; state: string }[] }>('GET', '/v1/checkpoints')).body.items.filter((i) => i.state === 'uploading');
    expect(open.length).toBe(2);
    expect(await sweepAbandonedUploads(s.h.built.ctx)).toBe(0); // younger than the TTL
    // Opened two hours ago, as far as the sweeper's index knows.
    for (const o of open) await s.h.built.ctx.redis.zadd(s.h.built.ctx.records.key('uploads', 'open'), Date.now() - 7200_000, o.id);
    expect(await sweepAbandonedUploads(s.h.built.ctx)).toBeGreaterThanOrEqual(2);
    for (const o of open) {
      expect((await s.h.json('GET', `/v1/checkpoints/${o.id}`)).status).toBe(404);
      await expect(stat(dataLayout(s.h.dataDir).upload(o.id))).rejects.toThrow();
    }
    // the completed checkpoint stays
    expect((await s.h.json('GET', `/v1/checkpoints/${s.finetuned}`)).status).toBe(200);
    expect((await s.h.json('POST', '/v1/checkpoints', { json: {} })).status).toBe(201);
  });

  it('probe sets: one allowed', async () => {
    const post = () => s.h.json<Err>('POST', '/v1/probe-sets?kind=harmful', { body: '{"prompt":"x"}\n', headers: { 'content-type': 'application/x-ndjson' } });
    expect((await post()).status).toBe(201);
    const r = await post();
    expect(r.status).toBe(429);
    expect(r.body.details.quota).toBe('probeSets');
  });

  it('concurrent jobs: a second queued job is refused until the first is cancelled', async () => {
    const submit = () => s.h.json<Err & { id: string }>('POST', '/v1/jobs', { json: { finetuned: s.finetuned, reference: s.reference } });
    const first = await submit();
    expect(first.status).toBe(202);
    const second = await submit();
    expect(second.status).toBe(429);
    expect(second.body.details.quota).toBe('concurrentJobs');
    expect((await s.h.json('POST', `/v1/jobs/${first.body.id}/cancel`)).status).toBe(202);
    expect((await submit()).status).toBe(202);
  });

  it('an upload larger than the free disk (minus the reserve) is refused with 507 before a byte is stored', async () => {
    const c = await s.h.json<{ id: string }>('POST', '/v1/checkpoints', { key: KEYS.b, json: {} });
    const url = new URL(`${s.h.base}/v1/checkpoints/${c.body.id}/files/model.safetensors`);
    const status = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(url, { method: 'PUT', headers: { authorization: `Bearer ${KEYS.b}`, 'content-type': 'application/octet-stream', 'content-length': String(2 ** 50) } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.write('x');
    });
    expect(status.status).toBe(507);
    expect(JSON.parse(status.body).code).toBe('INSUFFICIENT_STORAGE');
  });
});
