/**
 * A small typed client for the fgsn HTTP API, over fetch: what a platform's code calls to upload checkpoints,
 * register a reference, post probe sets, submit a harden job, follow it and download its artifacts with their
 * sha256 verified. Types come from the API's own zod schemas (type-only imports: no server code is loaded), so
 * the client cannot drift from the routes without the typecheck noticing.
 *
 * May import: node built-ins and type-only imports of src/api/schemas.ts. Imported by: src/cli/remote.ts,
 * bench/, and any platform code (`import { FgsnClient } from 'fgsn/client'`-style through the package).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { z } from 'zod';
import type { ArtifactList, CheckpointSchema, JobContinueBody, JobCreateBody, JobSchema, ProbeSetSchema, ReferenceSchema } from '../api/schemas.js';

export type Job = z.infer<typeof JobSchema>;
export type JobRequest = z.input<typeof JobCreateBody>;
export type ContinueRequest = z.input<typeof JobContinueBody>;
export type Checkpoint = z.infer<typeof CheckpointSchema>;
export type Reference = z.infer<typeof ReferenceSchema>;
export type ProbeSet = z.infer<typeof ProbeSetSchema>;
export type Artifacts = z.infer<typeof ArtifactList>;
export type ProbeKind = 'harmful' | 'benign' | 'task';

/** An error answer of the API (its catalogue code, status and hint), or a transport failure (code REMOTE_UNREACHABLE). */
export class FgsnApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'FgsnApiError';
  }
}

