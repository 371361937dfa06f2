/**
 * From method + options to an edit plan: which rows change and how their new values are computed. FGSN
 * (method.md steps 1-3, with the scorings of the defense issue) and the baselines share the same streaming
 * writer, so their outputs and edit-size accounting are comparable.
 */
import { linearWeightNames } from '../checkpoint/index.js';
import { FgsnError } from '../errors.js';
import type { ProbeRecord } from '../probes.js';
import { type RowCompute, projectionCompute } from './apply.js';
import type { Atlas } from './atlas.js';
import { parseLayerList, selectBand } from './math/layers.js';
import { type Mat, row } from './math/matrix.js';
import { type ProjectionOptions, safeLoraCosine } from './math/project.js';
import {
  attributionRowScores, contrastiveRowScores, deltaRowScores, normaliseRowScores, normsFromSquareSums, perClusterRowScores, safetyOutputRowScores, utilityAwareRowScores,
} from './math/scores.js';
import { type RowScores, type Selection, countRows, difference, topCountGlobal, topShare } from './math/select.js';
import { type WeightSources, matrixIO, readFinetuned, readMat, shapeOf } from './io/sources.js';
import type { FgsnOptions, MethodOptions } from './options.js';
import { evenSample } from '../util/index.js';
import { type EngineContext, attributionGradDotV, loadFinetunedEngine, taskRowScores } from './scoring.js';

export interface EditPlan {
  selection: Selection;
  compute: RowCompute;
  /** Projection options when the edit is a plain row projection (the adapter output needs gram/subspace). */
  projection?: ProjectionOptions;
  details: Record<string, unknown>;
}

/** Layers a method works on: all, the atlas band at a share, or an explicit list. */
export function resolveLayers(spec: string, atlas: Atlas, bandShare: number, numLayers: number): number[] {
  if (spec === 'all') return Array.from({ length: numLayers }, (_, l) => l);
  if (spec === 'band') return selectBand(atlas.layerWeights, bandShare);
  try {
    return parseLayerList(spec, numLayers);
  } catch (e) {
    throw new FgsnError('DEFENSE_OPTION_INVALID', `layers: ${(e as Error).message}`);
  }
}

function layerOf(name: string): number {
  return Number(/^model\.layers\.(\d+)\./.exec(name)![1]);
}

function allRows(s: WeightSources, names: string[]): Selection {
  const sel: Selection = new Map();
  for (const n of names) sel.set(n, Uint32Array.from({ length: shapeOf(s, n)[0] }, (_, i) => i));
  return sel;
}

/** Lazily computed per-job inputs that need the fine-tuned model in the engine. */
export class JobScores {
  private task?: Promise<RowScores>;
  private attribution?: Promise<{ scores: RowScores; loss: number; tokens: number }>;
  private utility?: Promise<{ scores: RowScores; loss: number; tokens: number }>;
  private clusterScores?: Promise<{ name: string; scores: RowScores; tokens: number }[]>;

  constructor(
    readonly sources: WeightSources,
    readonly atlas: Atlas,
    readonly taskProbes: ProbeRecord[],
    readonly ctx: EngineContext & { batchSize?: number; layersPerPass?: number },
  ) {}

  taskScores(): Promise<RowScores> {
    return (this.task ??= this.withEngine((e) => taskRowScores(this.sources, e, this.taskProbes)));
  }

  gradDotV(): Promise<{ scores: RowScores; loss: number; tokens: number }> {
    return (this.attribution ??= this.withEngine((e) =>
      attributionGradDotV(this.sources, e, this.atlas.harmful.map((p) => p.prompt), this.atlas.harmfulResponses, this.ctx)));
  }

  /**
   * Attribution per sub-cluster of every harm category (method.md step 4: each sub-cluster localises its own
   * neurons), each over the cluster's own probes and refusals; one backward pass per cluster.
   */
  clusterGradDotV(): Promise<{ name: string; scores: RowScores; tokens: number }[]> {
    return (this.clusterScores ??= this.withEngine(async (e) => {
      const out: { name: string; scores: RowScores; tokens: number }[] = [];
      for (const c of this.atlas.categories) {
        for (const [k, cl] of c.clusters.entries()) {
          if (cl.members.length === 0) continue;
          const idx = cl.members;
          const g = await attributionGradDotV(this.sources, e, idx.map((i) => this.atlas.harmful[i].prompt), idx.map((i) => this.atlas.harmfulResponses[i]), this.ctx);
          out.push({ name: `${c.name}/${k}`, scores: g.scores, tokens: g.tokens });
        }
      }
      return out;
    }));
  }

