/**
 * A small typed client for the fgsn HTTP API, over fetch: what a platform's code calls to upload checkpoints,
 * register a reference, post probe sets, submit a harden job, follow it and download its artifacts with their
 * sha256 verified. Types come from the API's own zod schemas (type-only imports: no server code is loaded), so
 * the client cannot drift from the routes without the typecheck noticing.
 *
 * May import: node built-ins and type-only imports of src/api's schemas (through api/index.js). Imported by:
 * src/cli/remote.ts, bench/, and platform code.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { z } from 'zod';
import type { ArtifactList, CheckpointSchema, JobContinueBody, JobCreateBody, JobSchema, ProbeSetSchema, ReferenceSchema, UploadFileStatusSchema } from '../api/index.js';

export type Job = z.infer<typeof JobSchema>;
export type JobRequest = z.input<typeof JobCreateBody>;
export type ContinueRequest = z.input<typeof JobContinueBody>;
export type Checkpoint = z.infer<typeof CheckpointSchema>;
export type Reference = z.infer<typeof ReferenceSchema>;
export type ProbeSet = z.infer<typeof ProbeSetSchema>;
export type Artifacts = z.infer<typeof ArtifactList>;
export type UploadFileStatus = z.infer<typeof UploadFileStatusSchema>;
export type ProbeKind = 'harmful' | 'benign' | 'task';

/** An error answer of the API (its catalogue code, status and hint), or a transport failure (code REMOTE_UNREACHABLE). */
export class FgsnApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
    /** The error body's details (e.g. expectedOffset of UPLOAD_OFFSET_MISMATCH). */
    readonly details?: unknown,
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
  /**
   * Files are sent in Content-Range chunks of this many bytes (default 64 MiB); after a transport failure the
   * client asks the server how much it holds and continues from there, so a multi-GB shard is not resent whole.
   */
  chunkBytes?: number;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class FgsnClient {
  private readonly base: string;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly chunkBytes: number;

  constructor(server: string, private readonly key: string, o: ClientOptions = {}) {
    this.base = server.replace(/\/+$/, '');
    this.retries = o.retries ?? 4;
    this.backoffMs = o.backoffMs ?? 500;
    this.chunkBytes = o.chunkBytes ?? 64 * 1024 ** 2;
    if (!(this.chunkBytes >= 1)) throw new RangeError('chunkBytes must be at least 1');
  }

  /** One request; `retry` for idempotent ones. JSON answers are parsed; API errors become FgsnApiError. */
  private async send(
    method: string,
    path: string,
    body?: { json?: unknown; ndjson?: string; file?: string; range?: { start: number; end: number; total: number } },
    retry = method === 'GET',
  ): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { authorization: `Bearer ${this.key}` };
      let payload: RequestInit['body'];
      let duplex: 'half' | undefined;
      if (body?.json !== undefined) [headers['content-type'], payload] = ['application/json', JSON.stringify(body.json)];
      if (body?.ndjson !== undefined) [headers['content-type'], payload] = ['application/x-ndjson', body.ndjson];
      if (body?.file !== undefined) {
        // Streamed from disk: a multi-GB shard never sits in memory.
        headers['content-type'] = 'application/octet-stream';
        const r = body.range;
        headers['content-length'] = String(r ? r.end - r.start + 1 : (await stat(body.file)).size);
        if (r) headers['content-range'] = `bytes ${r.start}-${r.end}/${r.total}`;
        payload = Readable.toWeb(createReadStream(body.file, { highWaterMark: 1 << 20, ...(r ? { start: r.start, end: r.end } : {}) })) as unknown as RequestInit['body'];
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
        let parsed: { code?: string; message?: string; hint?: string; details?: unknown } = {};
        try {
          parsed = JSON.parse(text) as typeof parsed;
        } catch {
          // not a JSON error body (a proxy's page): keep the text
        }
        throw new FgsnApiError(res.status, parsed.code ?? `HTTP_${res.status}`, `${method} ${path}: ${parsed.message ?? text.slice(0, 300)}`, parsed.hint, parsed.details);
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
      await this.uploadFile(created.id, name, file);
      onFile?.(name, (await stat(file)).size);
    }
    return this.json<Checkpoint>('POST', `/v1/checkpoints/${created.id}/complete`);
  }

  /**
   * Sends one file in Content-Range chunks of `chunkBytes`. After a transport failure, a 5xx/429 or a busy
   * file (the server may not have noticed the dropped connection yet), it waits with backoff, asks the server
   * for the offset it holds (GET of the file) and continues from there; `retries` failures in a row without
   * progress give up. An empty file is one whole-file PUT (Content-Range cannot describe zero bytes).
   */
  async uploadFile(checkpointId: string, name: string, file: string): Promise<void> {
    const path = `/v1/checkpoints/${encodeURIComponent(checkpointId)}/files/${encodeURIComponent(name)}`;
    const total = (await stat(file)).size;
    if (total === 0) {
      await this.send('PUT', path, { file }, true);
      return;
    }
    let offset = 0;
    for (let failures = 0; ; ) {
      const end = Math.min(offset + this.chunkBytes, total) - 1;
      try {
        const res = await this.send('PUT', path, { file, range: { start: offset, end, total } }, false);
        const body = (await res.json()) as { offset?: number };
        if (res.status === 201) return;
        const next = Number(res.headers.get('upload-offset') ?? body.offset);
        // A 202 that does not move forward would loop for ever: count it as a failure.
        failures = next > offset ? 0 : failures + 1;
        offset = next;
      } catch (e) {
        if (!(e instanceof FgsnApiError)) throw e;
        if (e.code === 'UPLOAD_OFFSET_MISMATCH') {
          // The server holds another length (a lost answer, a cut chunk): it names it, continue from there.
          const expected = (e.details as { expectedOffset?: number } | undefined)?.expectedOffset;
          if (typeof expected !== 'number' || ++failures > this.retries) throw e;
          offset = expected;
          continue;
        }
        const transient = e.status === 0 || e.status === 429 || e.status >= 500 || e.code === 'UPLOAD_BUSY';
        if (!transient || ++failures > this.retries) throw e;
        await sleep(this.backoffMs * 2 ** (failures - 1));
        const state = await this.fileState(path);
        // The last chunk arrived but its answer was lost: the file is stored whole.
        if (state?.state === 'complete' && state.offset === total) return;
        offset = state?.state === 'partial' ? state.offset : 0;
      }
      if (failures > this.retries) throw new FgsnApiError(0, 'REMOTE_UNREACHABLE', `PUT ${path}: no progress after ${this.retries} attempts (offset ${offset} of ${total})`);
    }
  }

  /** Where a file of an open upload stands on the server, or undefined when it has none of it. */
  private async fileState(path: string): Promise<UploadFileStatus | undefined> {
    try {
      return (await (await this.send('GET', path)).json()) as UploadFileStatus;
    } catch (e) {
      if (e instanceof FgsnApiError && e.status === 404) return undefined;
      throw e;
    }
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
