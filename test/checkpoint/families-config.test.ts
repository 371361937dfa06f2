/**
 * config.json -> ModelSpec for the families beyond the llama layout, and what is refused (with
 * CHECKPOINT_ARCH_UNSUPPORTED naming the feature): the tensor lists each family's checkpoints hold, the fused
 * Phi-3 weights as the linear weights (rows addressed inside them, LoRA targets by their fused names).
 */
import { describe, expect, it } from 'vitest';
import { expectedTensors, linearWeightNames, linearWeightShape, parseModelConfig } from '../../src/checkpoint/model-config.js';
import { FAMILY_CONFIGS } from '../support/synthetic/family-configs.js';

const parse = (name: string, over: Record<string, unknown> = {}) => parseModelConfig({ ...FAMILY_CONFIGS[name], ...over }, 'config.json');
const refused = (name: string, over: Record<string, unknown>, feature: RegExp): void => {
  expect(() => parse(name, over)).toThrow(expect.objectContaining({ code: 'CHECKPOINT_ARCH_UNSUPPORTED', message: expect.stringMatching(feature) }));
};

describe('family configs', () => {
  it('llama 3.1 / 3.2: llama3 rope scaling is read, not refused', () => {
    const s = parse('llama3.1');
    expect(s.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
    expect(parse('llama3.2').ropeScaling).toMatchObject({ type: 'llama3', factor: 32 });
    expect(parse('llama3.2').tieWordEmbeddings).toBe(true);
  });

  it('qwen3: q/k norm weights [head_dim], head_dim independent of hidden / heads, attention_bias on all four', () => {
    const s = parse('qwen3');
    expect([s.headDim, s.qkNorm, s.tieWordEmbeddings, s.qkvBias]).toEqual([24, true, true, false]);
    const names = expectedTensors(s);
    expect(names).toContainEqual({ name: 'model.layers.1.self_attn.k_norm.weight', shape: [24] });
    expect(names).toContainEqual({ name: 'model.layers.0.self_attn.q_proj.weight', shape: [4 * 24, 64] });
    const b = parse('qwen3', { attention_bias: true });
    expect([b.qkvBias, b.oBias]).toEqual([true, true]);
  });

  it('phi3: fused qkv_proj / gate_up_proj are the linear weights; longrope with the top-level original context', () => {
    const s = parse('phi3');
    expect(s.fusedProjections).toBe(true);
    expect(linearWeightNames(s).slice(0, 4)).toEqual([
      'model.layers.0.self_attn.qkv_proj.weight', 'model.layers.0.self_attn.o_proj.weight', 'model.layers.0.mlp.gate_up_proj.weight', 'model.layers.0.mlp.down_proj.weight',
    ]);
    expect(linearWeightShape(s, 'model.layers.0.self_attn.qkv_proj.weight')).toEqual([(4 + 2 * 2) * 16, 64]);
    expect(linearWeightShape(s, 'model.layers.1.mlp.gate_up_proj.weight')).toEqual([2 * 96, 64]);
    // The unfused names are not weights of a Phi-3 checkpoint (an adapter targeting them is refused).
    expect(linearWeightShape(s, 'model.layers.0.self_attn.q_proj.weight')).toBeNull();
    expect(linearWeightShape(s, 'model.layers.0.mlp.up_proj.weight')).toBeNull();
    expect(expectedTensors(s).map((t) => t.name).filter((n) => n.startsWith('model.layers.0.'))).toHaveLength(6);
    expect(s.ropeScaling).toMatchObject({ type: 'longrope', originalMaxPositions: 16, attentionFactor: Math.sqrt(1 + Math.log(4) / Math.log(16)) });
    expect([s.slidingWindow, s.slidingLayers]).toEqual([12, [true, true]]);
  });

  it('gemma2: offset and sandwich norms, GeGLU, sqrt(hidden) scale, caps, even layers sliding', () => {
    const s = parse('gemma2');
    expect(s).toMatchObject({
      family: 'gemma2', hiddenAct: 'gelu_pytorch_tanh', normWeightOffset: true, sandwichNorms: true, embedScale: 8, attnScale: 0.25,
      attnSoftcap: 2, finalSoftcap: 3, slidingWindow: 6, slidingLayers: [true, false], tieWordEmbeddings: true,
    });
    expect(expectedTensors(s).map((t) => t.name)).toContain('model.layers.0.post_feedforward_layernorm.weight');
    // transformers' defaults when the config omits them: caps 50 / 30, query_pre_attn_scalar 256.
    const d = parse('gemma2', { attn_logit_softcapping: undefined, final_logit_softcapping: undefined, query_pre_attn_scalar: undefined });
    expect([d.attnSoftcap, d.finalSoftcap, d.attnScale]).toEqual([50, 30, 1 / 16]);
  });

  it('gemma3 (gemma3_text): q/k norm, local rope base on sliding layers, layer_types honoured', () => {
    const s = parse('gemma3');
    expect(s).toMatchObject({ family: 'gemma3', qkNorm: true, localRopeTheta: 10000, ropeTheta: 1e6, slidingLayers: [true, false], attnSoftcap: null, finalSoftcap: null });
    expect(s.ropeScaling).toEqual({ type: 'linear', factor: 8 });
    expect(parse('gemma3', { layer_types: ['full_attention', 'sliding_attention'] }).slidingLayers).toEqual([false, true]);
    // Default pattern 6: five sliding layers, then a global one.
    expect(parse('gemma3', { sliding_window_pattern: undefined, num_hidden_layers: 6 }).slidingLayers).toEqual([true, true, true, true, true, false]);
  });

  it('mistral: sliding_window applies to every layer', () => {
    expect(parse('mistral')).toMatchObject({ slidingWindow: 8, slidingLayers: [true, true] });
  });

  it('refuses what is not implemented, naming it', () => {
    refused('gemma3', { model_type: 'gemma3' }, /multimodal/);
    refused('llama3.1', { partial_rotary_factor: 0.75 }, /partial_rotary_factor/);
    refused('qwen3', { use_sliding_window: true }, /use_sliding_window/);
    refused('qwen2', { rope_scaling: { type: 'mrope', mrope_section: [2, 2, 4] } }, /mrope/);
    refused('gemma3', { layer_types: ['chunked_attention', 'full_attention'] }, /chunked_attention/);
    refused('gemma2', { hidden_activation: 'gelu' }, /gelu/);
    refused('gemma3', { use_bidirectional_attention: true }, /bidirectional/);
  });
});
