/**
 * Adapter in, adapter out for row-sparse edits: k edited rows become a rank-k update appended to the adapter
 * (or a fresh adapter over a full fine-tune), and the output adapter merged over its base equals the hardened
 * model within 1e-6. On the planted demo trio (no testbed needed) with a seeded random LoRA over it.
 */
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { LoraAdapter, appendRowUpdate, loraDeltaRows } from '../../src/checkpoint/lora.js';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.js';
import { countEdit, projectionCompute, writeHardened } from '../../src/defense/apply.js';
import { closeSources, openSources } from '../../src/defense/io/sources.js';
import { demoSets, writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { runHarden } from '../../src/pipeline/harden.js';
import { mulberry32 } from '../../src/util/prng.js';

describe('appendRowUpdate (hand-checked)', () => {
  it('appends one-hot B columns and A rows of delta / scaling; pads to the output rank', () => {
    // 3x2 matrix, rank-1 input pair B=[1,0,2]^T, A=[1,1], scaling 2; edit row 1 by delta [4, -2].
    const { a, b } = appendRowUpdate({ a: Float32Array.of(1, 1), b: Float32Array.of(1, 0, 2), rank: 1 }, 3, 2, Uint32Array.of(1), Float32Array.of(4, -2), 2, 3);
    expect([...a]).toEqual([1, 1, 2, -1, 0, 0]);
    expect([...b]).toEqual([1, 0, 0, 0, 1, 0, 2, 0, 0]);
    // scaling * B' A' = scaling * B A + delta on row 1
    expect([...loraDeltaRows(b, a, 3, 3, 2, 2)]).toEqual([2, 2, 4, -2, 4, 4]);
  });

  it('a fresh adapter (no input pair) and its bounds', () => {
    const { a, b } = appendRowUpdate(null, 2, 2, Uint32Array.of(0, 1), Float32Array.of(1, 2, 3, 4), 1, 2);
    expect([...loraDeltaRows(b, a, 2, 2, 2, 1)]).toEqual([1, 2, 3, 4]);
    expect(() => appendRowUpdate(null, 2, 2, Uint32Array.of(0, 1), Float32Array.of(1, 2, 3, 4), 1, 1)).toThrow(RangeError);
    expect(() => appendRowUpdate(null, 2, 2, Uint32Array.of(5), Float32Array.of(1, 2), 1, 1)).toThrow(RangeError);
  });
});

const Q = 'model.layers.0.self_attn.q_proj.weight';
const V = 'model.layers.1.self_attn.v_proj.weight';
const GATE = 'model.layers.0.mlp.gate_proj.weight';
const DOWN = 'model.layers.0.mlp.down_proj.weight';

let tmp: string;
let tb: DemoTestbed;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'fgsn-rsa-'));
  tb = await writeDemoTestbed(join(tmp, 'tb'));
}, 60_000);
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A seeded rank-2 LoRA over the aligned demo model on q_proj (layer 0) and v_proj (layer 1). */
async function writeRandomAdapter(dir: string, config: Record<string, unknown>): Promise<void> {
  await mkdir(dir, { recursive: true });
  const m = await ModelCheckpoint.open(tb.aligned);
  const rnd = mulberry32(7);
  const tensors = [];
  for (const name of [Q, V]) {
    const [dOut, dIn] = m.tensor(name).shape;
    const mod = name.slice(0, -'.weight'.length);
    const a = Float32Array.from({ length: 2 * dIn }, () => rnd() - 0.5);
    const b = Float32Array.from({ length: dOut * 2 }, () => 0.1 * (rnd() - 0.5));
    tensors.push({ name: `base_model.model.${mod}.lora_A.weight`, dtype: 'F32' as const, shape: [2, dIn], data: () => new Uint8Array(a.buffer) });
    tensors.push({ name: `base_model.model.${mod}.lora_B.weight`, dtype: 'F32' as const, shape: [dOut, 2], data: () => new Uint8Array(b.buffer) });
  }
  await m.close();
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj', 'v_proj'], bias: 'none', task_type: 'CAUSAL_LM', ...config,
  }));
}

/** max |hardened - (base + merge(adapter))| over every linear weight of the model. */
async function mergeError(hardenedDir: string, baseDir: string, adapterDir: string): Promise<{ maxErr: number; changed: number }> {
  const hard = await ModelCheckpoint.open(hardenedDir);
  const base = await ModelCheckpoint.open(baseDir);
  const ad = await LoraAdapter.open(adapterDir, base.spec);
  let maxErr = 0;
  let changed = 0;
  try {
    for (const name of hard.names().filter((n) => n.endsWith('_proj.weight'))) {
      const h = await hard.readF32(name);
      const w = await base.readF32(name);
      const [dOut] = hard.tensor(name).shape;
      const d = ad.targets().includes(name) ? await ad.deltaRowsF32(name, 0, dOut) : new Float32Array(w.length);
      for (let k = 0; k < h.length; k++) {
        maxErr = Math.max(maxErr, Math.abs(h[k] - (w[k] + d[k])));
        if (h[k] !== w[k]) changed++;
      }
    }
  } finally {
    await Promise.all([hard.close(), base.close(), ad.close()]);
  }
  return { maxErr, changed };
}

