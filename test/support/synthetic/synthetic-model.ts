/**
 * Random-weight HF model folders (config.json, generation_config.json, model.safetensors, a word-level
 * tokenizer with a chat template) for tests and benchmarks: any llama/qwen2 layout, any float dtype, from a
 * seed. Weights are generated tensor by tensor while writing, so a 350M-parameter model never sits in the
 * JS heap as a whole.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeFromF32 } from '../../../src/checkpoint/dtypes.js';
import { writeSafetensors, type TensorSource } from '../../../src/checkpoint/safetensors-writer.js';
import { expectedTensors, modelConfigJson, parseModelConfig } from '../../../src/checkpoint/model-config.js';
import type { DType, ModelSpec } from '../../../src/checkpoint/types.js';
import { mulberry32 as prng } from '../../../src/util/prng.js';

export interface SyntheticModelOptions {
  family: 'llama' | 'qwen2';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim?: number;
  tieWordEmbeddings: boolean;
  dtype: 'F32' | 'BF16' | 'F16';
  seed?: number;
  /** Standard deviation of linear weights (default 0.05). */
  std?: number;
  ropeTheta?: number;
  rmsNormEps?: number;
  maxPositionEmbeddings?: number;
}

const SPECIALS = ['<pad>', '<unk>', '<s>', '</s>', '<|user|>', '<|assistant|>', '<|end|>'];
const CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|> ' + message['content'] + ' ' }}{% else %}{{ '<|assistant|> ' + message['content'] + ' <|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";


function hashName(name: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** Uniform values with the given standard deviation and mean, reproducible per (seed, tensor name). */
export function syntheticValues(name: string, n: number, std: number, mean: number, seed: number): Float32Array {
  const r = prng(hashName(name, seed));
  const half = std * Math.sqrt(3);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = mean + (2 * r() - 1) * half;
  return out;
}

export function syntheticTensors(o: SyntheticModelOptions): { name: string; shape: number[]; std: number; mean: number }[] {
  const D = o.headDim ?? o.hiddenSize / o.numHeads;
  const H = o.hiddenSize;
  const std = o.std ?? 0.05;
  const t: { name: string; shape: number[]; std: number; mean: number }[] = [{ name: 'model.embed_tokens.weight', shape: [o.vocabSize, H], std: 0.5, mean: 0 }];
  for (let i = 0; i < o.numLayers; i++) {
    const p = `model.layers.${i}`;
    t.push({ name: `${p}.input_layernorm.weight`, shape: [H], std: 0.1, mean: 1 });
    t.push({ name: `${p}.post_attention_layernorm.weight`, shape: [H], std: 0.1, mean: 1 });
    t.push({ name: `${p}.self_attn.q_proj.weight`, shape: [o.numHeads * D, H], std, mean: 0 });
    t.push({ name: `${p}.self_attn.k_proj.weight`, shape: [o.numKvHeads * D, H], std, mean: 0 });
    t.push({ name: `${p}.self_attn.v_proj.weight`, shape: [o.numKvHeads * D, H], std, mean: 0 });
    t.push({ name: `${p}.self_attn.o_proj.weight`, shape: [H, o.numHeads * D], std, mean: 0 });
    if (o.family === 'qwen2') {
      t.push({ name: `${p}.self_attn.q_proj.bias`, shape: [o.numHeads * D], std: 0.1, mean: 0 });
      t.push({ name: `${p}.self_attn.k_proj.bias`, shape: [o.numKvHeads * D], std: 0.1, mean: 0 });
      t.push({ name: `${p}.self_attn.v_proj.bias`, shape: [o.numKvHeads * D], std: 0.1, mean: 0 });
    }
    t.push({ name: `${p}.mlp.gate_proj.weight`, shape: [o.intermediateSize, H], std, mean: 0 });
    t.push({ name: `${p}.mlp.up_proj.weight`, shape: [o.intermediateSize, H], std, mean: 0 });
    t.push({ name: `${p}.mlp.down_proj.weight`, shape: [H, o.intermediateSize], std, mean: 0 });
  }
  t.push({ name: 'model.norm.weight', shape: [H], std: 0.1, mean: 1 });
  if (!o.tieWordEmbeddings) t.push({ name: 'lm_head.weight', shape: [o.vocabSize, H], std, mean: 0 });
  return t;
}

export function syntheticParameterCount(o: SyntheticModelOptions): number {
  return syntheticTensors(o).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

function tokenizerJson(vocabSize: number): unknown {
  const vocab: Record<string, number> = {};
  SPECIALS.forEach((s, i) => (vocab[s] = i));
  for (let i = SPECIALS.length; i < vocabSize; i++) vocab[`w${i}`] = i;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: 'Lowercase' },
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: null,
    model: { type: 'WordLevel', vocab, unk_token: '<unk>' },
  };
}

