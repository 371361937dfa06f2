/**
 * Uploads: create -> PUT files (raw body or multipart, streamed to disk with a size limit and sha256; or raw
 * Content-Range chunks appended to a partial file that resume after a dropped connection) -> complete
 * (validated by the checkpoint layer, then read-only). Bytes never pass through the JS heap whole.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, rename, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import multipart from '@fastify/multipart';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod, ZodTypeProvider } from 'fastify-type-provider-zod';
import type { z } from 'zod';
import { FgsnError } from '../../errors.js';
import type { ApiContext } from '../context.js';
import { ID_PATTERN, newId } from '../ids.js';
import type { CheckpointRecord, Records, UploadedFile } from '../records.js';
import { checkUploadName } from '../upload-names.js';
import { authErrorResponses, CheckpointCreateBody, CheckpointList, CheckpointListQuery, CheckpointSchema, FileParams, IdParams, UploadedFileSchema, UploadFileStatusSchema } from '../schemas.js';
import { MAX_PARTIAL_FILES, UploadPartials } from '../upload-partials.js';
import { binary, noContent } from '../zod-schema.js';
import { invalidUploadError, validateUploadOffThread } from '../upload-validation.js';

export { compactSummary, scrubPaths } from '../upload-validation.js';


/** The tenant's checkpoint or a 404 (another tenant's id is indistinguishable from a missing one). */
export async function ownCheckpoint(records: Records, tenant: string, id: string): Promise<CheckpointRecord> {
  const r = ID_PATTERN.test(id) ? await records.getCheckpoint(id) : undefined;
  if (r === undefined || r.tenant !== tenant) throw new FgsnError('NOT_FOUND', `no checkpoint ${id}`);
  return r;
}

async function view(records: Records, r: CheckpointRecord): Promise<z.output<typeof CheckpointSchema>> {
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

/** Counts (and hashes) the bytes going through; more than `limit` fails before the excess is passed on. */
class LimitedHasher extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  constructor(
    private readonly limit: number,
    private readonly name: string,
    /** false: a Content-Range chunk (limit = its declared length; the file is hashed whole at its end). */
    private readonly wholeFile = true,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null, d?: Buffer) => void): void {
    if (this.bytes + chunk.length > this.limit) {
      cb(
        this.wholeFile
          ? new FgsnError('PAYLOAD_TOO_LARGE', `${this.name} exceeds the upload limit of ${this.limit} bytes`, { details: { limit: this.limit } })
          : new FgsnError('UPLOAD_RANGE_INVALID', `the body of a chunk of ${this.name} is longer than its Content-Range (${this.limit} bytes)`),
      );
      return;
    }
    this.bytes += chunk.length;
    if (this.wholeFile) this.hash.update(chunk);
    cb(null, chunk);
  }
}

