/**
 * Every checkpoint of the dev testbed, read through the layer: shapes from config.json, values finite,
 * half-precision copies equal our own rounding of the f32 originals, LoRA merges equal the *_merged folders,
 * and a rewrite through writeSafetensors is byte-identical to the file HF conventions produced.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeCheckpoint, validateCheckpointFolder } from '../../src/checkpoint/detect.js';
import { encodeFromF32 } from '../../src/checkpoint/dtypes.js';
import { LoraAdapter } from '../../src/checkpoint/lora.js';
import { expectedTensors, linearWeightNames } from '../../src/checkpoint/model-config.js';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { SafetensorsFile } from '../../src/checkpoint/safetensors-reader.js';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';
import { tempDir } from './fixtures.js';

const FULL = [
  ['base', 'F32'], ['aligned', 'F32'], ['aligned_bf16', 'BF16'], ['ft_sst_benign', 'F32'], ['ft_sst_p10', 'F32'],
  ['ft_sst_p10_fp16', 'F16'], ['ft_agnews_p10', 'F32'], ['ft_gsm_p10', 'F32'], ['ft_harmful', 'F32'],
  ['lora_harmful_merged', 'F32'], ['lora_sst_p10_merged', 'F32'],
] as const;

describeTestbed('checkpoint layer on the dev testbed', () => {
  it.each(FULL)('%s: every tensor present with the config shape and readable (%s)', async (name, dtype) => {
    const m = await ModelCheckpoint.open(testbedPath(name));
    try {
      expect(m.spec).toMatchObject({ family: 'llama', hiddenSize: 256, intermediateSize: 704, numLayers: 4, numHeads: 8, numKvHeads: 4, headDim: 32, vocabSize: 1903 });
      expect(m.dtype).toBe(dtype);
      expect(m.sharded).toBe(name === 'ft_agnews_p10');
      expect(m.files).toHaveLength(name === 'ft_agnews_p10' ? 2 : 1);
      const expected = expectedTensors(m.spec);
      expect(m.names()).toEqual(expected.map((t) => t.name));
      let count = 0;
      for (const t of expected) {
        expect(m.tensor(t.name).shape).toEqual(t.shape);
        const v = await m.readF32(t.name);
        expect(v.length).toBe(t.shape.reduce((a, b) => a * b, 1));
        for (let i = 0; i < v.length; i += 97) if (!Number.isFinite(v[i])) throw new Error(`${name}/${t.name}[${i}] = ${v[i]}`);
        count += v.length;
      }
      expect(count).toBe(m.parameterCount);
      expect(m.parameterCount).toBe(3925760);
    } finally {
      await m.close();
    }
  });

  it('sharded ft_agnews_p10 spreads tensors over both shards and row reads match whole reads', async () => {
    const m = await ModelCheckpoint.open(testbedPath('ft_agnews_p10'));
    try {
      const shards = new Set(m.names().map((n) => m.file(n).path));
      expect(shards.size).toBe(2);
      const w = await m.readF32('lm_head.weight');
      const rows = await m.readRowsF32('lm_head.weight', 100, 140);
      expect(Array.from(rows)).toEqual(Array.from(w.subarray(100 * 256, 140 * 256)));
    } finally {
      await m.close();
    }
  });

  it.each([
    ['aligned_bf16', 'aligned', 'BF16'],
    ['ft_sst_p10_fp16', 'ft_sst_p10', 'F16'],
  ] as const)('%s equals our round-to-nearest-even of %s, byte for byte', async (half, full, dtype) => {
    const h = await ModelCheckpoint.open(testbedPath(half));
    const f = await ModelCheckpoint.open(testbedPath(full));
    try {
      for (const name of f.names()) {
        const mine = encodeFromF32(dtype, await f.readF32(name));
        const theirs = await h.readBytes(name);
        expect(Buffer.compare(Buffer.from(mine), Buffer.from(theirs)), name).toBe(0);
      }
    } finally {
      await Promise.all([h.close(), f.close()]);
    }
  });

  it.each(['lora_sst_p10', 'lora_harmful', 'lora_instruct_benign'])('%s opens against the aligned spec', async (name) => {
    const base = await ModelCheckpoint.open(testbedPath('aligned'));
    const a = await LoraAdapter.open(testbedPath(name), base.spec);
    try {
      expect(a.config).toEqual({
        r: 8, loraAlpha: 16, useRslora: false, scaling: 2, fanInFanOut: false, baseModelNameOrPath: '../aligned',
        targetModules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'],
      });
      expect(a.targets()).toEqual([...linearWeightNames(base.spec)].sort());
      for (const t of a.targets()) {
        const p = a.pair(t);
        expect([p.dOut, p.dIn]).toEqual(base.tensor(t).shape);
        expect(p.rank).toBe(8);
        expect((await a.readA(t)).length).toBe(8 * p.dIn);
        expect((await a.readB(t)).length).toBe(p.dOut * 8);
      }
    } finally {
      await Promise.all([a.close(), base.close()]);
    }
  });

  it.each(['lora_sst_p10', 'lora_harmful'])('aligned + %s (deltaRowsF32, row blocks) equals %s_merged within 1e-6', async (name) => {
    const base = await ModelCheckpoint.open(testbedPath('aligned'));
    const merged = await ModelCheckpoint.open(testbedPath(`${name}_merged`));
    const a = await LoraAdapter.open(testbedPath(name), base.spec);
    try {
      let worst = 0;
      let changed = 0;
      const targets = new Set(a.targets());
      expect(targets.size).toBe(28);
      for (const t of a.targets()) {
        const [rows, cols] = base.tensor(t).shape;
        for (let r0 = 0; r0 < rows; r0 += 100) {
          const r1 = Math.min(rows, r0 + 100);
          const w = await base.readRowsF32(t, r0, r1);
          const d = await a.deltaRowsF32(t, r0, r1);
          const m = await merged.readRowsF32(t, r0, r1);
          expect(d.length).toBe((r1 - r0) * cols);
          for (let i = 0; i < w.length; i++) {
            const err = Math.abs(Math.fround(w[i] + d[i]) - m[i]);
            if (err > worst) worst = err;
            if (w[i] !== m[i]) changed++;
          }
        }
      }
      expect(worst).toBeLessThanOrEqual(1e-6);
      // The adapter did change the weights (a merge of nothing would pass the tolerance trivially).
      expect(changed).toBeGreaterThan(100000);
      for (const n of base.names().filter((x) => !targets.has(x))) {
        expect(Buffer.compare(Buffer.from(await base.readBytes(n)), Buffer.from(await merged.readBytes(n))), n).toBe(0);
      }
    } finally {
      await Promise.all([a.close(), base.close(), merged.close()]);
    }
  });

  describe('rewriting', () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    beforeAll(async () => ({ dir, cleanup } = await tempDir()));
    afterAll(async () => cleanup());

    it.each(['aligned/model.safetensors', 'aligned_bf16/model.safetensors', 'ft_agnews_p10/model-00002-of-00002.safetensors', 'lora_sst_p10/adapter_model.safetensors'])(
      '%s rewritten by writeSafetensors is byte-identical',
      async (rel) => {
        const src = await SafetensorsFile.open(testbedPath(rel));
        const out = join(dir, rel.replace('/', '_'));
        try {
          const tensors = [...src.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: () => src.readBytes(t.name) }));
          const res = await writeSafetensors(out, tensors, src.metadata);
          const original = createHash('sha256').update(await readFile(testbedPath(rel))).digest('hex');
          expect(res.sha256).toBe(original);
        } finally {
          await src.close();
        }
      },
    );
  });

  it('validateCheckpointFolder and describeCheckpoint summarise model, adapter and file', async () => {
    const v = await validateCheckpointFolder(testbedPath('ft_agnews_p10'));
    expect(v.ok).toBe(true);
    if (v.ok) expect(v.summary).toMatchObject({ kind: 'model', sharded: true, dtype: 'F32', parameterCount: 3925760 });
    const d = await describeCheckpoint(testbedPath('lora_harmful'));
    expect(d).toMatchObject({ kind: 'adapter', dtype: 'F32', adapter: { r: 8, scaling: 2 } });
    expect(d.files.map((f) => f.name)).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const sha = createHash('sha256').update(await readFile(testbedPath('lora_harmful', 'adapter_model.safetensors'))).digest('hex');
    expect(d.files[1].sha256).toBe(sha);
    const g = await describeCheckpoint(testbedPath('golden.safetensors'), { hash: false });
    expect(g.kind).toBe('file');
    expect(g.tensors.length).toBeGreaterThan(100);
    expect(g.files[0].sha256).toBeNull();
  });
});

describeTestbed('generation_config.json', () => {
  it('reads the eos ids the chat model stops on', async () => {
    const { readGenerationConfig } = await import('../../src/checkpoint/model-config.js');
    expect(await readGenerationConfig(testbedPath('aligned'))).toEqual({ eosTokenIds: [3, 6], bosTokenId: 2, padTokenId: 0, maxNewTokens: 40 });
    expect(await readGenerationConfig(testbedPath('lora_sst_p10'))).toBeNull();
  });
});
