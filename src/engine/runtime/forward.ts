/** One run of the decoder graph on a padded batch (prefill or a KV-cache decode step). */
import type { ModelSpec } from '../../checkpoint/types.js';
import { FgsnError } from '../../errors.js';
import { ort, runOptions } from '../session/session.js';

export interface KvCache {
  keys: ort.Tensor[];
  values: ort.Tensor[];
  /** Cached positions P. */
  length: number;
}

export function emptyKvCache(spec: ModelSpec, batch: number): KvCache {
  const dims = [batch, spec.numKvHeads, 0, spec.headDim];
  const empty = (): ort.Tensor => new ort.Tensor('float32', new Float32Array(0), dims);
  return {
    keys: Array.from({ length: spec.numLayers }, empty),
    values: Array.from({ length: spec.numLayers }, empty),
    length: 0,
  };
}

export interface StepInput {
  batch: number;
  length: number;
  inputIds: BigInt64Array;
  /** [B, P + T]. */
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  past?: KvCache;
  tokenWeights?: Float32Array;
}

export interface StepOutput {
  outputs: Record<string, ort.Tensor>;
  present?: KvCache;
}

export async function runStep(session: ort.InferenceSession, spec: ModelSpec, s: StepInput): Promise<StepOutput> {
  const total = s.attentionMask.length / s.batch;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', s.inputIds, [s.batch, s.length]),
    attention_mask: new ort.Tensor('int64', s.attentionMask, [s.batch, total]),
    position_ids: new ort.Tensor('int64', s.positionIds, [s.batch, s.length]),
  };
  const wantsKv = session.inputNames.includes('past_key_values.0.key');
  if (wantsKv) {
    const past = s.past ?? emptyKvCache(spec, s.batch);
    if (past.length + s.length !== total) {
      throw new FgsnError('ENGINE_RUN_FAILED', `attention mask covers ${total} positions, cache + tokens are ${past.length + s.length}`);
    }
    for (let i = 0; i < spec.numLayers; i++) {
      feeds[`past_key_values.${i}.key`] = past.keys[i];
      feeds[`past_key_values.${i}.value`] = past.values[i];
    }
  }
  if (session.inputNames.includes('token_weights')) {
    feeds.token_weights = new ort.Tensor('float32', s.tokenWeights ?? new Float32Array(s.batch * s.length).fill(1), [s.batch, s.length]);
  }
  let outputs: Record<string, ort.Tensor>;
  try {
    outputs = (await session.run(feeds, runOptions())) as Record<string, ort.Tensor>;
  } catch (e) {
    throw new FgsnError('ENGINE_RUN_FAILED', `onnxruntime run failed: ${(e as Error).message}`, { cause: e, details: { batch: s.batch, tokens: s.length } });
  }
  if (!wantsKv) return { outputs };
  const present: KvCache = { keys: [], values: [], length: total };
  for (let i = 0; i < spec.numLayers; i++) {
    present.keys.push(outputs[`present.${i}.key`]);
    present.values.push(outputs[`present.${i}.value`]);
  }
  return { outputs, present };
}
