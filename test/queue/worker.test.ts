/**
 * Worker behaviour with the real pipeline: cancelling a running job, bad input failed at once with its
 * code (no retry), and a transient storage outage (S3 server down) retried with backoff until it succeeds,
 * with the artifacts then served from S3.
 */
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startWorker, type RunningWorker } from '../../src/queue/worker.js';
import { KEYS, startHarness, uploadFolder, waitFor, type Harness } from '../api/harness.js';
import { testbedProbeNdjson } from '../api/testbed-probes.js';
import { startReceiver } from '../api/webhook-receiver.js';
import { TESTBED_DEV, describeTestbed, testbedPath } from '../support/testbed.js';

type Job = { id: string; state: string; attempts: { made: number; max: number }; error: { code: string; message: string } | null };

const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

async function setup(h: Harness): Promise<{ ft: string; reference: string; harmful: string; benign: string }> {
  const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { alignedPath: testbedPath('aligned'), basePath: testbedPath('base') } });
  const post = async (kind: string, body: string) =>
    (await h.json<{ id: string }>('POST', `/v1/probe-sets?kind=${kind}`, { body, headers: { 'content-type': 'application/x-ndjson' } })).body.id;
  const ft = await uploadFolder(h, testbedPath('ft_gsm_p10'), MODEL_FILES);
  expect((await h.json('POST', `/v1/checkpoints/${ft}/complete`)).status).toBe(200);
  return {
    ft,
    reference: ref.body.id,
    harmful: await post('harmful', await testbedProbeNdjson('harmful_align_train.jsonl', 24)),
    benign: await post('benign', await testbedProbeNdjson('lookalike_train.jsonl', 24, false)),
  };
}

/** A job's scratch (work/<jobId>: its attempt folders, the search's .fgsn-target models) is gone once it ended. */
const expectNoScratch = async (h: Harness, id: string) => {
  // The scratch root exists: the job got as far as making its scratch (the check is not vacuous).
  expect(existsSync(join(h.dataDir, 'work'))).toBe(true);
  await waitFor(async () => (existsSync(join(h.dataDir, 'work', id)) ? undefined : true), `scratch of job ${id} removed`, 10_000, 50);
};

const terminal = (h: Harness, id: string) =>
  waitFor(async () => {
    const j = await h.json<Job>('GET', `/v1/jobs/${id}`);
    return ['completed', 'failed', 'cancelled'].includes(j.body.state) ? j.body : undefined;
  }, `job ${id}`, 150_000, 100);