export interface ClientOptions {
  /** Retries of an idempotent request (GET, a whole-file PUT) after a transport error, 429 or 5xx. Default 4. */
  retries?: number;
  /** First backoff in ms, doubled per retry (Retry-After wins when the server sends it). Default 500. */
  backoffMs?: number;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class FgsnClient {
  private readonly base: string;
  private readonly retries: number;
  private readonly backoffMs: number;

  constructor(server: string, private readonly key: string, o: ClientOptions = {}) {
    this.base = server.replace(/\/+$/, '');
    this.retries = o.retries ?? 4;
    this.backoffMs = o.backoffMs ?? 500;
  }

  /** One request; `retry` for idempotent ones. JSON answers are parsed; API errors become FgsnApiError. */
  private async send(method: string, path: string, body?: { json?: unknown; ndjson?: string; file?: string }, retry = method === 'GET'): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { authorization: `Bearer ${this.key}` };
      let payload: RequestInit['body'];
      let duplex: 'half' | undefined;
      if (body?.json !== undefined) [headers['content-type'], payload] = ['application/json', JSON.stringify(body.json)];
      if (body?.ndjson !== undefined) [headers['content-type'], payload] = ['application/x-ndjson', body.ndjson];
      if (body?.file !== undefined) {
        // Streamed from disk: a multi-GB shard never sits in memory.
        headers['content-type'] = 'application/octet-stream';
        headers['content-length'] = String((await stat(body.file)).size);
        payload = Readable.toWeb(createReadStream(body.file, { highWaterMark: 1 << 20 })) as unknown as RequestInit['body'];
        duplex = 'half';
      }
      let res: Response | undefined;
      let failure: unknown;
      try {
        res = await fetch(`${this.base}${path}`, { method, headers, ...(payload !== undefined ? { body: payload } : {}), ...(duplex ? { duplex } : {}) } as RequestInit);
      } catch (e) {
        failure = e;
      }
      const transient = res === undefined || res.status === 429 || res.status === 503 || res.status >= 500;
      if (transient && retry && attempt < this.retries) {
        const after = Number(res?.headers.get('retry-after'));
        await res?.body?.cancel();
        await sleep(Number.isFinite(after) && after > 0 ? after * 1000 : this.backoffMs * 2 ** attempt);
        continue;
      }
      if (res === undefined) {
        throw new FgsnApiError(0, 'REMOTE_UNREACHABLE', `${method} ${this.base}${path}: ${failure instanceof Error ? failure.message : String(failure)}`, 'Check --server and that the API is running.');
      }
      if (res.status >= 400) {
        const text = await res.text();
        let parsed: { code?: string; message?: string; hint?: string } = {};
        try {
          parsed = JSON.parse(text) as typeof parsed;
        } catch {
          // not a JSON error body (a proxy's page): keep the text
        }
        throw new FgsnApiError(res.status, parsed.code ?? `HTTP_${res.status}`, `${method} ${path}: ${parsed.message ?? text.slice(0, 300)}`, parsed.hint);
      }
      return res;
    }
  }

  private async json<T>(method: string, path: string, body?: { json?: unknown; ndjson?: string }): Promise<T> {
    return (await (await this.send(method, path, body)).json()) as T;
  }

  /** Uploads a model or adapter folder (its regular files) as one checkpoint and completes it. */
  async uploadCheckpoint(dir: string, onFile?: (name: string, bytes: number) => void): Promise<Checkpoint> {
    const created = await this.json<Checkpoint>('POST', '/v1/checkpoints', { json: {} });
    for (const file of await listFiles(dir)) {
      const name = relative(dir, file);
      // A whole-file PUT is idempotent: a failed transfer is sent again from the start.
      await this.send('PUT', `/v1/checkpoints/${created.id}/files/${encodeURIComponent(name)}`, { file }, true);
      onFile?.(name, (await stat(file)).size);
    }
    return this.json<Checkpoint>('POST', `/v1/checkpoints/${created.id}/complete`);
  }

  createReference(aligned: string, base: string, name?: string): Promise<Reference> {
    return this.json<Reference>('POST', '/v1/references', { json: { aligned, base, ...(name ? { name } : {}) } });
  }

  /** Posts probe lines ({prompt, category?, response?}) as a probe set of `kind`. */
  createProbeSet(kind: ProbeKind, rows: readonly object[], name?: string): Promise<ProbeSet> {
    const q = new URLSearchParams({ kind, ...(name ? { name } : {}) });
    return this.json<ProbeSet>('POST', `/v1/probe-sets?${q}`, { ndjson: rows.map((r) => JSON.stringify(r)).join('\n') + '\n' });
  }

  submitJob(body: JobRequest): Promise<Job> {
    return this.json<Job>('POST', '/v1/jobs', { json: body });
  }

  /** Patches a completed job's output for a new harm category; the patch is a new job (returned queued). */
  continueJob(id: string, body: ContinueRequest): Promise<Job> {
    return this.json<Job>('POST', `/v1/jobs/${encodeURIComponent(id)}/continue`, { json: body });
  }

  getJob(id: string): Promise<Job> {
    return this.json<Job>('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** Polls a job until it is completed, failed or cancelled; `onUpdate` sees every state read. */
  async waitForJob(id: string, onUpdate?: (job: Job) => void, intervalMs = 500): Promise<Job> {
    for (;;) {
      const job = await this.getJob(id);
      onUpdate?.(job);
      if (TERMINAL.has(job.state)) return job;
      await sleep(intervalMs);
    }
  }

  listArtifacts(id: string): Promise<Artifacts> {
    return this.json<Artifacts>('GET', `/v1/jobs/${encodeURIComponent(id)}/artifacts`);
  }

  /**
   * Downloads every artifact of a completed job into `outDir` (streamed to disk, hashed on the way) and checks
   * each one's sha256 and size against the artifact list: a mismatch throws, and the file is not left behind.
   */
  async downloadArtifacts(id: string, outDir: string, onFile?: (name: string, bytes: number) => void): Promise<Artifacts['items']> {
    const list = await this.listArtifacts(id);
    for (const a of list.items) {
      const target = join(outDir, ...a.name.split('/'));
      if (relative(outDir, target).startsWith('..')) throw new FgsnApiError(0, 'REMOTE_ARTIFACT_INVALID', `artifact name ${JSON.stringify(a.name)} leaves the output folder`);
      await mkdir(dirname(target), { recursive: true });
      const res = await this.send('GET', `/v1/jobs/${encodeURIComponent(id)}/artifacts/${a.name.split('/').map(encodeURIComponent).join('/')}`);
      const hash = createHash('sha256');
      let bytes = 0;
      const partial = `${target}.partial`;
      await pipeline(
        Readable.fromWeb(res.body as WebReadableStream<Uint8Array>),
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            bytes += chunk.length;
            cb(null, chunk);
          },
        }),
        createWriteStream(partial),
      );
      const sha = hash.digest('hex');
      if (sha !== a.sha256 || bytes !== a.bytes) {
        await rm(partial, { force: true });
        throw new FgsnApiError(0, 'REMOTE_ARTIFACT_INVALID', `${a.name}: downloaded ${bytes} bytes with sha256 ${sha}, the job lists ${a.bytes} bytes with ${a.sha256}`);
      }
      await rename(partial, target);
      onFile?.(a.name, bytes);
    }
    return list.items;
  }
}

/** The folder's regular files (HF model and adapter folders are flat; sub-folders are not uploaded). */
async function listFiles(dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(dir, e.name)).sort();
}
