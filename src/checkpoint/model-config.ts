/**
 * Hugging Face config.json -> ModelSpec for the decoder families the engine implements (llama, mistral,
 * qwen2), and the tensor list that spec implies. Defaults follow transformers' config classes, so a
 * config that omits a field means what it means to transformers.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { FgsnError } from '../errors.js';
import { ioError } from './io.js';
import { MAX_CONFIG_JSON_BYTES, MAX_INDEX_JSON_BYTES, MAX_JSON_DEPTH, jsonDepthExceeds, preview } from './json-limits.js';
import { LINEAR_MODULES, linearWeightName, type DType, type ModelFamily, type ModelSpec } from './types.js';

const SUPPORTED: readonly ModelFamily[] = ['llama', 'mistral', 'qwen2'];

const TORCH_DTYPES: Record<string, DType> = {
  float32: 'F32', float: 'F32', float16: 'F16', half: 'F16', bfloat16: 'BF16', float64: 'F64', double: 'F64',
};

const posInt = z.number().int().positive();
const tokenId = z.number().int().nonnegative();

const configSchema = z.object({
  model_type: z.string(),
  vocab_size: posInt,
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt.nullish(),
  head_dim: posInt.nullish(),
  rope_theta: z.number().positive().optional(),
  rms_norm_eps: z.number().positive().optional(),
  max_position_embeddings: posInt.optional(),
  tie_word_embeddings: z.boolean().optional(),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
  hidden_act: z.string().optional(),
  torch_dtype: z.string().nullish(),
  // transformers >= 4.56 writes `dtype` instead of `torch_dtype`.
  dtype: z.string().nullish(),
  rope_scaling: z.record(z.string(), z.unknown()).nullish(),
  use_sliding_window: z.boolean().optional(),
  bos_token_id: tokenId.nullish(),
  eos_token_id: z.union([tokenId, z.array(tokenId)]).nullish(),
  pad_token_id: tokenId.nullish(),
});

/** transformers' per-family defaults for fields a config may omit. */
const DEFAULTS: Record<ModelFamily, { maxPos: number; eps: number; theta: number; tie: boolean }> = {
  llama: { maxPos: 2048, eps: 1e-6, theta: 10000, tie: false },
  mistral: { maxPos: 4096 * 32, eps: 1e-6, theta: 10000, tie: false },
  qwen2: { maxPos: 32768, eps: 1e-6, theta: 10000, tie: false },
};

function invalid(source: string, problem: string, details?: unknown): never {
  throw new FgsnError('CHECKPOINT_CONFIG_INVALID', `${source}: ${problem}`, { details: details ?? { file: source } });
}

function unsupported(source: string, problem: string): never {
  throw new FgsnError('CHECKPOINT_ARCH_UNSUPPORTED', `${source}: ${problem}`, { details: { file: source } });
}