export const checkpointRoutes: FastifyPluginAsyncZod = async (app) => {
  const { records, config, layout } = app;
  const partials = new UploadPartials(records);

  app.post(
    '/v1/checkpoints',
    {
      schema: {
        tags: ['checkpoints'],
        operationId: 'createCheckpoint',
        summary: 'Create an upload',
        body: CheckpointCreateBody,
        response: { 201: CheckpointSchema, ...authErrorResponses(400) },
      },
    },
    async (request, reply) => {
      const body = request.body;
      await checkQuota('checkpoints', config.quotas.checkpoints, await records.countCheckpoints(request.auth.tenant));
      const r: CheckpointRecord = { id: newId('ckpt'), tenant: request.auth.tenant, name: body.name, state: 'uploading', createdAt: new Date().toISOString() };
      await mkdir(layout.uploadFiles(r.id), { recursive: true });
      await records.putCheckpoint(r);
      await records.markUploadOpen(r);
      request.log.info({ checkpointId: r.id }, 'upload created');
      return reply.status(201).header('location', `/v1/checkpoints/${r.id}`).send(await view(records, r));
    },
  );

  app.get(
    '/v1/checkpoints',
    {
      schema: {
        tags: ['checkpoints'],
        operationId: 'listCheckpoints',
        summary: "The tenant's uploads, newest first",
        querystring: CheckpointListQuery,
        response: { 200: CheckpointList, ...authErrorResponses(400) },
      },
    },
    async (request) => {
      const { limit } = request.query;
      return { items: await Promise.all((await records.listCheckpoints(request.auth.tenant, limit)).map((r) => view(records, r))) };
    },
  );

  app.get(
    '/v1/checkpoints/:id',
    {
      schema: {
        tags: ['checkpoints'],
        operationId: 'getCheckpoint',
        summary: 'Upload state and what was detected',
        params: IdParams,
        response: { 200: CheckpointSchema, ...authErrorResponses(404) },
      },
    },
    async (request) => {
      const { id } = request.params;
      return view(records, await ownCheckpoint(records, request.auth.tenant, id));
    },
  );

  // Uploads live in their own plugin scope: its catch-all parser leaves bodies unread for streaming.
  await app.register(async (parent) => {
    const scope = parent.withTypeProvider<ZodTypeProvider>();
    // Every body is file bytes here, whatever its Content-Type (a config.json sent as application/json
    // must not be parsed and lost): only multipart is understood, the rest is streamed as is.
    scope.removeAllContentTypeParsers();
    await scope.register(multipart, { limits: { files: 1, fileSize: config.uploadMaxBytes + 1, fields: 10, parts: 11 } });
    scope.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));

    scope.put(
      '/v1/checkpoints/:id/files/:name',
      {
        schema: {
          tags: ['checkpoints'],
          operationId: 'uploadCheckpointFile',
          summary: 'Upload one file (raw body, e.g. curl -T; or multipart/form-data with one file part), whole or in resumable Content-Range chunks',
          description:
            'Streams the body to disk. Optional header X-Content-SHA256 (hex) is checked against the received bytes (of the whole file). ' +
            'Names are flat (no "/", "..", NUL, leading "."); pickle files are refused. ' +
            'Resumable: a raw body with `Content-Range: bytes <start>-<end>/<total>` is appended to a partial file; a chunk must start at ' +
            'the offset the server holds (GET or HEAD of the file answers it as Upload-Offset; otherwise 409 UPLOAD_OFFSET_MISMATCH with ' +
            'details.expectedOffset). A chunk that is not the last answers 202 with the new offset; the last one stores the file (sha256 over ' +
            'the whole file) and answers 201. A connection cut mid-chunk keeps the bytes that arrived. The size limit, byte quota and free-disk ' +
            'check apply to the announced total from the first chunk on.',
          params: FileParams,
          consumes: ['application/octet-stream', 'multipart/form-data'],
          body: binary('The file bytes (or a multipart form with one file part; or one Content-Range chunk)'),
          response: { 201: UploadedFileSchema, 202: UploadFileStatusSchema, ...authErrorResponses(400, 404, 409, 413, 416, 422, 507) },
        },
      },
      async (request, reply) => {
        const { id, name } = request.params;
        const r = await ownCheckpoint(records, request.auth.tenant, id);
        checkUploadName(name);
        if (r.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${id} is ${r.state}; its files can no longer change`);
        const range = request.headers['content-range'];
        if (range !== undefined) return receiveChunk(request, reply, r, name, range);
        const declared = Number(request.headers['content-length'] ?? NaN);
        if (Number.isFinite(declared) && declared > config.uploadMaxBytes) {
          throw new FgsnError('PAYLOAD_TOO_LARGE', `${name} (${declared} bytes) exceeds the upload limit of ${config.uploadMaxBytes} bytes`, {
            details: { limit: config.uploadMaxBytes },
          });
        }
        // Before a byte is stored: the disk's free space and the tenant's byte quota (by the declared size).
        const known = Number.isFinite(declared) ? declared : 0;
        await checkFreeDisk(config.dataDir, config.minFreeDiskMb, known);
        await checkQuota('bytes', config.quotas.bytes, await usedBytes(r.tenant), known);
        const file = await receive(request, name, config.uploadMaxBytes, layout.uploadPartial(id));
        try {
          // A body without a declared length is counted once received.
          await checkQuota('bytes', config.quotas.bytes, await usedBytes(r.tenant), file.bytes);
          app.metrics.bytesIn.inc(file.bytes);
          const expected = request.headers['x-content-sha256'];
          if (typeof expected === 'string' && expected.toLowerCase() !== file.sha256) {
            throw new FgsnError('UPLOAD_CHECKSUM_MISMATCH', `${name}: received sha256 ${file.sha256}, header says ${expected}`, {
              details: { name, received: file.sha256, expected },
            });
          }
          const now = await records.getCheckpoint(id);
          if (now?.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${id} was completed during the upload of ${name}`);
          await rename(file.tmp, join(layout.uploadFiles(id), name));
        } catch (e) {
          await rm(file.tmp, { force: true });
          throw e;
        }
        const entry: UploadedFile = { name, bytes: file.bytes, sha256: file.sha256 };
        await records.putFile(id, entry, r.tenant);
        await dropPartial(r, name);
        request.log.info({ checkpointId: id, file: name, bytes: file.bytes }, 'file uploaded');
        return reply.status(201).send(entry);
      },
    );
  });

  /** Stored bytes plus the totals announced by partial files: what the byte quota counts. */
  async function usedBytes(tenant: string): Promise<number> {
    return (await records.storedBytes(tenant)) + (await partials.reservedBytes(tenant));
  }

  /** A whole-file PUT or DELETE of `name` supersedes a partial of the same name. */
  async function dropPartial(r: CheckpointRecord, name: string): Promise<boolean> {
    const had = await partials.remove(r.tenant, r.id, name);
    if (had) await rm(join(layout.uploadResumable(r.id), name), { force: true });
    return had;
  }

  /** The length of a partial file on disk: the offset the next chunk must start at. */
  async function received(path: string): Promise<number> {
    return stat(path).then((s) => s.size, () => 0);
  }

  /**
   * One Content-Range chunk, appended under the file's write lease. The offset is the partial file's length
   * on disk, so a chunk cut off mid-way keeps what arrived. The sha256 is computed by re-reading the whole
   * file once its last byte is in: node:crypto cannot persist a SHA-256 midstate, and chunks may reach
   * different API replicas or a restarted one; the extra sequential read costs seconds for a multi-GB shard.
   */
  async function receiveChunk(request: FastifyRequest, reply: FastifyReply, r: CheckpointRecord, name: string, header: string): Promise<FastifyReply> {
    const id = r.id;
    const m = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15})$/.exec(header.trim());
    const [start, end, total] = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [NaN, NaN, NaN];
    if (!m || start > end || end >= total) {
      throw new FgsnError('UPLOAD_RANGE_INVALID', `Content-Range ${JSON.stringify(header)} is not "bytes <start>-<end>/<total>" with start <= end < total`, { details: { contentRange: header } });
    }
    if (request.isMultipart()) throw new FgsnError('UPLOAD_RANGE_INVALID', 'a Content-Range chunk is a raw body (application/octet-stream), not multipart', { details: { contentRange: header } });
    if (total > config.uploadMaxBytes) {
      throw new FgsnError('PAYLOAD_TOO_LARGE', `${name} (${total} bytes) exceeds the upload limit of ${config.uploadMaxBytes} bytes`, { details: { limit: config.uploadMaxBytes } });
    }
    const length = end - start + 1;
    const declared = Number(request.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared !== length) {
      throw new FgsnError('UPLOAD_RANGE_INVALID', `Content-Range ${header} covers ${length} bytes, Content-Length says ${declared}`, { details: { contentRange: header, contentLength: declared } });
    }
    const release = await partials.lock(id, name);
    if (release === undefined) throw new FgsnError('UPLOAD_BUSY', `another request is writing ${name} of checkpoint ${id}`, { details: { name } });
    const path = join(layout.uploadResumable(id), name);
    try {
      const entry = await partials.get(r.tenant, id, name);
      if (entry === undefined) {
        if (start !== 0) throw offsetMismatch(reply, name, start, 0);
        // Before a byte is stored, for the whole announced file: free disk, byte quota, partial-file count.
        await checkFreeDisk(config.dataDir, config.minFreeDiskMb, total);
        await checkQuota('bytes', config.quotas.bytes, await usedBytes(r.tenant), total);
        const added = await partials.add(r.tenant, id, name, { total });
        if (!added.ok) {
          throw new FgsnError('QUOTA_EXCEEDED', `tenant holds ${added.used} partial files (at most ${MAX_PARTIAL_FILES}); finish or DELETE one first`, {
            details: { quota: 'partialFiles', limit: MAX_PARTIAL_FILES, used: added.used },
          });
        }
        await mkdir(layout.uploadResumable(id), { recursive: true });
        await rm(path, { force: true });
      } else {
        if (entry.total !== total) {
          throw new FgsnError('UPLOAD_RANGE_INVALID', `${name} was announced with ${entry.total} bytes, this chunk says ${total}; DELETE the file to start over`, {
            details: { contentRange: header, total: entry.total },
          });
        }
        const offset = await received(path);
        if (start !== offset) throw offsetMismatch(reply, name, start, offset);
        await checkFreeDisk(config.dataDir, config.minFreeDiskMb, length);
      }
      if ((await records.getCheckpoint(id))?.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${id} was completed during the upload of ${name}`);
      const limiter = new LimitedHasher(length, name, false);
      try {
        await pipeline(request.raw, limiter, createWriteStream(path, { flags: 'a' }));
      } catch (e) {
        // What arrived stays: the client asks for the offset and sends the rest.
        app.metrics.bytesIn.inc(limiter.bytes);
        if (e instanceof FgsnError) throw e;
        throw new FgsnError('VALIDATION_FAILED', `chunk of ${name} was interrupted at offset ${await received(path)}: ${(e as Error).message}`, { details: { name, offset: await received(path) } });
      }
      app.metrics.bytesIn.inc(limiter.bytes);
      const offset = await received(path);
      reply.header('upload-offset', String(offset));
      if (offset < total) return reply.status(202).send({ name, state: 'partial', offset, total });
      return await finishChunked(request, reply, r, name, path, total);
    } finally {
      await release();
    }
  }

  /** The last byte is in: hash the whole file, check it, move it among the upload's files. */
  async function finishChunked(request: FastifyRequest, reply: FastifyReply, r: CheckpointRecord, name: string, path: string, total: number): Promise<FastifyReply> {
    const hash = createHash('sha256');
    for await (const b of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(b as Buffer);
    const sha256 = hash.digest('hex');
    const expected = request.headers['x-content-sha256'];
    if (typeof expected === 'string' && expected.toLowerCase() !== sha256) {
      // The stored bytes are wrong somewhere: they are dropped, as a whole-file PUT's would be.
      await dropPartial(r, name);
      throw new FgsnError('UPLOAD_CHECKSUM_MISMATCH', `${name}: received sha256 ${sha256}, header says ${expected}`, { details: { name, received: sha256, expected } });
    }
    if ((await records.getCheckpoint(r.id))?.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${r.id} was completed during the upload of ${name}`);
    await rename(path, join(layout.uploadFiles(r.id), name));
    const entry: UploadedFile = { name, bytes: total, sha256 };
    // Recorded before the reservation is released, so the quota never sees the file as absent.
    await records.putFile(r.id, entry, r.tenant);
    await partials.remove(r.tenant, r.id, name);
    request.log.info({ checkpointId: r.id, file: name, bytes: total }, 'file uploaded in chunks');
    return reply.status(201).send(entry);
  }

  const fileStatus = {
    tags: ['checkpoints'],
    params: FileParams,
    response: { 200: UploadFileStatusSchema, ...authErrorResponses(404, 422) },
  };
  /** A partial file's received offset, or a stored file's size and sha256 (Upload-Offset on both). */
  const statusOf = async (params: z.infer<typeof FileParams>, tenant: string, reply: FastifyReply): Promise<z.output<typeof UploadFileStatusSchema>> => {
    const { id, name } = params;
    const r = await ownCheckpoint(records, tenant, id);
    checkUploadName(name);
    const entry = await partials.get(r.tenant, id, name);
    if (entry !== undefined) {
      const offset = await received(join(layout.uploadResumable(id), name));
      reply.header('upload-offset', String(offset));
      return { name, state: 'partial', offset, total: entry.total };
    }
    const file = (await records.listFiles(id)).find((f) => f.name === name);
    if (file === undefined) throw new FgsnError('NOT_FOUND', `checkpoint ${id} has no file ${name}`);
    reply.header('upload-offset', String(file.bytes));
    return { name, state: 'complete', offset: file.bytes, total: file.bytes, sha256: file.sha256 };
  };
  // HEAD first and on its own: an operation of its own in the OpenAPI document (not Fastify's implicit HEAD).
  app.head(
    '/v1/checkpoints/:id/files/:name',
    {
      schema: { ...fileStatus, operationId: 'headCheckpointFile', summary: 'Upload-Offset of a file (partial: bytes received so far; stored: its size)', response: { 200: noContent('Upload-Offset header, no body'), ...authErrorResponses(404, 422) } },
      config: { swagger: { exposeHeadRoute: true } },
    },
    async (request, reply) => {
      await statusOf(request.params, request.auth.tenant, reply);
      return reply.status(200).send();
    },
  );
  app.get(
    '/v1/checkpoints/:id/files/:name',
    { schema: { ...fileStatus, operationId: 'getCheckpointFile', summary: 'Where a file stands: partial (offset, total) or complete (bytes, sha256); Upload-Offset header' } },
    (request, reply) => statusOf(request.params, request.auth.tenant, reply),
  );

  app.delete(
    '/v1/checkpoints/:id/files/:name',
    {
      schema: {
        tags: ['checkpoints'],
        operationId: 'deleteCheckpointFile',
        summary: 'Remove a file (stored or partial) from an upload that is not completed yet',
        params: FileParams,
        response: { 204: noContent('Removed'), ...authErrorResponses(404, 409, 422) },
      },
    },
    async (request, reply) => {
      const { id, name } = request.params;
      const r = await ownCheckpoint(records, request.auth.tenant, id);
      checkUploadName(name);
      if (r.state !== 'uploading') throw new FgsnError('CONFLICT', `checkpoint ${id} is ${r.state}; its files can no longer change`);
      const hadPartial = await dropPartial(r, name);
      if (!(await records.deleteFile(id, name, r.tenant)) && !hadPartial) throw new FgsnError('NOT_FOUND', `checkpoint ${id} has no file ${name}`);
      await rm(join(layout.uploadFiles(id), name), { force: true });
      return reply.status(204).send();
    },
  );

  app.post(
    '/v1/checkpoints/:id/complete',
    {
      schema: {
        tags: ['checkpoints'],
        operationId: 'completeCheckpoint',
        summary: 'Validate the uploaded folder (model or LoRA adapter) and make it immutable',
        description: 'On failure: 422 UPLOAD_INVALID whose details.problems lists every problem found, each with its code.',
        params: IdParams,
        response: { 200: CheckpointSchema, ...authErrorResponses(404, 409, 422) },
      },
    },
    async (request) => {
      const { id } = request.params;
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
        const dir = layout.uploadFiles(id);
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
        // Unfinished chunked files are not part of the checkpoint: their bytes and reservations go.
        await partials.removeCheckpoint(r.tenant, id);
        await rm(layout.uploadResumable(id), { recursive: true, force: true });
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
      schema: {
        tags: ['checkpoints'],
        operationId: 'deleteCheckpoint',
        summary: 'Delete an upload and its files (refused while a queued or running job, or a reference, uses it)',
        params: IdParams,
        response: { 204: noContent('Deleted'), ...authErrorResponses(404, 409) },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const r = await ownCheckpoint(records, request.auth.tenant, id);
      if (r.state === 'validating' && !leaseExpired(r)) throw new FgsnError('CONFLICT', `checkpoint ${id} is being validated; retry after ${r.leaseUntil ?? 'it ends'}`);
      // Claimed first (state deleting): a job submitted from now on sees it is not ready; one submitted
      // before is in the job index checked below.
      const claimed = await records.transitionCheckpoint(id, r.state, { state: 'deleting' }, r.state === 'validating' ? (r.leaseUntil ?? '') : undefined);
      if (claimed === undefined) throw new FgsnError('CONFLICT', `checkpoint ${id} changed state; retry`);
      try {
        const users = await checkpointUsers(app, r);
        if (users.length > 0) {
          throw new FgsnError('CONFLICT', `checkpoint ${id} is used by ${users.join(', ')}; cancel or wait for them first`, { details: { usedBy: users } });
        }
      } catch (e) {
        await records.transitionCheckpoint(id, 'deleting', { state: r.state });
        throw e;
      }
      await records.deleteCheckpoint(r);
      await partials.removeCheckpoint(r.tenant, id);
      await rm(layout.upload(id), { recursive: true, force: true });
      request.log.info({ checkpointId: id }, 'checkpoint deleted');
      return reply.status(204).send();
    },
  );
};

/** 409 naming the offset the server holds (also as Upload-Offset, so a client need not parse the body). */
function offsetMismatch(reply: FastifyReply, name: string, start: number, expected: number): FgsnError {
  reply.header('upload-offset', String(expected));
  return new FgsnError('UPLOAD_OFFSET_MISMATCH', `chunk of ${name} starts at ${start}, the server holds ${expected} bytes: send from ${expected}`, {
    details: { name, start, expectedOffset: expected },
  });
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
  const { records, config, layout } = ctx;
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
    // Its partial (Content-Range) files go with it, and so do their quota reservations.
    await new UploadPartials(records).removeCheckpoint(r.tenant, id);
    await rm(layout.upload(id), { recursive: true, force: true });
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
