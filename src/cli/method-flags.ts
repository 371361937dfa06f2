/**
 * The method options as CLI flags, derived from the defense registry (src/defense/methods/index.ts): every
 * option of every method is a long flag in kebab case (bandShare -> --band-share), documented in
 * `fgsn harden --help` from its schema (help text, bounds, default). Nothing here lists an option by hand.
 */
import type { z } from 'zod';
import { DEFENSE_METHODS, METHODS, type DefenseMethod, fieldInfo, isDefenseMethod } from '../defense/index.js';
import { FgsnError } from '../errors.js';

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function fieldsOf(method: DefenseMethod): [string, z.ZodType][] {
  return Object.entries(METHODS[method].options.shape as Record<string, z.ZodType>);
}

/** CLI flag -> option key, over every method (a flag shared by methods means the same option in each). */
export const OPTION_FLAGS: Readonly<Record<string, string>> = Object.fromEntries(
  DEFENSE_METHODS.flatMap((m) => fieldsOf(m).map(([key]) => [kebab(key), key] as const)),
);

/** The flag's default as the help shows it, from the schema (none for optional fields). */
function defaultOf(schema: z.ZodType): unknown {
  const r = schema.safeParse(undefined);
  return r.success ? r.data : undefined;
}

/** `fgsn harden --help`'s part on methods: every option of every method, from its schema. */
export function methodsHelp(): string {
  const lines = ['Methods (--method, default fgsn) and their options; each option is a flag, or --option key=value, or `option: {key: value}` in --config:'];
  for (const m of DEFENSE_METHODS) {
    lines.push('', `  ${m}: ${METHODS[m].summary}`);
    for (const [key, schema] of fieldsOf(m)) {
      const info = fieldInfo(schema);
      const d = defaultOf(schema);
      const flag = `--${kebab(key)} ${info.placeholder}`;
      // A long flag gets its own line, so the help texts stay in one column.
      const head = flag.length < 34 ? flag.padEnd(34) : `${flag}\n${' '.repeat(39)}`;
      lines.push(`    ${head} ${schema.description ?? ''} [${info.range}${d !== undefined ? `; default ${String(d)}` : ''}]`);
    }
  }
  return lines.join('\n');
}

/** The --method value, checked at the edge (the list comes from the registry). */
export function methodFlag(value: string | undefined): DefenseMethod {
  const m = value ?? 'fgsn';
  if (!isDefenseMethod(m)) throw new FgsnError('CLI_USAGE', `--method must be one of ${DEFENSE_METHODS.join(', ')}, got "${m}"`);
  return m;
}
