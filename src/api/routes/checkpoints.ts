/**
 * Uploads: create -> PUT files (raw body or multipart, streamed to disk with a size limit and sha256) ->
 * complete (validated by the checkpoint layer, then read-only). Bytes never pass through the JS heap whole.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, rename, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { FgsnError } from '../../errors.js';
import { authenticate } from '../auth.js';
import type { ApiContext } from '../context.js';
import { ID_PATTERN, newId } from '../ids.js';
import type { CheckpointRecord, Records, UploadedFile } from '../records.js';
import { checkUploadName } from '../upload-names.js';
import {
  CheckpointCreateBody, CheckpointList, CheckpointListQuery, CheckpointSchema, ErrorBody, FileParams, IdParams,
  UploadedFileSchema,
} from '../schemas.js';
import { toJsonSchema } from '../zod-schema.js';
import { invalidUploadError, validateUploadOffThread } from '../upload-validation.js';

export { compactSummary, scrubPaths } from '../upload-validation.js';

export function uploadDir(dataDir: string, id: string): string {
  return join(dataDir, 'uploads', id);
}
export function uploadFilesDir(dataDir: string, id: string): string {
  return join(uploadDir(dataDir, id), 'files');
}

/** The tenant's checkpoint or a 404 (another tenant's id is indistinguishable from a missing one). */
export async function ownCheckpoint(records: Records, tenant: string, id: string): Promise<CheckpointRecord> {
  const r = ID_PATTERN.test(id) ? await records.getCheckpoint(id) : undefined;
  if (r === undefined || r.tenant !== tenant) throw new FgsnError('NOT_FOUND', `no checkpoint ${id}`);
  return r;
}

async function view(records: Records, r: CheckpointRecord): Promise<Record<string, unknown>> {
  return {
    id: r.id,
    name: r.name,
    state: r.state,
    kind: r.kind,
    detected: r.summary,
    files: await records.listFiles(r.id),
    createdAt: r.createdAt,
    completedAt: r.completedAt,
  };
}

const errorResponses = (...codes: number[]): Record<number, unknown> =>
  Object.fromEntries(codes.map((c) => [c, toJsonSchema(ErrorBody, 'output')]));

class LimitedHasher extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  constructor(
    private readonly limit: number,
    private readonly name: string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null, d?: Buffer) => void): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      cb(new FgsnError('PAYLOAD_TOO_LARGE', `${this.name} exceeds the upload limit of ${this.limit} bytes`, { details: { limit: this.limit } }));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }
}

