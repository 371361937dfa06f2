/**
 * Full activation traces in the testbed's golden layout: for prompt j, `p{j}.input_ids` (I64 [T]) and float32
 * `p{j}.embed`, `p{j}.layers.{i}.hidden`, `p{j}.layers.{i}.mlp_act`, `p{j}.final_norm`, `p{j}.logits`, all
 * [T, features] over every token.
 */
import type { TensorSource } from '../checkpoint/index.js';
import type { CaptureInput, Engine } from './engine.js';

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export async function traceTensors(engine: Engine, prompts: readonly CaptureInput[], opts: { batchSize?: number; prefix?: string } = {}): Promise<TensorSource[]> {
  const spec = engine.spec;
  const r = await engine.capture(prompts, { embed: 'all', hidden: 'all', mlpAct: 'all', finalNorm: 'all', logits: 'all' }, { batchSize: opts.batchSize });
  const out: TensorSource[] = [];
  const pre = opts.prefix ?? '';
  r.sequences.forEach((s, j) => {
    const T = s.ids.length;
    const ids = BigInt64Array.from(s.ids, BigInt);
    out.push({ name: `p${j}.input_ids`, dtype: 'I64', shape: [T], data: () => new Uint8Array(ids.buffer) });
    const add = (name: string, a: Float32Array, features: number): void => {
      out.push({ name: `${pre}p${j}.${name}`, dtype: 'F32', shape: [T, features], data: () => f32Bytes(a) });
    };
    add('embed', s.embed as Float32Array, spec.hiddenSize);
    for (let i = 0; i < spec.numLayers; i++) {
      add(`layers.${i}.hidden`, (s.hidden as Float32Array[])[i], spec.hiddenSize);
      add(`layers.${i}.mlp_act`, (s.mlpAct as Float32Array[])[i], spec.intermediateSize);
    }
    add('final_norm', s.finalNorm as Float32Array, spec.hiddenSize);
    add('logits', s.logits as Float32Array, spec.vocabSize);
  });
  return out;
}
