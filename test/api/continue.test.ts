/**
 * POST /v1/jobs/{id}/continue against a real API + worker and the demo trio: a harden job whose probes leave
 * out one harm category, then a continue job for that category. The continue job is a job like any other
 * (listed, with events and artifacts downloadable with their sha256); its report names the job it continued,
 * and the rows it edits are disjoint from the source's. Another tenant gets 404; a job that is not completed,
 * or that published no model, gets a coded 409.
 */
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FgsnClient, type Job } from '../../src/client/index.js';
import { demoSets, writeDemoTestbed } from '../../src/demo/fixtures.js';
import { tempDir } from '../checkpoint/fixtures.js';
import { enqueueHarden, getHardenJob } from '../../src/queue/queue.js';
import type { HardenJobData } from '../../src/queue/job-data.js';
import { KEYS, startHarness, waitFor, type Harness } from './harness.js';

/** The category the harden job never sees: the continue job adds it. */
const NEW_CATEGORY = 'fraud_theft';

describe('POST /v1/jobs/{id}/continue on a real job', () => {
  let h: Harness;
  let work: { dir: string; cleanup: () => Promise<void> };
  let client: FgsnClient;
  let source: Job;
  let cont: Job;
  let newProbes: string;
  let diffOnly: Job;

  beforeAll(async () => {
    h = await startHarness({ worker: true });
    work = await tempDir('fgsn-continue-');
    const tb = await writeDemoTestbed(join(work.dir, 'trio'));
    const admin = new FgsnClient(h.base, KEYS.admin);
    const reference = (await admin.createReference((await admin.uploadCheckpoint(tb.aligned)).id, (await admin.uploadCheckpoint(tb.base)).id)).id;
    client = new FgsnClient(h.base, KEYS.a);
    const sets = demoSets();
    const finetuned = (await client.uploadCheckpoint(tb.finetuned)).id;
    const probes = {
      harmful: (await client.createProbeSet('harmful', sets.harmfulProbes.filter((p) => p.category !== NEW_CATEGORY))).id,
      benign: (await client.createProbeSet('benign', sets.benignProbes)).id,
    };
    newProbes = (await client.createProbeSet('harmful', sets.harmfulProbes.filter((p) => p.category === NEW_CATEGORY))).id;
    const task = (await client.createProbeSet('task', sets.taskProbes)).id;
    const submitted = await client.submitJob({ finetuned, reference, probes, task });
    // Not completed yet (queued or running): nothing to continue from.
    const early = await h.json<{ code: string }>('POST', `/v1/jobs/${submitted.id}/continue`, { json: { category: NEW_CATEGORY, probes: newProbes } });
    expect(early.status).toBe(409);
    expect(early.body.code).toBe('SOURCE_JOB_NOT_COMPLETED');
    source = await client.waitForJob(submitted.id);
    expect(source.state, JSON.stringify(source.error)).toBe('completed');
    diffOnly = await client.waitForJob((await client.submitJob({ finetuned, reference, probes, task, outputs: ['diff'] })).id);
    // The worker's atlas cache was evicted (or the job runs on another machine): rebuilt from the source's probe sets.
    await rm(join(h.dataDir, 'cache', 'atlas'), { recursive: true, force: true });
    // A fixed budget: the tiny demo model gets rows to edit whatever it already refuses.
    const submittedCont = await client.continueJob(source.id, { category: NEW_CATEGORY, probes: newProbes, task, options: { q: 0.05 } });
    expect(submittedCont.request).toMatchObject({ kind: 'continue', continues: source.id, category: NEW_CATEGORY });
    cont = await client.waitForJob(submittedCont.id);
  }, 600_000);
  afterAll(async () => {
    await h?.close();
    await work?.cleanup();
  });

  it('completes as a new job, listed with the others, with events', async () => {
    expect(cont.state, JSON.stringify(cont.error)).toBe('completed');
    expect(cont.id).not.toBe(source.id);
    expect(cont.summary).toMatchObject({ kind: 'continue', continuedFrom: source.id, category: NEW_CATEGORY });
    expect((cont.summary as { extraRows: number }).extraRows).toBeGreaterThan(0);
    const listed = await h.json<{ items: Job[] }>('GET', '/v1/jobs?limit=100');
    expect(listed.body.items.map((j) => j.id)).toContain(cont.id);
    const events = await h.json<{ data: { type: string; stage?: string; state?: string }[] }>('GET', `/v1/jobs/${cont.id}/events?limit=100`);
    expect(events.status).toBe(200);
    const stages = events.body.data.filter((e) => e.type === 'stage').map((e) => e.stage);
    // fetch (the source's artifacts), atlas (rebuilt, as the cache was emptied), then the continue pipeline's own stages.
    expect(stages.slice(0, 4)).toEqual(['validate', 'fetch', 'atlas', 'pipeline']);
    for (const s of ['selection', 'projection', 'publish']) expect(stages).toContain(s);
    expect(events.body.data.at(-1)).toMatchObject({ type: 'state', state: 'completed' });
  });

  it('publishes model, diff and report, downloadable with their sha256; the report names the source job; rows are disjoint', async () => {
    const dir = join(work.dir, 'cont-out');
    const items = await client.downloadArtifacts(cont.id, dir);
    const names = items.map((a) => a.name);
    expect(names).toContain('report.json');
    expect(names).toContain('diff.safetensors');
    expect(names.some((n) => n.startsWith('model/') && n.endsWith('.safetensors'))).toBe(true);
    expect(names).toContain('report.html');
    expect(names).toContain('model/README.md');
    // Nothing a tenant sees names a server folder.
    for (const name of ['report.json', 'report.html', 'model/README.md', 'model/fgsn-report.json']) {
      const t = await readFile(join(dir, ...name.split('/')), 'utf8');
      expect(t, name).not.toContain(h.dataDir);
      expect(t, name).not.toContain(tmpdir());
    }
    const card = await readFile(join(dir, 'model', 'README.md'), 'utf8');
    expect(card).toMatch(/^---\n/);
    expect(card).toContain('## Continual patches');
    expect(card).toContain(`| ${NEW_CATEGORY} |`);
    expect(card).not.toMatch(/\(safety-hardened\) \(safety-hardened\)/);
    const text = await readFile(join(dir, 'report.json'), 'utf8');
    const report = JSON.parse(text) as { continual: { from: string; category: string; rows: Record<string, number[]> }[]; inputs: Record<string, string>; rows: Record<string, number[]> };
    expect(report.continual).toHaveLength(1);
    expect(report.continual[0]).toMatchObject({ from: source.id, category: NEW_CATEGORY });
    expect(report.inputs).toMatchObject({ base: 'base', aligned: 'aligned' });
    const srcDir = join(work.dir, 'src-out');
    await client.downloadArtifacts(source.id, srcDir);
    const srcRows = (JSON.parse(await readFile(join(srcDir, 'report.json'), 'utf8')) as { rows: Record<string, number[]> }).rows;
    let added = 0;
    for (const [matrix, rows] of Object.entries(report.continual[0].rows)) {
      for (const r of rows) expect(srcRows[matrix] ?? []).not.toContain(r);
      added += rows.length;
    }
    expect(added).toBe((cont.summary as { extraRows: number }).extraRows);
  });

  it('a continue job can itself be continued', async () => {
    const again = await client.waitForJob((await client.continueJob(cont.id, { category: 'fraud_again', probes: newProbes, outputs: ['report'], options: { q: 0.02 } })).id);
    expect(again.state, JSON.stringify(again.error)).toBe('completed');
    expect(again.artifacts?.map((a) => a.name).sort()).toEqual(['report.html', 'report.json']);
    const res = await h.req('GET', `/v1/jobs/${again.id}/artifacts/report.json`);
    const report = (await res.json()) as { continual: { from: string }[] };
    expect(report.continual.map((c) => c.from)).toEqual([source.id, cont.id]);
  }, 300_000);

  it('a harden job queued without `kind` (by a version before continue jobs) still runs as a harden job', async () => {
    const queued = await getHardenJob(h.built.ctx.queue, source.id);
    expect(queued?.data.kind).toBe('harden');
    const { kind: _kind, ...legacy } = queued!.data as HardenJobData;
    const id = `${source.id}-legacy`;
    await enqueueHarden(h.built.ctx.queue, { ...legacy, jobId: id }, { attempts: 1, backoffMs: 1000, retentionS: 600 });
    await waitFor(async () => {
      const j = await getHardenJob(h.built.ctx.queue, id);
      const state = await j?.getState();
      return state === 'completed' || state === 'failed' ? j : undefined;
    }, 'the legacy job to finish', 300_000, 500);
    // Read again: the copy fetched before its state was checked may predate the completion (no return value yet).
    const done = (await getHardenJob(h.built.ctx.queue, id))!;
    expect(await done.getState(), done.failedReason).toBe('completed');
    expect(done.returnvalue.artifacts.map((a) => a.name)).toContain('report.json');
  }, 300_000);

  it('another tenant gets 404; no model to start from is a coded 409; bad bodies are 400; Idempotency-Key', async () => {
    const other = await h.json<{ code: string }>('POST', `/v1/jobs/${source.id}/continue`, { key: KEYS.b, json: { category: NEW_CATEGORY, probes: 'default-harmful' } });
    expect(other.status).toBe(404);
    expect(other.body.code).toBe('NOT_FOUND');
    const noModel = await h.json<{ code: string }>('POST', `/v1/jobs/${diffOnly.id}/continue`, { json: { category: NEW_CATEGORY, probes: newProbes } });
    expect(noModel.status).toBe(409);
    expect(noModel.body.code).toBe('SOURCE_JOB_NO_MODEL');
    const badOption = await h.json<{ code: string }>('POST', `/v1/jobs/${source.id}/continue`, { json: { category: NEW_CATEGORY, probes: newProbes, options: { edit: { mode: 'no-such-mode' } } } });
    expect(badOption.status).toBe(400);
    expect(JSON.stringify(badOption.body)).toContain('edit');
    // Idempotency-Key: a retried request gets the same job; the key with another request is a conflict.
    const again = { category: 'fraud_retry', probes: newProbes, outputs: ['report'], options: { q: 0.02 } };
    const first = await h.json<Job>('POST', `/v1/jobs/${source.id}/continue`, { json: again, headers: { 'idempotency-key': 'continue-retry-1' } });
    expect(first.status).toBe(202);
    const replay = await h.json<Job>('POST', `/v1/jobs/${source.id}/continue`, { json: again, headers: { 'idempotency-key': 'continue-retry-1' } });
    expect(replay.status).toBe(202);
    expect(replay.body.id).toBe(first.body.id);
    expect(replay.res.headers.get('idempotent-replayed')).toBe('true');
    const otherSource = await h.json<{ code: string }>('POST', `/v1/jobs/${cont.id}/continue`, { json: again, headers: { 'idempotency-key': 'continue-retry-1' } });
    expect(otherSource.status).toBe(409);
    expect(otherSource.body.code).toBe('IDEMPOTENCY_CONFLICT');
    expect((await client.waitForJob(first.body.id)).state).toBe('completed');
    const noCategory = await h.json<{ code: string }>('POST', `/v1/jobs/${source.id}/continue`, { json: { probes: newProbes } });
    expect(noCategory.status).toBe(400);
  }, 120_000);
});
