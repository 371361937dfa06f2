/**
 * The committed OpenAPI document matches the code, passes `redocly lint`, and real responses match it;
 * the ops endpoints answer as documented.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Ajv2020 } from 'ajv/dist/2020.js';
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

  it('is ready for SDK generators: unique operationIds, shared schemas, servers, license, 429 with rate-limit headers', async () => {
    const doc = (await openApiDocument(loadConfig({}))) as {
      info: { license?: { name: string } };
      servers?: unknown[];
      components: { schemas: Record<string, unknown>; headers: Record<string, unknown> };
      paths: Record<string, Record<string, { operationId?: string; responses: Record<string, { headers?: Record<string, unknown> }> }>>;
    };
    expect(doc.info.license?.name).toBe('MIT');
    expect(doc.servers?.length).toBeGreaterThan(0);
    const ops = Object.entries(doc.paths).flatMap(([p, m]) => Object.entries(m).map(([method, op]) => ({ p, method, op })));
    const ids = ops.map((o) => o.op.operationId);
    expect(ids.every((id) => typeof id === 'string' && /^[a-z][A-Za-z]+$/.test(id)), ids.join(',')).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['Error', 'Job', 'Checkpoint', 'Reference', 'ProbeSet', 'Artifact']));
    expect(JSON.stringify(doc.paths)).toContain('"$ref":"#/components/schemas/Error"');
    for (const { p, method, op } of ops.filter((o) => o.p.startsWith('/v1/'))) {
      expect(op.responses['429'], `${method} ${p}`).toBeDefined();
      expect(Object.keys(op.responses['429'].headers ?? {}), `${method} ${p}`).toEqual(expect.arrayContaining(['retry-after', 'ratelimit-limit']));
      const ok = Object.entries(op.responses).find(([s]) => s.startsWith('2'));
      expect(Object.keys(ok?.[1].headers ?? {}), `${method} ${p}`).toContain('ratelimit-remaining');
    }
  });

  it('passes redocly lint (redocly.yaml: recommended-strict) without errors', async () => {
    const bin = join(REPO_ROOT, 'node_modules', '.bin', 'redocly');
    const env = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', CI: 'true' };
    const r = await promisify(execFile)(bin, ['lint', 'openapi/openapi.json'], { cwd: REPO_ROOT, env }).catch((e: { stdout?: string; stderr?: string; code?: number }) => e);
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    expect('code' in r ? r.code : 0, out).toBe(0);
    expect(out).toContain('Your API description is valid');
  }, 60_000);
});

type OpenApiDoc = {
  components: Record<string, unknown>;
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>>;
};

/** Validates a real response body against the document's schema for that operation and status (2020-12). */
function responseChecker(doc: OpenApiDoc): (method: string, template: string, status: number, body: unknown) => void {
  const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
  // The document's component refs, resolved against the document itself.
  const toDoc = (v: unknown): unknown => JSON.parse(JSON.stringify(v).replaceAll('"#/components/', '"fgsn-openapi#/components/'));
  ajv.addSchema({ $id: 'fgsn-openapi', components: toDoc(doc.components) as object });
  return (method, template, status, body) => {
    const response = doc.paths[template]?.[method]?.responses[String(status)];
    expect(response, `${method} ${template} documents ${status}`).toBeDefined();
    const schema = response?.content?.['application/json']?.schema;
    expect(schema, `${method} ${template} ${status} has a JSON schema`).toBeDefined();
    const validate = ajv.compile(toDoc(schema) as object);
    expect(validate(body) ? [] : validate.errors, `${method} ${template} ${status}: ${JSON.stringify(body).slice(0, 300)}`).toEqual([]);
  };
}

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

  it('real responses match the committed document (success and error bodies)', async () => {
    const doc = JSON.parse(await readFile(join(REPO_ROOT, 'openapi', 'openapi.json'), 'utf8')) as OpenApiDoc;
    const check = responseChecker(doc);
    const seen = async (method: string, template: string, path: string, opts: Parameters<Harness['json']>[2], status: number) => {
      const r = await h.json(method.toUpperCase(), path, opts);
      expect(r.status, JSON.stringify(r.body)).toBe(status);
      check(method, template, status, r.body);
      return r.body as Record<string, unknown>;
    };
    await seen('get', '/healthz', '/healthz', { key: null }, 200);
    await seen('get', '/readyz', '/readyz', { key: null }, 200);
    const ckpt = await seen('post', '/v1/checkpoints', '/v1/checkpoints', { json: { name: 'drift' } }, 201);
    await seen('get', '/v1/checkpoints', '/v1/checkpoints', {}, 200);
    await seen('get', '/v1/checkpoints/{id}', `/v1/checkpoints/${String(ckpt.id)}`, {}, 200);
    await seen('put', '/v1/checkpoints/{id}/files/{name}', `/v1/checkpoints/${String(ckpt.id)}/files/config.json`, { body: '{}' }, 201);
    await seen('post', '/v1/checkpoints/{id}/complete', `/v1/checkpoints/${String(ckpt.id)}/complete`, {}, 422);
    await seen('get', '/v1/probe-sets', '/v1/probe-sets', {}, 200);
    await seen('get', '/v1/probe-sets/{id}', '/v1/probe-sets/default-harmful', {}, 200);
    await seen('post', '/v1/probe-sets', '/v1/probe-sets?kind=benign', { body: '{"prompt":"hello"}\n', headers: { 'content-type': 'application/x-ndjson' } }, 201);
    await seen('get', '/v1/references', '/v1/references', {}, 200);
    await seen('get', '/v1/jobs', '/v1/jobs', {}, 200);
    await seen('post', '/v1/jobs', '/v1/jobs', { json: { finetuned: ckpt.id } }, 400);
    await seen('get', '/v1/jobs/{id}', '/v1/jobs/job_missing', {}, 404);
    await seen('get', '/v1/jobs/{id}/artifacts', '/v1/jobs/job_missing/artifacts', {}, 404);
    await seen('get', '/v1/references', '/v1/references', { key: 'not-a-key-of-this-service' }, 401);
    // A documented body-less answer: no content, as the document says.
    const del = await h.req('DELETE', `/v1/checkpoints/${String(ckpt.id)}`);
    expect(del.status).toBe(204);
    expect(await del.text()).toBe('');
    expect(doc.paths['/v1/checkpoints/{id}'].delete.responses['204'].content).toBeUndefined();
  });

  it('echoes a request id and answers unknown routes with a coded 404', async () => {
    const r = await h.req('GET', '/v1/nothing', { headers: { 'x-request-id': 'req-123' } });
    expect(r.status).toBe(404);
    expect(r.headers.get('x-request-id')).toBe('req-123');
    expect(await r.json()).toMatchObject({ code: 'NOT_FOUND', requestId: 'req-123' });
  });
});
