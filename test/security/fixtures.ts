/** Shared setup of the security suites: a harness with one ready fine-tune of tenant a and a global reference. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { tempDir, writeModelFolder } from '../checkpoint/fixtures.js';
import { KEYS, startHarness, uploadFolder, type Harness } from '../api/harness.js';

export interface SecuritySetup {
  h: Harness;
  modelDir: string;
  finetuned: string;
  reference: string;
  work: { dir: string; cleanup: () => Promise<void> };
  close(): Promise<void>;
}

export async function readyCheckpoint(h: Harness, modelDir: string, key: string): Promise<string> {
  const id = await uploadFolder(h, modelDir, await readdir(modelDir), key);
  const r = await h.json('POST', `/v1/checkpoints/${id}/complete`, { key });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return id;
}

export async function securitySetup(opts: Parameters<typeof startHarness>[0] = {}): Promise<SecuritySetup> {
  const work = await tempDir('fgsn-sec-');
  const modelDir = await writeModelFolder(join(work.dir, 'tiny'));
  const h = await startHarness(opts);
  const finetuned = await readyCheckpoint(h, modelDir, KEYS.a);
  const aligned = await readyCheckpoint(h, modelDir, KEYS.admin);
  const base = await readyCheckpoint(h, modelDir, KEYS.admin);
  const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { aligned, base, name: 'tiny' } });
  expect(ref.status).toBe(201);
  return {
    h,
    modelDir,
    finetuned,
    reference: ref.body.id,
    work,
    async close() {
      await h.close();
      await work.cleanup();
    },
  };
}

/**
 * A completed job of tenant a with the given artifacts (bytes in the store, a manifest), made without
 * running the pipeline: the job is taken from the queue by hand and moved to completed, as a worker would.
 */
export async function fakeCompletedJob(h: Harness, artifacts: { name: string; body: string }[]): Promise<string> {
  const { Worker } = await import('bullmq');
  const { Redis } = await import('ioredis');
  const { createHash } = await import('node:crypto');
  const { newId } = await import('../../src/api/ids.js');
  const { HARDEN_QUEUE } = await import('../../src/queue/names.js');
  const id = newId('job');
  const ctx = h.built.ctx;
  await ctx.records.putJob({ id, tenant: 'tenant-a', createdAt: new Date().toISOString(), request: {} });
  const listed = artifacts.map((a) => ({ name: a.name, bytes: Buffer.byteLength(a.body), sha256: createHash('sha256').update(a.body).digest('hex'), key: `jobs/${id}/att/${a.name}` }));
  for (const [i, a] of artifacts.entries()) await ctx.store.putBytes(listed[i].key, a.body);
  await ctx.store.putBytes(`jobs/${id}/manifest.json`, JSON.stringify({ jobId: id, attempt: 'att', publishedAt: new Date().toISOString(), artifacts: listed }));
  await ctx.queue.add('harden', { jobId: id, tenant: 'tenant-a', request: {} } as never, { jobId: id });
  const connection = new Redis(h.config.redisUrl, { maxRetriesPerRequest: null });
  const worker = new Worker(HARDEN_QUEUE, null, { connection, prefix: h.config.queuePrefix, autorun: false });
  try {
    const job = await worker.getNextJob('test-token');
    if (job?.id !== id) throw new Error(`expected job ${id}, got ${job?.id}`);
    await job.moveToCompleted({ artifacts: listed.map(({ name, bytes, sha256 }) => ({ name, bytes, sha256 })), summary: {}, timings: {} }, 'test-token', false);
  } finally {
    await worker.close();
    connection.disconnect();
  }
  return id;
}
