/**
 * Lazily computed per-job inputs of the plans that need the fine-tuned model in the engine (task-neuron
 * scores, attribution): computed at most once per job, whichever methods or search steps ask.
 */
import { FgsnError } from '../../errors.js';
import type { ProbeRecord } from '../../probes.js';
import { evenSample } from '../../util/index.js';
import type { Atlas } from '../atlas.js';
import type { RowScores } from '../math/select.js';
import type { WeightSources } from '../io/sources.js';
import type { RowPatch } from '../../engine/index.js';
import { type EngineContext, attributionGradDotV, loadFinetunedEngine, taskRowScores } from '../scoring.js';

/** Lazily computed per-job inputs that need the fine-tuned model in the engine. */
export class JobScores {
  /** The scores that do not read the atlas, shared with the jobs `withAtlas` derives. */
  private shared: { task?: Promise<RowScores>; utility?: Promise<{ scores: RowScores; loss: number; tokens: number }> } = {};
  private attribution?: Promise<{ scores: RowScores; loss: number; tokens: number }>;
  private clusterScores?: Promise<{ name: string; scores: RowScores; tokens: number }[]>;

  constructor(
    readonly sources: WeightSources,
    readonly atlas: Atlas,
    readonly taskProbes: ProbeRecord[],
    /**
     * `rowPatch`: attribution runs on the fine-tune with these rows replaced (round 2 of the target-driven
     * search: round 1's edit, never written). Task-neuron scores do not take one (refused).
     */
    readonly ctx: EngineContext & { batchSize?: number; layersPerPass?: number; rowPatch?: RowPatch },
  ) {}

  taskScores(): Promise<RowScores> {
    if (this.ctx.rowPatch !== undefined) {
      // They read the fine-tune's weights and activations as they are: a patch would be silently ignored.
      return Promise.reject(new FgsnError('DEFENSE_OPTION_INVALID', 'task-neuron scores are not computed under a row patch'));
    }
    return (this.shared.task ??= this.withEngine((e) => taskRowScores(this.sources, e, this.taskProbes)));
  }

  /**
   * This job over another atlas (the target-driven search ranks on a share of the harmful probes): the
   * attributions read the atlas' probes and are its own; task-neuron scores and the utility gradient read only
   * the fine-tune and the task probes, so they are computed once for both.
   */
  withAtlas(atlas: Atlas): JobScores {
    const other = new JobScores(this.sources, atlas, this.taskProbes, this.ctx);
    other.shared = this.shared;
    return other;
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
    return (this.shared.utility ??= this.withEngine((e) =>
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
