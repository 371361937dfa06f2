import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { LoraAdapter } from '../../src/checkpoint/lora.js';
import { applyRowDiff } from '../../src/defense/apply-diff.js';
import { countEdit, projectionCompute, writeHardened } from '../../src/defense/apply.js';
import { closeSources, openSources } from '../../src/defense/io/sources.js';
import { RowDiff } from '../../src/defense/io/row-diff.js';
import { sha256File } from '../../src/util/index.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'fgsn-apply-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const Q = 'model.layers.1.self_attn.q_proj.weight';
const DOWN = 'model.layers.2.mlp.down_proj.weight';
const sel = (): Map<string, Uint32Array> => new Map([[Q, Uint32Array.of(3, 17)], [DOWN, Uint32Array.of(0, 255)]]);

async function sameFiles(a: string, b: string, names: string[]): Promise<void> {
  for (const n of names) expect(Buffer.compare(await readFile(join(a, n)), await readFile(join(b, n))), n).toBe(0);
}

describeTestbed('streaming projection on the dev testbed', () => {
  it('a diff written beside a model (from the scratch diff, after the model) is the same bytes as one written alone', async () => {
    const s = await openSources({ basePath: testbedPath('base'), alignedPath: testbedPath('aligned'), finetunedPath: testbedPath('ft_agnews_p10') });
    const both = join(tmp, 'diff-with-model');
    const alone = join(tmp, 'diff-alone');
    try {
      const r1 = await writeHardened(s, sel(), projectionCompute({ mode: 'add', strength: 2 }), { diffPath: join(both, 'diff.safetensors'), modelDir: join(both, 'model') }, { 'fgsn.method': 'test' });
      const r2 = await writeHardened(s, sel(), projectionCompute({ mode: 'add', strength: 2 }), { diffPath: join(alone, 'diff.safetensors') }, { 'fgsn.method': 'test' });
      expect(Buffer.compare(await readFile(join(both, 'diff.safetensors')), await readFile(join(alone, 'diff.safetensors')))).toBe(0);
      expect(r1.diff!.sha256).toBe(await sha256File(join(both, 'diff.safetensors')));
      expect(r1.diff!.sha256).toBe(r2.diff!.sha256);
      const d = await RowDiff.open(join(both, 'diff.safetensors'));
      try {
        expect(JSON.parse(d.metadata['fgsn.source_sha256'])).toEqual(r1.sourceSha256);
        expect(Object.keys(r1.sourceSha256).length).toBeGreaterThan(0);
      } finally {
        await d.close();
      }
      // No scratch left beside the model.
      expect((await readdir(both)).sort()).toEqual(['diff.safetensors', 'model']);
    } finally {
      await closeSources(s);
    }
  });

  it('restore on a sharded fine-tune: selected rows become aligned, everything else byte-identical; apply-diff reproduces it', async () => {
    const s = await openSources({ basePath: testbedPath('base'), alignedPath: testbedPath('aligned'), finetunedPath: testbedPath('ft_agnews_p10') });
    const out = join(tmp, 'agnews');
    try {
      const r = await writeHardened(s, sel(), projectionCompute({ mode: 'restore' }), { diffPath: join(out, 'diff.safetensors'), modelDir: join(out, 'model') }, { 'fgsn.method': 'test' });
      expect(r.modelFiles).toContain('model-00001-of-00002.safetensors');
      expect(r.modelFiles).toContain('model.safetensors.index.json');
      expect(r.modelFiles).toContain('tokenizer_config.json');
      const counts = countEdit(s, sel());
      expect(counts.rows).toBe(4);
      expect(counts.params).toBe(2 * 256 + 2 * 704);
      expect(counts.perLayer['1'].rows).toBe(2);
    } finally {
      await closeSources(s);
    }
    const hard = await ModelCheckpoint.open(join(out, 'model'));
    const ft = await ModelCheckpoint.open(testbedPath('ft_agnews_p10'));
    const al = await ModelCheckpoint.open(testbedPath('aligned'));
    try {
      expect(hard.sharded).toBe(true);
      for (const name of ft.names()) {
        const h = await hard.readBytes(name);
        if (name !== Q && name !== DOWN) {
          expect(Buffer.compare(h, await ft.readBytes(name)), name).toBe(0);
        }
      }
      const hq = await hard.readF32(Q);
      const aq = await al.readF32(Q);
      const fq = await ft.readF32(Q);
      expect([...hq.subarray(3 * 256, 4 * 256)]).toEqual([...aq.subarray(3 * 256, 4 * 256)]);
      expect([...hq.subarray(4 * 256, 5 * 256)]).toEqual([...fq.subarray(4 * 256, 5 * 256)]);
      expect([...hq.subarray(3 * 256, 4 * 256)]).not.toEqual([...fq.subarray(3 * 256, 4 * 256)]);
    } finally {
      await Promise.all([hard.close(), ft.close(), al.close()]);
    }
    const rebuilt = join(tmp, 'agnews-rebuilt');
    const a = await applyRowDiff(testbedPath('ft_agnews_p10'), join(out, 'diff.safetensors'), rebuilt);
    expect(a.verified).toBe(true);
    expect(a.rowsChanged).toBe(4);
    const names = (await readdir(join(out, 'model'))).sort();
    expect((await readdir(rebuilt)).sort()).toEqual(names);
    await sameFiles(join(out, 'model'), rebuilt, names);
    // a diff refuses a model it was not made from
    await expect(applyRowDiff(testbedPath('ft_sst_p10'), join(out, 'diff.safetensors'), join(tmp, 'wrong'))).rejects.toMatchObject({ code: 'DIFF_SOURCE_MISMATCH' });
  });

  it('F16 fine-tune: the output stays F16 and add writes W_ft + g V rounded to F16', async () => {
    const s = await openSources({ basePath: testbedPath('base'), alignedPath: testbedPath('aligned'), finetunedPath: testbedPath('ft_sst_p10_fp16') });
    const out = join(tmp, 'fp16');
    try {
      await writeHardened(s, sel(), projectionCompute({ mode: 'add', strength: 2 }), { modelDir: out }, {});
    } finally {
      await closeSources(s);
    }
    const hard = await ModelCheckpoint.open(out);
    const ft = await ModelCheckpoint.open(testbedPath('ft_sst_p10_fp16'));
    const al = await ModelCheckpoint.open(testbedPath('aligned'));
    const ba = await ModelCheckpoint.open(testbedPath('base'));
    try {
      expect(hard.tensor(Q).dtype).toBe('F16');
      const [h, f, a, b] = await Promise.all([hard.readF32(Q), ft.readF32(Q), al.readF32(Q), ba.readF32(Q)]);
      for (let j = 0; j < 256; j += 37) {
        const k = 17 * 256 + j;
        const want = f[k] + 2 * (a[k] - b[k]);
        expect(Math.abs(h[k] - want)).toBeLessThanOrEqual(Math.abs(want) * 1e-3 + 1e-6);
      }
      expect(h[16 * 256]).toBe(f[16 * 256]);
    } finally {
      await Promise.all([hard.close(), ft.close(), al.close(), ba.close()]);
    }
  });

  it('LoRA input: the adapter output projects B rows only; the model output is the merged fine-tune elsewhere', async () => {
    const s = await openSources({ basePath: testbedPath('base'), alignedPath: testbedPath('aligned'), adapterPath: testbedPath('lora_sst_p10') });
    const out = join(tmp, 'lora');
    try {
      await writeHardened(s, sel(), projectionCompute({ mode: 'gram' }), { adapterDir: join(out, 'adapter'), modelDir: join(out, 'model'), adapterProjection: { mode: 'gram' } }, {});
    } finally {
      await closeSources(s);
    }
    const orig = await LoraAdapter.open(testbedPath('lora_sst_p10'));
    const hard = await LoraAdapter.open(join(out, 'adapter'));
    const merged = await ModelCheckpoint.open(join(out, 'model'));
    const refMerged = await ModelCheckpoint.open(testbedPath('lora_sst_p10_merged'));
    try {
      const b0 = await orig.readB(Q);
      const b1 = await hard.readB(Q);
      expect([...b1.subarray(0, 3 * 8)]).toEqual([...b0.subarray(0, 3 * 8)]);
      expect([...b1.subarray(3 * 8, 4 * 8)]).not.toEqual([...b0.subarray(3 * 8, 4 * 8)]);
      expect([...(await hard.readA(Q))]).toEqual([...(await orig.readA(Q))]);
      // unselected rows of a merged matrix equal the reference merge (fp32 rounding of W + s·B·A)
      const m = await merged.readF32(Q);
      const ref = await refMerged.readF32(Q);
      for (let k = 0; k < 256; k += 17) expect(m[k]).toBeCloseTo(ref[k], 5);
      // the hardened adapter merged equals the model output on the projected row
      const d = await hard.deltaRowsF32(Q, 3, 4);
      const al = await ModelCheckpoint.open(testbedPath('aligned'));
      const a = await al.readF32(Q);
      await al.close();
      for (let j = 0; j < 256; j += 31) expect(m[3 * 256 + j]).toBeCloseTo(a[3 * 256 + j] + d[j], 5);
    } finally {
      await Promise.all([orig.close(), hard.close(), merged.close(), refMerged.close()]);
    }
  });
});
