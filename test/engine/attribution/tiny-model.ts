/** Seeded random tiny decoder models for the attribution tests (llama and qwen2 layouts). */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bf16ToF32, encodeFromF32, f32ToBf16, writeSafetensors } from '../../../src/checkpoint/index.js';
import type { ModelSpec } from '../../../src/checkpoint/types.js';
import { expectedTensors, linearWeightNames, modelConfigJson } from '../../../src/checkpoint/model-config.js';
import type { RefModel, RefSequence } from '../../support/attribution-reference.js';
import { mulberry32 } from '../../../src/util/prng.js';

export const rng = mulberry32;


export function tinySpec(family: 'llama' | 'qwen2'): ModelSpec {
  const qwen = family === 'qwen2';
  return {
    family,
    vocabSize: 20,
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 4,
    ropeTheta: qwen ? 1_000_000 : 10_000,
    rmsNormEps: qwen ? 1e-6 : 1e-5,
    maxPositionEmbeddings: 64,
    tieWordEmbeddings: qwen,
    qkvBias: qwen,
    oBias: false,
    mlpBias: false,
    hiddenAct: 'silu',
    torchDtype: 'F32',
    bosTokenId: 1,
    eosTokenIds: [2],
    padTokenId: 0,
  };
}

/** Values already rounded to float32, so the fp32 graph and the f64 reference see the same weights. */
export function randomModel(spec: ModelSpec, seed: number, scale = 0.4): RefModel {
  const r = rng(seed);
  const tensors = new Map<string, Float64Array>();
  for (const t of expectedTensors(spec)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const a = new Float64Array(n);
    const isNorm = t.shape.length === 1 && !t.name.endsWith('.bias');
    for (let i = 0; i < n; i++) a[i] = Math.fround(isNorm ? 1 + 0.2 * (r() - 0.5) : scale * 2 * (r() - 0.5));
    tensors.set(t.name, a);
  }
  return { spec, tensors };
}

/** A model near `m`: every linear weight moved by a random delta (another "checkpoint" of the same model). */
export function perturbed(m: RefModel, seed: number, size = 0.05): RefModel {
  const r = rng(seed);
  const tensors = new Map(m.tensors);
  for (const name of linearWeightNames(m.spec)) {
    const w = m.tensors.get(name) as Float64Array;
    tensors.set(name, w.map((x) => Math.fround(x + size * 2 * (r() - 0.5))));
  }
  return { spec: m.spec, tensors };
}

/** Directions M = a - b for every linear weight. */
export function differences(a: RefModel, b: RefModel): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const name of linearWeightNames(a.spec)) {
    const x = a.tensors.get(name) as Float64Array;
    const y = b.tensors.get(name) as Float64Array;
    out.set(name, x.map((v, i) => v - y[i]));
  }
  return out;
}

/** Random sequences of different lengths; the last `respLen` tokens are the scored "response". */
export function randomSequences(spec: ModelSpec, seed: number, lengths: number[], respLen = 3): RefSequence[] {
  const r = rng(seed);
  return lengths.map((len) => {
    const ids = Array.from({ length: len }, (_, i) => (i === 0 ? 1 : 3 + Math.floor(r() * (spec.vocabSize - 3))));
    const lossPositions = Array.from({ length: Math.min(respLen, len - 1) }, (_, i) => len - 1 - i).reverse();
    return { ids, lossPositions };
  });
}

/** W + eps * M on row r of one weight. */
export function withRowStep(m: RefModel, name: string, row: number, dir: Float64Array, eps: number): RefModel {
  const w = (m.tensors.get(name) as Float64Array).slice();
  const nin = w.length / rowsOf(m, name);
  for (let j = 0; j < nin; j++) w[row * nin + j] += eps * dir[row * nin + j];
  const tensors = new Map(m.tensors);
  tensors.set(name, w);
  return { spec: m.spec, tensors };
}

export function rowsOf(m: RefModel, name: string): number {
  const t = expectedTensors(m.spec).find((e) => e.name === name);
  if (t === undefined) throw new Error(`no tensor ${name}`);
  return t.shape[0];
}

/** Writes `m` as an HF model folder (config.json + model.safetensors, float32 or bf16). */
export async function writeModelFolder(m: RefModel, dir: string, dtype: 'F32' | 'BF16' = 'F32'): Promise<void> {
  const s = m.spec;
  mkdirSync(dir, { recursive: true });
  const config = modelConfigJson({ ...s, torchDtype: dtype });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  await writeSafetensors(join(dir, 'model.safetensors'), expectedTensors(s).map((t) => ({
    name: t.name,
    dtype,
    shape: t.shape,
    data: () => encodeFromF32(dtype, Float32Array.from(m.tensors.get(t.name) as Float64Array)),
  })), { format: 'pt' });
}

/** The model as its bf16 checkpoint would be read back (for comparing against a bf16 folder). */
export function roundedToBf16(m: RefModel): RefModel {
  const tensors = new Map<string, Float64Array>();
  for (const [k, v] of m.tensors) tensors.set(k, Float64Array.from(bf16ToF32(f32ToBf16(Float32Array.from(v)))));
  return { spec: m.spec, tensors };
}
