/**
 * Building blocks of a method's options schema: every option is a zod field with its bounds, its default and
 * its help text, so the parser, the API's OpenAPI document, the CLI flags and `fgsn harden --help` all read
 * the same field. Every number is bounded (a finite 1e308 strength once published +Inf weights).
 */
import { z } from 'zod';
import { FgsnError } from '../../errors.js';

/**
 * Bounds of the number kinds: 'num' is a signed factor in [-num, num], 'nonneg' in [0, nonneg], 'pos' in
 * (0, pos] (percentages), 'int' a whole number in [1, int]; strings are at most `string` characters.
 */
export const OPTION_BOUNDS = { num: 1000, nonneg: 1000, pos: 100, int: 100_000, string: 200 } as const;

/** How a raw value (CLI strings, YAML, JSON) is coerced before the field's schema sees it. */
type Coerce = 'number' | 'string' | 'word' | 'number-or-word';

/** What the CLI and --help need to know of a field beyond its JSON Schema. */
export interface FieldInfo {
  coerce: Coerce;
  /** Placeholder of the CLI flag's value, e.g. SHARE, G, "add|gram". */
  placeholder: string;
  /** The bound in words, e.g. "in [0, 1]". */
  range: string;
}

const INFO = new WeakMap<z.ZodType, FieldInfo>();

function field<T extends z.ZodType>(schema: T, info: FieldInfo): T {
  INFO.set(schema, info);
  return schema;
}

export function fieldInfo(schema: z.ZodType): FieldInfo {
  const info = INFO.get(schema);
  if (info === undefined) throw new Error('method option built without the field helpers of defense/methods/fields.ts');
  return info;
}

const shareSchema = () => z.number({ error: 'must be a finite number' }).min(0, { error: 'must lie in [0, 1]' }).max(1, { error: 'must lie in [0, 1]' });

/** Field factories: `help` is the option's documentation (API, CLI); `d` its default (omitted: optional). */
export const opt = {
  /** A share in [0, 1]. */
  share<D extends number | undefined = undefined>(help: string, d?: D) {
    return withDefault(shareSchema(), d as D, help, { coerce: 'number', placeholder: 'SHARE', range: 'in [0, 1]' });
  },
  /** A percentage in (0, 100]. */
  pos<D extends number | undefined = undefined>(help: string, d?: D) {
    const why = `must lie in (0, ${OPTION_BOUNDS.pos}]`;
    return withDefault(z.number({ error: 'must be a finite number' }).gt(0, { error: why }).max(OPTION_BOUNDS.pos, { error: why }), d as D, help,
      { coerce: 'number', placeholder: 'PCT', range: `in (0, ${OPTION_BOUNDS.pos}]` });
  },
  /** A non-negative number up to 1000. */
  nonneg<D extends number | undefined = undefined>(help: string, d?: D) {
    const why = `must be >= 0 and <= ${OPTION_BOUNDS.nonneg}`;
    return withDefault(z.number({ error: 'must be a finite number' }).min(0, { error: why }).max(OPTION_BOUNDS.nonneg, { error: why }), d as D, help,
      { coerce: 'number', placeholder: 'X', range: `in [0, ${OPTION_BOUNDS.nonneg}]` });
  },
  /** A signed factor in [-1000, 1000]. */
  num<D extends number | undefined = undefined>(help: string, d?: D) {
    const why = `must lie in [-${OPTION_BOUNDS.num}, ${OPTION_BOUNDS.num}]`;
    return withDefault(z.number({ error: 'must be a finite number' }).min(-OPTION_BOUNDS.num, { error: why }).max(OPTION_BOUNDS.num, { error: why }), d as D, help,
      { coerce: 'number', placeholder: 'X', range: `in [-${OPTION_BOUNDS.num}, ${OPTION_BOUNDS.num}]` });
  },
  /** A whole number in [1, 100000]. */
  int<D extends number | undefined = undefined>(help: string, d?: D) {
    const why = `must be a positive integer <= ${OPTION_BOUNDS.int}`;
    return withDefault(z.number({ error: 'must be a finite number' }).int({ error: why }).min(1, { error: why }).max(OPTION_BOUNDS.int, { error: why }), d as D, help,
      { coerce: 'number', placeholder: 'N', range: `integer in [1, ${OPTION_BOUNDS.int}]` });
  },
  /** A short string (numbers are taken as their text). */
  string<D extends string | undefined = undefined>(help: string, d?: D, placeholder = 'TEXT') {
    const why = `must be at most ${OPTION_BOUNDS.string} characters`;
    return withDefault(z.string({ error: 'must be a string' }).max(OPTION_BOUNDS.string, { error: why }), d as D, help,
      { coerce: 'string', placeholder, range: `at most ${OPTION_BOUNDS.string} characters` });
  },
  /** One of a fixed list of words. */
  oneOf<const W extends readonly [string, ...string[]], D extends W[number] | undefined = undefined>(values: W, help: string, d?: D, why = `must be one of ${values.join(', ')}`) {
    return withDefault(z.enum(values, { error: why }), d as D, help, { coerce: 'word', placeholder: values.join('|'), range: `one of ${values.join(', ')}` });
  },
  /** A share, or one of `words` (e.g. 'off'). */
  shareOr<const W extends readonly [string, ...string[]], D extends number | undefined = undefined>(words: W, help: string, d?: D) {
    return withDefault(z.union([shareSchema(), z.enum(words)]), d as D, help,
      { coerce: 'number-or-word', placeholder: `SHARE|${words.join('|')}`, range: `in [0, 1], or ${words.join(' or ')}` });
  },
};

