/**
 * Tiny config.json files in the layout of each supported family's public models (values such as rope
 * scaling types, rope_theta, tied embeddings, soft caps and sliding patterns as the model cards' configs
 * have them), scaled down to hidden 64 / 2 layers so tests stay fast. Where a feature only shows beyond a
 * context length (sliding windows, longrope's switch to long factors), the tiny config shrinks that length
 * so short prompts cross it.
 */

const COMMON = {
  vocab_size: 64, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
  bos_token_id: 2, eos_token_id: 3, pad_token_id: 0,
};

export const FAMILY_CONFIGS: Record<string, Record<string, unknown>> = {
  // Llama 3.1 8B: rope_theta 5e5, llama3 scaling (factor 8), untied.
  'llama3.1': {
    ...COMMON, model_type: 'llama', hidden_act: 'silu', rms_norm_eps: 1e-5, rope_theta: 500000, max_position_embeddings: 131072, tie_word_embeddings: false,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  },
  // Llama 3.2 1B: factor 32, tied embeddings.
  'llama3.2': {
    ...COMMON, model_type: 'llama', hidden_act: 'silu', rms_norm_eps: 1e-5, rope_theta: 500000, max_position_embeddings: 131072, tie_word_embeddings: true,
    rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  },
  // Llama 2 long-context fine-tunes: linear position interpolation.
  'llama-linear': { ...COMMON, model_type: 'llama', rope_theta: 10000, max_position_embeddings: 64, rope_scaling: { type: 'linear', factor: 4 } },
  // Dynamic NTK (scales only past max_position_embeddings, which the engine does not exceed: plain within it).
  'llama-dynamic': { ...COMMON, model_type: 'llama', rope_theta: 10000, max_position_embeddings: 64, rope_scaling: { type: 'dynamic', factor: 2 } },
  // Qwen2.5 with its long-context yarn block (original context shrunk to 16).
  qwen2: {
    ...COMMON, model_type: 'qwen2', rope_theta: 1000000, max_position_embeddings: 64, tie_word_embeddings: true, use_sliding_window: false,
    rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 16 },
  },
  // Qwen3 0.6B: q/k norm, head_dim not hidden / heads, tied embeddings.
  qwen3: {
    ...COMMON, model_type: 'qwen3', head_dim: 24, rope_theta: 1000000, max_position_embeddings: 64, tie_word_embeddings: true, attention_bias: false,
    use_sliding_window: false, rms_norm_eps: 1e-6,
  },
  // Mistral 7B v0.1: sliding window (4096, shrunk to 8).
  mistral: { ...COMMON, model_type: 'mistral', rope_theta: 10000, max_position_embeddings: 64, sliding_window: 8 },
  // Phi-3 mini 128k: fused projections, longrope with top-level original context (4096, shrunk to 16).
  phi3: {
    ...COMMON, model_type: 'phi3', rope_theta: 10000, max_position_embeddings: 64, original_max_position_embeddings: 16, sliding_window: 12,
    rms_norm_eps: 1e-5, tie_word_embeddings: false,
    rope_scaling: { type: 'longrope', short_factor: [1, 1.1, 1.2, 1.4, 1.8, 2.5, 3, 4], long_factor: [1.2, 2, 3, 5, 8, 12, 20, 40] },
  },
  // Gemma 2 2B: (1 + w) norms, sandwich norms, GeGLU, sqrt(hidden) embedding scale, soft caps (50 / 30, made
  // small here so they bend tiny-model scores), alternating sliding layers (4096, shrunk to 6).
  gemma2: {
    ...COMMON, model_type: 'gemma2', head_dim: 16, hidden_activation: 'gelu_pytorch_tanh', rope_theta: 10000, max_position_embeddings: 64,
    query_pre_attn_scalar: 16, sliding_window: 6, attn_logit_softcapping: 2, final_logit_softcapping: 3, tie_word_embeddings: true,
  },
  // Gemma 3 text (1B and the 4B+ text stack): q/k norm, local layers on rope_local_base_freq, global layers with
  // linear scaling (factor 8 as the 4B+ configs), pattern shrunk from 6 to 2, no soft caps.
  gemma3: {
    ...COMMON, model_type: 'gemma3_text', head_dim: 16, hidden_activation: 'gelu_pytorch_tanh', rope_theta: 1000000, rope_local_base_freq: 10000,
    max_position_embeddings: 64, query_pre_attn_scalar: 16, sliding_window: 6, sliding_window_pattern: 2, final_logit_softcapping: null,
    attn_logit_softcapping: null, rope_scaling: { rope_type: 'linear', factor: 8 }, tie_word_embeddings: true,
  },
};

/** Families whose rope depends on the call's length: the reference (one sequence) matches a batch only of similar lengths. */
export const LENGTH_DEPENDENT_ROPE = new Set(['phi3', 'llama-dynamic']);
