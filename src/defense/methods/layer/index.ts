/** Layer-wise baseline: project every row of the chosen layers (the atlas' safety band by default). */
import { z } from 'zod';
import { projectionCompute } from '../../apply.js';
import { PROJECTION_MODES, PROJECTION_MODE_HELP, type ProjectionMode, type ProjectionOptions } from '../../math/project.js';
import type { JobScores } from '../job-scores.js';
import { opt } from '../fields.js';
import { type EditPlan, allRows, defineMethod, layerOf, linearNames, resolveLayers } from '../method.js';

/** The fields of a whole-layer edit, shared with `restore` (which pins the mode). */
export function layerFields(mode: { values: readonly [ProjectionMode, ...ProjectionMode[]]; default: ProjectionMode; why?: string }) {
  return {
    layers: opt.string('Layers edited: all, band (the atlas\' safety band at bandShare) or an explicit list such as 10-15', 'band', 'all|band|10-15'),
    bandShare: opt.share('Share of the layer-weight mass the safety band covers (layers band)', 0.6),
    mode: opt.oneOf(mode.values, PROJECTION_MODE_HELP, mode.default, mode.why),
    alpha: opt.num('Projection factor of the gram/subspace/row modes', 1),
    strength: opt.num('g of modes realign and add', 1),
    energyShare: opt.share('Energy share of the subspace kept by mode subspace', 0.9),
  };
}

export interface LayerOptions { layers: string; bandShare: number; mode: ProjectionMode; alpha: number; strength: number; energyShare: number }

export async function planLayers(job: JobScores, o: LayerOptions): Promise<EditPlan> {
  const s = job.sources;
  const layers = resolveLayers(o.layers, job.atlas, o.bandShare, s.spec.numLayers);
  const projection: ProjectionOptions = { mode: o.mode, alpha: o.alpha, strength: o.strength, energyShare: o.energyShare };
  return { selection: allRows(s, linearNames(s).filter((n) => layers.includes(layerOf(n)))), compute: projectionCompute(projection), projection, details: { layers } };
}

export const layer = defineMethod({
  name: 'layer',
  summary: 'Layer baseline: project every row of the chosen layers (default the atlas\' safety band, gram)',
  options: z.strictObject(layerFields({ values: PROJECTION_MODES, default: 'gram' })),
  plan: planLayers,
});
