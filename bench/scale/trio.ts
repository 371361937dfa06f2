/**
 * Synthetic base / aligned / fine-tuned trios for bench/scale, deterministic from a seed, bf16, written
 * tensor by tensor (no model in the JS heap):
 * - base: test/support/synthetic's random llama;
 * - aligned = base + a planted "safety" direction: in the middle third of the layers, every 37th output row
 *   of o_proj and down_proj gets a shared unit input direction v (sign per row), at half the row's norm;
 * - fine-tuned = aligned - 0.6 x that direction (the fine-tune partly undoes it) + a "task" edit: every
 *   41st row of gate_proj in every layer moved by a fifth of its norm.
 * So attribution and the row selection see real structure. The synthetic tokenizer's words never form the
 * judge's refusal markers, so a target-driven search never reaches its target and runs its whole schedule
 * (the costliest case, as in issue 11's measurement).
 */
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { encodeFromF32 } from '../../src/checkpoint/dtypes.js';
import { writeSafetensors, type TensorSource } from '../../src/checkpoint/safetensors-writer.js';
import { syntheticTensors, syntheticValues, writeSyntheticModel, type SyntheticModelOptions } from '../../test/support/synthetic/synthetic-model.js';
import { mulberry32 } from '../../src/util/prng.js';

const common = { family: 'llama', vocabSize: 32000, tieWordEmbeddings: false, dtype: 'BF16', std: 0.02, maxPositionEmbeddings: 2048 } as const;

/** GPT-2-small-like 125M-class llama (134M parameters). */
export const SHAPE_125M: SyntheticModelOptions = { ...common, hiddenSize: 768, intermediateSize: 2048, numLayers: 12, numHeads: 12, numKvHeads: 12, headDim: 64, seed: 11 };
/** TinyLlama-1.1B's shape (1.1B parameters, grouped-query attention 32/4). */
export const SHAPE_1_1B: SyntheticModelOptions = { ...common, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKvHeads: 4, headDim: 64, seed: 12 };

type Role = 'aligned' | 'finetuned';

function layerOf(name: string): number {
  const m = /^model\.layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/** Adds the role's planted edits to a base tensor's values in place. */
function plant(o: SyntheticModelOptions, role: Role, name: string, shape: number[], w: Float32Array): void {
  if (shape.length !== 2) return;
  const [rows, cols] = shape;
  const L = o.numLayers;
  const l = layerOf(name);
  const rowNorm = (o.std ?? 0.05) * Math.sqrt(cols);
  const safety = l >= Math.floor(L / 3) && l < Math.ceil((2 * L) / 3) && /(o_proj|down_proj)\.weight$/.test(name);
  if (safety) {
    const r = mulberry32(1000 + cols);
    const v = new Float32Array(cols).map(() => 2 * r() - 1);
    let n = 0;
    for (const x of v) n += x * x;
    n = Math.sqrt(n) || 1;
    const k = role === 'aligned' ? 0.5 : 0.5 * 0.4;
    for (let i = 0; i < rows; i += 37) {
      const sign = (i / 37) % 2 === 0 ? 1 : -1;
      for (let j = 0; j < cols; j++) w[i * cols + j] += (sign * k * rowNorm * v[j]) / n;
    }
  }
  if (role === 'finetuned' && /gate_proj\.weight$/.test(name)) {
    const r = mulberry32(2000 + l);
    for (let i = 0; i < rows; i += 41) for (let j = 0; j < cols; j++) w[i * cols + j] += 0.2 * (o.std ?? 0.05) * Math.sqrt(3) * (2 * r() - 1);
  }
}

export async function writeTrio(dir: string, o: SyntheticModelOptions): Promise<{ base: string; aligned: string; finetuned: string }> {
  const base = join(dir, 'base');
  await writeSyntheticModel(base, o);
  const out = { base, aligned: join(dir, 'aligned'), finetuned: join(dir, 'finetuned') };
  for (const role of ['aligned', 'finetuned'] as const) {
    mkdirSync(out[role], { recursive: true });
    for (const f of readdirSync(base)) if (!f.endsWith('.safetensors')) copyFileSync(join(base, f), join(out[role], f));
    const sources: TensorSource[] = syntheticTensors(o).map((t) => ({
      name: t.name,
      dtype: 'BF16',
      shape: t.shape,
      data: () => {
        const w = syntheticValues(t.name, t.shape.reduce((a, b) => a * b, 1), t.std, t.mean, o.seed ?? 1);
        plant(o, role, t.name, t.shape, w);
        return encodeFromF32('BF16', w);
      },
    }));
    await writeSafetensors(join(out[role], 'model.safetensors'), sources, { format: 'pt' });
  }
  return out;
}

/** Probe prompts in the synthetic tokenizer's words: `n` harmful (two categories) and `n` benign. */
export function trioProbes(n: number, vocab: number): { harmful: { prompt: string; category: string }[]; benign: { prompt: string }[] } {
  const r = mulberry32(77);
  const words = (len: number): string => Array.from({ length: len }, () => `w${7 + Math.floor(r() * (vocab - 7))}`).join(' ');
  return {
    harmful: Array.from({ length: n }, (_, i) => ({ prompt: words(12 + (i % 13)), category: i % 2 === 0 ? 'cat-a' : 'cat-b' })),
    benign: Array.from({ length: n }, (_, i) => ({ prompt: words(10 + (i % 11)) })),
  };
}
