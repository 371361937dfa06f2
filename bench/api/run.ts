/**
 * API benchmarks against a real `fgsn serve` process (Redis at REDIS_URL):
 *  1. status polling: GET /v1/jobs/{id} throughput and p99 latency (autocannon), next to GET /healthz as the
 *     framework's own ceiling measured in the same run;
 *  2. upload of a 1 GB file with PUT (streamed), its throughput next to a plain local file copy of the same
 *     bytes, and the server's peak RSS (VmHWM) against the file size.
 * Run: npx tsx bench/api/run.ts [--seconds 10] [--connections 32] [--upload-mb 1024]
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { writeModelFolder } from '../../test/checkpoint/fixtures.js';
import { deleteKeysAt, freePort } from '../../test/support/redis-tools.js';

const { values } = parseArgs({ options: { seconds: { type: 'string' }, connections: { type: 'string' }, 'upload-mb': { type: 'string' } } });
const SECONDS = Number(values.seconds ?? 10);
const CONNECTIONS = Number(values.connections ?? 32);
const UPLOAD_MB = Number(values['upload-mb'] ?? 1024);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ROOT = resolve(import.meta.dirname, '..', '..');
const KEY = 'bench-key-0123456789';
const PREFIX = `fgsn-bench-${randomBytes(3).toString('hex')}`;

async function peakRssMb(pid: number): Promise<{ now: number; peak: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
  return { now: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

async function main(): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'fgsn-bench-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = spawn(process.execPath, [join(ROOT, 'bin', 'fgsn.js'), 'serve'], {
    env: {
      ...process.env,
      REDIS_URL,
      FGSN_PORT: String(port),
      FGSN_HOST: '127.0.0.1',
      FGSN_DATA_DIR: dataDir,
      FGSN_QUEUE_PREFIX: PREFIX,
      FGSN_API_KEYS: `${KEY}:bench`,
      FGSN_ADMIN_KEYS: KEY,
      FGSN_RATE_LIMIT: '0',
      FGSN_LOG_LEVEL: 'warn',
      FGSN_UPLOAD_MAX_BYTES: String(8 * 1024 ** 3),
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const auth = { authorization: `Bearer ${KEY}` };
  try {
    for (let i = 0; ; i++) {
      const ok = await fetch(`${base}/healthz`).then((r) => r.ok, () => false);
      if (ok) break;
      if (i > 300) throw new Error('server did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    // A queued job to poll (no worker runs: the status path is Redis + BullMQ lookups, as in production).
    const ckpt = (await (await fetch(`${base}/v1/checkpoints`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' })).json()) as { id: string };

    // --- 1. status polling
    const health = await autocannon({ url: `${base}/healthz`, connections: CONNECTIONS, duration: SECONDS });
    const jobRes = await fetch(`${base}/v1/checkpoints/${ckpt.id}`, { headers: auth });
    if (!jobRes.ok) throw new Error(`checkpoint status ${jobRes.status}`);
    const statusRun = await autocannon({ url: `${base}/v1/checkpoints/${ckpt.id}`, connections: CONNECTIONS, duration: SECONDS, headers: auth });
    const jobId = await submitJob(base, auth, dataDir);
    const jobRun = await autocannon({ url: `${base}/v1/jobs/${jobId}`, connections: CONNECTIONS, duration: SECONDS, headers: auth });
    const rssAfterPolling = await peakRssMb(server.pid as number);

    // --- 2. 1 GB upload
    const big = join(dataDir, 'big.bin');
    const block = randomBytes(1024 * 1024);
    await new Promise<void>((res, rej) => {
      const w = createWriteStream(big);
      let i = 0;
      const write = () => {
        while (i < UPLOAD_MB) {
          i++;
          if (!w.write(block)) return void w.once('drain', write);
        }
        w.end(res);
      };
      w.on('error', rej);
      write();
    });
    const bytes = (await stat(big)).size;
    const t0 = performance.now();
    await copyFile(big, join(dataDir, 'copy.bin'));
    const copyS = (performance.now() - t0) / 1000;
    await rm(join(dataDir, 'copy.bin'));

    const rssBefore = await peakRssMb(server.pid as number);
    let peakDuring = rssBefore.now;
    const sampler = setInterval(() => {
      peakRssMb(server.pid as number).then((r) => (peakDuring = Math.max(peakDuring, r.now)), () => undefined);
    }, 50);
    const t1 = performance.now();
    const put = await putFile(`${base}/v1/checkpoints/${ckpt.id}/files/big.safetensors`, big, bytes, auth);
    const uploadS = (performance.now() - t1) / 1000;
    clearInterval(sampler);
    if (put.status !== 201) throw new Error(`upload answered ${put.status}: ${put.body}`);
    const rssAfter = await peakRssMb(server.pid as number);
    const mb = bytes / 1024 ** 2;

    const lines = [
      `fgsn API bench (${CONNECTIONS} connections, ${SECONDS}s per run, Redis ${REDIS_URL})`,
      ``,
      `status polling`,
      `  GET /healthz                 ${health.requests.average.toFixed(0).padStart(7)} req/s   p50 ${health.latency.p50} ms   p99 ${health.latency.p99} ms   non-2xx ${health.non2xx}`,
      `  GET /v1/checkpoints/{id}     ${statusRun.requests.average.toFixed(0).padStart(7)} req/s   p50 ${statusRun.latency.p50} ms   p99 ${statusRun.latency.p99} ms   non-2xx ${statusRun.non2xx}`,
      `  GET /v1/jobs/{id}            ${jobRun.requests.average.toFixed(0).padStart(7)} req/s   p50 ${jobRun.latency.p50} ms   p99 ${jobRun.latency.p99} ms   non-2xx ${jobRun.non2xx}`,
      `  job status / healthz throughput ratio: ${(jobRun.requests.average / health.requests.average).toFixed(3)}`,
      `  server peak RSS after polling: ${rssAfterPolling.peak.toFixed(0)} MB`,
      ``,
      `upload of ${mb.toFixed(0)} MB (PUT, raw body, sha256 on the fly)`,
      `  upload: ${uploadS.toFixed(2)} s = ${(mb / uploadS).toFixed(0)} MB/s;  local copyFile of the same file: ${(mb / copyS).toFixed(0)} MB/s;  upload/copy throughput ratio ${(copyS / uploadS).toFixed(3)}`,
      `  server RSS: ${rssBefore.now.toFixed(0)} MB before, ${peakDuring.toFixed(0)} MB peak during (sampled), VmHWM ${rssAfter.peak.toFixed(0)} MB;  peak RSS / file size ${(rssAfter.peak / mb).toFixed(3)}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await deleteKeysAt(REDIS_URL, PREFIX);
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** A queued job to poll: a tiny model uploaded as fine-tune, aligned and base (no worker runs, it stays queued). */
async function submitJob(base: string, auth: Record<string, string>, dataDir: string): Promise<string> {
  const dir = await writeModelFolder(join(dataDir, 'tiny-model'));
  const upload = async (): Promise<string> => {
    const c = (await (await fetch(`${base}/v1/checkpoints`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' })).json()) as { id: string };
    for (const f of ['config.json', 'model.safetensors']) {
      const r = await fetch(`${base}/v1/checkpoints/${c.id}/files/${f}`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: await readFile(join(dir, f)) });
      if (r.status !== 201) throw new Error(`upload ${f}: ${r.status}`);
    }
    const done = await fetch(`${base}/v1/checkpoints/${c.id}/complete`, { method: 'POST', headers: auth });
    if (!done.ok) throw new Error(`complete: ${done.status} ${await done.text()}`);
    return c.id;
  };
  const model = await upload();
  const ref = (await (await fetch(`${base}/v1/references`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ aligned: model, base: model }) })).json()) as { id: string };
  const job = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ finetuned: model, reference: ref.id }) });
  if (job.status !== 202) throw new Error(`job: ${job.status} ${await job.text()}`);
  return ((await job.json()) as { id: string }).id;
}

function putFile(url: string, path: string, length: number, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolvePut, reject) => {
    const u = new URL(url);
    const req = request(
      { host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(length) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolvePut({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    createReadStream(path, { highWaterMark: 1 << 20 }).pipe(req);
  });
}


await main();
