/**
 * PEFT LoRA adapters on the families with their own module names: Phi-3's fused qkv_proj / gate_up_proj and
 * Gemma 3's projections (next to its q/k norms). Applied merged and as extra MatMuls, both match the reference
 * forward on W + (alpha / r) B A computed here; an adapter naming Phi-3's unfused q_proj is refused.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeFromF32 } from '../../src/checkpoint/dtypes.js';
import { linearWeightShape } from '../../src/checkpoint/model-config.js';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { LoraAdapter } from '../../src/checkpoint/lora.js';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.js';
import { loadEngine } from '../../src/engine/index.js';
import { writeSyntheticFromConfig } from '../support/synthetic/synthetic-model.js';
import { mulberry32 } from '../../src/util/prng.js';
import { FAMILY_CONFIGS } from '../support/synthetic/family-configs.js';
import { expectCloseToReference, tempDir } from './helpers.js';
import { referenceForward, type Weights } from './reference-forward.js';

const tmp = tempDir('fgsn-flora-');
afterAll(() => tmp.remove());

const CASES: [string, string[]][] = [
  ['phi3', ['self_attn.qkv_proj', 'mlp.gate_up_proj']],
  ['gemma3', ['self_attn.q_proj', 'self_attn.k_proj', 'mlp.down_proj']],
];
const R = 2;
const ALPHA = 4;

async function writeAdapter(dir: string, spec: ModelCheckpoint['spec'], modules: string[]): Promise<Map<string, { a: Float32Array; b: Float32Array }>> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', r: R, lora_alpha: ALPHA, target_modules: modules.map((m) => m.split('.')[1]), bias: 'none', fan_in_fan_out: false, task_type: 'CAUSAL_LM',
  }));
  const r = mulberry32(9);
  const out = new Map<string, { a: Float32Array; b: Float32Array }>();
  const tensors = [];
  for (let l = 0; l < spec.numLayers; l++) {
    for (const m of modules) {
      const base = `model.layers.${l}.${m}.weight`;
      const [rows, cols] = linearWeightShape(spec, base) as [number, number];
      const a = Float32Array.from({ length: R * cols }, () => (r() - 0.5) * 0.4);
      const b = Float32Array.from({ length: rows * R }, () => (r() - 0.5) * 0.4);
      out.set(base, { a, b });
      const key = `base_model.model.model.layers.${l}.${m}`;
      tensors.push({ name: `${key}.lora_A.weight`, dtype: 'F32' as const, shape: [R, cols], data: () => encodeFromF32('F32', a) });
      tensors.push({ name: `${key}.lora_B.weight`, dtype: 'F32' as const, shape: [rows, R], data: () => encodeFromF32('F32', b) });
    }
  }
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  return out;
}

describe.each(CASES)('LoRA on a tiny %s', (name, modules) => {
  it('merged and matmul application match the reference on W + scaling B A', async () => {
    const root = join(tmp.path, name);
    await writeSyntheticFromConfig(join(root, 'model'), FAMILY_CONFIGS[name], { dtype: 'F32', seed: 4, std: 0.08 });
    const ckpt = await ModelCheckpoint.open(join(root, 'model'));
    try {
      const lora = await writeAdapter(join(root, 'adapter'), ckpt.spec, modules);
      const merged = new Map<string, Float32Array>();
      for (const n of ckpt.names()) {
        const w = await ckpt.readF32(n);
        const ab = lora.get(n);
        if (ab !== undefined) {
          const [rows, cols] = linearWeightShape(ckpt.spec, n) as [number, number];
          for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
            let s = 0;
            for (let k = 0; k < R; k++) s += ab.b[i * R + k] * ab.a[k * cols + j];
            w[i * cols + j] += (ALPHA / R) * s;
          }
        }
        merged.set(n, w);
      }
      const w: Weights = (n) => merged.get(n) as Float32Array;
      const ids = [2, 4, 11, 12, 13, 14, 15, 5];
      const ref = referenceForward(ckpt.spec, w, ids);
      for (const loraMode of ['merged', 'matmul'] as const) {
        const engine = await loadEngine(join(root, 'model'), { adapter: join(root, 'adapter'), loraMode, cacheDir: join(root, 'cache') });
        try {
          const cap = await engine.capture([ids], { embed: 'all', hidden: 'all', mlpAct: 'all', finalNorm: 'all', logits: 'all' }, { batchSize: 1 });
          expectCloseToReference(cap.sequences[0], ref, ckpt.spec.numLayers, 1e-4, `${name} ${loraMode}`);
        } finally {
          await engine.close();
        }
      }
    } finally {
      await ckpt.close();
    }
  });
});

it('an adapter naming Phi-3 modules that do not exist there (q_proj) is refused', async () => {
  const root = join(tmp.path, 'phi3-bad');
  await writeSyntheticFromConfig(join(root, 'model'), FAMILY_CONFIGS.phi3, { dtype: 'F32', seed: 4 });
  const ckpt = await ModelCheckpoint.open(join(root, 'model'));
  try {
    // Shapes from the unfused layout Phi-3 does not have.
    const spec = { ...ckpt.spec, fusedProjections: false };
    await writeAdapter(join(root, 'adapter'), spec, ['self_attn.q_proj']);
    await expect(LoraAdapter.open(join(root, 'adapter'), ckpt.spec)).rejects.toMatchObject({ code: 'ADAPTER_BASE_MISMATCH' });
  } finally {
    await ckpt.close();
  }
});
