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
import { parseRopeScaling, ropeScalingJson } from './rope.js';
import { linearModules, linearWeightName, type DType, type LinearModule, type ModelFamily, type ModelSpec } from './types.js';

const SUPPORTED: readonly ModelFamily[] = ['llama', 'mistral', 'qwen2', 'qwen3', 'phi3', 'gemma2', 'gemma3'];
/** config.json model_type -> family, where they differ (Gemma 3's text-only checkpoints say gemma3_text). */
const MODEL_TYPES: Record<string, ModelFamily> = { gemma3_text: 'gemma3' };
/** model_types we know and refuse, with the reason (CHECKPOINT_ARCH_UNSUPPORTED names it). */
const REFUSED_TYPES: Record<string, string> = {
  gemma3: 'Gemma 3 multimodal checkpoints (vision tower, nested text_config) are not supported; text-only gemma3_text checkpoints are',
  gemma: 'Gemma 1 is not supported (gemma2 and gemma3_text are)',
  phi: 'Phi-1/2 (parallel attention, LayerNorm) is not supported (phi3 is)',
};

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
  // Phi-3 keeps longrope's pretraining context at the top level.
  original_max_position_embeddings: posInt.nullish(),
  partial_rotary_factor: z.number().positive().nullish(),
  // Family fields (qwen2/3, phi3, gemma2/3); each is read only for the families that have it.
  sliding_window: posInt.nullish(),
  max_window_layers: z.number().int().nonnegative().nullish(),
  hidden_activation: z.string().nullish(),
  query_pre_attn_scalar: z.number().positive().nullish(),
  attn_logit_softcapping: z.number().positive().nullish(),
  final_logit_softcapping: z.number().positive().nullish(),
  layer_types: z.array(z.string()).nullish(),
  sliding_window_pattern: posInt.nullish(),
  rope_local_base_freq: z.number().positive().nullish(),
  use_bidirectional_attention: z.boolean().nullish(),
});

/** transformers' per-family defaults for fields a config may omit. */
const DEFAULTS: Record<ModelFamily, { maxPos: number; eps: number; theta: number; tie: boolean }> = {
  llama: { maxPos: 2048, eps: 1e-6, theta: 10000, tie: false },
  mistral: { maxPos: 4096 * 32, eps: 1e-6, theta: 10000, tie: false },
  qwen2: { maxPos: 32768, eps: 1e-6, theta: 10000, tie: false },
  qwen3: { maxPos: 32768, eps: 1e-6, theta: 10000, tie: false },
  phi3: { maxPos: 4096, eps: 1e-5, theta: 10000, tie: false },
  gemma2: { maxPos: 8192, eps: 1e-6, theta: 10000, tie: true },
  gemma3: { maxPos: 131072, eps: 1e-6, theta: 1_000_000, tie: true },
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
  if (Object.prototype.hasOwnProperty.call(REFUSED_TYPES, modelType)) unsupported(source, `model_type ${preview(modelType, 100)}: ${REFUSED_TYPES[modelType]}`);
  const family = Object.prototype.hasOwnProperty.call(MODEL_TYPES, modelType) ? MODEL_TYPES[modelType] : modelType as ModelFamily;
  if (!(SUPPORTED as readonly string[]).includes(family)) {
    unsupported(source, `model_type ${preview(modelType, 100)} is not supported (supported: ${SUPPORTED.join(', ')}, gemma3_text)`);
  }
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

  const gemma = family === 'gemma2' || family === 'gemma3';
  // Gemma names the MLP activation hidden_activation (its hidden_act is a legacy field transformers ignores).
  const hiddenAct = gemma ? (c.hidden_activation ?? 'gelu_pytorch_tanh') : (c.hidden_act ?? 'silu');
  const wantAct = gemma ? 'gelu_pytorch_tanh' : 'silu';
  if (hiddenAct !== wantAct) unsupported(source, `hidden_act "${hiddenAct}" is not supported for ${family} (only ${wantAct})`);
  // Rotating only part of each head (partial_rotary_factor < 1) is not implemented: refuse it rather than rotate all.
  if (c.partial_rotary_factor !== undefined && c.partial_rotary_factor !== null && c.partial_rotary_factor !== 1) {
    unsupported(source, `partial_rotary_factor ${c.partial_rotary_factor} (partial rotary embeddings) is not supported`);
  }
  if ((family === 'qwen2' || family === 'qwen3') && c.use_sliding_window === true) unsupported(source, `${family} use_sliding_window: true (sliding window on layers past max_window_layers) is not supported`);
  if (c.use_bidirectional_attention === true) unsupported(source, 'use_bidirectional_attention: true (an encoder, not a causal LM) is not supported');

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
  const maxPositionEmbeddings = c.max_position_embeddings ?? d.maxPos;
  const ropeScaling = parseRopeScaling(c.rope_scaling, { headDim, maxPositionEmbeddings, topLevelOriginalMax: c.original_max_position_embeddings ?? null }, source);

  const dtypeName = c.torch_dtype ?? c.dtype ?? 'float32';
  const torchDtype = Object.prototype.hasOwnProperty.call(TORCH_DTYPES, dtypeName) ? TORCH_DTYPES[dtypeName] : undefined;
  if (torchDtype === undefined) invalid(source, `torch_dtype ${preview(dtypeName, 100)} is not a float dtype we can read`);

  // llama, qwen3 and gemma carry attention_bias (q/k/v/o); mistral and phi3 never have attention biases.
  const attentionBias = family === 'llama' || family === 'qwen3' || gemma ? (c.attention_bias ?? false) : false;
  const features = familyFeatures(family, c, source);
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
    maxPositionEmbeddings,
    tieWordEmbeddings: c.tie_word_embeddings ?? d.tie,
    // Qwen2 always has q/k/v biases and never an o_proj bias; llama's attention_bias covers all four.
    qkvBias: family === 'qwen2' ? true : attentionBias,
    oBias: attentionBias,
    mlpBias: family === 'llama' ? (c.mlp_bias ?? false) : false,
    hiddenAct: wantAct,
    torchDtype,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos],
    padTokenId: c.pad_token_id ?? null,
    ...(ropeScaling ? { ropeScaling } : {}),
    ...features,
  };
}

