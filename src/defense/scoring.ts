/**
 * Per-job row scores that need the fine-tuned model: task-neuron scores (Wanda on the fine-tune with task
 * probe activations) and first-order attribution (gradient of the NLL of the aligned model's refusals under
 * the fine-tune, dotted per row with the safety direction V = W_aligned - W_base).
 */
import { join } from 'node:path';
import { linearWeightNames } from '../checkpoint/model-config.js';
import { AttributionSession } from '../engine/attribution/session.js';
import { attributionBatch, type ScoredSequence } from '../engine/attribution/batch.js';
import { loadEngine, type Engine } from '../engine/engine.js';
import { ort } from '../engine/session/session.js';
import type { ProbeRecord } from '../util/probe-record.js';
import type { RowScores } from './math/select.js';
import { normsFromSquareSums, wandaRowScores } from './math/scores.js';
import { type WeightSources, readFinetuned, readMat } from './io/sources.js';

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
    batchSize: 32,
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
 * fine-tune. Layers are scored in passes of `layersPerPass` so only that many layers' V are in memory.
 */
export async function attributionGradDotV(
  s: WeightSources,
  engine: Engine,
  prompts: string[],
  responses: string[],
  ctx: EngineContext & { batchSize?: number; layersPerPass?: number },
): Promise<{ scores: RowScores; loss: number; tokens: number }> {
  const seqs: ScoredSequence[] = await Promise.all(prompts.map((p, i) => engine.tokenizer.encodeChat(p, responses[i])));
  const L = s.spec.numLayers;
  const per = Math.max(1, Math.min(L, ctx.layersPerPass ?? L));
  const scores: RowScores = new Map();
  let loss = 0;
  let tokens = 0;
  const bs = ctx.batchSize ?? 16;
  for (let from = 0; from < L; from += per) {
    const to = Math.min(L, from + per);
    const session = await AttributionSession.open(engine.checkpoint, engine.adapter, {
      directionSets: 1, layerFrom: from, layerTo: to, cacheRoot: join(ctx.cacheDir, 'engine'),
      ...(ctx.executionProvider ? { executionProvider: ctx.executionProvider } : {}),
    });
    try {
      const dirs = new Map<string, ort.Tensor>();
      for (const name of session.weights) {
        const [a, b] = await Promise.all([readMat(s.aligned, name), readMat(s.base, name)]);
        const v = new Float32Array(a.data.length);
        for (let k = 0; k < v.length; k++) v[k] = a.data[k] - b.data[k];
        dirs.set(name, new ort.Tensor('float32', v, [a.rows, a.cols]));
      }
      // Sorting by length keeps padding (wasted compute) low; the sum does not depend on batch order.
      const order = seqs.map((_, i) => i).sort((x, y) => seqs[x].ids.length - seqs[y].ids.length);
      for (let k = 0; k < order.length; k += bs) {
        const batch = order.slice(k, k + bs).map((i) => seqs[i]);
        const r = await session.run(attributionBatch(batch, engine.tokenizer.padTokenId), [dirs]);
        if (from === 0) {
          loss += r.lossSum;
          for (const q of batch) tokens += Math.max(0, q.ids.length - q.promptLength);
        }
        for (const [name, v] of r.scores[0]) {
          const acc = scores.get(name);
          if (acc) for (let i = 0; i < v.length; i++) acc[i] += v[i];
          else scores.set(name, Float32Array.from(v));
        }
      }
    } finally {
      await session.release();
    }
  }
  return { scores, loss, tokens };
}
