/**
 * `fgsn serve --with-worker` (what `npm start` runs) as a real process: it starts from the environment,
 * answers, and stops cleanly on SIGTERM; a bad environment is refused with the variable named.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { expect, it } from 'vitest';
import { REDIS_URL } from '../support/redis.js';
import { REPO_ROOT } from '../support/testbed.js';
import { deleteKeys } from './harness.js';

function runCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'fgsn.js'), ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, exited, out: () => out, err: () => err };
}

it('serve --with-worker starts, answers and exits 0 on SIGTERM', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'fgsn-cli-'));
  const prefix = `fgsn-test-${randomBytes(4).toString('hex')}`;
  try {
    const p = runCli(['serve', '--with-worker', '--port', '0', '--host', '127.0.0.1'], {
      REDIS_URL,
      FGSN_DATA_DIR: dataDir,
      FGSN_QUEUE_PREFIX: prefix,
      FGSN_API_KEYS: 'cli-test-key-0123456:t',
      FGSN_LOG_LEVEL: 'info',
    });
    let url: string | undefined;
    for (let i = 0; i < 300 && url === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      for (const line of p.out().split('\n')) {
        if (line.includes('fgsn API listening')) url = (JSON.parse(line) as { url: string }).url;
      }
    }
    expect(url, p.err()).toBeDefined();
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    const r = await fetch(`${url}/v1/probe-sets`, { headers: { authorization: 'Bearer cli-test-key-0123456' } });
    expect(r.status).toBe(200);
    // JSON logs carry request ids
    const logged = p.out().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged.some((l) => typeof l.reqId === 'string')).toBe(true);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(p.out()).toContain('"msg":"stopped"');
  } finally {
    await deleteKeys(prefix);
    await rm(dataDir, { recursive: true, force: true });
  }
});

it('refuses a bad environment, naming the variable', async () => {
  const p = runCli(['serve'], { FGSN_PORT: 'not-a-port', FGSN_STORAGE: 'tape' });
  expect(await p.exited).toBe(1);
  const err = JSON.parse(p.err().trim().split('\n').pop() as string) as { error: { code: string; message: string } };
  expect(err.error.code).toBe('CONFIG_INVALID');
  expect(err.error.message).toContain('FGSN_PORT');
  expect(err.error.message).toContain('FGSN_STORAGE');
});

it('worker serves its metrics when FGSN_WORKER_METRICS_PORT is set and exits 0 on SIGTERM', async () => {
  const prefix = `fgsn-test-${randomBytes(4).toString('hex')}`;
  const p = runCli(['worker'], { REDIS_URL, FGSN_QUEUE_PREFIX: prefix, FGSN_WORKER_METRICS_PORT: '0', FGSN_HOST: '127.0.0.1', FGSN_LOG_LEVEL: 'info' });
  try {
    let port: number | undefined;
    for (let i = 0; i < 300 && port === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      for (const line of p.out().split('\n')) if (line.includes('worker metrics listening')) port = (JSON.parse(line) as { metricsPort: number }).metricsPort;
    }
    expect(port, p.err()).toBeDefined();
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).toContain('fgsn_stage_duration_seconds');
    expect(text).toContain('fgsn_jobs_finished_total');
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  } finally {
    if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await deleteKeys(prefix);
  }
});
