/**
 * The glue between zod and Fastify. Route schemas are zod (typed through fastify-type-provider-zod);
 * requests are validated by the zod schema itself into the service's coded 400, responses are encoded by
 * their declared zod schema (a response that does not match is a 500, never sent), and @fastify/swagger
 * sees the JSON Schema (2020-12, which OpenAPI 3.1 uses as is) of the same schemas, so what is documented
 * and what is enforced cannot differ.
 */
import type { FastifySchemaCompiler } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { FgsnError } from '../errors.js';

export type JsonSchema = Record<string, unknown>;

export function issuesOf(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(root)', message: i.message }));
}

export function validationError(where: string, error: z.ZodError): FgsnError {
  const issues = issuesOf(error);
  return new FgsnError('VALIDATION_FAILED', `invalid ${where}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { details: { in: where, issues } });
}

/** Zod's own errors in the service's error shape (the type provider's validator would answer Fastify's). */
export const zodValidatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  if (!(schema instanceof z.ZodType)) throw new Error(`route ${httpPart ?? ''} schema is not a zod schema`);
  return (data: unknown) => {
    // Fastify hands an absent body over as null; schemas with defaults expect undefined.
    const r = schema.safeParse(data ?? undefined);
    return r.success ? { value: r.data } : { error: validationError(httpPart ?? 'request', r.error) };
  };
};

/** Responses go out through their declared schema: unknown keys dropped, a mismatch is a 500. */
export const zodSerializerCompiler = serializerCompiler;

/** Parses with a zod schema outside Fastify's hooks (bodies of custom content types). */
export function parseOr400<T extends z.ZodType>(schema: T, data: unknown, where: string): z.output<T> {
  const r = schema.safeParse(data);
  if (!r.success) throw validationError(where, r.error);
  return r.data;
}

/** A body or response of raw bytes (streamed, never parsed or serialized): documented, not validated. */
export const binary = (description: string): z.ZodUnknown => z.unknown().meta({ type: 'string', format: 'binary', description });

/** A response without a body (204, 304). */
export const noContent = (description: string): z.ZodUndefined => z.undefined().describe(description);

type SwaggerTransformInput = Parameters<typeof jsonSchemaTransform>[0];
type SwaggerTransformObjectInput = Parameters<typeof jsonSchemaTransformObject>[0];

/** Fastify's catch-all parameter is `*`, which OpenAPI cannot name: documented as {path}. */
function renameWildcard(schema: JsonSchema, url: string): { schema: JsonSchema; url: string } {
  if (!url.endsWith('/*')) return { schema, url };
  const params = schema.params as { properties?: Record<string, unknown>; required?: string[] } | undefined;
  const properties = { ...(params?.properties ?? {}) };
  if ('*' in properties) {
    properties.path = { ...(properties['*'] as object), description: 'Artifact name as listed, e.g. model/model.safetensors' };
    delete properties['*'];
  }
  return {
    schema: { ...schema, params: { ...params, properties, required: (params?.required ?? []).map((r) => (r === '*' ? 'path' : r)) } },
    url: url.slice(0, -1) + ':path',
  };
}

const RATE_LIMIT_HEADERS: Record<string, JsonSchema> = {
  'ratelimit-limit': { type: 'integer', description: 'Requests allowed per window for this API key (absent when FGSN_RATE_LIMIT=0)' },
  'ratelimit-remaining': { type: 'integer', description: 'Requests left in the current window' },
  'ratelimit-reset': { type: 'integer', description: 'Seconds until the window resets' },
};
/** What each status means in this API, for responses whose schema (a shared component) carries no description. */
const STATUS_DESCRIPTIONS: Record<string, string> = {
  '200': 'OK',
  '201': 'Created',
  '202': 'Accepted (a job: as it stands now; a Content-Range chunk that is not the last: the offset the server holds)',
  '400': 'Invalid request (VALIDATION_FAILED names the field)',
  '401': 'Missing or unknown API key',
  '403': 'The key may not do this',
  '404': 'No such resource for this tenant',
  '409': 'Conflicts with the resource state',
  '413': 'Body over the size limit',
  '415': 'Unsupported Content-Type',
  '416': 'Range outside the artifact',
  '422': 'Well-formed but invalid content (the problems are listed in details)',
  '429': 'Rate limit, failed-authentication limit or tenant quota reached',
  '503': 'Redis (or the service) is not available; retry after Retry-After seconds',
  '507': 'Not enough free disk for this upload',
};

const RETRY_AFTER: Record<string, JsonSchema> = { 'retry-after': { type: 'integer', description: 'Seconds to wait before retrying' } };

/**
 * Per route: zod to JSON Schema (the type provider's transform), the wildcard renamed, and the rate-limit
 * headers documented on every response of an authenticated (/v1) operation, Retry-After on 429 and 503.
 */
export function openApiRouteTransform(input: SwaggerTransformInput): { schema: JsonSchema; url: string } {
  const out = jsonSchemaTransform(input) as { schema: JsonSchema; url: string };
  const { schema, url } = renameWildcard(out.schema ?? {}, out.url);
  // @fastify/swagger suffixes an explicit HEAD route's operationId with "-head"; ours are unique already.
  if (typeof schema.operationId === 'string') schema.operationId = schema.operationId.replace(/-head$/, '');
  const response = schema.response as Record<string, JsonSchema> | undefined;
  if (response !== undefined) {
    for (const [status, r] of Object.entries(response)) {
      const limited = url.startsWith('/v1/') && status !== '401';
      const headers = { ...(limited ? RATE_LIMIT_HEADERS : {}), ...(status === '429' || status === '503' ? RETRY_AFTER : {}) };
      const description = typeof r.description === 'string' ? undefined : STATUS_DESCRIPTIONS[status];
      response[status] = { ...r, ...(description === undefined ? {} : { description }), ...(Object.keys(headers).length > 0 ? { headers } : {}) };
    }
  }
  return { schema, url };
}

/** ratelimit-limit -> RateLimit-Limit (the component's name; header names are case-insensitive). */
function headerComponentId(name: string): string {
  return name.split('-').map((w) => (w === 'ratelimit' ? 'RateLimit' : w[0].toUpperCase() + w.slice(1))).join('-');
}

function collectRefs(value: unknown, into: Set<string>): void {
  if (Array.isArray(value)) for (const v of value) collectRefs(v, into);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/')) into.add(v.slice('#/components/schemas/'.length));
      else collectRefs(v, into);
    }
  }
}

/**
 * The shared components: every schema registered with an id (schemas.ts), as input and output variants;
 * only those some operation references (directly or through another component) are kept.
 */
export function openApiObjectTransform(input: SwaggerTransformObjectInput): Record<string, unknown> {
  const doc = jsonSchemaTransformObject(input) as { paths?: unknown; components?: { schemas?: Record<string, unknown> } };
  const all = doc.components?.schemas ?? {};
  const used = new Set<string>();
  collectRefs(doc.paths, used);
  for (let grown = true; grown; ) {
    const before = used.size;
    for (const id of [...used]) collectRefs(all[id], used);
    grown = used.size > before;
  }
  const schemas = Object.fromEntries(Object.keys(all).filter((id) => used.has(id)).sort().map((id) => [id, all[id]]));
  // The rate-limit and Retry-After headers are defined once and referenced by every response that has them.
  const headers: Record<string, unknown> = {};
  for (const methods of Object.values((doc.paths ?? {}) as Record<string, Record<string, { responses?: Record<string, { headers?: Record<string, unknown> }> }>>)) {
    for (const op of Object.values(methods)) {
      for (const r of Object.values(op.responses ?? {})) {
        for (const [name, h] of Object.entries(r.headers ?? {})) {
          if (!(name in RATE_LIMIT_HEADERS) && !(name in RETRY_AFTER)) continue;
          const id = headerComponentId(name);
          headers[id] ??= h;
          (r.headers as Record<string, unknown>)[name] = { $ref: `#/components/headers/${id}` };
        }
      }
    }
  }
  return { ...doc, components: { ...doc.components, schemas, ...(Object.keys(headers).length > 0 ? { headers } : {}) } };
}
