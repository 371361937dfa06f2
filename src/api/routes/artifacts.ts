import { basename } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { FgsnError } from '../../errors.js';
import { readManifest } from '../../storage/artifacts.js';
import { authenticate } from '../auth.js';
import type { ApiContext } from '../context.js';
import { ArtifactList, ArtifactParams, ErrorBody, IdParams } from '../schemas.js';
import { toJsonSchema } from '../zod-schema.js';
import { jobStatusFor, ownJob } from './jobs.js';

/**
 * One `bytes=` range of RFC 9110 (several ranges are answered with the whole body, which the RFC allows).
 * Returns null for "serve everything", 'unsatisfiable' for a range outside the object.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | 'unsatisfiable' {
  if (header === undefined) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (m === null) return null;
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

function contentType(name: string): string {
  if (name.endsWith('.json')) return 'application/json';
  if (name.endsWith('.jsonl')) return 'application/x-ndjson';
  if (name.endsWith('.txt') || name.endsWith('.jinja') || name.endsWith('.md')) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

export async function artifactRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const auth = authenticate(ctx);
  const err = toJsonSchema(ErrorBody, 'output');

  app.get(
    '/v1/jobs/:id/artifacts',
    {
      onRequest: auth,
      schema: { tags: ['artifacts'], summary: 'Artifacts of a completed job (empty until then)', params: toJsonSchema(IdParams), response: { 200: toJsonSchema(ArtifactList, 'output'), 401: err, 404: err } },
    },
    async (request) => {
      const record = await ownJob(ctx, request.auth.tenant, (request.params as { id: string }).id);
      const status = await jobStatusFor(ctx, record);
      // Only a completed job's manifest is shown: a manifest from an attempt whose completion was lost is
      // complete in itself, but the job's own answer is what clients wait for.
      const manifest = status.state === 'completed' ? await readManifest(ctx.store, record.id) : undefined;
      return {
        jobId: record.id,
        state: status.state,
        items: (manifest?.artifacts ?? []).map((a) => ({ name: a.name, bytes: a.bytes, sha256: a.sha256, url: `/v1/jobs/${record.id}/artifacts/${a.name}` })),
      };
    },
  );

  app.route({
    method: ['GET', 'HEAD'],
    url: '/v1/jobs/:id/artifacts/*',
    onRequest: auth,
    schema: {
      tags: ['artifacts'],
      summary: 'Download one artifact (Range, ETag = sha256, HEAD)',
      params: toJsonSchema(ArtifactParams),
      response: { 200: { description: 'The artifact bytes', type: 'string', format: 'binary' }, 206: { description: 'One byte range', type: 'string', format: 'binary' }, 304: { description: 'Not modified', type: 'null' }, 401: err, 404: err, 416: err },
    },
    handler: async (request, reply) => {
      const params = request.params as { id: string; '*': string };
      const record = await ownJob(ctx, request.auth.tenant, params.id);
      const status = await jobStatusFor(ctx, record);
      const manifest = status.state === 'completed' ? await readManifest(ctx.store, record.id) : undefined;
      const art = manifest?.artifacts.find((a) => a.name === params['*']);
      if (art === undefined) throw new FgsnError('NOT_FOUND', `job ${record.id} has no artifact ${params['*']}`);
      const etag = `"${art.sha256}"`;
      reply
        .header('etag', etag)
        .header('accept-ranges', 'bytes')
        .header('cache-control', 'private, max-age=31536000, immutable')
        .header('content-disposition', `attachment; filename="${basename(art.name).replace(/"/g, '')}"`)
        .type(contentType(art.name));
      if (request.headers['if-none-match'] === etag) return reply.status(304).send();
      const ifRange = request.headers['if-range'];
      const range = ifRange !== undefined && ifRange !== etag ? null : parseRange(request.headers.range, art.bytes);
      if (range === 'unsatisfiable') {
        reply.header('content-range', `bytes */${art.bytes}`);
        throw new FgsnError('RANGE_NOT_SATISFIABLE', `range ${request.headers.range} lies outside ${art.name} (${art.bytes} bytes)`);
      }
      const length = range === null ? art.bytes : range.end - range.start + 1;
      reply.header('content-length', length);
      if (range !== null) reply.status(206).header('content-range', `bytes ${range.start}-${range.end}/${art.bytes}`);
      if (request.method === 'HEAD') return reply.send();
      if (length === 0) return reply.send(Buffer.alloc(0));
      const stream = await ctx.store.read(art.key, range ?? undefined);
      // Counted when the response went out whole, without tapping the stream itself.
      reply.raw.once('finish', () => ctx.metrics.bytesOut.inc(length));
      return reply.send(stream);
    },
  });
}
