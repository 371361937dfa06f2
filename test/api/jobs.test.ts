/**
 * References, probe sets and jobs without a worker (jobs stay queued): authorization, tenancy, validation,
 * idempotency, cancellation of queued jobs, listing with state/limit/cursor, and the per-key rate limit.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, writeModelFolder } from '../checkpoint/fixtures.js';
import { KEYS, startHarness, uploadFolder, type Harness } from './harness.js';

type Job = { id: string; state: string; error: { code: string } | null; code?: string };

let h: Harness;
let work: { dir: string; cleanup: () => Promise<void> };
let modelDir: string;
let ftA: string;
let reference: string;

async function readyCheckpoint(key: string): Promise<string> {
  const id = await uploadFolder(h, modelDir, await readdir(modelDir), key);
  const r = await h.json('POST', `/v1/checkpoints/${id}/complete`, { key });
  expect(r.status).toBe(200);
  return id;
}

beforeAll(async () => {
  work = await tempDir('fgsn-jobs-');
  modelDir = await writeModelFolder(join(work.dir, 'tiny'));
  h = await startHarness({ env: { FGSN_ALLOWED_MODEL_DIRS: join(work.dir, 'allowed') } });
  ftA = await readyCheckpoint(KEYS.a);
  const aligned = await readyCheckpoint(KEYS.admin);
  const base = await readyCheckpoint(KEYS.admin);
  const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { aligned, base, name: 'tiny' } });
  expect(ref.status).toBe(201);
  reference = ref.body.id;
});

afterAll(async () => {
  await h?.close();
  await work?.cleanup();
});

describe('references', () => {
  it('need the admin scope', async () => {
    const r = await h.json('POST', '/v1/references', { key: KEYS.a, json: { aligned: ftA, base: ftA } });
    expect(r.status).toBe(403);
    expect(r.body.code).toBe('FORBIDDEN');
  });

  it('accept only allow-listed server folders', async () => {
    const r = await h.json('POST', '/v1/references', { key: KEYS.admin, json: { alignedPath: modelDir, basePath: modelDir } });
    expect(r.status).toBe(403);
    expect(r.body.code).toBe('MODEL_DIR_NOT_ALLOWED');
    const traversal = await h.json('POST', '/v1/references', { key: KEYS.admin, json: { alignedPath: join(work.dir, 'allowed', '..', 'tiny'), basePath: modelDir } });
    expect(traversal.body.code).toBe('MODEL_DIR_NOT_ALLOWED');
  });

  it('take ids or paths, not both', async () => {
    const r = await h.json<{ details: { issues: unknown[] } }>('POST', '/v1/references', { key: KEYS.admin, json: { aligned: ftA, basePath: modelDir } });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ code: 'VALIDATION_FAILED' });
  });

  it('global references are visible to every tenant, tenant ones only to their owner', async () => {
    const listA = await h.json<{ items: { id: string; aligned: Record<string, unknown> }[] }>('GET', '/v1/references', { key: KEYS.a });
    expect(listA.body.items.map((i) => i.id)).toContain(reference);
    expect(JSON.stringify(listA.body)).not.toContain(h.dataDir);
    const aligned = await readyCheckpoint(KEYS.admin);
    const priv = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { aligned, base: aligned, visibility: 'tenant' } });
    expect(priv.status).toBe(201);
    expect((await h.json('GET', `/v1/references/${priv.body.id}`, { key: KEYS.a })).status).toBe(404);
    expect((await h.json('GET', `/v1/references/${priv.body.id}`, { key: KEYS.admin })).status).toBe(200);
  });
});

describe('probe sets', () => {
  const post = (body: string, query = 'kind=harmful', contentType = 'application/x-ndjson', key: string = KEYS.a) =>
    h.json<{ id: string; count: number; categories: Record<string, number>; details: { problems: { line: number }[] } }>('POST', `/v1/probe-sets?${query}`, {
      key,
      body,
      headers: { 'content-type': contentType },
    });

  it('stores NDJSON probes with counts per category', async () => {
    const r = await post('{"prompt":"a","category":"x"}\n\n{"prompt":"b","category":"x","extra":1}\n{"prompt":"c"}\n');
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ count: 3, categories: { x: 2, uncategorized: 1 } });
    expect((await h.json('GET', `/v1/probe-sets/${r.body.id}`)).status).toBe(200);
    expect((await h.json('GET', `/v1/probe-sets/${r.body.id}`, { key: KEYS.b })).status).toBe(404);
    const own = await h.json<{ items: { id: string }[] }>('GET', '/v1/probe-sets');
    expect(own.body.items.map((i) => i.id)).toContain(r.body.id);
    const others = await h.json<{ items: { id: string }[] }>('GET', '/v1/probe-sets', { key: KEYS.b });
    expect(others.body.items.map((i) => i.id)).not.toContain(r.body.id);
  });

  it('names every bad line, refuses empty sets and other media types', async () => {
    const bad = await post('{"prompt":"ok"}\nnot json\n{"category":"no prompt"}\n{"prompt":""}\n');
    expect(bad.status).toBe(422);
    expect(bad.body).toMatchObject({ code: 'PROBES_INVALID' });
    expect(bad.body.details.problems.map((p) => p.line)).toEqual([2, 3, 4]);
    expect((await post('\n\n')).body).toMatchObject({ code: 'PROBES_EMPTY' });
    expect((await post('{"prompt":"a"}', 'kind=harmful', 'application/json')).status).toBe(415);
    expect((await post('{"prompt":"a"}', 'kind=evil')).status).toBe(400);
  });

  it('ships default harmful and benign sets', async () => {
    const list = await h.json<{ items: { id: string; kind: string; count: number; builtIn: boolean }[] }>('GET', '/v1/probe-sets');
    const byId = Object.fromEntries(list.body.items.map((i) => [i.id, i]));
    expect(byId['default-harmful']).toMatchObject({ kind: 'harmful', builtIn: true });
    expect(byId['default-harmful'].count).toBeGreaterThanOrEqual(24);
    expect(byId['default-benign']).toMatchObject({ kind: 'benign', builtIn: true });
    expect(byId['default-benign'].count).toBeGreaterThanOrEqual(24);
  });
});

describe('jobs', () => {
  const submit = (json: unknown, headers: Record<string, string> = {}, key: string = KEYS.a) => h.json<Job>('POST', '/v1/jobs', { key, json, headers });

  it('validates the request and the resources it names', async () => {
    expect((await submit({ reference })).status).toBe(400);
    expect((await submit({ finetuned: ftA, reference, method: 'magic' })).status).toBe(400);
    expect((await submit({ finetuned: ftA, reference, webhook: { url: 'ftp://example.com/x', secret: 'x'.repeat(20) } })).status).toBe(400);
    expect((await submit({ finetuned: ftA, reference, webhook: { url: 'file:///etc/passwd', secret: 'x'.repeat(20) } })).status).toBe(400);
    expect((await submit({ finetuned: ftA, reference: 'ref_aaaaaaaaaaaaaaaaaaaaaaaa' })).body.code).toBe('NOT_FOUND');
    expect((await submit({ finetuned: ftA, reference, probes: { harmful: 'probes_aaaaaaaaaaaaaaaaaaaaaaaa' } })).body.code).toBe('NOT_FOUND');
    // tenant b cannot use tenant a's checkpoint
    const other = await submit({ finetuned: ftA, reference }, {}, KEYS.b);
    expect(other.status).toBe(404);
    const noAnswers = await h.json<{ id: string }>('POST', '/v1/probe-sets?kind=task', { body: '{"prompt":"q"}', headers: { 'content-type': 'application/x-ndjson' } });
    const evalBad = await submit({ finetuned: ftA, reference, evaluate: { tasks: { sst: noAnswers.body.id } } });
    expect(evalBad.status).toBe(422);
    expect(evalBad.body.code).toBe('PROBES_INVALID');
    expect((await submit({ finetuned: ftA, reference, evaluate: { bogus: 1 } })).status).toBe(400);
    const open = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    expect((await submit({ finetuned: open.body.id, reference })).body.code).toBe('CONFLICT');
  });

  it('honours Idempotency-Key', async () => {
    const body = { finetuned: ftA, reference, outputs: ['diff', 'report'] };
    const first = await submit(body, { 'idempotency-key': 'k-1' });
    expect(first.status).toBe(202);
    expect(first.res.headers.get('location')).toBe(`/v1/jobs/${first.body.id}`);
    const again = await submit({ outputs: ['diff', 'report'], reference, finetuned: ftA }, { 'idempotency-key': 'k-1' });
    expect(again.status).toBe(202);
    expect(again.body.id).toBe(first.body.id);
    expect(again.res.headers.get('idempotent-replayed')).toBe('true');
    const changed = await submit({ ...body, outputs: ['model'] }, { 'idempotency-key': 'k-1' });
    expect(changed.status).toBe(409);
    expect(changed.body.code).toBe('IDEMPOTENCY_CONFLICT');
    const noKey = await submit(body);
    expect(noKey.body.id).not.toBe(first.body.id);
    // keys are per tenant
    const ftB = await readyCheckpoint(KEYS.b);
    const b = await submit({ ...body, finetuned: ftB }, { 'idempotency-key': 'k-1' }, KEYS.b);
    expect(b.status).toBe(202);
    expect(b.body.id).not.toBe(first.body.id);
    // a failed request does not burn its key
    expect((await submit({ finetuned: ftA, reference: 'ref_aaaaaaaaaaaaaaaaaaaaaaaa' }, { 'idempotency-key': 'k-2' })).status).toBe(404);
    const k2 = await submit(body, { 'idempotency-key': 'k-2' });
    expect(k2.status).toBe(202);
    // deleting the job releases its key
    await h.json('POST', `/v1/jobs/${k2.body.id}/cancel`);
    expect((await h.req('DELETE', `/v1/jobs/${k2.body.id}`)).status).toBe(204);
    const fresh = await submit(body, { 'idempotency-key': 'k-2' });
    expect(fresh.status).toBe(202);
    expect(fresh.body.id).not.toBe(k2.body.id);
  });

  it('cancels a queued job', async () => {
    const j = await submit({ finetuned: ftA, reference });
    expect(j.body.state).toBe('queued');
    const c = await h.json<Job>('POST', `/v1/jobs/${j.body.id}/cancel`);
    expect(c.status).toBe(202);
    expect(c.body.state).toBe('cancelled');
    const g = await h.json<Job>('GET', `/v1/jobs/${j.body.id}`);
    expect(g.body).toMatchObject({ state: 'cancelled', error: { code: 'JOB_CANCELLED' } });
    expect((await h.json<Job>('POST', `/v1/jobs/${j.body.id}/cancel`)).body.state).toBe('cancelled');
    expect((await h.json('POST', `/v1/jobs/${j.body.id}/cancel`, { key: KEYS.b })).status).toBe(404);
    expect((await h.json<{ items: unknown[] }>('GET', `/v1/jobs/${j.body.id}/artifacts`)).body.items).toEqual([]);
    // a finished job can be deleted; a queued one cannot
    const queued = await submit({ finetuned: ftA, reference });
    expect((await h.json('DELETE', `/v1/jobs/${queued.body.id}`)).status).toBe(409);
    expect((await h.json('DELETE', `/v1/jobs/${j.body.id}`, { key: KEYS.b })).status).toBe(404);
    expect((await h.req('DELETE', `/v1/jobs/${j.body.id}`)).status).toBe(204);
    expect((await h.json('GET', `/v1/jobs/${j.body.id}`)).status).toBe(404);
    expect((await h.json<{ items: Job[] }>('GET', '/v1/jobs?limit=100')).body.items.map((x) => x.id)).not.toContain(j.body.id);
  });

  it('lists jobs newest first with state filter, limit and cursor', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await submit({ finetuned: ftA, reference })).body.id);
    await h.json('POST', `/v1/jobs/${ids[1]}/cancel`);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { items: Job[]; nextCursor: string | null } } = await h.json('GET', `/v1/jobs?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.body.items.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.items.map((j) => j.id));
      cursor = page.body.nextCursor;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.slice(0, 5)).toEqual([...ids].reverse());
    const cancelled = await h.json<{ items: Job[] }>('GET', '/v1/jobs?state=cancelled&limit=100');
    expect(cancelled.body.items.map((j) => j.id)).toContain(ids[1]);
    expect(cancelled.body.items.every((j) => j.state === 'cancelled')).toBe(true);
    const queued = await h.json<{ items: Job[] }>('GET', '/v1/jobs?state=queued&limit=100');
    expect(queued.body.items.map((j) => j.id)).not.toContain(ids[1]);
    expect(queued.body.items.map((j) => j.id)).toContain(ids[0]);
    expect((await h.json<{ items: Job[] }>('GET', '/v1/jobs', { key: KEYS.b })).body.items.map((j) => j.id)).not.toContain(ids[0]);
    expect((await h.json('GET', '/v1/jobs?cursor=garbage')).status).toBe(400);
    expect((await h.json('GET', `/v1/jobs/${ids[0]}`, { key: KEYS.b })).status).toBe(404);
  });
});

describe('webhook targets', () => {
  it('private addresses are refused at submission unless FGSN_WEBHOOK_ALLOW_PRIVATE is set', async () => {
    const strict = await startHarness({ env: { FGSN_WEBHOOK_ALLOW_PRIVATE: 'false' } });
    try {
      for (const url of ['http://127.0.0.1:9000/hook', 'http://[::1]/hook', 'http://10.0.0.7/hook', 'http://localhost/hook', 'http://169.254.169.254/latest']) {
        const r = await strict.json('POST', '/v1/jobs', { json: { finetuned: 'ckpt_aaaaaaaaaaaaaaaaaaaaaaaa', reference, webhook: { url, secret: 'x'.repeat(20) } } });
        expect(r.status, url).toBe(400);
        expect(r.body.code).toBe('VALIDATION_FAILED');
      }
    } finally {
      await strict.close();
    }
  });
});

describe('rate limit', () => {
  it('refuses requests over the per-key budget with 429 and Retry-After', async () => {
    const limited = await startHarness({ env: { FGSN_RATE_LIMIT: '5', FGSN_RATE_LIMIT_WINDOW_S: '3600' } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 7; i++) statuses.push((await limited.req('GET', '/v1/probe-sets')).status);
      expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
      const r = await limited.req('GET', '/v1/probe-sets');
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(((await r.json()) as { code: string }).code).toBe('RATE_LIMITED');
      expect((await limited.req('GET', '/v1/probe-sets', { key: KEYS.b })).status).toBe(200);
    } finally {
      await limited.close();
    }
  });
});
