/** The committed OpenAPI document matches the code; the ops endpoints answer as documented. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openApiDocument } from '../../src/api/app.js';
import { loadConfig } from '../../src/config.js';
import { REPO_ROOT } from '../support/testbed.js';
import { startHarness, type Harness } from './harness.js';

describe('OpenAPI', () => {
  it('openapi/openapi.json is what the code generates (regenerate: node bin/fgsn.js openapi > openapi/openapi.json)', async () => {
    const committed = JSON.parse(await readFile(join(REPO_ROOT, 'openapi', 'openapi.json'), 'utf8')) as Record<string, unknown>;
    const generated = await openApiDocument(loadConfig({}));
    expect(generated).toEqual(committed);
  });

  it('is OpenAPI 3.1 with every /v1 operation secured by bearer keys and documented errors', async () => {
    const doc = (await openApiDocument(loadConfig({}))) as {
      openapi: string;
      paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown> }>>;
    };
    expect(doc.openapi).toBe('3.1.0');
    const ops = Object.entries(doc.paths).flatMap(([p, m]) => Object.entries(m).map(([method, op]) => ({ p, method, op })));
    for (const { p, op } of ops.filter((o) => o.p.startsWith('/v1/'))) {
      expect(op.security, p).toBeUndefined(); // inherits the global bearer requirement
      expect(Object.keys(op.responses).some((s) => s.startsWith('4')), p).toBe(true);
    }
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/jobs/{id}/artifacts/{path}', '/v1/checkpoints/{id}/files/{name}', '/healthz', '/readyz', '/metrics']));
  });
});

describe('ops endpoints', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('healthz, readyz, metrics and the Swagger UI answer without a key', async () => {
    expect((await h.json('GET', '/healthz', { key: null })).body).toEqual({ status: 'ok' });
    const ready = await h.json<{ status: string; checks: Record<string, { ok: boolean }> }>('GET', '/readyz', { key: null });
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toMatchObject({ redis: { ok: true }, storage: { ok: true }, disk: { ok: true } });
    await h.req('GET', '/v1/probe-sets');
    const metrics = await (await h.req('GET', '/metrics', { key: null })).text();
    for (const name of ['fgsn_jobs{state="queued"}', 'fgsn_queue_depth', 'fgsn_http_request_duration_seconds_bucket', 'fgsn_upload_bytes_total', 'fgsn_artifact_bytes_total']) {
      expect(metrics).toContain(name);
    }
    const docs = await h.req('GET', '/docs', { key: null });
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('swagger');
    const json = await h.req('GET', '/docs/json', { key: null });
    expect(((await json.json()) as { openapi: string }).openapi).toBe('3.1.0');
  });

  it('readyz reports a data disk below the free-space floor as not ready', async () => {
    const full = await startHarness({ env: { FGSN_MIN_FREE_DISK_MB: String(1024 * 1024 * 1024) } });
    try {
      const r = await full.json<{ checks: { disk: { ok: boolean; detail: string } } }>('GET', '/readyz', { key: null });
      expect(r.status).toBe(503);
      expect(r.body.checks.disk.ok).toBe(false);
    } finally {
      await full.close();
    }
  });

  it('echoes a request id and answers unknown routes with a coded 404', async () => {
    const r = await h.req('GET', '/v1/nothing', { headers: { 'x-request-id': 'req-123' } });
    expect(r.status).toBe(404);
    expect(r.headers.get('x-request-id')).toBe('req-123');
    expect(await r.json()).toMatchObject({ code: 'NOT_FOUND', requestId: 'req-123' });
  });
});