  /**
   * The same attribution for the NLL of the task probes' reference responses (up to 128, spread over the set):
   * how adding V to a row would change the answers the customer's task and benign probes expect.
   */
  utilityGradDotV(): Promise<{ scores: RowScores; loss: number; tokens: number }> {
    const answered = evenSample(this.taskProbes.filter((p) => p.response !== undefined), 128);
    if (answered.length === 0) {
      throw new FgsnError('PROBES_EMPTY', 'utilityWeight needs task or benign probes with a "response" (or "answer")');
    }
    return (this.utility ??= this.withEngine((e) =>
      attributionGradDotV(this.sources, e, answered.map((p) => p.prompt), answered.map((p) => p.response!), this.ctx)));
  }

  private async withEngine<T>(f: (e: Awaited<ReturnType<typeof loadFinetunedEngine>>) => Promise<T>): Promise<T> {
    const e = await loadFinetunedEngine(this.sources, this.ctx);
    try {
      return await f(e);
    } finally {
      await e.close();
    }
  }
}

/** Harmful-side row scores of FGSN on the chosen layers (higher = more safety-relevant). */
export async function fgsnScores(job: JobScores, o: FgsnOptions, layers: number[]): Promise<RowScores> {
  const { sources: s, atlas } = job;
  const names = linearWeightNames(s.spec).filter((n) => layers.includes(layerOf(n)));
  const out: RowScores = new Map();
  if (o.scoring === 'attribution' && o.clusterScoring === 'per-cluster') {
    // A row's score is its best per-token gain over the sub-clusters, so each cluster's own top rows compete.
    const clusters = await job.clusterGradDotV();
    for (const n of names) out.set(n, perClusterRowScores(clusters.map((c) => c.scores.get(n)!), clusters.map((c) => c.tokens)));
    return out;
  }
  if (o.scoring === 'attribution') {
    const g = await job.gradDotV();
    if (o.utilityWeight === 0) {
      for (const n of names) out.set(n, attributionRowScores(g.scores.get(n)!));
      return out;
    }
    // First-order decrease of (mean refusal NLL + w * mean NLL of the task probes' answers) when V is added
    // to the row: rows that would also change the expected answers rank lower.
    const u = await job.utilityGradDotV();
    for (const n of names) {
      out.set(n, utilityAwareRowScores(g.scores.get(n)!, g.tokens, u.scores.get(n)!, u.tokens, o.utilityWeight));
    }
    return out;
  }
  for (const n of names) {
    const lw = atlas.layerWeights[layerOf(n)];
    let raw: Float32Array;
    if (o.scoring === 'wanda') {
      raw = atlas.wanda.get(n)!;
    } else if (o.scoring === 'vx') {
      const [al, b] = await Promise.all([readMat(s.aligned, n), readMat(s.base, n)]);
      const v: Mat = { rows: al.rows, cols: al.cols, data: al.data.map((x, k) => x - b.data[k]) };
      // Already in units of the output's energy, comparable across matrices, and signed (benign-heavier rows
      // score below 0), so it is not mean-normalised; the layer weight still applies.
      const e = safetyOutputRowScores(v, atlas.harmfulSqSums.get(n)!, atlas.tokens.harmful, atlas.benignSqSums.get(n)!, atlas.tokens.benign);
      out.set(n, e.map((x) => x * lw));
      continue;
    } else if (o.scoring === 'contrastive') {
      raw = contrastiveRowScores(await readMat(s.aligned, n), atlas.harmfulSqSums.get(n)!, atlas.tokens.harmful, atlas.benignSqSums.get(n)!, atlas.tokens.benign);
    } else {
      const [ft, al] = await Promise.all([readFinetuned(s, n), readMat(s.aligned, n)]);
      const d: Mat = { rows: ft.rows, cols: ft.cols, data: ft.data.map((x, k) => x - al.data[k]) };
      raw = deltaRowScores(d, normsFromSquareSums(atlas.harmfulSqSums.get(n)!));
    }
    // Multi-scale score of method.md: normalised by the matrix mean, times the layer weight w(l).
    out.set(n, normaliseRowScores(raw, lw));
  }
  return out;
}

