/**
 * Attribution under a static row patch (Engine.attribute({ patch })): on the demo's planted trio, the scores
 * and loss of the fine-tune with some rows replaced equal those of a model folder written with the same rows,
 * in one pass and one layer per pass (forward chunks, segments), and differ from the unpatched fine-tune's
 * (so the closeness cannot hold by accident). The same for a LoRA fine-tune (adapter as extra MatMuls: the
 * patch holds merged values) against its merged written model. The patched graphs and the patch file are
 * cached under the patch's digest: another patch builds its own.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFromF32, linearWeightNames, linearWeightShape, ModelCheckpoint, writeSafetensors } from '../../src/checkpoint/index.js';
import { editRows, projectionCompute, writeHardened } from '../../src/defense/apply.js';
import { closeSources, openSources, type WeightSources } from '../../src/defense/io/sources.js';
import type { Selection } from '../../src/defense/math/select.js';
import { demoSets, writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { checkpointDifference, loadEngine, type AttributionResult, type RowPatch } from '../../src/engine/index.js';
import { mulberry32 } from '../../src/util/prng.js';
import { maxAbsDiff, tempDir } from './helpers.js';

const tmp = tempDir('fgsn-attr-patch-');
let tb: DemoTestbed;
let base: ModelCheckpoint;
let aligned: ModelCheckpoint;
const probes = demoSets().harmfulProbes.slice(0, 6);
const prompts = probes.map((p) => p.prompt);
const responses = probes.map((p) => p.response);

beforeAll(async () => {
  tb = await writeDemoTestbed(join(tmp.path, 'demo'));
  base = await ModelCheckpoint.open(tb.base);
  aligned = await ModelCheckpoint.open(tb.aligned);
}, 120_000);
afterAll(async () => {
  await base?.close();
  await aligned?.close();
  tmp.remove();
});

/** A few rows of every linear weight of both layers (different rows per weight). */
function selection(s: WeightSources): Selection {
  const sel: Selection = new Map();
  linearWeightNames(s.spec).forEach((name, i) => {
    const [rows] = linearWeightShape(s.spec, name) as [number, number];
    sel.set(name, Uint32Array.from(new Set([i % rows, (i * 7 + 3) % rows, (i * 13 + 5) % rows])).sort());
  });
  return sel;
}

const scale = (r: AttributionResult): number => {
  let m = 0;
  for (const v of r.scores.get('V')!.values()) for (const x of v) m = Math.max(m, Math.abs(x));
  return m;
};

/** Largest score difference relative to the reference's largest score. */
function relDiff(a: AttributionResult, b: AttributionResult): number {
  const sa = a.scores.get('V')!;
  const sb = b.scores.get('V')!;
  expect([...sa.keys()].sort()).toEqual([...sb.keys()].sort());
  let d = 0;
  for (const [w, v] of sa) d = Math.max(d, maxAbsDiff(v, sb.get(w)!));
  return d / scale(b);
}

async function checkPatched(name: string, s: WeightSources, engineDir: string, adapter: string | undefined): Promise<RowPatch> {
  const root = join(tmp.path, name);
  const sel = selection(s);
  const compute = projectionCompute({ mode: 'add', strength: 3 });
  const patch = await editRows(s, sel, compute);
  const written = join(root, 'written');
  await writeHardened(s, sel, compute, { modelDir: written }, {});
  const cacheDir = join(root, 'cache');
  const onFt = await loadEngine(engineDir, { cacheDir, ...(adapter ? { adapter } : {}) });
  const onWritten = await loadEngine(written, { cacheDir });
  const directions = [checkpointDifference('V', aligned, base)];
  try {
    for (const layersPerPass of [undefined, 1]) {
      const opts = { directions, reduction: 'sum' as const, ...(layersPerPass ? { layersPerPass } : {}) };
      const want = await onWritten.attribute(prompts, responses, opts);
      const got = await onFt.attribute(prompts, responses, { ...opts, patch });
      const plain = await onFt.attribute(prompts, responses, opts);
      expect(got.layerChunks.length, `${name} chunks`).toBe(layersPerPass ? s.spec.numLayers : 1);
      expect(got.tokens).toBe(want.tokens);
      expect(scale(want)).toBeGreaterThan(0);
      // The patch changes the scores and the loss well beyond the tolerance...
      expect(relDiff(plain, want), `${name} lpp=${layersPerPass}: unpatched vs written`).toBeGreaterThan(1e-3);
      expect(Math.abs(plain.loss - want.loss)).toBeGreaterThan(1e-4 * Math.abs(want.loss));
      // ...and with it, the fine-tune's files give the written model's numbers.
      expect(relDiff(got, want), `${name} lpp=${layersPerPass}: patched vs written`).toBeLessThan(1e-5);
      expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-5 * Math.abs(want.loss) + 1e-6);
    }
  } finally {
    await onFt.close();
    await onWritten.close();
  }
  return patch;
}

