/**
 * The glue between zod and Fastify: route schemas are zod; Fastify and @fastify/swagger see their JSON
 * Schema (2020-12, which OpenAPI 3.1 uses as is), while validation runs the zod schema itself, so what is
 * documented and what is enforced cannot differ.
 */
import type { FastifySchemaCompiler } from 'fastify';
import { z } from 'zod';
import { FgsnError } from '../errors.js';

const zodOf = new WeakMap<object, z.ZodType>();

export type JsonSchema = Record<string, unknown>;

/** JSON Schema of a zod schema (`input` for what clients send: defaults make fields optional). */
export function toJsonSchema(schema: z.ZodType, io: 'input' | 'output' = 'input'): JsonSchema {
  const js = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;
  delete js.$schema;
  zodOf.set(js, schema);
  return js;
}

export function issuesOf(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(root)', message: i.message }));
}

export function validationError(where: string, error: z.ZodError): FgsnError {
  const issues = issuesOf(error);
  return new FgsnError('VALIDATION_FAILED', `invalid ${where}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { details: { in: where, issues } });
}

export const zodValidatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const zs = zodOf.get(schema as object);
  if (zs === undefined) return () => true;
  return (data: unknown) => {
    // Fastify hands an absent body over as null; schemas with defaults expect undefined.
    const r = zs.safeParse(data ?? undefined);
    return r.success ? { value: r.data } : { error: validationError(httpPart ?? 'request', r.error) };
  };
};

/** Parses with a zod schema outside Fastify's hooks (bodies of custom content types). */
export function parseOr400<T extends z.ZodType>(schema: T, data: unknown, where: string): z.output<T> {
  const r = schema.safeParse(data);
  if (!r.success) throw validationError(where, r.error);
  return r.data;
}
