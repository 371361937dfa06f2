/**
 * Crash recovery: the worker process (`fgsn worker`, with its sandboxed processor child) is killed with
 * SIGKILL in the middle of a job. The job's lock lapses, a second worker recovers it as stalled and
 * completes it; the sandbox child of the dead worker exits with it; and the artifact listing, polled all
 * along, never shows anything but nothing or the complete final set.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KEYS, startHarness, uploadFolder, waitFor, type Harness } from '../api/harness.js';
import { testbedProbeNdjson } from '../api/testbed-probes.js';
import { REPO_ROOT, TESTBED_DEV, describeTestbed, testbedPath } from '../support/testbed.js';

type Job = { id: string; state: string; stage: string | null; progress: number; error: { code: string } | null };
type Listing = { state: string; items: { name: string; sha256: string; bytes: number; url: string }[] };

const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Child pids of `pid` from /proc (no procps needed). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may hold spaces, so split after the closing parenthesis.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // the process exited while we looked
    }
  }
  return out;
}

describeTestbed('worker killed with SIGKILL mid-job', () => {
  let h: Harness;
  const workers: ChildProcess[] = [];

  const spawnWorker = (): ChildProcess => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'fgsn.js'), 'worker'], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        ...h.env,
        // short locks so the lost job is noticed quickly
        FGSN_WORKER_LOCK_DURATION_MS: '2000',
        FGSN_WORKER_STALLED_INTERVAL_MS: '1000',
        FGSN_WORKER_MAX_MEMORY_MB: '3072',
        FGSN_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.resume();
    workers.push(child);
    return child;
  };

  beforeAll(async () => {
    h = await startHarness({ env: { FGSN_ALLOWED_MODEL_DIRS: TESTBED_DEV } });
  });
  afterAll(async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await h?.close();
  });

  it('the job is recovered by another worker and completes; no partial artifact is ever listed', async () => {
    const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { alignedPath: testbedPath('aligned'), basePath: testbedPath('base') } });
    const probes = async (kind: string, body: string) =>
      (await h.json<{ id: string }>('POST', `/v1/probe-sets?kind=${kind}`, { body, headers: { 'content-type': 'application/x-ndjson' } })).body.id;
    const harmful = await probes('harmful', await testbedProbeNdjson('harmful_align_train.jsonl', 32));
    const benign = await probes('benign', await testbedProbeNdjson('lookalike_train.jsonl', 32, false));
    const ft = await uploadFolder(h, testbedPath('ft_sst_p10'), MODEL_FILES);
    expect((await h.json('POST', `/v1/checkpoints/${ft}/complete`)).status).toBe(200);

    const first = spawnWorker();
    const sub = await h.json<Job>('POST', '/v1/jobs', { json: { finetuned: ft, reference: ref.body.id, probes: { harmful, benign }, outputs: ['model', 'diff', 'report'] } });
    expect(sub.status).toBe(202);
    const jobId = sub.body.id;

    // Watch the listing the whole time, as a client would.
    const listings: Listing[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        listings.push((await h.json<Listing>('GET', `/v1/jobs/${jobId}/artifacts`)).body);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    // Mid-job: running, past the first stage.
    const mid = await waitFor(async () => {
      const j = (await h.json<Job>('GET', `/v1/jobs/${jobId}`)).body;
      return j.state === 'running' && j.stage !== null && j.stage !== 'validate' ? j : undefined;
    }, 'job to run', 120_000, 20);
    expect(mid.state).toBe('running');
    const sandbox = childrenOf(first.pid as number);
    expect(sandbox.length).toBeGreaterThan(0);
    // the per-worker memory setting reaches the sandboxed processor
    expect(sandbox.map((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')).flat()).toContain('--max-old-space-size=3072');
    first.kill('SIGKILL');
    await new Promise<void>((r) => first.once('exit', () => r()));
    // the orphaned sandboxed processor leaves with its worker
    await waitFor(async () => (sandbox.every((p) => !alive(p)) ? true : undefined), 'sandbox child to exit', 20_000);
    expect((await h.json<Job>('GET', `/v1/jobs/${jobId}`)).body.state).not.toBe('completed');

    spawnWorker();
    const done = await waitFor(async () => {
      const j = (await h.json<Job>('GET', `/v1/jobs/${jobId}`)).body;
      return ['completed', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
    }, 'recovered job to finish', 150_000, 100);
    watching = false;
    await watcher;
    expect(done.error).toBeNull();
    expect(done.state).toBe('completed');

    const final = (await h.json<Listing>('GET', `/v1/jobs/${jobId}/artifacts`)).body;
    expect(final.items.map((a) => a.name)).toEqual(expect.arrayContaining(['model/model.safetensors', 'diff.safetensors', 'report.json']));
    const finalKey = JSON.stringify(final.items);
    expect(listings.length).toBeGreaterThan(10);
    for (const l of listings) {
      if (l.items.length > 0) expect(JSON.stringify(l.items)).toBe(finalKey);
      else expect(l.state).not.toBe('completed');
    }
    // the crashed attempt's scratch folder and any blobs it stored are gone; only the published attempt stays
    expect(existsSync(join(h.dataDir, 'work', jobId))).toBe(false);
    const stored = readdirSync(join(h.dataDir, 'artifacts', 'jobs', jobId));
    expect(stored.length).toBe(2);
    expect(stored).toContain('manifest.json');
    for (const a of final.items) {
      const bytes = Buffer.from(await (await h.req('GET', a.url)).arrayBuffer());
      expect(bytes.length).toBe(a.bytes);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(a.sha256);
    }
  });

  it('a sandboxed processor killed alone (as by the OOM killer) fails that attempt; the job is retried and completes', async () => {
    const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { alignedPath: testbedPath('aligned'), basePath: testbedPath('base') } });
    const ft = await uploadFolder(h, testbedPath('lora_sst_p10'), ['adapter_config.json', 'adapter_model.safetensors']);
    expect((await h.json('POST', `/v1/checkpoints/${ft}/complete`)).status).toBe(200);
    // only the worker started here may take the job
    for (const w of workers.filter((x) => x.exitCode === null && x.signalCode === null)) {
      w.kill('SIGTERM');
      await new Promise<void>((r) => w.once('exit', () => r()));
    }
    const worker = spawnWorker();
    const sub = await h.json<Job & { attempts: { made: number } }>('POST', '/v1/jobs', { json: { finetuned: ft, reference: ref.body.id, outputs: ['diff', 'report'] } });
    await waitFor(async () => {
      const j = (await h.json<Job>('GET', `/v1/jobs/${sub.body.id}`)).body;
      return j.state === 'running' && j.stage !== null && j.stage !== 'validate' ? j : undefined;
    }, 'job to run', 120_000, 20);
    const sandbox = childrenOf(worker.pid as number);
    expect(sandbox.length).toBeGreaterThan(0);
    for (const p of sandbox) process.kill(p, 'SIGKILL');
    const done = await waitFor(async () => {
      const j = (await h.json<Job & { attempts: { made: number } }>('GET', `/v1/jobs/${sub.body.id}`)).body;
      return ['completed', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
    }, 'retried job to finish', 150_000, 100);
    expect(done.state).toBe('completed');
    // one failed attempt (the killed processor) and the one that completed; the worker itself lived on
    expect(done.attempts.made).toBe(2);
    expect(worker.exitCode).toBeNull();
  });
});