export async function writeSyntheticModel(dir: string, o: SyntheticModelOptions): Promise<void> {
  await mkdir(dir, { recursive: true });
  const seed = o.seed ?? 1;
  const spec: ModelSpec = {
    family: o.family,
    vocabSize: o.vocabSize,
    hiddenSize: o.hiddenSize,
    intermediateSize: o.intermediateSize,
    numLayers: o.numLayers,
    numHeads: o.numHeads,
    numKvHeads: o.numKvHeads,
    headDim: o.headDim ?? o.hiddenSize / o.numHeads,
    ropeTheta: o.ropeTheta ?? (o.family === 'qwen2' ? 1000000 : 10000),
    rmsNormEps: o.rmsNormEps ?? 1e-6,
    maxPositionEmbeddings: o.maxPositionEmbeddings ?? 256,
    tieWordEmbeddings: o.tieWordEmbeddings,
    qkvBias: o.family === 'qwen2',
    oBias: false,
    mlpBias: false,
    hiddenAct: 'silu',
    torchDtype: o.dtype,
    bosTokenId: 2,
    eosTokenIds: [3],
    padTokenId: 0,
  };
  const config = modelConfigJson(spec);
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 2, eos_token_id: [3, 6], pad_token_id: 0, do_sample: false }));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(o.vocabSize)));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({
    bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>', unk_token: '<unk>', chat_template: CHAT_TEMPLATE, padding_side: 'left',
  }));
  const dtype: DType = o.dtype;
  const sources: TensorSource[] = syntheticTensors(o).map((t) => ({
    name: t.name,
    dtype,
    shape: t.shape,
    data: () => encodeFromF32(dtype, syntheticValues(t.name, t.shape.reduce((a, b) => a * b, 1), t.std, t.mean, seed)),
  }));
  await writeSafetensors(join(dir, 'model.safetensors'), sources, { format: 'pt' });
}

export interface SyntheticConfigOptions {
  dtype: 'F32' | 'BF16' | 'F16';
  seed?: number;
  /** Standard deviation of linear weights (default 0.05). */
  std?: number;
}

/**
 * A random-weight folder for ANY config.json the checkpoint layer accepts (every family, rope scaling, norm
 * layout): the tensors are the ones expectedTensors() requires of the parsed spec, and config.json is written
 * as given, so the folder reads back exactly as a downloaded checkpoint with that config would. Norm weights
 * are drawn around 1 (around 0 where the family stores them as offsets, Gemma's (1 + w)), biases small. The
 * word-level tokenizer and chat template of writeSyntheticModel go with it (vocab_size >= 60 keeps room for them).
 */
export async function writeSyntheticFromConfig(dir: string, config: Record<string, unknown>, o: SyntheticConfigOptions): Promise<ModelSpec> {
  const spec = parseModelConfig({ ...config, torch_dtype: { F32: 'float32', BF16: 'bfloat16', F16: 'float16' }[o.dtype] }, join(dir, 'config.json'));
  await mkdir(dir, { recursive: true });
  const seed = o.seed ?? 1;
  const std = o.std ?? 0.05;
  const normMean = spec.normWeightOffset ? 0 : 1;
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, torch_dtype: spec.torchDtype === 'F32' ? 'float32' : spec.torchDtype === 'BF16' ? 'bfloat16' : 'float16' }, null, 2));
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 2, eos_token_id: [3, 6], pad_token_id: 0, do_sample: false }));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(spec.vocabSize)));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({
    bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>', unk_token: '<unk>', chat_template: CHAT_TEMPLATE, padding_side: 'left',
  }));
  const sources: TensorSource[] = expectedTensors(spec).map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const isNorm = /norm\.weight$/.test(t.name);
    const isBias = t.name.endsWith('.bias');
    const [sd, mean] = t.name === 'model.embed_tokens.weight' ? [0.5, 0] : isNorm ? [0.1, normMean] : isBias ? [0.1, 0] : [std, 0];
    return { name: t.name, dtype: o.dtype, shape: t.shape, data: () => encodeFromF32(o.dtype, syntheticValues(t.name, n, sd, mean, seed)) };
  });
  await writeSafetensors(join(dir, 'model.safetensors'), sources, { format: 'pt' });
  return spec;
}
