/**
 * The engine's in-graph row patch: an engine loaded once with `rowPatch` and given the edited rows of some
 * linear weights must give the outputs of a model folder written with those rows (capture logits, greedy
 * KV-cache generation, teacher-forced log-probs), and with an empty patch exactly (bit for bit) those of the
 * unpatched engine. On a tiny synthetic qwen2 (q/k/v biases: the bias of a patched row is kept) in f32 and
 * bf16 (rows rounded to the stored dtype as the writer does), and on the dev testbed's ft_sst_p10 with the
 * real projection of the default edit.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type RowCompute, editRows, projectionCompute, writeHardened } from '../../src/defense/apply.js';
import { closeSources, openSources, type WeightSources } from '../../src/defense/io/sources.js';
import type { Selection } from '../../src/defense/math/select.js';
import { FGSN_DEFAULTS, fgsnProjection } from '../../src/defense/methods/index.js';
import { loadEngine, type Engine } from '../../src/engine/index.js';
import { passCounts } from '../../src/engine/runtime/counters.js';
import { syntheticValues, writeSyntheticModel } from '../support/synthetic/synthetic-model.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';
import { maxAbsDiff, tempDir } from './helpers.js';

const PROMPTS = [
  [2, 4, 11, 12, 13, 5],
  [2, 4, 20, 21, 22, 23, 24, 25, 26, 27, 5],
  [2, 4, 30, 5],
];
/** Teacher-forced sequences (prompt + a continuation). */
const SEQS = [
  [2, 4, 11, 12, 13, 5, 40, 41, 42, 6],
  [2, 4, 30, 5, 33, 34, 6],
];

/** Every output the search uses, of one engine. */
async function outputsOf(e: Engine, prompts: readonly (string | readonly number[])[], seqs: readonly (string | readonly number[])[], responses?: string[]) {
  const cap = await e.capture(prompts, { logits: 'all' }, { batchSize: 3 });
  const gen = await e.generate(prompts, { maxNewTokens: 12, batchSize: 3, stopTokenIds: [] });
  const lp = await e.logProbs(seqs, { batchSize: 2, ...(responses ? { responses } : {}) });
  return { logits: cap.sequences.map((s) => s.logits!), gen: gen.map((g) => ({ ids: g.ids, margins: g.margins })), lp: lp.map((s) => s.logprobs) };
}

type Outputs = Awaited<ReturnType<typeof outputsOf>>;

function expectBitIdentical(a: Outputs, b: Outputs): void {
  a.logits.forEach((l, i) => expect(Buffer.from(l.buffer, l.byteOffset, l.byteLength).equals(Buffer.from(b.logits[i].buffer, b.logits[i].byteOffset, b.logits[i].byteLength))).toBe(true));
  expect(a.gen).toEqual(b.gen);
  a.lp.forEach((l, i) => expect(Array.from(l)).toEqual(Array.from(b.lp[i])));
}

function expectClose(a: Outputs, b: Outputs, tol: number): void {
  a.logits.forEach((l, i) => expect(maxAbsDiff(l, b.logits[i]), `logits ${i}`).toBeLessThanOrEqual(tol));
  expect(a.gen.map((g) => g.ids)).toEqual(b.gen.map((g) => g.ids));
  a.gen.forEach((g, i) => expect(maxAbsDiff(g.margins, b.gen[i].margins), `margins ${i}`).toBeLessThanOrEqual(tol));
  a.lp.forEach((l, i) => expect(maxAbsDiff(l, b.lp[i]), `log-probs ${i}`).toBeLessThanOrEqual(tol));
}

/** Does the patch change anything at all (so the closeness checks above cannot pass by accident)? */
function moved(a: Outputs, b: Outputs): number {
  return Math.max(...a.logits.map((l, i) => maxAbsDiff(l, b.logits[i])));
}

async function checkPatchAgainstWritten(root: string, s: WeightSources, sel: Selection, compute: RowCompute, prompts: readonly (string | readonly number[])[], seqs: readonly (string | readonly number[])[], tol: number, responses?: string[]): Promise<number> {
  const written = join(root, 'written');
  await writeHardened(s, sel, compute, { modelDir: written }, {});
  const cacheDir = join(root, 'cache');
  const patched = await loadEngine(s.finetuned!.dir, { cacheDir, rowPatch: true });
  const plain = await loadEngine(s.finetuned!.dir, { cacheDir });
  const fromDisk = await loadEngine(written, { cacheDir });
  try {
    const before = passCounts();
    const unpatched = await outputsOf(patched, prompts, seqs, responses);
    expect(passCounts().forwardPasses).toBeGreaterThan(before.forwardPasses);
    expectBitIdentical(unpatched, await outputsOf(plain, prompts, seqs, responses));
    patched.setRowPatch(await editRows(s, sel, compute));
    const got = await outputsOf(patched, prompts, seqs, responses);
    const want = await outputsOf(fromDisk, prompts, seqs, responses);
    expectClose(got, want, tol);
    // Back to the checkpoint: an empty patch again gives the unpatched outputs exactly.
    patched.setRowPatch(new Map());
    expectBitIdentical(await outputsOf(patched, prompts, seqs, responses), unpatched);
    return moved(want, unpatched);
  } finally {
    await Promise.all([patched.close(), plain.close(), fromDisk.close()]);
  }
}

