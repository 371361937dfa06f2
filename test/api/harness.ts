/**
 * Test harness: the real app on an ephemeral port against the real Redis, each suite under its own key
 * prefix and data folder (parallel suites never see each other), torn down with every key it created.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp, type BuiltApp } from '../../src/api/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { startWorker, type RunningWorker } from '../../src/queue/worker.js';
import { REDIS_URL } from '../support/redis.js';
import { deleteKeysAt } from '../support/redis-tools.js';

type Body = RequestInit['body'];

export const KEYS = { a: 'key-tenant-a-0123456789', b: 'key-tenant-b-0123456789', admin: 'key-admin-0123456789' } as const;

export interface Harness {
  config: Config;
  built: BuiltApp;
  base: string;
  worker?: RunningWorker;
  dataDir: string;
  env: Record<string, string>;
  req(method: string, path: string, opts?: { key?: string | null; json?: unknown; body?: Body; headers?: Record<string, string> }): Promise<Response>;
  json<T = Record<string, unknown>>(method: string, path: string, opts?: { key?: string | null; json?: unknown; body?: Body; headers?: Record<string, string> }): Promise<{ status: number; body: T; res: Response }>;
  close(): Promise<void>;
}

export async function startHarness(opts: { worker?: boolean; env?: Record<string, string>; workerEnv?: Record<string, string> } = {}): Promise<Harness> {
  const dataDir = await mkdtemp(join(tmpdir(), 'fgsn-api-'));
  const prefix = `fgsn-test-${randomBytes(4).toString('hex')}`;
  const env: Record<string, string> = {
    REDIS_URL,
    FGSN_DATA_DIR: dataDir,
    FGSN_QUEUE_PREFIX: prefix,
    FGSN_API_KEYS: `${KEYS.a}:tenant-a,${KEYS.b}:tenant-b`,
    FGSN_ADMIN_KEYS: `${KEYS.admin}:operators`,
    FGSN_LOG_LEVEL: 'silent',
    FGSN_MIN_FREE_DISK_MB: '1',
    FGSN_RATE_LIMIT: '0',
    FGSN_JOB_BACKOFF_MS: '200',
    FGSN_WEBHOOK_BACKOFF_MS: '100',
    // the tests' webhook receivers listen on 127.0.0.1
    FGSN_WEBHOOK_ALLOW_PRIVATE: 'true',
    FGSN_SHUTDOWN_TIMEOUT_S: '5',
    // A loaded CI machine can hold a Redis reply past the 1 s production default; item 6's test sets 1000.
    FGSN_REDIS_COMMAND_TIMEOUT_MS: '5000',
    ...opts.env,
  };
  const config = loadConfig(env);
  const built = await buildApp(config);
  await built.app.listen({ port: 0, host: '127.0.0.1' });
  const addr = built.app.server.address();
  const base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  // workerEnv: settings only the worker gets (e.g. a disk margin the API's own upload checks must not see).
  const worker = opts.worker ? startWorker(opts.workerEnv ? loadConfig({ ...env, ...opts.workerEnv }) : config) : undefined;
  if (worker) await worker.worker.waitUntilReady();

  const req: Harness['req'] = (method, path, o = {}) => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    const key = o.key === undefined ? KEYS.a : o.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    let body = o.body;
    if (o.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(o.json);
    }
    return fetch(base + path, { method, headers, body, duplex: 'half' } as RequestInit);
  };
  const json: Harness['json'] = async (method, path, o) => {
    const res = await req(method, path, o);
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as never, res };
  };
  return {
    config,
    built,
    base,
    worker,
    dataDir,
    env,
    req,
    json,
    async close() {
      await worker?.close();
      await built.close();
      await deleteKeys(prefix);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export function deleteKeys(prefix: string): Promise<void> {
  return deleteKeysAt(REDIS_URL, prefix);
}

/** Streams a file from disk as the request body (never read whole). */
export async function fileBody(path: string): Promise<{ body: Body; length: number }> {
  const length = (await stat(path)).size;
  return { body: createReadStream(path) as unknown as Body, length };
}

/** Creates an upload and PUTs every named file of a folder into it; returns the checkpoint id. */
export async function uploadFolder(h: Harness, dir: string, files: string[], key: string = KEYS.a): Promise<string> {
  const created = await h.json<{ id: string }>('POST', '/v1/checkpoints', { key, json: { name: dir } });
  if (created.status !== 201) throw new Error(`create failed: ${created.status} ${JSON.stringify(created.body)}`);
  for (const f of files) {
    const { body, length } = await fileBody(join(dir, f));
    const r = await h.json('PUT', `/v1/checkpoints/${created.body.id}/files/${f}`, {
      key,
      body,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) },
    });
    if (r.status !== 201) throw new Error(`PUT ${f} failed: ${r.status} ${JSON.stringify(r.body)}`);
  }
  return created.body.id;
}

export async function waitFor<T>(fn: () => Promise<T | undefined>, what: string, timeoutMs = 90_000, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
