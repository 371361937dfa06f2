import { describe, expect, it } from 'vitest';
import { expectedTensors, linearParameterCount, linearWeightNames, linearWeightShape, modelConfigJson, parameterCount, parseModelConfig } from '../../src/checkpoint/model-config.js';
import { parseAdapterConfig, parseLoraKey, loraDeltaRows } from '../../src/checkpoint/lora.js';
import { tinyConfig } from './fixtures.js';

describe('parseModelConfig', () => {
  it('normalises a llama config (GQA, explicit head_dim, eos list)', () => {
    const s = parseModelConfig(tinyConfig(), 'c');
    expect(s).toEqual({
      family: 'llama', vocabSize: 10, hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 4,
      ropeTheta: 10000, rmsNormEps: 1e-5, maxPositionEmbeddings: 64, tieWordEmbeddings: false, qkvBias: false, oBias: false, mlpBias: false,
      hiddenAct: 'silu', torchDtype: 'F32', bosTokenId: 1, eosTokenIds: [2, 3], padTokenId: null,
    });
  });

  it('applies transformers defaults: head_dim = hidden/heads, kv heads = heads, tie false', () => {
    const c = tinyConfig({ head_dim: undefined, num_key_value_heads: undefined, tie_word_embeddings: undefined, rope_theta: undefined, eos_token_id: 2, torch_dtype: 'bfloat16' });
    const s = parseModelConfig(c, 'c');
    expect([s.headDim, s.numKvHeads, s.tieWordEmbeddings, s.ropeTheta, s.eosTokenIds, s.torchDtype]).toEqual([4, 2, false, 10000, [2], 'BF16']);
  });

  it('gives qwen2 q/k/v biases and llama attention_bias all four', () => {
    const q = parseModelConfig(tinyConfig({ model_type: 'qwen2', tie_word_embeddings: true, rope_theta: 1e6 }), 'c');
    expect([q.qkvBias, q.oBias, q.tieWordEmbeddings, q.ropeTheta]).toEqual([true, false, true, 1e6]);
    const names = expectedTensors(q).map((t) => t.name);
    expect(names).toContain('model.layers.0.self_attn.k_proj.bias');
    expect(names).not.toContain('model.layers.0.self_attn.o_proj.bias');
    expect(names).not.toContain('lm_head.weight');
    const l = parseModelConfig(tinyConfig({ attention_bias: true, mlp_bias: true }), 'c');
    expect([l.qkvBias, l.oBias, l.mlpBias]).toEqual([true, true, true]);
    expect(expectedTensors(l).find((t) => t.name === 'model.layers.1.mlp.down_proj.bias')?.shape).toEqual([8]);
    const m = parseModelConfig(tinyConfig({ model_type: 'mistral', attention_bias: true }), 'c');
    expect([m.family, m.qkvBias]).toEqual(['mistral', false]);
  });

  it('implies the HF tensor list with GQA shapes, and counts parameters', () => {
    const s = parseModelConfig(tinyConfig(), 'c');
    const t = new Map(expectedTensors(s).map((x) => [x.name, x.shape]));
    expect(t.get('model.layers.0.self_attn.q_proj.weight')).toEqual([8, 8]);
    expect(t.get('model.layers.0.self_attn.k_proj.weight')).toEqual([4, 8]);
    expect(t.get('model.layers.0.self_attn.o_proj.weight')).toEqual([8, 8]);
    expect(t.get('model.layers.1.mlp.down_proj.weight')).toEqual([8, 12]);
    expect(t.get('lm_head.weight')).toEqual([10, 8]);
    expect(t.size).toBe(1 + 2 * 9 + 2);
    // embed 80 + lm_head 80 + norm 8 + per layer (2*8 norms + 64+32+32+64 attn + 3*96 mlp) = 168 + 2*496.
    expect(parameterCount(s)).toBe(168 + 2 * 496);
    expect(linearParameterCount(s)).toBe(2 * (64 + 32 + 32 + 64 + 3 * 96));
    expect(linearWeightNames(s)).toHaveLength(14);
    expect(linearWeightShape(s, 'model.layers.1.mlp.gate_proj.weight')).toEqual([12, 8]);
    expect(linearWeightShape(s, 'model.layers.2.mlp.gate_proj.weight')).toBeNull();
    expect(linearWeightShape(s, 'model.layers.0.mlp.q_proj.weight')).toBeNull();
    expect(linearWeightShape(s, 'model.layers.01.mlp.up_proj.weight')).toBeNull();
  });

  it.each([
    [{ model_type: 'gpt_neox' }, 'CHECKPOINT_ARCH_UNSUPPORTED'],
    [{ hidden_act: 'gelu' }, 'CHECKPOINT_ARCH_UNSUPPORTED'],
    [{ model_type: 'qwen2', use_sliding_window: true }, 'CHECKPOINT_ARCH_UNSUPPORTED'],
    [{ model_type: 5 }, 'CHECKPOINT_CONFIG_INVALID'],
    [{ vocab_size: 0 }, 'CHECKPOINT_CONFIG_INVALID'],
    [{ num_hidden_layers: 1.5 }, 'CHECKPOINT_CONFIG_INVALID'],
    [{ head_dim: undefined, num_attention_heads: 3 }, 'CHECKPOINT_CONFIG_INVALID'],
    [{ head_dim: 3 }, 'CHECKPOINT_CONFIG_INVALID'],
    [{ torch_dtype: 'int8' }, 'CHECKPOINT_CONFIG_INVALID'],
    [{ torch_dtype: 'constructor' }, 'CHECKPOINT_CONFIG_INVALID'],
    [{ eos_token_id: 'x' }, 'CHECKPOINT_CONFIG_INVALID'],
  ])('refuses %j with %s', (over, code) => {
    expect(() => parseModelConfig(tinyConfig(over), 'cfg.json')).toThrow(expect.objectContaining({ code }));
  });

  it('refuses a non-object config', () => {
    expect(() => parseModelConfig([1], 'cfg.json')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_CONFIG_INVALID' }));
  });
});

describe('LoRA pieces', () => {
  it('scales by alpha/r, or alpha/sqrt(r) with rsLoRA', () => {
    const base = { peft_type: 'LORA', r: 16, lora_alpha: 8, target_modules: ['q_proj'] };
    expect(parseAdapterConfig(base, 'a').scaling).toBe(0.5);
    expect(parseAdapterConfig({ ...base, use_rslora: true }, 'a').scaling).toBe(2);
    expect(parseAdapterConfig({ ...base, target_modules: '.*q_proj' }, 'a').targetModules).toEqual(['.*q_proj']);
  });

  it('maps PEFT keys to base weight names', () => {
    expect(parseLoraKey('base_model.model.model.layers.3.mlp.up_proj.lora_A.weight')).toEqual({ base: 'model.layers.3.mlp.up_proj.weight', part: 'A' });
    expect(parseLoraKey('base_model.model.model.layers.3.mlp.up_proj.lora_B.default.weight')).toEqual({ base: 'model.layers.3.mlp.up_proj.weight', part: 'B' });
    expect(parseLoraKey('base_model.model.lm_head.weight')).toBeNull();
    expect(parseLoraKey('model.layers.0.q_proj.lora_A.weight')).toBeNull();
  });

  it('computes scaling * B @ A on a hand-checked case', () => {
    // B = [[1, 2], [3, 4], [0, -1]] (3 x r=2), A = [[1, 0, 2], [0, 1, -1]] (2 x 3); rows 1..3, scaling 0.5.
    const b = new Float32Array([3, 4, 0, -1]);
    const a = new Float32Array([1, 0, 2, 0, 1, -1]);
    expect(Array.from(loraDeltaRows(b, a, 2, 2, 3, 0.5))).toEqual([1.5, 2, 1, 0, -0.5, 0.5]);
  });
});

describe('modelConfigJson', () => {
  const llama = parseModelConfig(tinyConfig(), 'c');
  it.each([
    ['llama', llama],
    ['llama with attention and mlp biases', { ...llama, qkvBias: true, oBias: true, mlpBias: true, torchDtype: 'BF16' as const, eosTokenIds: [2] }],
    ['mistral', { ...llama, family: 'mistral' as const, padTokenId: 0 }],
    ['qwen2 (tied, qkv biases)', { ...llama, family: 'qwen2' as const, qkvBias: true, tieWordEmbeddings: true, ropeTheta: 1e6, rmsNormEps: 1e-6 }],
  ])('round-trips through parseModelConfig: %s', (_name, spec) => {
    const json = modelConfigJson(spec);
    expect(parseModelConfig(JSON.parse(JSON.stringify(json)), 'round-trip')).toEqual(spec);
  });

  it('refuses a spec the family cannot express', () => {
    expect(() => modelConfigJson({ ...llama, family: 'qwen2' })).toThrow(/cannot express/);
    expect(() => modelConfigJson({ ...llama, qkvBias: true })).toThrow(/cannot express/);
    expect(() => modelConfigJson({ ...llama, family: 'mistral', mlpBias: true })).toThrow(/cannot express/);
  });
});
