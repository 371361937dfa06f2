/**
 * report.json, typed: what `fgsn harden` writes and `fgsn continue` reads back. The fields the pipeline
 * reads are checked (a hand-edited or truncated report is DEFENSE_OPTION_INVALID naming the field, not a
 * crash deep in continue); everything else is kept as it is (`loose`), so a report written by a newer
 * version with more fields still reads.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { FgsnError } from '../errors.js';
import { DEFENSE_METHODS, fgsnOptions } from '../defense/index.js';

/**
 * FGSN's options as the report stores them: parsed (defaults filled), with `targetAsr` absent for the fixed
 * budget. Keys of another version are kept; missing ones take today's defaults.
 */
const StoredFgsnOptions = fgsnOptions.extend({ targetAsr: z.number().min(0).max(1).optional() }).loose();

const Inputs = z.object({
  base: z.string(),
  aligned: z.string(),
  finetuned: z.string().optional(),
  adapter: z.string().optional(),
}).loose();

export const HardenReport = z.object({
  fgsn: z.object({ version: z.number().int(), startedAt: z.string(), finishedAt: z.string() }).loose(),
  method: z.enum(DEFENSE_METHODS),
  target: z.enum(['reached', 'not reached', 'not set']).optional(),
  options: z.record(z.string(), z.unknown()),
  inputs: Inputs,
  atlas: z.object({ id: z.string() }).loose(),
  /** The plan's details; `strength` is the g the target-driven search ended with. */
  selection: z.object({ strength: z.number().optional() }).loose(),
  edit: z.record(z.string(), z.unknown()),
  /** Rows changed per matrix. */
  rows: z.record(z.string(), z.array(z.number().int().min(0))),
  /** One entry per `fgsn continue` applied on top. */
  continual: z.array(z.record(z.string(), z.unknown())).optional(),
  config: z.record(z.string(), z.unknown()).optional(),
}).loose();

export type HardenReport = z.output<typeof HardenReport>;

/** Reads and checks `<dir>/report.json` of an earlier harden. */
export async function readHardenReport(dir: string): Promise<HardenReport> {
  const file = join(dir, 'report.json');
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new FgsnError('DEFENSE_OPTION_INVALID', `${dir}: no readable report.json of an earlier harden (${(e as Error).message})`, { details: { file } });
  }
  const r = HardenReport.safeParse(raw);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new FgsnError('DEFENSE_OPTION_INVALID', `${file} is not a report.json of fgsn harden: ${issues.slice(0, 5).join('; ')}`, { details: { file, issues } });
  }
  return r.data;
}

/** The FGSN options a report recorded (a baseline's report: undefined). */
export function reportedFgsnOptions(report: HardenReport): z.output<typeof StoredFgsnOptions> | undefined {
  if (report.method !== 'fgsn') return undefined;
  const r = StoredFgsnOptions.safeParse(report.options);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FgsnError('DEFENSE_OPTION_INVALID', `report.json options.${i.path.join('.')}: ${i.message}`, { details: { option: String(i.path[0]) } });
  }
  return r.data;
}
