/** Builders for hand-made checkpoints in a temp dir: raw safetensors bytes, tiny model folders, adapters. */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expectedTensors, parseModelConfig } from '../../src/checkpoint/model-config.js';
import { writeSafetensors, type TensorSource } from '../../src/checkpoint/safetensors-writer.js';
import { DTYPE_SIZE, type DType, type ModelSpec } from '../../src/checkpoint/types.js';
import { encodeFromF32 } from '../../src/checkpoint/dtypes.js';

export async function tempDir(prefix = 'fgsn-ckpt-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * A safetensors file assembled byte by byte: 8-byte LE length (overridable, to lie about it), the header
 * text exactly as given (no padding unless included), then `data`.
 */
export function rawSafetensors(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), claimedLength?: bigint): Uint8Array {
  const h = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(claimedLength ?? BigInt(h.length));
  return Buffer.concat([len, h, Buffer.from(data)]);
}

export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** The config.json of a tiny llama: hidden 8, 2 heads of 4 (1 KV head), intermediate 12, 2 layers, vocab 10. */
export function tinyConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2,
    num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, vocab_size: 10, rms_norm_eps: 1e-5, rope_theta: 10000,
    max_position_embeddings: 64, tie_word_embeddings: false, torch_dtype: 'float32', bos_token_id: 1, eos_token_id: [2, 3], hidden_act: 'silu',
    ...overrides,
  };
}

/** Deterministic tensor values: element i of tensor t is a small distinct number. */
export function patternValues(n: number, seed: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = Math.sin(seed * 131 + i * 0.37) * 0.1;
  return v;
}

export function sourcesFor(spec: ModelSpec, dtype: DType = 'F32', skip: (name: string) => boolean = () => false): TensorSource[] {
  return expectedTensors(spec)
    .filter((t) => !skip(t.name))
    .map((t, k) => ({
      name: t.name, dtype, shape: t.shape,
      data: () => encodeFromF32(dtype, patternValues(t.shape.reduce((a, b) => a * b, 1), k + 1)),
    }));
}

export interface FolderOptions {
  config?: Record<string, unknown>;
  dtype?: DType;
  /** Replace or add tensors (by name) after the defaults. */
  extra?: TensorSource[];
  skip?: (name: string) => boolean;
  /** Split into two shards with an index instead of model.safetensors. */
  sharded?: boolean;
}

/** Writes a valid (unless told otherwise) tiny model folder with config.json and weights. */
export async function writeModelFolder(dir: string, opts: FolderOptions = {}): Promise<string> {
  await mkdir(dir, { recursive: true });
  const config = opts.config ?? tinyConfig();
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  const spec = parseModelConfig(config, 'fixture');
  const byName = new Map<string, TensorSource>();
  for (const s of sourcesFor(spec, opts.dtype, opts.skip)) byName.set(s.name, s);
  for (const s of opts.extra ?? []) byName.set(s.name, s);
  const all = [...byName.values()];
  if (!opts.sharded) {
    await writeSafetensors(join(dir, 'model.safetensors'), all, { format: 'pt' });
    return dir;
  }
  const half = Math.ceil(all.length / 2);
  const shards = [all.slice(0, half), all.slice(half)];
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < 2; i++) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await writeSafetensors(join(dir, file), shards[i], { format: 'pt' });
    for (const s of shards[i]) weightMap[s.name] = file;
  }
  const total = all.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[s.dtype], 0);
  await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }));
  return dir;
}

export function adapterConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    peft_type: 'LORA', r: 2, lora_alpha: 4, lora_dropout: 0, target_modules: ['q_proj', 'v_proj', 'down_proj'], bias: 'none',
    fan_in_fan_out: false, use_rslora: false, base_model_name_or_path: '../base', task_type: 'CAUSAL_LM', ...overrides,
  };
}

/** A LoRA on layer 0 q_proj, v_proj and down_proj of the tiny model; `mutate` edits the tensor list. */
export async function writeAdapterFolder(
  dir: string, opts: { config?: Record<string, unknown>; rank?: number; mutate?: (t: TensorSource[]) => TensorSource[] } = {},
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const config = opts.config ?? adapterConfig();
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(config));
  const r = opts.rank ?? 2;
  const spec = parseModelConfig(tinyConfig(), 'fixture');
  const shapes: Record<string, [number, number]> = {
    'model.layers.0.self_attn.q_proj': [spec.numHeads * spec.headDim, spec.hiddenSize],
    'model.layers.0.self_attn.v_proj': [spec.numKvHeads * spec.headDim, spec.hiddenSize],
    'model.layers.0.mlp.down_proj': [spec.hiddenSize, spec.intermediateSize],
  };
  let tensors: TensorSource[] = [];
  let seed = 100;
  for (const [mod, [out, inp]] of Object.entries(shapes)) {
    const sa = seed++;
    const sb = seed++;
    tensors.push({ name: `base_model.model.${mod}.lora_A.weight`, dtype: 'F32', shape: [r, inp], data: () => encodeFromF32('F32', patternValues(r * inp, sa)) });
    tensors.push({ name: `base_model.model.${mod}.lora_B.weight`, dtype: 'F32', shape: [out, r], data: () => encodeFromF32('F32', patternValues(out * r, sb)) });
  }
  if (opts.mutate) tensors = opts.mutate(tensors);
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  return dir;
}
