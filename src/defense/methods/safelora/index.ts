/**
 * Safe LoRA baseline: project the whole fine-tuning delta of the matrices least aligned with the safety
 * vector (cosine below a threshold, or the topK lowest) onto the safety subspace (gram).
 */
import { z } from 'zod';
import { projectionCompute } from '../../apply.js';
import type { Mat } from '../../math/matrix.js';
import { type ProjectionOptions, safeLoraCosine } from '../../math/project.js';
import { matrixIO } from '../../io/sources.js';
import { opt, optionError } from '../fields.js';
import { allRows, defineMethod, linearNames } from '../method.js';

/** The threshold used when neither threshold nor topK is given. */
const DEFAULT_THRESHOLD = 0.65;

export type SafeLoraOptions = { alpha: number } & ({ threshold: number; topK?: undefined } | { topK: number; threshold?: undefined });

export const safelora = defineMethod({
  name: 'safelora',
  summary: 'Safe LoRA baseline: gram-project the matrices whose delta is least aligned with the safety vector',
  options: z.strictObject({
    threshold: opt.share(`Project the matrices whose cosine(V, delta) is below this (default ${DEFAULT_THRESHOLD} when topK is not given); not with topK`),
    topK: opt.int('Project the K matrices of lowest cosine(V, delta) instead of a threshold; not with threshold'),
    alpha: opt.num('Projection factor', 1),
  }),
  finalize(o): SafeLoraOptions {
    if (o.threshold !== undefined && o.topK !== undefined) {
      throw optionError('safelora', 'topK', o.topK, 'cannot be given with threshold: give threshold or topK, not both');
    }
    return o.topK !== undefined ? { alpha: o.alpha, topK: o.topK } : { alpha: o.alpha, threshold: o.threshold ?? DEFAULT_THRESHOLD };
  },
  async plan(job, o) {
    const s = job.sources;
    const names = linearNames(s);
    const cos: Record<string, number> = {};
    for (const n of names) {
      const io = matrixIO(s, n);
      const [b, a, f] = await Promise.all([io.base(), io.aligned(), io.finetuned()]);
      const v: Mat = { rows: a.rows, cols: a.cols, data: a.data.map((x, k) => x - b.data[k]) };
      const d: Mat = { rows: a.rows, cols: a.cols, data: f.data.map((x, k) => x - a.data[k]) };
      cos[n] = safeLoraCosine(v, d);
    }
    const ranked = [...names].sort((x, y) => cos[x] - cos[y] || x.localeCompare(y));
    const chosen = o.topK !== undefined ? ranked.slice(0, o.topK) : ranked.filter((n) => cos[n] < o.threshold);
    const projection: ProjectionOptions = { mode: 'gram', alpha: o.alpha };
    return {
      selection: allRows(s, chosen), compute: projectionCompute(projection), projection,
      details: { cosine: cos, projected: chosen, ...(o.topK !== undefined ? { topK: o.topK } : { threshold: o.threshold }) },
    };
  },
});