/** Parses a config.json object. Unknown extra fields are ignored (configs carry many we do not need). */
export function parseModelConfig(json: unknown, source: string): ModelSpec {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) invalid(source, 'config is not a JSON object');
  const modelType = (json as Record<string, unknown>).model_type;
  if (typeof modelType !== 'string') invalid(source, 'model_type is missing or not a string');
  if (!(SUPPORTED as readonly string[]).includes(modelType)) {
    unsupported(source, `model_type ${preview(modelType, 100)} is not supported (supported: ${SUPPORTED.join(', ')})`);
  }
  const family = modelType as ModelFamily;
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) {
    // A 1 MiB config can hold 100k bad list entries: name the first few, count the rest.
    const all = parsed.error.issues;
    const issues = all.slice(0, MAX_LISTED_ISSUES).map((i) => `${i.path.join('.').slice(0, 100) || '(root)'}: ${i.message.slice(0, 200)}`);
    const more = all.length > issues.length ? ` (and ${all.length - issues.length} more)` : '';
    invalid(source, `invalid fields: ${issues.join('; ')}${more}`, { file: source, issues, issueCount: all.length });
  }
  const c = parsed.data;
  const d = DEFAULTS[family];

  const hiddenAct = c.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') unsupported(source, `hidden_act "${hiddenAct}" is not supported (only silu)`);
  // The engine implements plain RoPE; a scaled variant would silently change every attention score.
  if (c.rope_scaling) unsupported(source, `rope_scaling ${preview(c.rope_scaling)} is not supported`);
  if (family === 'qwen2' && c.use_sliding_window === true) unsupported(source, 'qwen2 use_sliding_window: true is not supported');

  const numKvHeads = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % numKvHeads !== 0) {
    invalid(source, `num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  let headDim = c.head_dim ?? null;
  if (headDim === null) {
    if (c.hidden_size % c.num_attention_heads !== 0) {
      invalid(source, `hidden_size ${c.hidden_size} is not divisible by num_attention_heads ${c.num_attention_heads} and head_dim is not given`);
    }
    headDim = c.hidden_size / c.num_attention_heads;
  }
  if (headDim % 2 !== 0) invalid(source, `head_dim ${headDim} must be even for rotary embeddings`);

  const dtypeName = c.torch_dtype ?? c.dtype ?? 'float32';
  const torchDtype = Object.prototype.hasOwnProperty.call(TORCH_DTYPES, dtypeName) ? TORCH_DTYPES[dtypeName] : undefined;
  if (torchDtype === undefined) invalid(source, `torch_dtype ${preview(dtypeName, 100)} is not a float dtype we can read`);

  const attentionBias = family === 'llama' ? (c.attention_bias ?? false) : false;
  const eos = c.eos_token_id;
  return {
    family,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads,
    headDim,
    ropeTheta: c.rope_theta ?? d.theta,
    rmsNormEps: c.rms_norm_eps ?? d.eps,
    maxPositionEmbeddings: c.max_position_embeddings ?? d.maxPos,
    tieWordEmbeddings: c.tie_word_embeddings ?? d.tie,
    // Qwen2 always has q/k/v biases and never an o_proj bias; llama's attention_bias covers all four.
    qkvBias: family === 'qwen2' ? true : attentionBias,
    oBias: attentionBias,
    mlpBias: family === 'llama' ? (c.mlp_bias ?? false) : false,
    hiddenAct: 'silu',
    torchDtype,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos],
    padTokenId: c.pad_token_id ?? null,
  };
}

const TORCH_NAME: Record<DType, string> = {
  F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};
const ARCHITECTURE: Record<ModelFamily, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' };

/**
 * ModelSpec -> config.json as transformers writes it: the inverse of parseModelConfig, for the model
 * folders we generate (demo, synthetic benchmark models, test fixtures).
 */
export function modelConfigJson(spec: ModelSpec): Record<string, unknown> {
  // What each family's config.json can say about biases (see parseModelConfig).
  const expressible = {
    qwen2: spec.qkvBias && !spec.oBias && !spec.mlpBias,
    mistral: !spec.qkvBias && !spec.oBias && !spec.mlpBias,
    llama: spec.qkvBias === spec.oBias,
  }[spec.family];
  if (!expressible) {
    throw new FgsnError('CHECKPOINT_CONFIG_INVALID', `a ${spec.family} config.json cannot express qkvBias=${spec.qkvBias}, oBias=${spec.oBias}, mlpBias=${spec.mlpBias}`);
  }
  const eos = spec.eosTokenIds.length === 1 ? spec.eosTokenIds[0] : spec.eosTokenIds;
  return {
    architectures: [ARCHITECTURE[spec.family]],
    model_type: spec.family,
    vocab_size: spec.vocabSize,
    hidden_size: spec.hiddenSize,
    intermediate_size: spec.intermediateSize,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.numKvHeads,
    head_dim: spec.headDim,
    hidden_act: spec.hiddenAct,
    max_position_embeddings: spec.maxPositionEmbeddings,
    rope_theta: spec.ropeTheta,
    rms_norm_eps: spec.rmsNormEps,
    rope_scaling: null,
    tie_word_embeddings: spec.tieWordEmbeddings,
    torch_dtype: TORCH_NAME[spec.torchDtype],
    bos_token_id: spec.bosTokenId,
    eos_token_id: eos,
    pad_token_id: spec.padTokenId,
    ...(spec.family === 'qwen2'
      ? { use_sliding_window: false, sliding_window: null, max_window_layers: spec.numLayers }
      : { attention_bias: spec.oBias, ...(spec.family === 'llama' ? { mlp_bias: spec.mlpBias } : {}) }),
  };
}

/** Issues of a config listed in its error message; the rest are counted. */
const MAX_LISTED_ISSUES = 20;

/**
 * How many tensors expectedTensors(spec) lists, by arithmetic: checked against the file's real tensor count
 * before anything is enumerated, so a config claiming 40,000 layers costs nothing (issue 15).
 */
export function expectedTensorCount(spec: ModelSpec): number {
  // Derived from expectedTensors itself on 0 and 1 layers, so it follows any family's tensor list.
  const outside = expectedTensors({ ...spec, numLayers: 0 }).length;
  const perLayer = expectedTensors({ ...spec, numLayers: 1 }).length - outside;
  return outside + spec.numLayers * perLayer;
}

export interface ExpectedTensor {
  name: string;
  shape: number[];
}

/** Every parameter tensor of the architecture, HF names, in model order. lm_head is absent when tied. */
export function expectedTensors(spec: ModelSpec): ExpectedTensor[] {
  const h = spec.hiddenSize;
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const inter = spec.intermediateSize;
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [spec.vocabSize, h] }];
  for (let i = 0; i < spec.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [h] });
    out.push({ name: `${p}.self_attn.q_proj.weight`, shape: [q, h] });
    if (spec.qkvBias) out.push({ name: `${p}.self_attn.q_proj.bias`, shape: [q] });
    out.push({ name: `${p}.self_attn.k_proj.weight`, shape: [kv, h] });
    if (spec.qkvBias) out.push({ name: `${p}.self_attn.k_proj.bias`, shape: [kv] });
    out.push({ name: `${p}.self_attn.v_proj.weight`, shape: [kv, h] });
    if (spec.qkvBias) out.push({ name: `${p}.self_attn.v_proj.bias`, shape: [kv] });
    out.push({ name: `${p}.self_attn.o_proj.weight`, shape: [h, q] });
    if (spec.oBias) out.push({ name: `${p}.self_attn.o_proj.bias`, shape: [h] });
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
    out.push({ name: `${p}.mlp.gate_proj.weight`, shape: [inter, h] });
    if (spec.mlpBias) out.push({ name: `${p}.mlp.gate_proj.bias`, shape: [inter] });
    out.push({ name: `${p}.mlp.up_proj.weight`, shape: [inter, h] });
    if (spec.mlpBias) out.push({ name: `${p}.mlp.up_proj.bias`, shape: [inter] });
    out.push({ name: `${p}.mlp.down_proj.weight`, shape: [h, inter] });
    if (spec.mlpBias) out.push({ name: `${p}.mlp.down_proj.bias`, shape: [h] });
  }
  out.push({ name: 'model.norm.weight', shape: [h] });
  if (!spec.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [spec.vocabSize, h] });
  return out;
}

/** The 7 linear weights of every layer (the matrices whose rows are "neurons"), layer-major. */
export function linearWeightNames(spec: ModelSpec): string[] {
  const names: string[] = [];
  for (let i = 0; i < spec.numLayers; i++) for (const m of LINEAR_MODULES) names.push(linearWeightName(i, m));
  return names;
}

/** Shape [out, in] of a linear weight of this spec, or null if `name` is not one. */
export function linearWeightShape(spec: ModelSpec, name: string): [number, number] | null {
  const m = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight$/.exec(name);
  if (!m || Number(m[1]) >= spec.numLayers || String(Number(m[1])) !== m[1]) return null;
  const h = spec.hiddenSize;
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const i = spec.intermediateSize;
  const shapes: Record<string, [number, number]> = { q: [q, h], k: [kv, h], v: [kv, h], o: [h, q], gate: [i, h], up: [i, h], down: [h, i] };
  const shape = shapes[m[2]];
  // Reject e.g. model.layers.0.mlp.q_proj: the group must match the module.
  return linearWeightName(Number(m[1]), `${m[2]}_proj` as (typeof LINEAR_MODULES)[number]) === name ? shape : null;
}

export function parameterCount(spec: ModelSpec): number {
  return expectedTensors(spec).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

export function linearParameterCount(spec: ModelSpec): number {
  return linearWeightNames(spec).reduce((n, name) => {
    const s = linearWeightShape(spec, name) as [number, number];
    return n + s[0] * s[1];
  }, 0);
}

type JsonFileCode = 'CHECKPOINT_CONFIG_INVALID' | 'CHECKPOINT_INDEX_INVALID' | 'ADAPTER_CONFIG_INVALID';

/**
 * Parses the text of a tenant's JSON file: nesting depth checked by a linear scan first (nothing that later
 * walks the value may recurse a million levels), then JSON.parse. Pure; `path` names the file in errors.
 */
export function parseJsonText(text: string, path: string, invalidCode: JsonFileCode): unknown {
  if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) {
    throw new FgsnError('CHECKPOINT_JSON_TOO_LARGE', `${path}: JSON nested deeper than ${MAX_JSON_DEPTH} levels`, {
      details: { file: path, maxDepth: MAX_JSON_DEPTH },
    });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new FgsnError(invalidCode, `${path}: not valid JSON (${e instanceof Error ? e.message.slice(0, 200) : String(e)})`, { details: { file: path } });
  }
}

/**
 * Reads a JSON file, mapping read and parse failures to the given catalogue code. The size is checked before
 * reading: 1 MiB for configs (real ones are a few KB), 16 MiB for a shard index.
 */
export async function readJsonFile(path: string, invalidCode: JsonFileCode): Promise<unknown> {
  const limit = invalidCode === 'CHECKPOINT_INDEX_INVALID' ? MAX_INDEX_JSON_BYTES : MAX_CONFIG_JSON_BYTES;
  let text: string;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new FgsnError(invalidCode, `${path}: not a regular file`, { details: { file: path } });
    if (st.size > limit) {
      throw new FgsnError('CHECKPOINT_JSON_TOO_LARGE', `${path}: ${st.size} bytes is too large for this JSON file (limit ${limit})`, {
        details: { file: path, bytes: st.size, limit },
      });
    }
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw ioError(path, e);
  }
  // The file may have grown between stat and read.
  if (text.length > limit) {
    throw new FgsnError('CHECKPOINT_JSON_TOO_LARGE', `${path}: too large for this JSON file (limit ${limit} bytes)`, { details: { file: path, limit } });
  }
  return parseJsonText(text, path, invalidCode);
}

export interface GenerationConfig {
  eosTokenIds: number[];
  bosTokenId: number | null;
  padTokenId: number | null;
  maxNewTokens: number | null;
}

/** generation_config.json if present (eos ids often differ from config.json's), else null. */
export async function readGenerationConfig(dir: string): Promise<GenerationConfig | null> {
  const path = join(dir, 'generation_config.json');
  let json: unknown;
  try {
    json = await readJsonFile(path, 'CHECKPOINT_CONFIG_INVALID');
  } catch (e) {
    if (e instanceof FgsnError && e.code === 'CHECKPOINT_NOT_FOUND') return null;
    throw e;
  }
  const schema = z.object({
    eos_token_id: z.union([tokenId, z.array(tokenId)]).nullish(),
    bos_token_id: tokenId.nullish(),
    pad_token_id: tokenId.nullish(),
    max_new_tokens: posInt.nullish(),
  });
  const r = schema.safeParse(json);
  if (!r.success) invalid(path, `invalid fields: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const eos = r.data.eos_token_id;
  return {
    eosTokenIds: eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos],
    bosTokenId: r.data.bos_token_id ?? null,
    padTokenId: r.data.pad_token_id ?? null,
    maxNewTokens: r.data.max_new_tokens ?? null,
  };
}