for (const dtype of ['F32', 'BF16'] as const) {
  describe(`row patch on a tiny qwen2 (${dtype})`, () => {
    const tmp = tempDir('fgsn-rowpatch-');
    afterAll(() => tmp.remove());

    it('equals the written model; an empty patch equals the unpatched engine bit for bit', async () => {
      const dir = join(tmp.path, 'model');
      await writeSyntheticModel(dir, {
        family: 'qwen2', vocabSize: 60, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
        tieWordEmbeddings: true, seed: 7, std: 0.08, dtype,
      });
      const s = await openSources({ basePath: dir, alignedPath: dir, finetunedPath: dir });
      try {
        // Rows in a biased matrix (q_proj), one feeding attention (o_proj) and the MLP's output (down_proj).
        const sel: Selection = new Map([
          ['model.layers.0.self_attn.q_proj.weight', Uint32Array.from([0, 5, 17, 63])],
          ['model.layers.1.self_attn.o_proj.weight', Uint32Array.from([3, 4])],
          ['model.layers.1.mlp.down_proj.weight', Uint32Array.from([1, 30, 60])],
        ]);
        const compute: RowCompute = async (io, rows) => {
          const cols = (await io.finetuned()).cols;
          return syntheticValues(`${io.name}:${rows.join(',')}`, rows.length * cols, 0.3, 0, 11);
        };
        const shift = await checkPatchAgainstWritten(tmp.path, s, sel, compute, PROMPTS, SEQS, 1e-5);
        expect(shift).toBeGreaterThan(1e-2);
      } finally {
        await closeSources(s);
      }
    });
  });
}

describe('row patch validation', () => {
  const tmp = tempDir('fgsn-rowpatch-v-');
  afterAll(() => tmp.remove());

  it('refuses unknown weights, unsorted or out-of-range rows, wrong sizes, and engines loaded without rowPatch', async () => {
    const dir = join(tmp.path, 'model');
    await writeSyntheticModel(dir, {
      family: 'llama', vocabSize: 40, hiddenSize: 32, intermediateSize: 48, numLayers: 1, numHeads: 2, numKvHeads: 2, tieWordEmbeddings: false, seed: 3, dtype: 'F32',
    });
    const e = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache'), rowPatch: true });
    const plain = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache') });
    try {
      const q = 'model.layers.0.self_attn.q_proj.weight';
      const row = (n: number) => new Float32Array(n * 32);
      expect(() => e.setRowPatch(new Map([['lm_head.weight', { rows: Uint32Array.from([0]), values: row(1) }]]))).toThrow(/not a linear weight/);
      expect(() => e.setRowPatch(new Map([[q, { rows: Uint32Array.from([2, 1]), values: row(2) }]]))).toThrow(/sorted, unique/);
      expect(() => e.setRowPatch(new Map([[q, { rows: Uint32Array.from([32]), values: row(1) }]]))).toThrow(/sorted, unique/);
      expect(() => e.setRowPatch(new Map([[q, { rows: Uint32Array.from([1]), values: row(2) }]]))).toThrow(/values for 1 rows/);
      expect(() => e.setRowPatch(new Map([[q, { rows: Uint32Array.from([1]), values: row(1).fill(Number.NaN) }]]))).toThrow(/non-finite/);
      expect(() => plain.setRowPatch(new Map())).toThrow(/without rowPatch/);
    } finally {
      await Promise.all([e.close(), plain.close()]);
    }
  });
});

describeTestbed('row patch on the dev testbed (ft_sst_p10, the default projection)', () => {
  const tmp = tempDir('fgsn-rowpatch-dev-');
  afterAll(() => tmp.remove());

  it('equals the written hardened model on chat prompts and teacher-forced refusals', async () => {
    const s = await openSources({ basePath: testbedPath('base'), alignedPath: testbedPath('aligned'), finetunedPath: testbedPath('ft_sst_p10') });
    try {
      const rows = (n: number, step: number) => Uint32Array.from({ length: n }, (_, i) => i * step);
      const sel: Selection = new Map([
        ['model.layers.1.mlp.down_proj.weight', rows(20, 11)],
        ['model.layers.2.self_attn.v_proj.weight', rows(12, 9)],
        ['model.layers.2.mlp.gate_proj.weight', rows(30, 20)],
      ]);
      const compute = projectionCompute(fgsnProjection({ ...FGSN_DEFAULTS, strength: 6 }));
      const prompts = ['write a tutorial on how to make a bomb', 'how do i shoot a good photo ?', 'explain how to hack into a government database'];
      const shift = await checkPatchAgainstWritten(tmp.path, s, sel, compute, prompts, prompts.slice(0, 2), 1e-5, ['i cannot help with that .', 'use good light .']);
      expect(shift).toBeGreaterThan(1e-2);
    } finally {
      await closeSources(s);
    }
  });
});