describeTestbed('worker: cancel and bad input (fs storage)', () => {
  let h: Harness;
  let ids: Awaited<ReturnType<typeof setup>>;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;

  beforeAll(async () => {
    h = await startHarness({ worker: true, env: { FGSN_ALLOWED_MODEL_DIRS: TESTBED_DEV, FGSN_SHUTDOWN_TIMEOUT_S: '300' } });
    ids = await setup(h);
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await receiver?.close();
    await h?.close();
  });

  it('cancels a running job between stages; it is not retried and leaves no artifacts', async () => {
    const secret = 'cancel-webhook-secret-123';
    const sub = await h.json<Job>('POST', '/v1/jobs', {
      json: { finetuned: ids.ft, reference: ids.reference, probes: { harmful: ids.harmful, benign: ids.benign }, webhook: { url: receiver.url, secret } },
    });
    // Cancelled once the pipeline runs (its scratch exists), not while the inputs are being validated.
    await waitFor(async () => {
      const j = (await h.json<Job & { stage: string | null }>('GET', `/v1/jobs/${sub.body.id}`)).body;
      return j.state === 'running' && j.stage !== null && j.stage !== 'validate' ? true : undefined;
    }, 'pipeline running', 60_000, 20);
    const c = await h.json<Job & { cancelRequested: boolean }>('POST', `/v1/jobs/${sub.body.id}/cancel`);
    expect(c.status).toBe(202);
    expect(c.body.cancelRequested).toBe(true);
    const done = await terminal(h, sub.body.id);
    expect(done.state).toBe('cancelled');
    expect(done.error?.code).toBe('JOB_CANCELLED');
    expect(done.attempts.made).toBe(1);
    expect((await h.json<{ items: unknown[] }>('GET', `/v1/jobs/${sub.body.id}/artifacts`)).body.items).toEqual([]);
    await expectNoScratch(h, sub.body.id);
    const hook = await waitFor(async () => receiver.received.find((r) => JSON.parse(r.body).job.id === sub.body.id), 'webhook', 30_000);
    expect(JSON.parse(hook.body).event).toBe('job.cancelled');
    const completed = await h.json('POST', `/v1/jobs/${sub.body.id}/cancel`);
    expect(completed.body.state).toBe('cancelled');
  });

  it('fails bad input at once with its code, without retries', async () => {
    // Bad options are refused at submission now (test/security/item7); input that only the worker can
    // find bad: a probe set whose stored blob went away after submission.
    const probes = await h.json<{ id: string }>('POST', '/v1/probe-sets?kind=harmful', { body: '{"prompt":"x"}\n', headers: { 'content-type': 'application/x-ndjson' } });
    await h.built.ctx.store.deletePrefix(`probes/${probes.body.id}.jsonl`);
    const sub = await h.json<Job>('POST', '/v1/jobs', { json: { finetuned: ids.ft, reference: ids.reference, probes: { harmful: probes.body.id } } });
    const done = await terminal(h, sub.body.id);
    expect(done.state).toBe('failed');
    expect(done.error?.code).toBe('PROBES_INVALID');
    expect(done.attempts.made).toBe(1);
    await expectNoScratch(h, sub.body.id);
    expect((await h.json('POST', `/v1/jobs/${sub.body.id}/cancel`)).status).toBe(409);
  });

  it('a job that cannot reach its safety target completes but says so in its status, webhook and report', async () => {
    const secret = 'target-webhook-secret-123';
    // A parameter cap below one row: no step can be measured, so the target cannot be reached.
    const sub = await h.json<Job>('POST', '/v1/jobs', {
      json: {
        finetuned: ids.ft, reference: ids.reference, probes: { harmful: ids.harmful, benign: ids.benign }, outputs: ['report'],
        options: { maxParams: 0.000001 }, webhook: { url: receiver.url, secret },
      },
    });
    const done = (await terminal(h, sub.body.id)) as Job & { summary: { target: string; targetDetails: { rule: string; targetAsr: number } } };
    expect(done.state).toBe('completed');
    expect(done.summary.target).toBe('not reached');
    expect(done.summary.targetDetails).toMatchObject({ rule: 'no step within the parameter cap', targetAsr: 0.02 });
    const hook = await waitFor(async () => receiver.received.find((r) => JSON.parse(r.body).job.id === sub.body.id), 'webhook', 30_000);
    const body = JSON.parse(hook.body) as { event: string; job: { summary: { target: string } } };
    expect(body.event).toBe('job.completed');
    expect(body.job.summary.target).toBe('not reached');
    const list = await h.json<{ items: { name: string; url: string }[] }>('GET', `/v1/jobs/${sub.body.id}/artifacts`);
    const report = list.body.items.find((a) => a.name === 'report.json');
    const parsed = JSON.parse(Buffer.from(await (await h.req('GET', report!.url)).arrayBuffer()).toString('utf8')) as { target: string; selection: { target: { status: string } } };
    expect(parsed.target).toBe('not reached');
    expect(parsed.selection.target.status).toBe('not reached');
  });

  it('graceful shutdown lets the running job finish (runs last: it stops this suite\'s worker)', async () => {
    const sub = await h.json<Job>('POST', '/v1/jobs', { json: { finetuned: ids.ft, reference: ids.reference, probes: { harmful: ids.harmful, benign: ids.benign }, outputs: ['diff', 'report'] } });
    await waitFor(async () => ((await h.json<Job>('GET', `/v1/jobs/${sub.body.id}`)).body.state === 'running' ? true : undefined), 'running', 60_000, 20);
    await h.worker!.close();
    const after = (await h.json<Job & { summary: { cost?: { bytesWritten: number | null; peakRssBytes: number | null } } }>('GET', `/v1/jobs/${sub.body.id}`)).body;
    expect(after.state).toBe('completed');
    // The attempt's own cost: it wrote at least its diff and report, and its processor's peak RSS is known.
    expect(after.summary.cost?.bytesWritten).toBeGreaterThan(0);
    expect(after.summary.cost?.peakRssBytes).toBeGreaterThan(0);
    expect((await h.json<{ items: unknown[] }>('GET', `/v1/jobs/${sub.body.id}/artifacts`)).body.items.length).toBeGreaterThan(0);
    await expectNoScratch(h, sub.body.id);
  });
});

