/**
 * What a defense method is: a name, a one-line summary, a zod options schema (fields from ./fields.ts) and a
 * plan function from options to an edit plan. Each method is one folder under src/defense/methods/ exporting
 * one `defineMethod(...)`; ./index.ts registers it with one line, and everything else (the method-name type,
 * the API's schema and OpenAPI, the CLI flags and --help, submission-time validation) is derived from there.
 */
import type { z } from 'zod';
import { linearWeightNames } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import type { RowCompute } from '../apply.js';
import type { Atlas } from '../atlas.js';
import { parseLayerList, selectBand } from '../math/layers.js';
import type { ProjectionOptions } from '../math/project.js';
import type { Selection } from '../math/select.js';
import { type WeightSources, shapeOf } from '../io/sources.js';
import type { JobScores } from './job-scores.js';

export interface EditPlan {
  selection: Selection;
  compute: RowCompute;
  /** Projection options when the edit is a plain row projection (the adapter output needs gram/subspace). */
  projection?: ProjectionOptions;
  details: Record<string, unknown>;
}

export interface MethodDefinition<N extends string, S extends z.ZodObject, O> {
  name: N;
  /** One line for --help and the OpenAPI document. */
  summary: string;
  /** Every option with its bounds, default and help text. */
  options: S;
  /**
   * Cross-field rules and normalisation after the fields parsed (throw DEFENSE_OPTION_INVALID naming the
   * field); `given` holds the keys the caller set (a default and an explicit value can differ in meaning).
   */
  finalize: (o: z.output<S>, given: ReadonlySet<string>) => O;
  plan: (job: JobScores, o: O) => Promise<EditPlan>;
}

/** Declares a method; `finalize` defaults to the parsed fields as they are. */
export function defineMethod<N extends string, S extends z.ZodObject, O = z.output<S>>(d: {
  name: N;
  summary: string;
  options: S;
  finalize?: (o: z.output<S>, given: ReadonlySet<string>) => O;
  plan: (job: JobScores, o: O) => Promise<EditPlan>;
}): MethodDefinition<N, S, O> {
  return { ...d, finalize: d.finalize ?? ((o) => o as unknown as O) };
}

/** Layers a method works on: all, the atlas band at a share, or an explicit list. */
export function resolveLayers(spec: string, atlas: Atlas, bandShare: number, numLayers: number): number[] {
  if (spec === 'all') return Array.from({ length: numLayers }, (_, l) => l);
  if (spec === 'band') return selectBand(atlas.layerWeights, bandShare);
  try {
    return parseLayerList(spec, numLayers);
  } catch (e) {
    throw new FgsnError('DEFENSE_OPTION_INVALID', `layers: ${(e as Error).message}`, { details: { option: 'layers' } });
  }
}

export function layerOf(name: string): number {
  return Number(/^model\.layers\.(\d+)\./.exec(name)![1]);
}

/** Every row of the named matrices. */
export function allRows(s: WeightSources, names: string[]): Selection {
  const sel: Selection = new Map();
  for (const n of names) sel.set(n, Uint32Array.from({ length: shapeOf(s, n)[0] }, (_, i) => i));
  return sel;
}

/** The linear weights of the model (what every method may edit). */
export function linearNames(s: WeightSources): string[] {
  return linearWeightNames(s.spec);
}