export interface FgsnRanking {
  scores: RowScores;
  taskSet: Selection;
  layers: number[];
  /** N = top-q(N_H) minus N_T for a given q. */
  select(q: number): Selection;
}

export async function fgsnRanking(job: JobScores, o: FgsnOptions): Promise<FgsnRanking> {
  const layers = resolveLayers(o.layers, job.atlas, o.bandShare, job.sources.spec.numLayers);
  const scores = await fgsnScores(job, o, layers);
  const taskSet: Selection = o.p > 0 ? topShare(await job.taskScores(), o.p, 'per-matrix') : new Map();
  // Task rows are removed before counting q when the scope is global, so q is the share actually edited;
  // per-matrix follows Eq. 4-5 literally (top-q of each matrix, then the difference).
  const select = (q: number): Selection => {
    if (o.scope === 'per-matrix') return difference(topShare(scores, q, 'per-matrix'), taskSet);
    const masked: RowScores = new Map();
    for (const [n, v] of scores) {
      const m = v.slice();
      for (const r of taskSet.get(n) ?? []) m[r] = -Infinity;
      masked.set(n, m);
    }
    let total = 0;
    for (const n of linearWeightNames(job.sources.spec)) total += shapeOf(job.sources, n)[0];
    return topCountGlobal(masked, Math.round(q * total));
  };
  return { scores, taskSet, layers, select };
}

export function fgsnProjection(o: FgsnOptions): ProjectionOptions {
  return { mode: o.mode, alpha: o.alpha, strength: o.strength, energyShare: o.energyShare };
}

/** Plans every method except FGSN's target-driven loop (the pipeline drives that with an evaluator). */
export async function planMethod(job: JobScores, m: MethodOptions): Promise<EditPlan> {
  const s = job.sources;
  const names = linearWeightNames(s.spec);
  switch (m.method) {
    case 'fgsn': {
      const r = await fgsnRanking(job, m.o);
      const selection = r.select(m.o.q);
      const projection = fgsnProjection(m.o);
      return {
        selection, compute: projectionCompute(projection), projection,
        details: { layers: r.layers, q: m.o.q, p: m.o.p, taskRowsExcluded: countRows(r.taskSet), scoring: m.o.scoring, scope: m.o.scope },
      };
    }
    case 'layer':
    case 'restore': {
      const layers = resolveLayers(m.o.layers, job.atlas, m.o.bandShare, s.spec.numLayers);
      const projection: ProjectionOptions = { mode: m.o.mode, alpha: m.o.alpha, strength: m.o.strength, energyShare: m.o.energyShare };
      return { selection: allRows(s, names.filter((n) => layers.includes(layerOf(n)))), compute: projectionCompute(projection), projection, details: { layers } };
    }
    case 'resta': {
      const projection: ProjectionOptions = { mode: 'add', strength: m.o.gamma };
      return { selection: allRows(s, names), compute: projectionCompute(projection), projection, details: { gamma: m.o.gamma } };
    }
    case 'safelora': {
      const cos: Record<string, number> = {};
      for (const n of names) {
        const io = matrixIO(s, n);
        const [b, a, f] = await Promise.all([io.base(), io.aligned(), io.finetuned()]);
        const v: Mat = { rows: a.rows, cols: a.cols, data: a.data.map((x, k) => x - b.data[k]) };
        const d: Mat = { rows: a.rows, cols: a.cols, data: f.data.map((x, k) => x - a.data[k]) };
        cos[n] = safeLoraCosine(v, d);
      }
      const ranked = [...names].sort((x, y) => cos[x] - cos[y] || x.localeCompare(y));
      const chosen = m.o.topK !== undefined ? ranked.slice(0, m.o.topK) : ranked.filter((n) => cos[n] < m.o.threshold!);
      const projection: ProjectionOptions = { mode: 'gram', alpha: m.o.alpha };
      return {
        selection: allRows(s, chosen), compute: projectionCompute(projection), projection,
        details: { cosine: cos, projected: chosen, ...(m.o.topK !== undefined ? { topK: m.o.topK } : { threshold: m.o.threshold }) },
      };
    }
    case 'antidote':
      return planAntidote(job, m.o.share);
    default:
      throw new FgsnError('DEFENSE_OPTION_INVALID', 'unknown method');
  }
}

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
  for (const n of linearWeightNames(s.spec)) {
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
