/**
 * Direction sources (src/engine/attribution/index.ts) on bf16 checkpoints, where reads go through the decode
 * scratch: checkpointDifference fills the buffer it is given, overlapping calls never share its scratch,
 * a range that does not fit is a coded error, and loadDirections copies what a source returns elsewhere.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/index.js';
import { checkpointDifference, loadDirections, type DirectionSource } from '../../src/engine/attribution/index.js';
import { writeSyntheticModel, type SyntheticModelOptions } from '../support/synthetic/synthetic-model.js';
import { tempDir } from './helpers.js';

describe('direction sources on bf16 checkpoints', () => {
  const tmp = tempDir('fgsn-directions-');
  const shape: SyntheticModelOptions = {
    family: 'llama', vocabSize: 40, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
    tieWordEmbeddings: true, dtype: 'BF16', std: 0.08,
  };
  let a: ModelCheckpoint;
  let b: ModelCheckpoint;
  const q = 'model.layers.0.self_attn.q_proj.weight';
  const down = 'model.layers.1.mlp.down_proj.weight';
  const expected = async (w: string, r0: number, r1: number): Promise<Float32Array> => {
    const [x, y] = await Promise.all([a.readRowsF32(w, r0, r1), b.readRowsF32(w, r0, r1)]);
    return x.map((e, i) => e - y[i]);
  };

  beforeAll(async () => {
    await writeSyntheticModel(join(tmp.path, 'a'), { ...shape, seed: 1 });
    await writeSyntheticModel(join(tmp.path, 'b'), { ...shape, seed: 2 });
    a = await ModelCheckpoint.open(join(tmp.path, 'a'));
    b = await ModelCheckpoint.open(join(tmp.path, 'b'));
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    tmp.remove();
  });

  it('checkpointDifference fills the given buffer; overlapping calls each get their own rows', async () => {
    expect(a.dtype).toBe('BF16');
    const v = checkpointDifference('V', a, b);
    const out = new Float32Array(3 * 64 + 5).fill(7);
    for (let round = 0; round < 3; round++) {
      // Started together: each call takes the scratch or makes its own before its first await.
      const [x, y, z] = await Promise.all([v.rows(q, 2, 5, out), v.rows(down, 0, 64), v.rows(q, 60, 64)]);
      expect(x.buffer).toBe(out.buffer);
      expect(x.length).toBe(3 * 64);
      expect(out[3 * 64]).toBe(7);
      const [ex, ey, ez] = await Promise.all([expected(q, 2, 5), expected(down, 0, 64), expected(q, 60, 64)]);
      expect(ex.some((e) => e !== 0)).toBe(true);
      expect(Array.from(x)).toEqual(Array.from(ex));
      expect(Array.from(y)).toEqual(Array.from(ey));
      expect(Array.from(z)).toEqual(Array.from(ez));
    }
    v.release?.();
    expect(Array.from(await v.rows(q, 0, 1))).toEqual(Array.from(await expected(q, 0, 1)));
  });

  it('a row range or buffer that does not fit is DEFENSE_MODEL_MISMATCH', async () => {
    const v = checkpointDifference('V', a, b);
    await expect(v.rows(q, 0, 2, new Float32Array(64))).rejects.toMatchObject({ code: 'DEFENSE_MODEL_MISMATCH' });
    await expect(v.rows(q, 3, 2)).rejects.toMatchObject({ code: 'DEFENSE_MODEL_MISMATCH' });
    await expect(v.rows(q, 0, 65)).rejects.toMatchObject({ code: 'DEFENSE_MODEL_MISMATCH' });
  });

  it('loadDirections takes values a source writes in place and copies values it returns elsewhere', async () => {
    const v = checkpointDifference('V', a, b);
    // Ignores `out`, and returns a view at an offset of its own buffer.
    const elsewhere: DirectionSource = {
      name: 'elsewhere',
      async rows(w, r0, r1) {
        const own = new Float32Array(8 + (r1 - r0) * a.tensor(w).shape[1]);
        own.set(await expected(w, r0, r1), 8);
        return own.subarray(8);
      },
    };
    let released = 0;
    const counted: DirectionSource = { ...v, name: 'counted', rows: (w, r0, r1, out) => v.rows(w, r0, r1, out), release: () => released++ };
    const [inPlace, copied] = await loadDirections([counted, elsewhere], a.spec, [q, down]);
    expect(released).toBe(1);
    for (const w of [q, down]) {
      const want = Array.from(await expected(w, 0, a.tensor(w).shape[0]));
      expect(Array.from(inPlace.get(w)!.data as Float32Array)).toEqual(want);
      expect(Array.from(copied.get(w)!.data as Float32Array)).toEqual(want);
    }
  });
});