const sel = (): Map<string, Uint32Array> => new Map([[Q, Uint32Array.of(3, 17)], [GATE, Uint32Array.of(5)], [DOWN, Uint32Array.of(0, 83, 90)]]);

describe('row-sparse adapter output', () => {
  it.each(['add', 'realign'] as const)('LoRA input, %s mode: the rank grows by the most rows per matrix and the merge equals the hardened model', async (mode) => {
    const input = join(tmp, `lora-in-${mode}`);
    await writeRandomAdapter(input, { base_model_name_or_path: '/srv/private/aligned' });
    const out = join(tmp, `lora-out-${mode}`);
    const s = await openSources({ basePath: tb.base, alignedPath: tb.aligned, adapterPath: input });
    try {
      await writeHardened(s, sel(), projectionCompute({ mode, strength: 2 }), { modelDir: join(out, 'model'), adapterDir: join(out, 'adapter') }, { 'fgsn.method': 'test' });
      expect(countEdit(s, sel()).rows).toBe(6);
    } finally {
      await closeSources(s);
    }
    const config = JSON.parse(await readFile(join(out, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config.r).toBe(2 + 3);
    expect(config.lora_alpha).toBe(2 * 5); // scaling kept: 4 / 2
    expect(config.base_model_name_or_path).toBeNull(); // an absolute path is never written
    const ad = await LoraAdapter.open(join(out, 'adapter'));
    expect(ad.targets()).toEqual([DOWN, GATE, Q, V].sort());
    await ad.close();
    const { maxErr, changed } = await mergeError(join(out, 'model'), tb.aligned, join(out, 'adapter'));
    expect(changed).toBeGreaterThan(0);
    expect(maxErr).toBeLessThanOrEqual(1e-6);
    // Row 3 of q_proj (a LoRA target): realign drops the adapter's delta there (aligned + 2 V), add keeps it.
    const [hard, al, ba] = await Promise.all([join(out, 'model'), tb.aligned, tb.base].map((d) => ModelCheckpoint.open(d)));
    try {
      const [h, a, b] = await Promise.all([hard, al, ba].map((c) => c.readF32(Q)));
      const dIn = hard.tensor(Q).shape[1];
      let fromAligned = 0;
      for (let j = 3 * dIn; j < 4 * dIn; j++) fromAligned = Math.max(fromAligned, Math.abs(h[j] - (a[j] + 2 * (a[j] - b[j]))));
      if (mode === 'realign') expect(fromAligned).toBeLessThanOrEqual(1e-6);
      else expect(fromAligned).toBeGreaterThan(1e-4);
    } finally {
      await Promise.all([hard, al, ba].map((c) => c.close()));
    }
  });

  it('full fine-tune input: a fresh adapter over the fine-tune; its merge equals the hardened model', async () => {
    const out = join(tmp, 'full-out');
    const s = await openSources({ basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned });
    try {
      await writeHardened(s, sel(), projectionCompute({ mode: 'restore' }), { modelDir: join(out, 'model'), adapterDir: join(out, 'adapter') }, {});
    } finally {
      await closeSources(s);
    }
    const config = JSON.parse(await readFile(join(out, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ peft_type: 'LORA', r: 3, lora_alpha: 3 });
    expect(new RegExp(`^(?:${String(config.target_modules)})$`).test('model.layers.0.mlp.gate_proj')).toBe(true);
    expect(new RegExp(`^(?:${String(config.target_modules)})$`).test('model.layers.1.mlp.gate_proj')).toBe(false);
    const { maxErr, changed } = await mergeError(join(out, 'model'), tb.finetuned, join(out, 'adapter'));
    expect(changed).toBeGreaterThan(0);
    expect(maxErr).toBeLessThanOrEqual(1e-6);
  });

  it('the default method end to end with --format adapter on a full fine-tune (evaluated through the adapter)', async () => {
    const sets = demoSets();
    const outDir = join(tmp, 'pipeline');
    const r = await runHarden({
      basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned,
      harmful: sets.harmfulProbes, benign: sets.benignProbes, task: sets.taskProbes,
      method: 'fgsn', outputs: ['adapter'], outDir, cacheDir: join(tmp, 'cache'),
      evaluate: { harmful: sets.harmfulEval, tasks: { review: sets.taskEval.map((t) => ({ prompt: t.prompt, response: t.answer })) } },
    });
    expect(r.summary.rowsChanged).toBeGreaterThan(0);
    expect(r.artifacts.map((a) => a.name)).toEqual(expect.arrayContaining(['adapter/adapter_model.safetensors', 'adapter/adapter_config.json']));
    expect(r.artifacts.some((a) => a.name.startsWith('model/'))).toBe(false);
    // The evaluation ran on the fine-tune with the output adapter applied: the attack is undone through it.
    expect(r.summary.metrics?.harmful_asr).toBeLessThanOrEqual(0.05);
    expect(r.summary.metrics?.acc_review).toBe(1);
  }, 240_000);
});