type ParsedConfig = z.infer<typeof configSchema>;
type Features = Partial<Pick<ModelSpec,
  'qkNorm' | 'fusedProjections' | 'normWeightOffset' | 'sandwichNorms' | 'embedScale' | 'attnScale' | 'attnSoftcap' | 'finalSoftcap' | 'slidingWindow' | 'slidingLayers' | 'localRopeTheta'>>;

/** Which layers slide: config.layer_types when given, else the family's pattern. */
function slidingLayersOf(c: ParsedConfig, pattern: (i: number) => boolean, source: string): boolean[] {
  if (c.layer_types) {
    if (c.layer_types.length !== c.num_hidden_layers) invalid(source, `layer_types has ${c.layer_types.length} entries for ${c.num_hidden_layers} layers`);
    return c.layer_types.map((t) => {
      if (t !== 'sliding_attention' && t !== 'full_attention') unsupported(source, `layer_types entry "${t}" is not supported (full_attention, sliding_attention)`);
      return t === 'sliding_attention';
    });
  }
  return Array.from({ length: c.num_hidden_layers }, (_, i) => pattern(i));
}

/** The family-specific part of the spec (transformers' modeling_<family>.py; see docs/families.md). */
function familyFeatures(family: ModelFamily, c: ParsedConfig, source: string): Features {
  const window = c.sliding_window ?? null;
  const allSliding = (): boolean[] => Array.from({ length: c.num_hidden_layers }, () => true);
  switch (family) {
    case 'mistral':
    case 'phi3':
      // Mistral v0.1 (4096) and Phi-3 (2047 for the 4k models) mask keys beyond the window on every layer.
      return {
        ...(family === 'phi3' ? { fusedProjections: true } : {}),
        ...(window !== null ? { slidingWindow: window, slidingLayers: allSliding() } : {}),
      };
    case 'qwen3':
      return { qkNorm: true };
    case 'gemma2':
    case 'gemma3': {
      const g2 = family === 'gemma2';
      const w = window ?? 4096;
      const pattern = c.sliding_window_pattern ?? 6;
      return {
        normWeightOffset: true,
        sandwichNorms: true,
        embedScale: Math.fround(Math.sqrt(c.hidden_size)),
        attnScale: Math.pow(c.query_pre_attn_scalar ?? 256, -0.5),
        // gemma2 caps by default (50 / 30); gemma3 does not (null), either honours an explicit value.
        attnSoftcap: c.attn_logit_softcapping === undefined ? (g2 ? 50 : null) : c.attn_logit_softcapping,
        finalSoftcap: c.final_logit_softcapping === undefined ? (g2 ? 30 : null) : c.final_logit_softcapping,
        slidingWindow: w,
        // gemma2: even layers slide; gemma3: every layer but each pattern-th.
        slidingLayers: slidingLayersOf(c, g2 ? (i) => (i + 1) % 2 !== 0 : (i) => (i + 1) % pattern !== 0, source),
        ...(g2 ? {} : { qkNorm: true, localRopeTheta: c.rope_local_base_freq ?? 10000 }),
      };
    }
    default:
      return {};
  }
}