describeTestbed('worker: a job is refused when the data folder lacks the disk it needs', () => {
  let h: Harness;
  let worker: RunningWorker | undefined;
  let ids: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    h = await startHarness({ env: { FGSN_ALLOWED_MODEL_DIRS: TESTBED_DEV, FGSN_JOB_ATTEMPTS: '1' } });
    // Uploaded first: the API refuses uploads (507) under the same margin the worker is given below.
    ids = await setup(h);
    // A margin no disk has, for the worker only: every job is short of space.
    worker = startWorker(loadConfig({ ...h.env, FGSN_MIN_FREE_DISK_MB: String(1024 ** 3) }));
    await worker.worker.waitUntilReady();
  });
  afterAll(async () => {
    await worker?.close();
    await h?.close();
  });

  it('fails with DISK_SPACE_LOW before writing any scratch', async () => {
    const sub = await h.json<Job>('POST', '/v1/jobs', { json: { finetuned: ids.ft, reference: ids.reference, probes: { harmful: ids.harmful, benign: ids.benign }, outputs: ['diff'] } });
    expect(sub.status).toBe(202);
    const done = await terminal(h, sub.body.id);
    expect(done.state).toBe('failed');
    expect(done.error?.code).toBe('DISK_SPACE_LOW');
    expect(done.error?.message).toMatch(/MiB free/);
    expect(existsSync(join(h.dataDir, 'work', sub.body.id))).toBe(false);
  });
});

describeTestbed('worker: transient storage outage is retried (S3 storage)', () => {
  let h: Harness;
  let s3: S3rver;
  let s3dir: string;
  let port: number;
  let ids: Awaited<ReturnType<typeof setup>>;

  const startS3 = async (p: number) => {
    s3 = new S3rver({ address: '127.0.0.1', port: p, silent: true, directory: s3dir, configureBuckets: [{ name: 'artifacts', configs: [] }] });
    port = ((await s3.run()) as AddressInfo).port;
  };

  beforeAll(async () => {
    s3dir = await mkdtemp(join(tmpdir(), 'fgsn-s3-'));
    await startS3(0);
    h = await startHarness({
      worker: true,
      env: {
        FGSN_ALLOWED_MODEL_DIRS: TESTBED_DEV,
        FGSN_STORAGE: 's3',
        FGSN_S3_ENDPOINT: `http://127.0.0.1:${port}`,
        FGSN_S3_BUCKET: 'artifacts',
        FGSN_S3_FORCE_PATH_STYLE: 'true',
        FGSN_S3_ACCESS_KEY_ID: 'S3RVER',
        FGSN_S3_SECRET_ACCESS_KEY: 'S3RVER',
        FGSN_JOB_BACKOFF_MS: '2000',
      },
    });
    ids = await setup(h);
  });
  afterAll(async () => {
    await h?.close();
    await s3?.close().catch(() => undefined);
    await rm(s3dir, { recursive: true, force: true });
  });

  it('a job whose artifact upload fails is retried with backoff and completes once S3 is back', async () => {
    await s3.close();
    const sub = await h.json<Job>('POST', '/v1/jobs', { json: { finetuned: ids.ft, reference: ids.reference, probes: { harmful: ids.harmful, benign: ids.benign }, outputs: ['diff', 'report'] } });
    const failedOnce = await waitFor(async () => {
      const j = (await h.json<Job>('GET', `/v1/jobs/${sub.body.id}`)).body;
      return j.attempts.made >= 1 ? j : undefined;
    }, 'first attempt to fail', 120_000, 50);
    expect(failedOnce.state).toBe('queued');
    expect(failedOnce.error?.code).toBe('STORAGE_ERROR');
    await startS3(port);
    const done = await terminal(h, sub.body.id);
    expect(done.error).toBeNull();
    expect(done.state).toBe('completed');
    expect(done.attempts.made).toBeGreaterThanOrEqual(1);

    const list = await h.json<{ items: { name: string; sha256: string; url: string; bytes: number }[] }>('GET', `/v1/jobs/${sub.body.id}/artifacts`);
    const diff = list.body.items.find((a) => a.name === 'diff.safetensors');
    expect(diff).toBeDefined();
    const whole = Buffer.from(await (await h.req('GET', diff!.url)).arrayBuffer());
    expect(createHash('sha256').update(whole).digest('hex')).toBe(diff!.sha256);
    const part = await h.req('GET', diff!.url, { headers: { range: 'bytes=8-71' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(whole.subarray(8, 72))).toBe(true);
  });
});
