/** Restore baseline: the chosen layers (default the safety band) back to the aligned model's weights. */
import { z } from 'zod';
import { layerFields, planLayers } from '../layer/index.js';
import { defineMethod } from '../method.js';

export const restore = defineMethod({
  name: 'restore',
  summary: 'Restore baseline: put the chosen layers (default the atlas\' safety band) back to the aligned weights',
  options: z.strictObject(layerFields({ values: ['restore'], default: 'restore', why: 'is always restore for method restore; use method layer for other modes' })),
  plan: planLayers,
});
