/**
 * The registry of defense methods. Adding a method = one folder under src/defense/methods/<name>/ exporting
 * a `defineMethod(...)` (options schema with defaults, bounds and help per field, and a plan), plus one line
 * in METHODS below. Derived from it: the method-name type and list, parseMethodOptions (CLI, worker, API
 * submission), the API's options schema and OpenAPI document, the CLI flags and `fgsn harden --help`.
 * test/defense/methods.test.ts runs every registered method through the same checks.
 */
import type { z } from 'zod';
import { FgsnError } from '../../errors.js';
import { antidote } from './antidote/index.js';
import { parseFields } from './fields.js';
import { fgsn } from './fgsn/index.js';
import type { JobScores } from './job-scores.js';
import { layer } from './layer/index.js';
import type { EditPlan, MethodDefinition } from './method.js';
import { resta } from './resta/index.js';
import { restore } from './restore/index.js';
import { safelora } from './safelora/index.js';

/** Every method, in the order listings show them. */
export const METHODS = { fgsn, safelora, layer, antidote, resta, restore } as const;

type Registry = typeof METHODS;
export type DefenseMethod = keyof Registry;
export const DEFENSE_METHODS = Object.keys(METHODS) as [DefenseMethod, ...DefenseMethod[]];

/** Options of a method once parsed (defaults applied, cross-field rules checked). */
export type OptionsOf<M extends DefenseMethod> = Registry[M] extends MethodDefinition<string, z.ZodObject, infer O> ? O : never;
export type MethodOptions = { [M in DefenseMethod]: { method: M; o: OptionsOf<M> } }[DefenseMethod];

export function isDefenseMethod(name: unknown): name is DefenseMethod {
  return typeof name === 'string' && Object.hasOwn(METHODS, name);
}

/** A method's definition, with a coded error for a name that is not registered. */
export function methodDefinition(method: string): MethodDefinition<string, z.ZodObject, unknown> {
  if (!isDefenseMethod(method)) {
    throw new FgsnError('DEFENSE_OPTION_INVALID', `unknown method "${String(method)}" (${DEFENSE_METHODS.join(', ')})`, { details: { method } });
  }
  return METHODS[method] as unknown as MethodDefinition<string, z.ZodObject, unknown>;
}

/**
 * Raw options (API body, CLI strings, YAML) into the method's typed options: unknown keys, out-of-range
 * values and broken cross-field rules are DEFENSE_OPTION_INVALID (400) naming the method and the field.
 */
export function parseMethodOptions<M extends DefenseMethod>(method: M, raw: Record<string, unknown> = {}): Extract<MethodOptions, { method: M }> {
  const def = methodDefinition(method);
  const fields = parseFields(method, def.options, raw);
  const given = new Set(Object.keys(raw).filter((k) => raw[k] !== undefined));
  return { method, o: def.finalize(fields, given) } as Extract<MethodOptions, { method: M }>;
}

/** The method's edit plan (FGSN: the fixed budget; its target-driven search is driven by the pipeline). */
export function planMethod(job: JobScores, m: MethodOptions): Promise<EditPlan> {
  return methodDefinition(m.method).plan(job, m.o);
}

export { type EditPlan, type MethodDefinition, defineMethod, resolveLayers } from './method.js';
export { JobScores } from './job-scores.js';
export { OPTION_BOUNDS, fieldInfo, type FieldInfo } from './fields.js';
export { SCORINGS, type FgsnOptions, type FgsnRanking, type Scoring, fgsnOptions, fgsnProjection, fgsnRanking, fgsnScores } from './fgsn/index.js';
export type { SafeLoraOptions } from './safelora/index.js';
export type { LayerOptions } from './layer/index.js';

/** FGSN's defaults (what `parseMethodOptions('fgsn', {})` gives). */
export const FGSN_DEFAULTS = parseMethodOptions('fgsn', {}).o;
