/** Shared shapes of the checkpoint layer: what every other module sees of model files. */
import type { RopeScaling } from './rope.js';

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_SIZE: Record<DType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** One tensor of a safetensors file. Offsets are absolute byte positions in the file. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute offset of the first byte in the file (8 + header length + data_offsets[0]). */
  byteOffset: number;
  byteLength: number;
  /** The file holding it (absolute path). */
  file: string;
}

export type ModelFamily = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'phi3' | 'gemma2' | 'gemma3';

/** A decoder-only model as config.json describes it, normalised across families. */
export interface ModelSpec {
  family: ModelFamily;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (qwen2 always; llama/mistral when attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (llama attention_bias). */
  oBias: boolean;
  mlpBias: boolean;
  /** silu: SwiGLU MLP; gelu_pytorch_tanh: GeGLU with the tanh GELU (gemma). */
  hiddenAct: 'silu' | 'gelu_pytorch_tanh';
  torchDtype: DType;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /** rope_scaling (checkpoint/rope.ts); absent or null: plain RoPE. */
  ropeScaling?: RopeScaling | null;
  /**
   * Family features beyond the llama layout; each absent/false/null means the llama behaviour. See
   * docs/families.md for which family sets what.
   */
  /** Per-head RMSNorm of queries and keys before the rotation (self_attn.q_norm / k_norm, [head_dim]): qwen3, gemma3. */
  qkNorm?: boolean;
  /** q/k/v in one self_attn.qkv_proj and gate/up in one mlp.gate_up_proj (phi3). */
  fusedProjections?: boolean;
  /** RMSNorm weights stored as offsets: the norm multiplies by (1 + w) (gemma). */
  normWeightOffset?: boolean;
  /** post_attention_layernorm on the attention output, pre/post_feedforward_layernorm around the MLP (gemma2/3). */
  sandwichNorms?: boolean;
  /** Embeddings multiplied by this (gemma: sqrt(hidden_size), rounded to the compute dtype). */
  embedScale?: number;
  /** Attention scores scaled by this instead of 1 / sqrt(head_dim) (gemma: query_pre_attn_scalar^-0.5). */
  attnScale?: number;
  /** Scores -> cap * tanh(scores / cap) before masking (gemma2 attn_logit_softcapping). */
  attnSoftcap?: number | null;
  /** Logits -> cap * tanh(logits / cap) (gemma2 final_logit_softcapping). */
  finalSoftcap?: number | null;
  /** Sliding-window size (a query sees keys within the last `slidingWindow` positions) for the layers marked so. */
  slidingWindow?: number | null;
  /** Per layer, whether it uses the sliding window (absent: none does). */
  slidingLayers?: boolean[];
  /** rope_theta of the sliding layers, with plain RoPE (gemma3 rope_local_base_freq). */
  localRopeTheta?: number;
}

/** Linear weights of one decoder layer, in HF naming. */
export const LINEAR_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
/** Phi-3's layer: q/k/v rows stacked in qkv_proj ([q; k; v]), gate/up rows in gate_up_proj ([gate; up]). */
export const FUSED_LINEAR_MODULES = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'] as const;
export type LinearModule = (typeof LINEAR_MODULES)[number] | (typeof FUSED_LINEAR_MODULES)[number];

/** The linear weights of one layer of this model, in layer order. */
export function linearModules(spec: { fusedProjections?: boolean }): readonly LinearModule[] {
  return spec.fusedProjections ? FUSED_LINEAR_MODULES : LINEAR_MODULES;
}

export function linearWeightName(layer: number, module: LinearModule): string {
  const group = ['gate_proj', 'up_proj', 'down_proj', 'gate_up_proj'].includes(module) ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${group}.${module}.weight`;
}
