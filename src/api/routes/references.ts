import { realpath } from 'node:fs/promises';
import { sep } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { validateCheckpointFolder } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import { authenticate, requireAdmin } from '../auth.js';
import type { ApiContext } from '../context.js';
import { ID_PATTERN, newId } from '../ids.js';
import type { ModelLocation, ReferenceRecord, Records } from '../records.js';
import { ErrorBody, IdParams, ReferenceCreateBody, ReferenceList, ReferenceSchema } from '../schemas.js';
import { toJsonSchema } from '../zod-schema.js';
import { ownCheckpoint } from './checkpoints.js';

export function referenceView(r: ReferenceRecord): Record<string, unknown> {
  // Server-side paths are the operator's business: tenants see only where a model came from.
  const loc = (l: ModelLocation) => ({ checkpointId: l.checkpointId, source: l.checkpointId ? 'upload' : 'server' });
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

export async function referenceRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { records, config } = ctx;
  const auth = authenticate(ctx);
  const err = toJsonSchema(ErrorBody, 'output');

  const resolveModel = async (tenant: string, body: { id?: string; path?: string }, role: string): Promise<ModelLocation> => {
    if (body.id !== undefined) {
      const c = await ownCheckpoint(records, tenant, body.id);
      if (c.state !== 'ready') throw new FgsnError('CONFLICT', `checkpoint ${c.id} (${role}) is not completed`);
      if (c.kind !== 'model') throw new FgsnError('VALIDATION_FAILED', `checkpoint ${c.id} (${role}) is an adapter; references need full models`);
      return { checkpointId: c.id, path: ctx.layout.uploadFiles(c.id) };
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
      onRequest: auth,
      schema: {
        tags: ['references'],
        summary: 'Register an aligned model and its base (admin)',
        body: toJsonSchema(ReferenceCreateBody),
        response: { 201: toJsonSchema(ReferenceSchema, 'output'), 400: err, 401: err, 403: err, 404: err, 422: err },
      },
    },
    async (request, reply) => {
      requireAdmin(request);
      const b = request.body as { aligned?: string; base?: string; alignedPath?: string; basePath?: string; name?: string; visibility: 'global' | 'tenant' };
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
    { onRequest: auth, schema: { tags: ['references'], summary: 'References usable by this tenant', response: { 200: toJsonSchema(ReferenceList, 'output'), 401: err } } },
    async (request) => ({ items: (await records.listReferences(request.auth.tenant)).map(referenceView) }),
  );

  app.get(
    '/v1/references/:id',
    { onRequest: auth, schema: { tags: ['references'], summary: 'One reference', params: toJsonSchema(IdParams), response: { 200: toJsonSchema(ReferenceSchema, 'output'), 401: err, 404: err } } },
    async (request) => referenceView(await visibleReference(records, request.auth.tenant, (request.params as { id: string }).id)),
  );
}
