/** Antidote baseline: prune the fine-tuning delta of the weights most active on harmful probes. */
import { z } from 'zod';
import type { RowCompute } from '../../apply.js';
import { row } from '../../math/matrix.js';
import { normsFromSquareSums } from '../../math/scores.js';
import type { Selection } from '../../math/select.js';
import { readFinetuned } from '../../io/sources.js';
import type { JobScores } from '../job-scores.js';
import { opt } from '../fields.js';
import { type EditPlan, defineMethod, linearNames } from '../method.js';

export const antidote = defineMethod({
  name: 'antidote',
  summary: 'Antidote baseline: reset to aligned the fine-tuning delta of the weights most active on harmful probes',
  options: z.strictObject({
    share: opt.share('Share of each matrix\'s weights whose fine-tuning delta is reset (by |W_ft| x harmful activation norm)', 0.05),
  }),
  plan: (job, o) => planAntidote(job, o.share),
});

/**
 * Antidote-style pruning: per matrix, the top `share` of weights by |W_ft,ij| * ||X_H,j|| (harmful-probe
 * activations of the atlas) get their fine-tuning delta zeroed (W_ij back to aligned). Rows holding any such
 * weight are the rows changed.
 */
async function planAntidote(job: JobScores, share: number): Promise<EditPlan> {
  const s = job.sources;
  const masks = new Map<string, Map<number, number[]>>();
  const selection: Selection = new Map();
  let weights = 0;
  for (const n of linearNames(s)) {
    const ft = await readFinetuned(s, n);
    const norms = normsFromSquareSums(job.atlas.harmfulSqSums.get(n)!);
    const k = Math.round(share * ft.data.length);
    const imp = new Float32Array(ft.data.length);
    for (let i = 0; i < ft.rows; i++) for (let j = 0; j < ft.cols; j++) imp[i * ft.cols + j] = Math.abs(ft.data[i * ft.cols + j]) * norms[j];
    const order = Array.from(imp.keys()).sort((x, y) => imp[y] - imp[x] || x - y).slice(0, k);
    const byRow = new Map<number, number[]>();
    for (const e of order) {
      const r = Math.floor(e / ft.cols);
      const list = byRow.get(r);
      if (list) list.push(e % ft.cols);
      else byRow.set(r, [e % ft.cols]);
    }
    weights += order.length;
    masks.set(n, byRow);
    selection.set(n, Uint32Array.from([...byRow.keys()].sort((a, b) => a - b)));
  }
  const compute: RowCompute = async (io, rows) => {
    const [ft, al] = await Promise.all([io.finetuned(), io.aligned()]);
    const byRow = masks.get(io.name)!;
    const out = new Float32Array(rows.length * ft.cols);
    rows.forEach((r, k) => {
      out.set(row(ft, r), k * ft.cols);
      for (const j of byRow.get(r) ?? []) out[k * ft.cols + j] = al.data[r * al.cols + j];
    });
    return out;
  };
  return { selection, compute, details: { share, weightsReset: weights } };
}
