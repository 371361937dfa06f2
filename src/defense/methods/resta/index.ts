/**
 * RESTA: add the safety vector back to every linear weight, W + gamma (W_aligned - W_base). The smallest
 * method, and the template for a new one: an options schema, a plan, one line in ../index.ts.
 */
import { z } from 'zod';
import { projectionCompute } from '../../apply.js';
import type { ProjectionOptions } from '../../math/project.js';
import { opt } from '../fields.js';
import { allRows, defineMethod, linearNames } from '../method.js';

export const resta = defineMethod({
  name: 'resta',
  summary: 'RESTA baseline: add gamma times the safety vector (aligned - base) to every linear weight',
  options: z.strictObject({
    gamma: opt.num('Factor of the safety vector added to every row', 0.5),
  }),
  async plan(job, o) {
    const projection: ProjectionOptions = { mode: 'add', strength: o.gamma };
    return { selection: allRows(job.sources, linearNames(job.sources)), compute: projectionCompute(projection), projection, details: { gamma: o.gamma } };
  },
});