describe('Engine.attribute with a static row patch', () => {
  it('full fine-tune: equals attribution on the written model (one pass and per layer); graphs keyed by the patch', async () => {
    const s = await openSources({ basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned });
    try {
      const patch = await checkPatched('full', s, tb.finetuned, undefined);
      // One patch file per patch digest, beside the variants built on it.
      const cacheDir = join(tmp.path, 'full', 'cache');
      const files = async () => (await readdir(cacheDir, { recursive: true })).map(String);
      const patchFiles = (await files()).filter((f) => /patch-[0-9a-f]+\.f32$/.test(f));
      expect(patchFiles).toHaveLength(1);
      // Another patch (one row's values changed): its own file and graphs, and other scores.
      const other = new Map(patch);
      const [w0, p0] = [...patch][0];
      const values = p0.values.slice();
      for (let j = 0; j < values.length / p0.rows.length; j++) values[j] += 0.5;
      other.set(w0, { rows: p0.rows, values });
      const e = await loadEngine(tb.finetuned, { cacheDir });
      try {
        const directions = [checkpointDifference('V', aligned, base)];
        const a = await e.attribute(prompts, responses, { directions, reduction: 'sum', patch });
        const b = await e.attribute(prompts, responses, { directions, reduction: 'sum', patch: other });
        expect(Math.abs(a.loss - b.loss)).toBeGreaterThan(1e-6);
      } finally {
        await e.close();
      }
      expect((await files()).filter((f) => /patch-[0-9a-f]+\.f32$/.test(f))).toHaveLength(2);
      // A patch on something that is not a linear weight is refused.
      const e2 = await loadEngine(tb.finetuned, { cacheDir });
      try {
        await expect(e2.attribute(prompts, responses, {
          directions: [checkpointDifference('V', aligned, base)],
          patch: new Map([['model.norm.weight', { rows: Uint32Array.of(0), values: new Float32Array(96) }]]),
        })).rejects.toMatchObject({ code: 'DEFENSE_OPTION_INVALID' });
      } finally {
        await e2.close();
      }
    } finally {
      await closeSources(s);
    }
  }, 300_000);

  it('LoRA fine-tune (adapter as extra MatMuls): the merged patch equals attribution on the written merged model', async () => {
    const adapterDir = join(tmp.path, 'adapter');
    await writeAdapter(adapterDir, aligned.spec, ['self_attn.q_proj', 'self_attn.v_proj', 'mlp.down_proj']);
    const s = await openSources({ basePath: tb.base, alignedPath: tb.aligned, adapterPath: adapterDir });
    try {
      await checkPatched('lora', s, tb.aligned, adapterDir);
    } finally {
      await closeSources(s);
    }
  }, 300_000);
});

/** A PEFT adapter (r 2, alpha 4, float32) on every layer's `modules`, seeded. */
async function writeAdapter(dir: string, spec: ModelCheckpoint['spec'], modules: string[]): Promise<void> {
  const R = 2;
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', r: R, lora_alpha: 4, target_modules: modules.map((m) => m.split('.')[1]), bias: 'none', fan_in_fan_out: false, task_type: 'CAUSAL_LM',
  }));
  const r = mulberry32(5);
  const tensors = [];
  for (let l = 0; l < spec.numLayers; l++) {
    for (const m of modules) {
      const [rows, cols] = linearWeightShape(spec, `model.layers.${l}.${m}.weight`) as [number, number];
      const a = Float32Array.from({ length: R * cols }, () => (r() - 0.5) * 0.4);
      const b = Float32Array.from({ length: rows * R }, () => (r() - 0.5) * 0.4);
      const key = `base_model.model.model.layers.${l}.${m}`;
      tensors.push({ name: `${key}.lora_A.weight`, dtype: 'F32' as const, shape: [R, cols], data: () => encodeFromF32('F32', a) });
      tensors.push({ name: `${key}.lora_B.weight`, dtype: 'F32' as const, shape: [rows, R], data: () => encodeFromF32('F32', b) });
    }
  }
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
}
