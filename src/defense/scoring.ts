/**
 * Per-job row scores that need the fine-tuned model: task-neuron scores (Wanda on the fine-tune with task
 * probe activations) and first-order attribution (gradient of the NLL of the aligned model's refusals under
 * the fine-tune, dotted per row with the safety direction V = W_aligned - W_base).
 */
import { join } from 'node:path';
import { linearWeightNames } from '../checkpoint/index.js';
import { checkpointDifference, loadEngine, type Engine, type RowPatch } from '../engine/index.js';
import type { ProbeRecord } from '../probes.js';
import { SQSUM_BATCH } from './atlas.js';
import type { RowScores } from './math/select.js';
import { normsFromSquareSums, wandaRowScores } from './math/scores.js';
import { type WeightSources, readFinetuned } from './io/sources.js';

export interface EngineContext {
  cacheDir: string;
  executionProvider?: 'cpu' | 'cuda';
}

export async function loadFinetunedEngine(s: WeightSources, ctx: EngineContext): Promise<Engine> {
  return loadEngine(s.finetuned?.dir ?? s.aligned.dir, {
    cacheDir: join(ctx.cacheDir, 'engine'),
    // One capture graph per job (task probes); attribution opens its own session: never two float32 copies.
    maxSessions: 1,
    ...(s.adapter ? { adapter: s.adapter.dir } : {}),
    ...(ctx.executionProvider ? { executionProvider: ctx.executionProvider } : {}),
  });
}

/** Task-neuron scores: sum_j |W_ft,ij| ||X_T,j|| with X_T the fine-tune's inputs on the task probes. */
export async function taskRowScores(s: WeightSources, engine: Engine, task: ProbeRecord[]): Promise<RowScores> {
  const withResponses = task.every((p) => p.response !== undefined);
  const cap = await engine.capture(task.map((p) => p.prompt), { inputSquareSums: true }, {
    batchSize: SQSUM_BATCH,
    ...(withResponses ? { responses: task.map((p) => p.response!) } : {}),
  });
  const out: RowScores = new Map();
  for (const name of linearWeightNames(s.spec)) {
    out.set(name, wandaRowScores(await readFinetuned(s, name), normsFromSquareSums(cap.inputSquareSums!.get(name)!)));
  }
  return out;
}

/**
 * s_i = <dL/dW_i, V_i> for every linear weight row, L = summed NLL of `responses` (teacher-forced) under the
 * fine-tune, through the engine's attribution (Engine.attribute: a forward chunk by chunk, then segments
 * top-down), which keeps one chunk's float32 weights and V in memory at a time: `layersPerPass` layers when
 * given, else its default budget (a quarter of the checkpoint's bytes of V per pass), and then, on CPU, the top
 * chunks' forward activations up to the checkpoint's bytes (no forward recompute for them), which keeps a bf16
 * job under 3x the checkpoint (docs/scale.md). `rowPatch`: the loss is that of the fine-tune with these rows
 * replaced (an edit's rows from editRows), a static patch in the attribution graphs: nothing is written.
 */
export async function attributionGradDotV(
  s: WeightSources,
  engine: Engine,
  prompts: string[],
  responses: string[],
  ctx: EngineContext & { batchSize?: number; layersPerPass?: number; rowPatch?: RowPatch },
): Promise<{ scores: RowScores; loss: number; tokens: number }> {
  const r = await engine.attribute(prompts, responses, {
    directions: [checkpointDifference('V', s.aligned, s.base)],
    reduction: 'sum',
    batchSize: ctx.batchSize ?? 16,
    ...(ctx.layersPerPass !== undefined ? { layersPerPass: ctx.layersPerPass } : {}),
    ...(ctx.rowPatch !== undefined ? { patch: ctx.rowPatch } : {}),
  });
  return { scores: r.scores.get('V')!, loss: r.loss, tokens: r.tokens };
}

