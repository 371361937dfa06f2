/**
 * Method options at the API edge, derived from the defense registry (src/defense/methods/index.ts): the
 * method enum, submission-time validation (the registry's own parser, so a job that would fail on its
 * options is refused with a 400 naming the field instead of queued) and the OpenAPI document of `options`
 * (every option of every method, with its bounds, default and help text, bound to `method`).
 */
import { z } from 'zod';
import { DEFENSE_METHODS, METHODS, type DefenseMethod, parseMethodOptions } from '../defense/index.js';
import { isFgsnError } from '../errors.js';
import type { JsonSchema } from './zod-schema.js';

export const Method = z.enum(DEFENSE_METHODS);

/** Options are flat: a value is a string, a number or a boolean, never an object (bounded before canonical JSON or hashing). */
export function optionIssues(method: DefenseMethod, options: Record<string, unknown> | undefined): { path: string[]; message: string }[] {
  if (options === undefined) return [];
  for (const [key, value] of Object.entries(options)) {
    if (value !== null && typeof value === 'object') return [{ path: ['options', key], message: 'option values are strings or numbers, not objects or arrays' }];
  }
  try {
    parseMethodOptions(method, options);
    return [];
  } catch (e) {
    if (!isFgsnError(e)) throw e;
    const option = (e.details as { option?: unknown } | undefined)?.option;
    return [{ path: typeof option === 'string' ? ['options', option] : ['options'], message: e.message }];
  }
}

/** JSON Schema of one method's options, as clients send them (every field optional, defaults shown). */
export function optionsJsonSchema(method: DefenseMethod): JsonSchema {
  const js = z.toJSONSchema(METHODS[method].options, { io: 'input', target: 'draft-2020-12' }) as JsonSchema;
  delete js.$schema;
  delete js.required;
  return { title: `${method} options`, description: METHODS[method].summary, ...js };
}

const OPTIONS_DESCRIPTION =
  'Method options; the allowed keys depend on `method` (one schema per method below). Unknown keys, out-of-range values ' +
  'and broken rules (safelora: threshold or topK, not both; fgsn: q only with targetAsr off) are refused with 400 at submission, naming the field. ' +
  'Numbers may also be given as numeric strings.';

/** JSON Schema of `options`: one object per method (the body's `allOf` binds each to its `method`). */
export function methodOptionsJsonSchema(): JsonSchema {
  return { type: 'object', description: OPTIONS_DESCRIPTION, anyOf: DEFENSE_METHODS.map(optionsJsonSchema) };
}

/**
 * The per-method binding of the job body: `method: X` (fgsn when absent) => `options` is X's schema. A JSON
 * Schema 2020-12 if/then per method, the discriminated union OpenAPI 3.1 can state without a discriminator
 * property inside `options`.
 */
export function methodOptionsBinding(): JsonSchema[] {
  return DEFENSE_METHODS.map((m) => ({
    if: m === 'fgsn'
      ? { anyOf: [{ not: { properties: { method: { type: 'string' } }, required: ['method'] } }, { properties: { method: { const: m } }, required: ['method'] }] }
      : { properties: { method: { const: m } }, required: ['method'] },
    then: { properties: { options: optionsJsonSchema(m) } },
  }));
}
