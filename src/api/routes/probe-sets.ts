import type { FastifyPluginAsyncZod, ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { FgsnError } from '../../errors.js';
import type { ProbeRecord } from '../../pipeline/index.js';
import type { ApiContext } from '../context.js';
import { ID_PATTERN, newId } from '../ids.js';
import {
  categoryCounts, DEFAULT_PROBE_SETS, defaultProbeSetRecord, isDefaultProbeSet, loadDefaultProbes,
  parseProbeNdjson,
} from '../probes.js';
import type { ProbeSetRecord } from '../records.js';
import type { ProbeRef } from '../../queue/index.js';
import type { BlobStore } from '../../storage/index.js';
import { probeNdjson, putProbeBlob, readProbeBlob, sha256Text } from '../../storage/index.js';
import { authErrorResponses, IdParams, ProbeSetList, ProbeSetQuery, ProbeSetSchema } from '../schemas.js';
import { checkQuota } from './checkpoints.js';

const view = (r: ProbeSetRecord): z.output<typeof ProbeSetSchema> => ({
  id: r.id,
  name: r.name,
  kind: r.kind,
  count: r.count,
  categories: r.categories,
  builtIn: r.tenant === '*',
  createdAt: r.createdAt,
});

/** A probe set the tenant may use (its own or a built-in one) and its blob reference; 404 otherwise. */
export async function visibleProbeSet(ctx: ApiContext, tenant: string, id: string): Promise<{ meta: ProbeSetRecord; ref: ProbeRef }> {
  if (isDefaultProbeSet(id)) return { meta: await defaultProbeSetRecord(id), ref: await builtinProbeRef(ctx, id) };
  const meta = ID_PATTERN.test(id) ? await ctx.records.getProbeSet(id) : undefined;
  if (meta === undefined || meta.tenant !== tenant) throw new FgsnError('NOT_FOUND', `no probe set ${id}`);
  if (meta.key === undefined || meta.sha256 === undefined) {
    // Stored in Redis by an earlier version: moved to the blob store on first use.
    const legacy = await ctx.records.getLegacyProbeRecords(id);
    if (legacy === undefined) throw new FgsnError('NOT_FOUND', `no probe set ${id}`);
    const blob = await putProbeBlob(ctx.store, `probes/${id}.jsonl`, legacy);
    Object.assign(meta, { key: blob.key, sha256: blob.sha256 });
    await ctx.records.putProbeSet(meta);
    await ctx.redis.del(ctx.records.key('probes', id, 'records'));
  }
  return { meta, ref: { id, key: meta.key as string, sha256: meta.sha256 as string, count: meta.count } };
}

/** Built-in sets go to the store once per content (the key carries the sha256), like uploaded ones. */
const builtinRefs = new WeakMap<BlobStore, Map<string, ProbeRef>>();
async function builtinProbeRef(ctx: ApiContext, id: keyof typeof DEFAULT_PROBE_SETS): Promise<ProbeRef> {
  let refs = builtinRefs.get(ctx.store);
  if (refs === undefined) builtinRefs.set(ctx.store, (refs = new Map()));
  let ref = refs.get(id);
  if (ref === undefined) {
    const probes = await loadDefaultProbes(id);
    const sha256 = sha256Text(probeNdjson(probes));
    const blob = await putProbeBlob(ctx.store, `probes/builtin/${id}-${sha256}.jsonl`, probes);
    ref = { id, key: blob.key, sha256: blob.sha256, count: probes.length };
    refs.set(id, ref);
  }
  return ref;
}

/** The probes behind a reference (checked against its sha256). */
export function loadProbes(ctx: ApiContext, ref: ProbeRef): Promise<ProbeRecord[]> {
  return readProbeBlob(ctx.store, ref);
}

export const probeSetRoutes: FastifyPluginAsyncZod = async (app) => {
  const { records, config } = app;

  // Its own scope: the NDJSON parser applies to this route only.
  await app.register(async (parent) => {
    const scope = parent.withTypeProvider<ZodTypeProvider>();
    scope.addContentTypeParser(['application/x-ndjson', 'application/jsonl'], { parseAs: 'string', bodyLimit: config.probeSetMaxBytes }, (_req, body, done) =>
      done(null, body),
    );
    scope.post(
      '/v1/probe-sets',
      {
        schema: {
          tags: ['probe-sets'],
          operationId: 'createProbeSet',
          summary: 'Upload a probe set (application/x-ndjson: one {"prompt", "category"?, "response"?} per line)',
          querystring: ProbeSetQuery,
          consumes: ['application/x-ndjson'],
          // Any body reaches the handler, which answers 415 for anything but NDJSON.
          body: z.unknown().meta({ type: 'string', description: 'One JSON object per line: {"prompt", "category"?, "response"?}' }),
          response: { 201: ProbeSetSchema, ...authErrorResponses(400, 413, 415, 422) },
        },
      },
      async (request, reply) => {
        const ct = (request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
        if (ct !== 'application/x-ndjson' && ct !== 'application/jsonl') {
          throw new FgsnError('UNSUPPORTED_MEDIA_TYPE', 'send the probe set as application/x-ndjson');
        }
        const q = request.query;
        await checkQuota('probeSets', config.quotas.probeSets, await records.countProbeSets(request.auth.tenant));
        const text = typeof request.body === 'string' ? request.body : '';
        const probes = parseProbeNdjson(text);
        const r: ProbeSetRecord = {
          id: newId('probes'),
          tenant: request.auth.tenant,
          name: q.name,
          kind: q.kind,
          count: probes.length,
          categories: categoryCounts(probes),
          bytes: Buffer.byteLength(text),
          createdAt: new Date().toISOString(),
        };
        const blob = await putProbeBlob(app.store, `probes/${r.id}.jsonl`, probes);
        r.key = blob.key;
        r.sha256 = blob.sha256;
        await records.putProbeSet(r);
        return reply.status(201).header('location', `/v1/probe-sets/${r.id}`).send(view(r));
      },
    );
  });

  app.get(
    '/v1/probe-sets',
    { schema: { tags: ['probe-sets'], operationId: 'listProbeSets', summary: "Built-in probe sets and this tenant's own", response: { 200: ProbeSetList, ...authErrorResponses() } } },
    async (request) => ({
      items: [
        ...(await Promise.all(Object.keys(DEFAULT_PROBE_SETS).map(async (id) => view(await defaultProbeSetRecord(id as keyof typeof DEFAULT_PROBE_SETS))))),
        ...(await records.listProbeSets(request.auth.tenant)).map(view),
      ],
    }),
  );

  app.get(
    '/v1/probe-sets/:id',
    { schema: { tags: ['probe-sets'], operationId: 'getProbeSet', summary: 'One probe set', params: IdParams, response: { 200: ProbeSetSchema, ...authErrorResponses(404) } } },
    async (request) => view((await visibleProbeSet(app, request.auth.tenant, request.params.id)).meta),
  );
};
