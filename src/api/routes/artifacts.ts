import { basename } from 'node:path';
import rangeParser from 'range-parser';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { z } from 'zod';
import { FgsnError } from '../../errors.js';
import { readManifest } from '../../storage/index.js';
import type { ApiContext } from '../context.js';
import { ArtifactList, ArtifactParams, authErrorResponses, IdParams } from '../schemas.js';
import { binary, noContent } from '../zod-schema.js';
import { jobStatusFor, ownJob } from './jobs.js';

/**
 * One `bytes=` range of RFC 9110 via range-parser (several ranges are answered with the whole body, which
 * the RFC allows). Returns null for "serve everything" (no header, another unit, or an invalid header,
 * which RFC 9110 says to ignore, e.g. `bytes=5-2`), 'unsatisfiable' for a valid range outside the object.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | 'unsatisfiable' {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (m === null) return null;
  const specs = m[1].split(',').map((x) => x.trim());
  // A spec whose first position is past its last is invalid: the whole header is then ignored (not 416).
  for (const spec of specs) {
    const r = /^(\d*)-(\d*)$/.exec(spec);
    if (r === null || (r[1] === '' && r[2] === '') || (r[1] !== '' && r[2] !== '' && Number(r[1]) > Number(r[2]))) return null;
  }
  // A suffix longer than the object means all of it (RFC 9110 14.1.2); range-parser would drop it.
  const normalized = specs.map((x) => (/^-\d+$/.test(x) && Number(x.slice(1)) > size ? '0-' : x));
  const parsed = rangeParser(size, `bytes=${normalized.join(',')}`, { combine: true });
  if (parsed === -2) return null;
  if (parsed === -1) return 'unsatisfiable';
  if (parsed.type !== 'bytes' || parsed.length !== 1) return null;
  return { start: parsed[0].start, end: parsed[0].end };
}

/** RFC 9110 If-None-Match: `*`, or a list of (weak or strong) tags compared weakly. */
export function ifNoneMatchHits(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  const opaque = etag.replace(/^W\//, '');
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === opaque);
}

/** RFC 3986: each segment of an artifact name percent-encoded (a `#` or `?` in a name stays part of it). */
export function artifactUrl(jobId: string, name: string): string {
  return `/v1/jobs/${jobId}/artifacts/${name.split('/').map(encodeURIComponent).join('/')}`;
}

/** RFC 6266 Content-Disposition: an ASCII fallback name plus the exact name as RFC 8187 `filename*`. */
export function contentDisposition(name: string): string {
  const base = basename(name);
  const fallback = base.replace(/[^\x20-\x7e]|["\\%;]/g, '_');
  const encoded = encodeURIComponent(base).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}

function contentType(name: string): string {
  if (name.endsWith('.json')) return 'application/json';
  if (name.endsWith('.jsonl')) return 'application/x-ndjson';
  if (name.endsWith('.txt') || name.endsWith('.jinja') || name.endsWith('.md')) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

/** GET and HEAD of one artifact: headers (ETag = sha256, ranges) for both, bytes for GET. */
async function serveArtifact(ctx: ApiContext, params: z.output<typeof ArtifactParams>, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
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
    .header('content-disposition', contentDisposition(art.name))
    .type(contentType(art.name));
  if (ifNoneMatchHits(request.headers['if-none-match'], etag)) return reply.status(304).send();
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
}

/** Raw bytes (the artifact's own Content-Type is set per file; octet-stream is what a client should assume). */
const bytesOf = (description: string) => ({ description, content: { 'application/octet-stream': { schema: binary(description) } } });

export const artifactRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/v1/jobs/:id/artifacts',
    {
      schema: {
        tags: ['artifacts'],
        operationId: 'listArtifacts',
        summary: 'Artifacts of a completed job (empty until then)',
        params: IdParams,
        response: { 200: ArtifactList, ...authErrorResponses(404) },
      },
    },
    async (request) => {
      const record = await ownJob(app, request.auth.tenant, request.params.id);
      const status = await jobStatusFor(app, record);
      // Only a completed job's manifest is shown: a manifest from an attempt whose completion was lost is
      // complete in itself, but the job's own answer is what clients wait for.
      const manifest = status.state === 'completed' ? await readManifest(app.store, record.id) : undefined;
      return {
        jobId: record.id,
        state: status.state,
        items: (manifest?.artifacts ?? []).map((a) => ({ name: a.name, bytes: a.bytes, sha256: a.sha256, url: artifactUrl(record.id, a.name) })),
      };
    },
  );

  const download = (operationId: string, summary: string, bytes: boolean) => ({
    tags: ['artifacts'],
    operationId,
    summary,
    params: ArtifactParams,
    response: {
      200: bytes ? bytesOf('The artifact bytes') : noContent('The artifact exists: its headers, no body'),
      206: bytes ? bytesOf('One byte range') : noContent('One byte range: its headers, no body'),
      304: noContent('Not modified'),
      ...authErrorResponses(404, 416),
    },
  });
  // HEAD first and on its own: an operation of its own in the OpenAPI document (not Fastify's implicit HEAD).
  app.head(
    '/v1/jobs/:id/artifacts/*',
    { schema: download('headArtifact', 'Headers of one artifact (size, ETag = sha256, ranges)', false), config: { swagger: { exposeHeadRoute: true } } },
    (request, reply) =>
    serveArtifact(app, request.params, request, reply),
  );
  app.get('/v1/jobs/:id/artifacts/*', { schema: download('downloadArtifact', 'Download one artifact (Range, ETag = sha256)', true) }, (request, reply) =>
    serveArtifact(app, request.params, request, reply),
  );
};
