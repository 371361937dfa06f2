/**
 * Method options at the API edge. The defense's own parser (src/defense/options.ts) is the one source of
 * truth: submission runs it, so a job that would fail on its options is refused with a 400 naming the
 * field instead of queued; the OpenAPI document is generated from the same per-method spec.
 */
import { z } from 'zod';
import { METHOD_OPTION_SPECS, OPTION_BOUNDS, parseMethodOptions, type OptionKind } from '../defense/index.js';
import { isFgsnError } from '../errors.js';
import type { DefenseMethod } from '../pipeline/index.js';
import type { JsonSchema } from './zod-schema.js';

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

function kindSchema(kind: OptionKind): z.ZodType {
  if (Array.isArray(kind)) return z.enum(kind as [string, ...string[]]);
  switch (kind) {
    case 'share':
      return z.number().min(0).max(1);
    case 'pos':
      return z.number().gt(0).max(OPTION_BOUNDS.pos);
    case 'nonneg':
      return z.number().min(0).max(OPTION_BOUNDS.nonneg);
    case 'num':
      return z.number().min(-OPTION_BOUNDS.num).max(OPTION_BOUNDS.num);
    case 'int':
      return z.number().int().min(1).max(OPTION_BOUNDS.int);
    default:
      return z.string().max(OPTION_BOUNDS.string);
  }
}

/** JSON Schema of `options`: one object per method (documentation; validation runs the parser above). */
export function methodOptionsJsonSchema(): JsonSchema {
  const anyOf = Object.entries(METHOD_OPTION_SPECS).map(([method, spec]) => {
    const shape: Record<string, z.ZodType> = {};
    for (const [key, kind] of Object.entries(spec)) {
      shape[key] = method === 'fgsn' && key === 'targetAsr' ? z.union([kindSchema(kind), z.enum(['off', 'none'])]) : kindSchema(kind);
    }
    const js = z.toJSONSchema(z.object(shape).partial().strict(), { target: 'draft-2020-12' }) as JsonSchema;
    delete js.$schema;
    return { title: `${method} options`, ...js };
  });
  return {
    type: 'object',
    description:
      'Method options (unknown keys and out-of-range values are refused with 400 at submission). The allowed keys depend on `method`; ' +
      'safelora takes threshold or topK, not both; restore always uses mode restore.',
    anyOf,
  };
}