/** A field with a default parses to a value always; one without is optional. */
type Field<T extends z.ZodType, D> = [D] extends [undefined] ? z.ZodOptional<T> : z.ZodDefault<T>;

function withDefault<T extends z.ZodType, D>(schema: T, d: D, help: string, info: FieldInfo): Field<T, D> {
  // The description is what OpenAPI and --help print.
  const out = d === undefined ? schema.optional().describe(help) : schema.default(d as never).describe(help);
  return field(out, info) as unknown as Field<T, D>;
}

/** A bounded rendering of a caller's value for messages (a deep or huge value must not be serialized). */
export function preview(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return Array.isArray(value) ? '[array]' : `[${typeof value}]`;
}

function coerce(value: unknown, how: Coerce): unknown {
  if (typeof value === 'string' && (how === 'number' || how === 'number-or-word')) {
    // CLI and YAML give strings: "0.02" is the number, a word stays a word (and fails a number field).
    if (value.trim() === '') return value;
    const n = Number(value);
    return Number.isNaN(n) && how === 'number-or-word' ? value : n;
  }
  if (typeof value === 'number' && how === 'string') return String(value);
  return value;
}

export function optionError(method: string, key: string, value: unknown, why: string): FgsnError {
  return new FgsnError('DEFENSE_OPTION_INVALID', `method ${method}: option ${key}=${preview(value)} ${why}`, { details: { method, option: key } });
}

/** The first error message of an issue (a union reports its first branch: the number's bound, not "invalid input"). */
function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_union' && issue.errors.length > 0 && issue.errors[0].length > 0) return issueMessage(issue.errors[0][0]);
  return issue.message;
}

/**
 * Raw options (an API body's object, CLI strings) through a method's schema: unknown keys are an error (a
 * typo never silently runs the default), and every error names the method and the field.
 */
export function parseFields<S extends z.ZodObject>(method: string, schema: S, raw: Record<string, unknown>): z.output<S> {
  const shape = schema.shape as Record<string, z.ZodType>;
  const input: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    if (!Object.hasOwn(shape, key)) throw optionError(method, key, value, `is unknown (valid: ${Object.keys(shape).join(', ')})`);
    input[key] = coerce(value, fieldInfo(shape[key]).coerce);
  }
  const r = schema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    const key = String(issue.path[0]);
    throw optionError(method, key, raw[key], issueMessage(issue));
  }
  return r.data;
}
