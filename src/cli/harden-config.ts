/**
 * `fgsn harden --config harden.yaml`: every option of the command in one file, as mergekit does. Keys are
 * the long flags (`base`, `target-asr`, `eval-task`, ...); repeatable flags take a list (`format`) or a map
 * (`option: {key: value}`, `eval-task: {name: file}`). Paths are relative to the file. Flags on the command
 * line win over the file. The effective configuration (absolute paths) is recorded in report.json as
 * `config`, and a report.json is itself accepted as --config: `fgsn harden --config old/report.json --out new/`
 * replays a run.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { FgsnError } from '../errors.js';

/** Flags that name files or folders: resolved against the config file's folder. */
export const PATH_FLAGS = ['base', 'aligned', 'finetuned', 'adapter', 'harmful', 'benign', 'task', 'out', 'eval-harmful', 'eval-emerging', 'eval-lookalike', 'cache-dir'] as const;

const scalar = z.union([z.string(), z.number(), z.boolean()]);

/** The file's shape; `flags` are the command's string flags (method options included). */
export function configSchema(flags: readonly string[]) {
  const shape: Record<string, z.ZodType> = {};
  for (const f of flags) shape[f] = scalar.optional();
  shape.format = z.union([z.string(), z.array(z.string())]).optional();
  shape.option = z.record(z.string(), scalar).optional();
  shape['eval-task'] = z.record(z.string(), z.string()).optional();
  shape.quiet = z.boolean().optional();
  return z.object(shape).strict();
}

export type FlagValues = Record<string, string | string[] | boolean | undefined>;

/** Reads a config file (YAML or JSON, or a report.json with `config`) into flag values. */
export async function readHardenConfig(file: string, flags: readonly string[]): Promise<FlagValues> {
  const path = resolve(file);
  let raw: unknown;
  try {
    raw = parseYaml(await readFile(path, 'utf8'));
  } catch (e) {
    throw new FgsnError('CLI_USAGE', `--config ${file}: ${(e as Error).message}`);
  }
  // A report.json: replay the run it records.
  if (raw !== null && typeof raw === 'object' && 'edit' in raw) {
    if (!('config' in raw)) throw new FgsnError('CLI_USAGE', `--config ${file}: this report.json records no config (written before configs were recorded, or by the API)`);
    raw = (raw as { config: unknown }).config;
  }
  const r = configSchema(flags).safeParse(raw ?? {});
  if (!r.success) {
    throw new FgsnError('CLI_USAGE', `--config ${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  const base = dirname(path);
  const out: FlagValues = {};
  for (const [k, v] of Object.entries(r.data as Record<string, unknown>)) {
    if (v === undefined) continue;
    if (k === 'format') out.format = typeof v === 'string' ? [v] : (v as string[]);
    else if (k === 'option') out.option = Object.entries(v as Record<string, unknown>).map(([ok, ov]) => `${ok}=${String(ov)}`);
    else if (k === 'eval-task') out['eval-task'] = Object.entries(v as Record<string, string>).map(([n, f]) => `${n}=${resolve(base, f)}`);
    else if (k === 'quiet') out.quiet = v as boolean;
    else out[k] = (PATH_FLAGS as readonly string[]).includes(k) ? resolve(base, String(v)) : String(v);
  }
  return out;
}

/** Command line over file: a flag given on the command line replaces the file's value (lists too). */
export function mergeFlags(file: FlagValues, cli: FlagValues): FlagValues {
  const out: FlagValues = { ...file };
  for (const [k, v] of Object.entries(cli)) if (v !== undefined) out[k] = v;
  return out;
}

/** The effective configuration of a run, in the file's format with absolute paths (recorded in the report). */
export function effectiveConfig(values: FlagValues): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined || k === 'config' || k === 'help' || k === 'json' || k === 'quiet') continue;
    if (k === 'option') out.option = Object.fromEntries((v as string[]).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    else if (k === 'eval-task') out['eval-task'] = Object.fromEntries((v as string[]).map((kv) => [kv.slice(0, kv.indexOf('=')), resolve(kv.slice(kv.indexOf('=') + 1))]));
    else if (k === 'format') out.format = v;
    else out[k] = (PATH_FLAGS as readonly string[]).includes(k) ? resolve(String(v)) : v;
  }
  return out;
}
