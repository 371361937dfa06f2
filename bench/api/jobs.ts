/**
 * N concurrent harden jobs end to end through the service (a real `fgsn serve` and `fgsn worker`, Redis at
 * REDIS_URL): the demo's planted base / aligned / fine-tune trio uploaded over HTTP, probe sets posted, N jobs
 * submitted at once with the default options, each polled to its end, every artifact downloaded and its sha256
 * checked against the artifact list and the ETag. Printed: completed / failed, wall time, per-job latency
 * p50 / p99 (submission to completion), artifacts and bytes verified, and the ratio of the service's wall time
 * to the in-process floor measured in the same run: one `fgsn harden` of the same job timed directly, times
 * N / worker concurrency. Exit 1 on any failed job or sha256 mismatch.
 * Run: npm run bench -- api-jobs [--jobs 20] [--concurrency 2]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { demoSets, writeDemoTestbed } from '../../src/demo/fixtures.js';
import { deleteKeysAt, freePort } from '../../test/support/redis-tools.js';

const { values } = parseArgs({ options: { jobs: { type: 'string' }, concurrency: { type: 'string' } } });
const JOBS = Number(values.jobs ?? 20);
const CONCURRENCY = Number(values.concurrency ?? 2);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ROOT = resolve(import.meta.dirname, '..', '..');
const KEY = 'bench-key-0123456789';
const PREFIX = `fgsn-bench-${randomBytes(3).toString('hex')}`;
const auth = { authorization: `Bearer ${KEY}` };

type Artifact = { name: string; bytes: number; sha256: string; url: string };
type Job = { id: string; state: string; error: { code: string; message: string } | null };

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};

async function call<T>(base: string, method: string, path: string, body?: { json?: unknown; ndjson?: string; bytes?: Buffer }): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = { ...auth };
  let payload: string | Buffer | undefined;
  if (body?.json !== undefined) [headers['content-type'], payload] = ['application/json', JSON.stringify(body.json)];
  if (body?.ndjson !== undefined) [headers['content-type'], payload] = ['application/x-ndjson', body.ndjson];
  if (body?.bytes !== undefined) [headers['content-type'], payload] = ['application/octet-stream', body.bytes];
  const res = await fetch(`${base}${path}`, { method, headers, ...(payload !== undefined ? { body: payload } : {}) });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
}

async function uploadFolder(base: string, dir: string): Promise<string> {
  const c = await call<{ id: string }>(base, 'POST', '/v1/checkpoints', { json: {} });
  for (const f of await readdir(dir)) {
    const r = await call(base, 'PUT', `/v1/checkpoints/${c.body.id}/files/${f}`, { bytes: await readFile(join(dir, f)) });
    if (r.status !== 201) throw new Error(`upload ${f}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const done = await call(base, 'POST', `/v1/checkpoints/${c.body.id}/complete`);
  if (done.status >= 300) throw new Error(`complete: ${done.status} ${JSON.stringify(done.body)}`);
  return c.body.id;
}

function fgsn(args: string[], env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [join(ROOT, 'bin', 'fgsn.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'fgsn-bench-jobs-'));
  const tb = await writeDemoTestbed(join(work, 'trio'));
  const sets = demoSets();
  const ndjson = (rows: object[]): string => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

  // The in-process floor: the same job run directly by the CLI (no HTTP, queue, upload or download).
  const t0 = performance.now();
  const direct = fgsn(['harden', '--base', tb.base, '--aligned', tb.aligned, '--finetuned', tb.finetuned, '--harmful', tb.files.harmfulProbes,
    '--benign', tb.files.benignProbes, '--task', tb.files.taskProbes, '--out', join(work, 'direct'), '--cache-dir', join(work, 'direct-cache'), '--quiet',
    '--format', 'model', '--format', 'diff', '--format', 'report'], {});
  const directCode = await new Promise<number | null>((r) => direct.once('exit', r));
  if (directCode !== 0) throw new Error(`fgsn harden exited ${directCode}`);
  const directS = (performance.now() - t0) / 1000;

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = {
    REDIS_URL, FGSN_PORT: String(port), FGSN_HOST: '127.0.0.1', FGSN_DATA_DIR: join(work, 'data'), FGSN_QUEUE_PREFIX: PREFIX,
    FGSN_API_KEYS: `${KEY}:bench`, FGSN_ADMIN_KEYS: KEY, FGSN_RATE_LIMIT: '0', FGSN_LOG_LEVEL: 'warn', FGSN_WORKER_CONCURRENCY: String(CONCURRENCY),
    FGSN_MIN_FREE_DISK_MB: '1',
  };
  const server = fgsn(['serve'], env);
  const worker = fgsn(['worker'], env);
  try {
    for (let i = 0; ; i++) {
      if (await fetch(`${base}/healthz`).then((r) => r.ok, () => false)) break;
      if (i > 300) throw new Error('server did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    const [ft, aligned, baseId] = [await uploadFolder(base, tb.finetuned), await uploadFolder(base, tb.aligned), await uploadFolder(base, tb.base)];
    const ref = await call<{ id: string }>(base, 'POST', '/v1/references', { json: { aligned, base: baseId, name: 'bench' } });
    if (ref.status !== 201) throw new Error(`reference: ${ref.status} ${JSON.stringify(ref.body)}`);
    const probe = async (kind: string, rows: object[]): Promise<string> => {
      const r = await call<{ id: string }>(base, 'POST', `/v1/probe-sets?kind=${kind}`, { ndjson: ndjson(rows) });
      if (r.status !== 201) throw new Error(`probe set ${kind}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.id;
    };
    const probes = { harmful: await probe('harmful', sets.harmfulProbes), benign: await probe('benign', sets.benignProbes) };
    const task = await probe('task', sets.taskProbes);

    const started = performance.now();
    const submitted = await Promise.all(Array.from({ length: JOBS }, async () => {
      const at = performance.now();
      const r = await call<{ id: string }>(base, 'POST', '/v1/jobs', { json: { finetuned: ft, reference: ref.body.id, probes, task, outputs: ['model', 'diff', 'report'] } });
      if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
      return { id: r.body.id, at };
    }));
    const ends = await Promise.all(submitted.map(async ({ id, at }) => {
      for (;;) {
        const j = await call<Job>(base, 'GET', `/v1/jobs/${id}`);
        if (['completed', 'failed', 'cancelled'].includes(j.body.state)) return { job: j.body, seconds: (performance.now() - at) / 1000 };
        await new Promise((r) => setTimeout(r, 250));
      }
    }));
    const wallS = (performance.now() - started) / 1000;

    let artifacts = 0;
    let bytes = 0;
    const mismatches: string[] = [];
    for (const { job } of ends.filter((e) => e.job.state === 'completed')) {
      const list = await call<{ items: Artifact[] }>(base, 'GET', `/v1/jobs/${job.id}/artifacts`);
      for (const a of list.body.items) {
        const res = await fetch(`${base}/v1/jobs/${job.id}/artifacts/${a.name}`, { headers: auth });
        const data = Buffer.from(await res.arrayBuffer());
        const sha = createHash('sha256').update(data).digest('hex');
        if (res.status !== 200 || sha !== a.sha256 || data.length !== a.bytes || res.headers.get('etag') !== `"${a.sha256}"`) mismatches.push(`${job.id}/${a.name}`);
        artifacts++;
        bytes += data.length;
      }
    }
    const failed = ends.filter((e) => e.job.state !== 'completed');
    const latencies = ends.map((e) => e.seconds);
    const floorS = (JOBS * directS) / CONCURRENCY;
    const lines = [
      `${JOBS} concurrent harden jobs through the service (worker concurrency ${CONCURRENCY}, default options, demo trio)`,
      `  completed ${JOBS - failed.length}, failed ${failed.length}${failed.length ? ` (${failed.map((f) => `${f.job.id}: ${f.job.state} ${f.job.error?.code ?? ''}`).join('; ')})` : ''}`,
      `  wall ${wallS.toFixed(1)} s = ${((JOBS / wallS) * 60).toFixed(1)} jobs/min;  job latency p50 ${quantile(latencies, 0.5).toFixed(1)} s, p99 ${quantile(latencies, 0.99).toFixed(1)} s`,
      `  artifacts verified ${artifacts} (${(bytes / 2 ** 20).toFixed(1)} MiB), sha256/size/ETag mismatches ${mismatches.length}${mismatches.length ? `: ${mismatches.slice(0, 5).join(', ')}` : ''}`,
      `  one job in process (fgsn harden, same inputs): ${directS.toFixed(1)} s;  service wall / (${JOBS} x that / ${CONCURRENCY}) = ${(wallS / floorS).toFixed(2)}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    await writeFile(join(work, 'summary.txt'), lines.join('\n'));
    if (failed.length > 0 || mismatches.length > 0) process.exitCode = 1;
  } finally {
    for (const p of [server, worker]) p.kill('SIGTERM');
    await Promise.all([server, worker].map((p) => (p.exitCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', r)))));
    await deleteKeysAt(REDIS_URL, PREFIX);
    await rm(work, { recursive: true, force: true });
  }
}


await main();