export async function checkpointRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { records, config } = ctx;
  const auth = authenticate(ctx);

  app.post(
    '/v1/checkpoints',
    {
      onRequest: auth,
      schema: {
        tags: ['checkpoints'],
        summary: 'Create an upload',
        body: toJsonSchema(CheckpointCreateBody),
        response: { 201: toJsonSchema(CheckpointSchema, 'output'), ...errorResponses(400, 401) },
      },
    },
    async (request, reply) => {
      const body = (request.body ?? {}) as { name?: string };
      await checkQuota('checkpoints', config.quotas.checkpoints, await records.countCheckpoints(request.auth.tenant));
      const r: CheckpointRecord = { id: newId('ckpt'), tenant: request.auth.tenant, name: body.name, state: 'uploading', createdAt: new Date().toISOString() };
      await mkdir(uploadFilesDir(config.dataDir, r.id), { recursive: true });
      await records.putCheckpoint(r);
      await records.markUploadOpen(r);
      request.log.info({ checkpointId: r.id }, 'upload created');
      return reply.status(201).header('location', `/v1/checkpoints/${r.id}`).send(await view(records, r));
    },
  );

  app.get(
    '/v1/checkpoints',
    {
      onRequest: auth,
      schema: { tags: ['checkpoints'], summary: "The tenant's uploads, newest first", querystring: toJsonSchema(CheckpointListQuery), response: { 200: toJsonSchema(CheckpointList, 'output'), ...errorResponses(400, 401) } },
    },
    async (request) => {
      const { limit } = request.query as { limit: number };
      return { items: await Promise.all((await records.listCheckpoints(request.auth.tenant, limit)).map((r) => view(records, r))) };
    },
  );

  app.get(
    '/v1/checkpoints/:id',
    {
      onRequest: auth,
      schema: { tags: ['checkpoints'], summary: 'Upload state and what was detected', params: toJsonSchema(IdParams), response: { 200: toJsonSchema(CheckpointSchema, 'output'), ...errorResponses(401, 404) } },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      return view(records, await ownCheckpoint(records, request.auth.tenant, id));
    },
  );

  // Uploads live in their own plugin scope: its catch-all parser leaves bodies unread for streaming.
  await app.register(async (scope) => {
    // Every body is file bytes here, whatever its Content-Type (a config.json sent as application/json
    // must not be parsed and lost): only multipart is understood, the rest is streamed as is.
    scope.removeAllContentTypeParsers();
    await scope.register(multipart, { limits: { files: 1, fileSize: config.uploadMaxBytes + 1, fields: 10, parts: 11 } });
    scope.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));

    scope.put(
      '/v1/checkpoints/:id/files/:name',
      {
        onRequest: auth,
        schema: {
          tags: ['checkpoints'],
          summary: 'Upload one file (raw body, e.g. curl -T; or multipart/form-data with one file part)',
          description:
            'Streams the body to disk. Optional header X-Content-SHA256 (hex) is checked against the received bytes. ' +
            'Names are flat (no "/", "..", NUL, leading "."); pickle files are refused.',
          params: toJsonSchema(FileParams),
          consumes: ['application/octet-stream', 'multipart/form-data'],
          body: { type: 'string', format: 'binary', description: 'The file bytes (or a multipart form with one file part)' },
          response: { 201: toJsonSchema(UploadedFileSchema, 'output'), ...errorResponses(401, 404, 409, 413, 422) },
        },
      },
      async (request, reply) => {
        const { id, name } = request.params as { id: string; name: string };
        const r = await ownCheckpoint(records, request.auth.tenant, id);
        checkUploadName(name);
        if (r.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${id} is ${r.state}; its files can no longer change`);
        const declared = Number(request.headers['content-length'] ?? NaN);
        if (Number.isFinite(declared) && declared > config.uploadMaxBytes) {
          throw new FgsnError('PAYLOAD_TOO_LARGE', `${name} (${declared} bytes) exceeds the upload limit of ${config.uploadMaxBytes} bytes`, {
            details: { limit: config.uploadMaxBytes },
          });
        }
        // Before a byte is stored: the disk's free space and the tenant's byte quota (by the declared size).
        const known = Number.isFinite(declared) ? declared : 0;
        await checkFreeDisk(config.dataDir, config.minFreeDiskMb, known);
        await checkQuota('bytes', config.quotas.bytes, await records.storedBytes(r.tenant), known);
        const file = await receive(request, name, config.uploadMaxBytes, join(uploadDir(config.dataDir, id), 'partial'));
        try {
          // A body without a declared length is counted once received.
          await checkQuota('bytes', config.quotas.bytes, await records.storedBytes(r.tenant), file.bytes);
          ctx.metrics.bytesIn.inc(file.bytes);
          const expected = request.headers['x-content-sha256'];
          if (typeof expected === 'string' && expected.toLowerCase() !== file.sha256) {
            throw new FgsnError('UPLOAD_CHECKSUM_MISMATCH', `${name}: received sha256 ${file.sha256}, header says ${expected}`, {
              details: { name, received: file.sha256, expected },
            });
          }
          const now = await records.getCheckpoint(id);
          if (now?.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${id} was completed during the upload of ${name}`);
          await rename(file.tmp, join(uploadFilesDir(config.dataDir, id), name));
        } catch (e) {
          await rm(file.tmp, { force: true });
          throw e;
        }
        const entry: UploadedFile = { name, bytes: file.bytes, sha256: file.sha256 };
        await records.putFile(id, entry, r.tenant);
        request.log.info({ checkpointId: id, file: name, bytes: file.bytes }, 'file uploaded');
        return reply.status(201).send(entry);
      },
    );
  });

  app.delete(
    '/v1/checkpoints/:id/files/:name',
    {
      onRequest: auth,
      schema: {
        tags: ['checkpoints'],
        summary: 'Remove a file from an upload that is not completed yet',
        params: toJsonSchema(FileParams),
        response: { 204: { description: 'Removed', type: 'null' }, ...errorResponses(401, 404, 409, 422) },
      },
    },
    async (request, reply) => {
      const { id, name } = request.params as { id: string; name: string };
      const r = await ownCheckpoint(records, request.auth.tenant, id);
      checkUploadName(name);
      if (r.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${id} is ${r.state}; its files can no longer change`);
      if (!(await records.deleteFile(id, name, r.tenant))) throw new FgsnError('NOT_FOUND', `checkpoint ${id} has no file ${name}`);
      await rm(join(uploadFilesDir(config.dataDir, id), name), { force: true });
      return reply.status(204).send();
    },
  );

  app.post(
    '/v1/checkpoints/:id/complete',
    {
      onRequest: auth,
      schema: {
        tags: ['checkpoints'],
        summary: 'Validate the uploaded folder (model or LoRA adapter) and make it immutable',
        description: 'On failure: 422 UPLOAD_INVALID whose details.problems lists every problem found, each with its code.',
        params: toJsonSchema(IdParams),
        response: { 200: toJsonSchema(CheckpointSchema, 'output'), ...errorResponses(401, 404, 409, 422) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const r = await ownCheckpoint(records, request.auth.tenant, id);
      if (r.state === 'ready') return view(records, r);
      // The lease outlives the child's time limit, so a live validation is never taken over.
      const leaseUntil = new Date(Date.now() + (config.validation.timeoutS + 60) * 1000).toISOString();
      let claimed: CheckpointRecord | undefined;
      if (r.state === 'uploading') claimed = await records.transitionCheckpoint(id, 'uploading', { state: 'validating', leaseUntil });
      else if (r.state === 'validating' && leaseExpired(r)) {
        // Whoever validated it died (API restarted, request lost): validate again under a new lease.
        claimed = await records.transitionCheckpoint(id, 'validating', { leaseUntil }, r.leaseUntil ?? '');
        if (claimed) request.log.warn({ checkpointId: id, expired: r.leaseUntil }, 'validation lease expired: validating again');
      }
      if (claimed === undefined) {
        throw new FgsnError('CONFLICT', `checkpoint ${id} is being validated by another request (until ${r.leaseUntil ?? 'its lease ends'} at most)`);
      }
      try {
        const dir = uploadFilesDir(config.dataDir, id);
        const files = await records.listFiles(id);
        if (files.length === 0) throw new FgsnError('UPLOAD_INVALID', `checkpoint ${id} has no files`, { details: { problems: [] } });
        const v = await validateUploadOffThread(dir, { timeoutMs: config.validation.timeoutS * 1000, maxMemoryMb: config.validation.maxMemoryMb });
        if (!v.ok) throw invalidUploadError(id, v);
        // Read-only files (the state already refuses changes); the folder stays writable so an operator's
        // cleanup can delete it without root.
        for (const f of files) await chmod(join(dir, f.name), 0o444);
        const done = await records.transitionCheckpoint(
          id,
          'validating',
          { state: 'ready', kind: v.kind, summary: v.summary, completedAt: new Date().toISOString(), leaseUntil: undefined },
          leaseUntil,
        );
        if (done === undefined) throw new FgsnError('CONFLICT', `checkpoint ${id} changed state during validation`);
        await records.markUploadClosed(id);
        request.log.info({ checkpointId: id, kind: v.kind }, 'upload completed');
        return view(records, done);
      } catch (e) {
        await records.transitionCheckpoint(id, 'validating', { state: 'uploading', leaseUntil: undefined }, leaseUntil);
        throw e;
      }
    },
  );

  app.delete(
    '/v1/checkpoints/:id',
    {
      onRequest: auth,
      schema: {
        tags: ['checkpoints'],
        summary: 'Delete an upload and its files (refused while a queued or running job, or a reference, uses it)',
        params: toJsonSchema(IdParams),
        response: { 204: { description: 'Deleted', type: 'null' }, ...errorResponses(401, 404, 409) },
      },
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const r = await ownCheckpoint(records, request.auth.tenant, id);
      if (r.state === 'validating' && !leaseExpired(r)) throw new FgsnError('CONFLICT', `checkpoint ${id} is being validated; retry after ${r.leaseUntil ?? 'it ends'}`);
      // Claimed first (state deleting): a job submitted from now on sees it is not ready; one submitted
      // before is in the job index checked below.
      const claimed = await records.transitionCheckpoint(id, r.state, { state: 'deleting' }, r.state === 'validating' ? (r.leaseUntil ?? '') : undefined);
      if (claimed === undefined) throw new FgsnError('CONFLICT', `checkpoint ${id} changed state; retry`);
      try {
        const users = await checkpointUsers(ctx, r);
        if (users.length > 0) {
          throw new FgsnError('CONFLICT', `checkpoint ${id} is used by ${users.join(', ')}; cancel or wait for them first`, { details: { usedBy: users } });
        }
      } catch (e) {
        await records.transitionCheckpoint(id, 'deleting', { state: r.state });
        throw e;
      }
      await records.deleteCheckpoint(r);
      await rm(uploadDir(config.dataDir, id), { recursive: true, force: true });
      request.log.info({ checkpointId: id }, 'checkpoint deleted');
      return reply.status(204).send();
    },
  );
}

/** 429 QUOTA_EXCEEDED naming the quota when `used + adding` passes a non-zero limit. */
export async function checkQuota(quota: 'bytes' | 'checkpoints' | 'concurrentJobs' | 'probeSets', limit: number, used: number, adding = 1): Promise<void> {
  if (limit > 0 && used + adding > limit) {
    throw new FgsnError('QUOTA_EXCEEDED', `tenant quota ${quota} exceeded: ${used} used + ${adding} > ${limit}`, { details: { quota, limit, used } });
  }
}

/** 507 when taking `bytes` more would leave less than the configured free space on the data disk. */
async function checkFreeDisk(dataDir: string, minFreeMb: number, bytes: number): Promise<void> {
  const s = await statfs(dataDir);
  const free = s.bavail * s.bsize;
  if (free - bytes < minFreeMb * 1024 * 1024) {
    throw new FgsnError('INSUFFICIENT_STORAGE', `not enough free disk for this upload (${Math.floor(free / 1024 ** 2)} MB free, ${Math.ceil(bytes / 1024 ** 2)} MB asked, ${minFreeMb} MB kept free)`, {
      details: { freeMb: Math.floor(free / 1024 ** 2), minFreeMb },
    });
  }
}

/**
 * Removes uploads not completed within the TTL (their files and records), so abandoned uploads do not hold
 * disk or quota. Safe with several API replicas: each removal is claimed by a state compare-and-set.
 */
export async function sweepAbandonedUploads(ctx: ApiContext, log?: { info(o: object, m: string): void }): Promise<number> {
  const { records, config } = ctx;
  let removed = 0;
  for (const id of await records.uploadsOpenedBefore(Date.now() - config.uploadTtlS * 1000, 500)) {
    const r = await records.getCheckpoint(id);
    if (r === undefined || r.state === 'ready') {
      await records.markUploadClosed(id);
      continue;
    }
    if (r.state === 'validating' && !leaseExpired(r)) continue;
    if (r.state === 'deleting') continue;
    const claimed = await records.transitionCheckpoint(id, r.state, { state: 'deleting' }, r.state === 'validating' ? (r.leaseUntil ?? '') : undefined);
    if (claimed === undefined) continue;
    await records.deleteCheckpoint(r);
    await rm(uploadDir(config.dataDir, id), { recursive: true, force: true });
    log?.info({ checkpointId: id, tenant: r.tenant }, 'abandoned upload removed');
    removed++;
  }
  return removed;
}

function leaseExpired(r: CheckpointRecord): boolean {
  return r.leaseUntil === undefined || Date.parse(r.leaseUntil) <= Date.now();
}

/** Queued or running jobs that read the checkpoint, and references that point at it. */
async function checkpointUsers(ctx: ApiContext, r: CheckpointRecord): Promise<string[]> {
  const users: string[] = [];
  for (const jobId of await ctx.records.checkpointJobs(r.id)) {
    const state = await ctx.queue.getJobState(jobId);
    if (state === 'unknown' || state === 'completed' || state === 'failed') await ctx.records.forgetCheckpointJob(r.id, jobId);
    else users.push(`job ${jobId}`);
  }
  for (const ref of await ctx.records.listReferences(r.tenant)) {
    if (ref.aligned.checkpointId === r.id || ref.base.checkpointId === r.id) users.push(`reference ${ref.id}`);
  }
  return users;
}

async function receive(request: FastifyRequest, name: string, limit: number, partialDir: string): Promise<{ tmp: string; bytes: number; sha256: string }> {
  let source: Readable = request.raw;
  if (request.isMultipart()) {
    let part: Awaited<ReturnType<typeof request.file>>;
    try {
      part = await request.file();
    } catch (e) {
      if (e instanceof FgsnError) throw e;
      throw new FgsnError('VALIDATION_FAILED', `malformed multipart body: ${(e as Error).message}`, { details: { in: 'body' } });
    }
    if (part === undefined) throw new FgsnError('VALIDATION_FAILED', 'multipart body has no file part');
    source = part.file;
  }
  await mkdir(partialDir, { recursive: true });
  const tmp = join(partialDir, `${randomUUID()}`);
  const hasher = new LimitedHasher(limit, name);
  try {
    await pipeline(source, hasher, createWriteStream(tmp, { flags: 'wx' }));
  } catch (e) {
    await rm(tmp, { force: true });
    if (e instanceof FgsnError) throw e;
    const code = (e as { code?: string }).code;
    if (code === 'FST_REQ_FILE_TOO_LARGE') throw new FgsnError('PAYLOAD_TOO_LARGE', `${name} exceeds the upload limit of ${limit} bytes`);
    throw new FgsnError('VALIDATION_FAILED', `upload of ${name} was interrupted: ${(e as Error).message}`);
  }
  return { tmp, bytes: hasher.bytes, sha256: hasher.hash.digest('hex') };
}