const TORCH_NAME: Record<DType, string> = {
  F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};
const ARCHITECTURE: Record<ModelFamily, string> = {
  llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', phi3: 'Phi3ForCausalLM',
  gemma2: 'Gemma2ForCausalLM', gemma3: 'Gemma3ForCausalLM',
};

/**
 * ModelSpec -> config.json as transformers writes it: the inverse of parseModelConfig, for the model
 * folders we generate (demo, synthetic benchmark models, test fixtures).
 */
export function modelConfigJson(spec: ModelSpec): Record<string, unknown> {
  // What each family's config.json can say about biases (see parseModelConfig).
  // The families added later (qwen3, phi3, gemma) write their config.json as given (synthetic-model.ts's
  // writeSyntheticFromConfig); this writer covers the llama layout only.
  const expressible = ({
    qwen2: spec.qkvBias && !spec.oBias && !spec.mlpBias,
    mistral: !spec.qkvBias && !spec.oBias && !spec.mlpBias,
    llama: spec.qkvBias === spec.oBias,
  } as Partial<Record<ModelFamily, boolean>>)[spec.family] ?? false;
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
    rope_scaling: ropeScalingJson(spec.ropeScaling),
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
    if (spec.fusedProjections) {
      // Phi-3: no biases anywhere (parseModelConfig never sets one for phi3).
      out.push({ name: `${p}.self_attn.qkv_proj.weight`, shape: [q + 2 * kv, h] });
      out.push({ name: `${p}.self_attn.o_proj.weight`, shape: [h, q] });
      out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
      out.push({ name: `${p}.mlp.gate_up_proj.weight`, shape: [2 * inter, h] });
      out.push({ name: `${p}.mlp.down_proj.weight`, shape: [h, inter] });
      continue;
    }
    if (spec.qkNorm) {
      out.push({ name: `${p}.self_attn.q_norm.weight`, shape: [spec.headDim] });
      out.push({ name: `${p}.self_attn.k_norm.weight`, shape: [spec.headDim] });
    }
    if (spec.sandwichNorms) {
      out.push({ name: `${p}.pre_feedforward_layernorm.weight`, shape: [h] });
      out.push({ name: `${p}.post_feedforward_layernorm.weight`, shape: [h] });
    }
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

/** The linear weights of every layer (the matrices whose rows are "neurons"; 7 a layer, 4 when fused), layer-major. */
export function linearWeightNames(spec: ModelSpec): string[] {
  const names: string[] = [];
  for (let i = 0; i < spec.numLayers; i++) for (const m of linearModules(spec)) names.push(linearWeightName(i, m));
  return names;
}

/** Shape [out, in] of a linear weight of this spec, or null if `name` is not one. */
export function linearWeightShape(spec: ModelSpec, name: string): [number, number] | null {
  const m = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|o|gate|up|down|qkv|gate_up)_proj\.weight$/.exec(name);
  if (!m || Number(m[1]) >= spec.numLayers || String(Number(m[1])) !== m[1]) return null;
  const h = spec.hiddenSize;
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const i = spec.intermediateSize;
  const shapes: Record<string, [number, number]> = spec.fusedProjections
    ? { qkv: [q + 2 * kv, h], o: [h, q], gate_up: [2 * i, h], down: [h, i] }
    : { q: [q, h], k: [kv, h], v: [kv, h], o: [h, q], gate: [i, h], up: [i, h], down: [h, i] };
  if (!Object.prototype.hasOwnProperty.call(shapes, m[2])) return null;
  const shape = shapes[m[2]];
  // Reject e.g. model.layers.0.mlp.q_proj: the group must match the module.
  return linearWeightName(Number(m[1]), `${m[2]}_proj` as LinearModule) === name ? shape : null;
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
