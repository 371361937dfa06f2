/**
 * The whole service path with a real worker (sandboxed processor in a child process) and the real pipeline:
 * upload a testbed fine-tune -> reference -> probe sets -> job -> poll -> download model and diff; the diff
 * applied to the upload equals the model artifact; byte ranges; webhook signature; a LoRA adapter job.
 */
import { createHash, createHmac } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { applyRowDiff } from '../../src/defense/apply-diff.js';
import { tempDir } from '../checkpoint/fixtures.js';
import { TESTBED_DEV, describeTestbed, testbedPath } from '../support/testbed.js';
import { KEYS, startHarness, uploadFolder, waitFor, type Harness } from './harness.js';
import { testbedProbeNdjson } from './testbed-probes.js';
import { startReceiver } from './webhook-receiver.js';

type Job = { id: string; state: string; stage: string | null; progress: number; error: { code: string } | null; timings: Record<string, number>; summary: Record<string, unknown> | null };
type ArtifactList = { state: string; items: { name: string; bytes: number; sha256: string; url: string }[] };

const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

describeTestbed('end to end: upload -> job -> artifacts', () => {
  let h: Harness;
  let work: { dir: string; cleanup: () => Promise<void> };
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let reference: string;
  let harmful: string;
  let benign: string;

  beforeAll(async () => {
    h = await startHarness({ worker: true, env: { FGSN_ALLOWED_MODEL_DIRS: TESTBED_DEV } });
    work = await tempDir('fgsn-flow-');
    receiver = await startReceiver(1);
    const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { alignedPath: testbedPath('aligned'), basePath: testbedPath('base'), name: 'dev' } });
    expect(ref.status).toBe(201);
    reference = ref.body.id;
    const post = (kind: string, body: string) =>
      h.json<{ id: string; count: number }>('POST', `/v1/probe-sets?kind=${kind}`, { body, headers: { 'content-type': 'application/x-ndjson' } });
    const hp = await post('harmful', await testbedProbeNdjson('harmful_align_train.jsonl', 32));
    const bp = await post('benign', await testbedProbeNdjson('lookalike_train.jsonl', 32, false));
    expect([hp.status, bp.status]).toEqual([201, 201]);
    expect(hp.body.count).toBe(32);
    harmful = hp.body.id;
    benign = bp.body.id;
  });

  afterAll(async () => {
    await receiver?.close();
    await h?.close();
    await work?.cleanup();
  });

  const poll = (id: string, key: string = KEYS.a) =>
    waitFor(async () => {
      const j = await h.json<Job>('GET', `/v1/jobs/${id}`, { key });
      return ['completed', 'failed', 'cancelled'].includes(j.body.state) ? j.body : undefined;
    }, `job ${id}`, 150_000, 200);

  it('hardens an uploaded full fine-tune; the diff applied to the upload equals the model artifact', async () => {
    const ft = await uploadFolder(h, testbedPath('ft_sst_p10'), MODEL_FILES);
    expect((await h.json('POST', `/v1/checkpoints/${ft}/complete`)).status).toBe(200);
    const secret = 'a-webhook-secret-of-some-length';
    const sub = await h.json<Job>('POST', '/v1/jobs', {
      json: { finetuned: ft, reference, probes: { harmful, benign }, outputs: ['model', 'diff', 'report'], webhook: { url: receiver.url, secret } },
    });
    expect(sub.status).toBe(202);
    expect(sub.res.headers.get('location')).toBe(`/v1/jobs/${sub.body.id}`);
    expect(['queued', 'running']).toContain(sub.body.state);

    // a malformed upload while the job runs is refused and does not disturb it
    const bad = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const pickle = await h.json('PUT', `/v1/checkpoints/${bad.body.id}/files/pytorch_model.bin`, { body: 'x', headers: { 'content-type': 'application/octet-stream' } });
    expect(pickle.status).toBe(422);

    const done = await poll(sub.body.id);
    expect(done.error).toBeNull();
    expect(done.state).toBe('completed');
    expect(done.progress).toBe(100);
    expect(Object.keys(done.timings)).toEqual(expect.arrayContaining(['validate', 'pipeline', 'publish']));
    expect(done.summary).toMatchObject({ method: 'fgsn' });

    const list = await h.json<ArtifactList>('GET', `/v1/jobs/${sub.body.id}/artifacts`);
    const names = list.body.items.map((a) => a.name);
    expect(names).toEqual(expect.arrayContaining(['model/model.safetensors', 'model/config.json', 'diff.safetensors', 'report.json']));
    // another tenant sees nothing of it
    expect((await h.json('GET', `/v1/jobs/${sub.body.id}/artifacts`, { key: KEYS.b })).status).toBe(404);
    expect((await h.req('GET', `/v1/jobs/${sub.body.id}/artifacts/diff.safetensors`, { key: KEYS.b })).status).toBe(404);

    // download the model folder and the diff; ETag and Content-Length match the listing
    const outModel = join(work.dir, 'downloaded-model');
    await mkdir(outModel);
    for (const a of list.body.items) {
      const res = await h.req('GET', a.url);
      expect(res.status).toBe(200);
      expect(res.headers.get('etag')).toBe(`"${a.sha256}"`);
      expect(Number(res.headers.get('content-length'))).toBe(a.bytes);
      const bytes = Buffer.from(await res.arrayBuffer());
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(a.sha256);
      if (a.name.startsWith('model/')) await writeFile(join(outModel, a.name.slice('model/'.length)), bytes);
      if (a.name === 'diff.safetensors') await writeFile(join(work.dir, 'diff.safetensors'), bytes);
    }
    const rebuilt = join(work.dir, 'rebuilt');
    const applied = await applyRowDiff(testbedPath('ft_sst_p10'), join(work.dir, 'diff.safetensors'), rebuilt);
    expect(applied.rowsChanged).toBeGreaterThan(0);
    const a = await readFile(join(rebuilt, 'model.safetensors'));
    const b = await readFile(join(outModel, 'model.safetensors'));
    expect(a.equals(b)).toBe(true);
    expect(a.equals(await readFile(testbedPath('ft_sst_p10', 'model.safetensors')))).toBe(false);

    // byte ranges, HEAD, conditional GET
    const url = `/v1/jobs/${sub.body.id}/artifacts/model/model.safetensors`;
    const part = await h.req('GET', url, { headers: { range: 'bytes=100-1099' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-1099/${b.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(b.subarray(100, 1100))).toBe(true);
    const suffix = await h.req('GET', url, { headers: { range: 'bytes=-16' } });
    expect(Buffer.from(await suffix.arrayBuffer()).equals(b.subarray(b.length - 16))).toBe(true);
    const open = await h.req('GET', url, { headers: { range: `bytes=${b.length - 5}-` } });
    expect(Buffer.from(await open.arrayBuffer()).equals(b.subarray(b.length - 5))).toBe(true);
    const outside = await h.req('GET', url, { headers: { range: `bytes=${b.length}-` } });
    expect(outside.status).toBe(416);
    expect(outside.headers.get('content-range')).toBe(`bytes */${b.length}`);
    const head = await h.req('HEAD', url);
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBe(b.length);
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    const etag = head.headers.get('etag') as string;
    expect((await h.req('GET', url, { headers: { 'if-none-match': etag } })).status).toBe(304);

    // the webhook arrived (after one 500 from the receiver) with a valid signature
    const hook = await waitFor(async () => receiver.received.find((r) => JSON.parse(r.body).job.id === sub.body.id), 'webhook', 30_000);
    const expected = 'sha256=' + createHmac('sha256', secret).update(hook.body).digest('hex');
    expect(hook.headers['x-fgsn-signature']).toBe(expected);
    const payload = JSON.parse(hook.body) as { event: string; attempt: number; job: Job };
    expect(payload.event).toBe('job.completed');
    expect(payload.attempt).toBe(2);
    expect(payload.job.state).toBe('completed');
    expect(JSON.stringify(payload)).not.toContain(secret);
    // the job status never shows the secret either
    expect(JSON.stringify((await h.json('GET', `/v1/jobs/${sub.body.id}`)).body)).not.toContain(secret);

    // metrics saw the bytes and the finished job
    const metrics = await (await h.req('GET', '/metrics', { key: null })).text();
    const value = (name: string) => Number(new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    expect(value('fgsn_upload_bytes_total')).toBeGreaterThan(15_000_000);
    expect(value('fgsn_artifact_bytes_total')).toBeGreaterThan(15_000_000);
    expect(value('fgsn_jobs{state="completed"}')).toBeGreaterThanOrEqual(1);

    // nothing was left in the worker's scratch space
    expect(await readdir(join(h.dataDir, 'work', sub.body.id)).catch(() => [])).toEqual([]);

    // deleting the job removes its artifacts from storage
    expect((await readdir(join(h.dataDir, 'artifacts', 'jobs', sub.body.id))).length).toBeGreaterThan(0);
    expect((await h.req('DELETE', `/v1/jobs/${sub.body.id}`)).status).toBe(204);
    expect((await h.req('GET', url)).status).toBe(404);
    expect(await readdir(join(h.dataDir, 'artifacts', 'jobs', sub.body.id)).catch(() => [])).toEqual([]);
  });

  it('hardens an uploaded LoRA adapter, with evaluation', async () => {
    const files = ['adapter_config.json', 'adapter_model.safetensors'];
    const lora = await uploadFolder(h, testbedPath('lora_sst_p10'), files);
    expect((await h.json('POST', `/v1/checkpoints/${lora}/complete`)).body).toMatchObject({ kind: 'adapter' });
    const sub = await h.json<Job>('POST', '/v1/jobs', { json: { finetuned: lora, reference, probes: { harmful, benign }, outputs: ['model', 'diff', 'report'], evaluate: { harmful, maxNewTokens: 8 } } });
    expect(sub.status).toBe(202);
    const done = await poll(sub.body.id);
    expect(done.error).toBeNull();
    expect(done.state).toBe('completed');
    const list = await h.json<ArtifactList>('GET', `/v1/jobs/${sub.body.id}/artifacts`);
    expect(list.body.items.map((a) => a.name)).toEqual(expect.arrayContaining(['model/model.safetensors', 'diff.safetensors', 'report.json']));
    // for an adapter the diff is taken against the aligned model: applied to it, it gives the model artifact
    const diffPath = join(work.dir, 'lora-diff.safetensors');
    await writeFile(diffPath, Buffer.from(await (await h.req('GET', `/v1/jobs/${sub.body.id}/artifacts/diff.safetensors`)).arrayBuffer()));
    const rebuilt = join(work.dir, 'lora-rebuilt');
    await applyRowDiff(testbedPath('aligned'), diffPath, rebuilt);
    const model = Buffer.from(await (await h.req('GET', `/v1/jobs/${sub.body.id}/artifacts/model/model.safetensors`)).arrayBuffer());
    expect((await readFile(join(rebuilt, 'model.safetensors'))).equals(model)).toBe(true);
    const report = JSON.parse(await (await h.req('GET', `/v1/jobs/${sub.body.id}/artifacts/report.json`)).text()) as Record<string, unknown>;
    expect(report.method).toBe('fgsn');
    // evaluation ran in the job and its metrics are in the status summary
    const metrics = (done.summary as { metrics?: Record<string, number> }).metrics;
    expect(metrics?.harmful_asr).toBeGreaterThanOrEqual(0);
    expect(metrics?.harmful_asr).toBeLessThanOrEqual(1);
  });
});
