import { realpath } from 'node:fs/promises';
import { sep } from 'node:path';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { z } from 'zod';
import { validateCheckpointFolder } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import { requireAdmin } from '../auth.js';
import { ID_PATTERN, newId } from '../ids.js';
import type { ModelLocation, ReferenceRecord, Records } from '../records.js';
import { authErrorResponses, IdParams, ReferenceCreateBody, ReferenceList, ReferenceSchema } from '../schemas.js';
import { ownCheckpoint } from './checkpoints.js';

export function referenceView(r: ReferenceRecord): z.output<typeof ReferenceSchema> {
  // Server-side paths are the operator's business: tenants see only where a model came from.
  const loc = (l: ModelLocation) => ({ checkpointId: l.checkpointId, source: l.checkpointId ? ('upload' as const) : ('server' as const) });
  return { id: r.id, name: r.name, visibility: r.visibility, aligned: loc(r.aligned), base: loc(r.base), createdAt: r.createdAt };
}

/** A reference the tenant may use: its own, or a global one. Anything else is a 404. */
export async function visibleReference(records: Records, tenant: string, id: string): Promise<ReferenceRecord> {
  const r = ID_PATTERN.test(id) ? await records.getReference(id) : undefined;
  if (r === undefined || (r.visibility !== 'global' && r.tenant !== tenant)) throw new FgsnError('NOT_FOUND', `no reference ${id}`);
  return r;
}

/** Resolves a server-side folder and checks it lies inside one of the allow-listed roots (symlinks resolved). */
async function allowedFolder(allowed: string[], path: string, role: string): Promise<string> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new FgsnError('MODEL_DIR_NOT_ALLOWED', `${role} folder ${path} is not inside FGSN_ALLOWED_MODEL_DIRS or does not exist`, { details: { role } });
  }
  for (const root of allowed) {
    const realRoot = await realpath(root).catch(() => undefined);
    if (realRoot !== undefined && (real === realRoot || real.startsWith(realRoot + sep))) return real;
  }
  throw new FgsnError('MODEL_DIR_NOT_ALLOWED', `${role} folder ${path} is not inside FGSN_ALLOWED_MODEL_DIRS or does not exist`, { details: { role } });
}

export const referenceRoutes: FastifyPluginAsyncZod = async (app) => {
  const { records, config, layout } = app;

  const resolveModel = async (tenant: string, body: { id?: string; path?: string }, role: string): Promise<ModelLocation> => {
    if (body.id !== undefined) {
      const c = await ownCheckpoint(records, tenant, body.id);
      if (c.state !== 'ready') throw new FgsnError('CONFLICT', `checkpoint ${c.id} (${role}) is not completed`);
      if (c.kind !== 'model') throw new FgsnError('VALIDATION_FAILED', `checkpoint ${c.id} (${role}) is an adapter; references need full models`);
      return { checkpointId: c.id, path: layout.uploadFiles(c.id) };
    }
    const loc: ModelLocation = { path: await allowedFolder(config.allowedModelDirs, body.path as string, role) };
    const v = await validateCheckpointFolder(loc.path);
    if (!v.ok || v.kind !== 'model') {
      const problems = v.ok ? [{ code: 'VALIDATION_FAILED', message: 'not a full model folder' }] : v.problems.map((p) => ({ code: p.code, message: p.message }));
      throw new FgsnError('UPLOAD_INVALID', `${role} folder is not a valid model: ${problems.map((p) => p.code).join(', ')}`, { details: { role, problems } });
    }
    return loc;
  };

  app.post(
    '/v1/references',
    {
      schema: {
        tags: ['references'],
        operationId: 'createReference',
        summary: 'Register an aligned model and its base (admin)',
        body: ReferenceCreateBody,
        response: { 201: ReferenceSchema, ...authErrorResponses(400, 403, 404, 422) },
      },
    },
    async (request, reply) => {
      requireAdmin(request);
      const b = request.body;
      const tenant = request.auth.tenant;
      const r: ReferenceRecord = {
        id: newId('ref'),
        tenant,
        visibility: b.visibility,
        name: b.name,
        aligned: await resolveModel(tenant, { id: b.aligned, path: b.alignedPath }, 'aligned'),
        base: await resolveModel(tenant, { id: b.base, path: b.basePath }, 'base'),
        createdAt: new Date().toISOString(),
      };
      await records.putReference(r);
      return reply.status(201).header('location', `/v1/references/${r.id}`).send(referenceView(r));
    },
  );

  app.get(
    '/v1/references',
    { schema: { tags: ['references'], operationId: 'listReferences', summary: 'References usable by this tenant', response: { 200: ReferenceList, ...authErrorResponses() } } },
    async (request) => ({ items: (await records.listReferences(request.auth.tenant)).map(referenceView) }),
  );

  app.get(
    '/v1/references/:id',
    { schema: { tags: ['references'], operationId: 'getReference', summary: 'One reference', params: IdParams, response: { 200: ReferenceSchema, ...authErrorResponses(404) } } },
    async (request) => referenceView(await visibleReference(records, request.auth.tenant, request.params.id)),
  );
};
