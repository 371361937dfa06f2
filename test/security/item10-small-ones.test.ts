/**
 * Issue 15 item 10: malformed multipart -> coded 400; over-long names -> coded 400 in the service's error
 * shape; `Range: bytes=5-2` ignored (200); If-None-Match lists, W/ and * honoured; deep options with an
 * Idempotency-Key -> 400 (not a 500 from recursion); bad key configurations refused at start; job errors
 * free of server paths; `fgsn serve` on a taken port exits non-zero with a clear message; failed
 * authentications rate-limited (429 + Retry-After; last: it blocks this suite's address).
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataLayout } from '../../src/storage/layout.js';
import { loadConfig } from '../../src/config.js';
import { pathScrubber } from '../../src/queue/run-job.js';
import { startWorker, type RunningWorker } from '../../src/queue/worker.js';
import { REPO_ROOT } from '../support/testbed.js';
import { REDIS_URL } from '../support/redis.js';
import { waitFor } from '../api/harness.js';
import { fakeCompletedJob, readyCheckpoint, securitySetup, type SecuritySetup } from './fixtures.js';

let s: SecuritySetup;
let worker: RunningWorker | undefined;
beforeAll(async () => {
  s = await securitySetup({ env: { FGSN_AUTH_FAILURE_LIMIT: '5' } });
});
afterAll(async () => {
  await worker?.close();
  await s?.close();
});

type Err = { code: string; message: string; requestId: string; details?: unknown };

describe('item 10', () => {
  it('a malformed multipart body is a coded 400', async () => {
    const c = await s.h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const r = await s.h.json<Err>('PUT', `/v1/checkpoints/${c.body.id}/files/config.json`, {
      body: '--XX\r\nContent-Disposition: form-data; name="file"; filename="config.json"\r\n\r\n{}\r\n--XX', // never closed
      headers: { 'content-type': 'multipart/form-data; boundary=XX' },
    });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('VALIDATION_FAILED');
  });

  it('names over the length limit get a coded 400 in the service shape', async () => {
    const c = await s.h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const r = await s.h.json<Err>('PUT', `/v1/checkpoints/${c.body.id}/files/${'a'.repeat(3000)}`, { body: 'x', headers: { 'content-type': 'application/octet-stream' } });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ code: 'VALIDATION_FAILED', requestId: expect.any(String) });
  });

  it('an invalid Range is ignored (200 with the whole body); If-None-Match lists, W/ and * give 304', async () => {
    const id = await fakeCompletedJob(s.h, [{ name: 'report.json', body: '{"hello":"world"}' }]);
    const url = `/v1/jobs/${id}/artifacts/report.json`;
    const whole = await s.h.req('GET', url, { headers: { range: 'bytes=5-2' } });
    expect(whole.status).toBe(200);
    expect(await whole.text()).toBe('{"hello":"world"}');
    const part = await s.h.req('GET', url, { headers: { range: 'bytes=2-6' } });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe('hello');
    const etag = part.headers.get('etag') as string;
    for (const inm of [`"nope", ${etag}`, `W/${etag}`, '*']) {
      const r = await s.h.req('GET', url, { headers: { 'if-none-match': inm } });
      expect(r.status, inm).toBe(304);
    }
    expect((await s.h.req('GET', url, { headers: { 'if-none-match': '"other"' } })).status).toBe(200);
  });

  it('deeply nested options with an Idempotency-Key are a 400, not a 500', async () => {
    // Built as text: 100,000 levels are more than JSON.stringify (or a recursive canonical form) survives.
    const depth = 100_000;
    const body = `{"finetuned":"${s.finetuned}","reference":"${s.reference}","options":{"q":${'['.repeat(depth)}1${']'.repeat(depth)}}}`;
    const r = await s.h.json<Err>('POST', '/v1/jobs', { body, headers: { 'content-type': 'application/json', 'idempotency-key': 'deep-1' } });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('VALIDATION_FAILED');
  });

  it('refuses at start: a key listed for two tenants, keys shorter than 16 characters, an admin tenant "*"', () => {
    const bad = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (e) {
        return (e as { code: string; message: string });
      }
      return undefined;
    };
    expect(bad({ FGSN_API_KEYS: 'the-same-long-key-1:t1,the-same-long-key-1:t2' })).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/two tenants/) });
    expect(bad({ FGSN_API_KEYS: 'k:t1' })).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/at least 16/) });
    expect(bad({ FGSN_ADMIN_KEYS: 'an-admin-key-0123456:*' })).toMatchObject({ code: 'CONFIG_INVALID' });
    expect(bad({ FGSN_API_KEYS: 'a-fine-key-0123456789:t1', FGSN_ADMIN_KEYS: 'a-fine-key-0123456789:t2' })).toMatchObject({ code: 'CONFIG_INVALID' });
    expect(bad({ FGSN_API_KEYS: 'a-fine-key-0123456789:t1', FGSN_ADMIN_KEYS: 'a-fine-key-0123456789' })).toBeUndefined();
  });

  it('server paths become ids and file names', () => {
    const scrub = pathScrubber({ basePath: '/srv/models/base', alignedPath: '/data/uploads/ckpt_x/files', finetunedPath: '/data/uploads/ckpt_y/files' }, '/data');
    expect(scrub('/data/uploads/ckpt_y/files/model.safetensors: bad; /srv/models/base/config.json; /data/work/job_1/a')).toBe('ckpt_y/model.safetensors: bad; base/config.json; ./work/job_1/a');
  });

  it('a failed job reports its error without absolute server paths', async () => {
    const ft = await readyCheckpoint(s.h, s.modelDir, 'key-tenant-a-0123456789');
    await rm(join(dataLayout(s.h.dataDir).uploadFiles(ft), 'config.json'), { force: true });
    const sub = await s.h.json<{ id: string }>('POST', '/v1/jobs', { json: { finetuned: ft, reference: s.reference } });
    expect(sub.status).toBe(202);
    worker = startWorker(s.h.config);
    const done = await waitFor(async () => {
      const r = await s.h.json<{ state: string; error: unknown }>('GET', `/v1/jobs/${sub.body.id}`);
      return r.body.state === 'failed' ? r.body : undefined;
    }, 'job failed', 120_000, 200);
    const text = JSON.stringify(done.error);
    expect(text).toContain(ft);
    expect(text).not.toContain(s.h.dataDir);
    expect(text).not.toMatch(/"\/(tmp|srv|home|work|data)\//);
  });

  it('fgsn serve on a port in use exits non-zero with a clear message', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'fgsn.js'), 'serve', '--port', String(port), '--host', '127.0.0.1'], {
        cwd: REPO_ROOT,
        env: { ...process.env, REDIS_URL, FGSN_API_KEYS: 'a-fine-key-0123456789:t', FGSN_DATA_DIR: join(s.work.dir, 'serve'), FGSN_LOG_LEVEL: 'silent' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      expect(code).not.toBe(0);
      expect(err).toMatch(/already in use/);
    } finally {
      blocker.close();
    }
  });

  it('failed authentications are rate limited per address: 429 + Retry-After, even for a right key then', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 8; i++) codes.push((await s.h.req('GET', '/v1/checkpoints', { key: `wrong-key-${i}-0123456789` })).status);
    expect(codes.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(codes.slice(5)).toEqual([429, 429, 429]);
    const blocked = await s.h.req('GET', '/v1/checkpoints');
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});
