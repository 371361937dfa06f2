/**
 * Issue 15 item 7 (writer part): `{"targetAsr": "off", "strength": 1e308}` completed and published a diff of
 * 480/480 +Inf values. The safetensors writer now checks every value it writes, after narrowing to the
 * stored dtype, and fails with OUTPUT_NON_FINITE naming the tensor, leaving no file behind.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFromF32 } from '../../src/checkpoint/dtypes.js';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.js';
import type { DType } from '../../src/checkpoint/types.js';
import { projectionCompute, writeHardened } from '../../src/defense/apply.js';
import { closeSources, openSources } from '../../src/defense/io/sources.js';
import { tempDir } from '../checkpoint/fixtures.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  tmp = await tempDir('fgsn-item7-');
});
afterAll(async () => {
  await tmp.cleanup();
});

describe('the writer never writes a non-finite value', () => {
  const cases: [string, DType, number][] = [
    ['NaN in F32', 'F32', NaN],
    ['+Inf in F32', 'F32', Infinity],
    ['-Inf in BF16', 'BF16', -Infinity],
    ['NaN in F16', 'F16', NaN],
    ['70000: finite in F32, +Inf once narrowed to F16', 'F16', 70000],
    ['1e39 overflows BF16 too', 'BF16', 3.5e38 * 10],
    ['NaN in F64', 'F64', NaN],
  ];
  for (const [what, dtype, bad] of cases) {
    it(`${what}: OUTPUT_NON_FINITE naming the tensor, no file left`, async () => {
      const dir = join(tmp.dir, `w-${what.replace(/\W+/g, '_')}`);
      await mkdir(dir);
      const values = new Float32Array([0.5, -1, 2, 0.25, 1]);
      values[3] = bad;
      const p = writeSafetensors(join(dir, 'out.safetensors'), [
        { name: 'ok.weight', dtype, shape: [5], data: () => encodeFromF32(dtype, new Float32Array([1, 2, 3, 4, 5])) },
        { name: 'bad.weight', dtype, shape: [5], data: () => encodeFromF32(dtype, values) },
      ]);
      await expect(p).rejects.toMatchObject({ code: 'OUTPUT_NON_FINITE', status: 422, details: { tensor: 'bad.weight', element: 3 } });
      expect(await readdir(dir)).toEqual([]);
    });
  }

  it('integer tensors are not float-checked; finite floats (65504 in F16, -0, subnormals) pass', async () => {
    const path = join(tmp.dir, 'fine.safetensors');
    const r = await writeSafetensors(path, [
      { name: 'rows', dtype: 'I64', shape: [2], data: () => new Uint8Array(BigInt64Array.of(-1n, 9007199254740993n).buffer) },
      { name: 'h', dtype: 'F16', shape: [3], data: () => encodeFromF32('F16', new Float32Array([65504, -0, 2 ** -24])) },
    ]);
    expect(r.bytes).toBeGreaterThan(0);
  });
});

describeTestbed('a projection with strength 1e308 fails with a coded error and publishes nothing', () => {
  it('writeHardened (add, strength 1e308) -> OUTPUT_NON_FINITE; no diff, no model files', async () => {
    const s = await openSources({ basePath: testbedPath('base'), alignedPath: testbedPath('aligned'), finetunedPath: testbedPath('ft_sst_p10') });
    const out = join(tmp.dir, 'harden');
    const sel = new Map([['model.layers.1.self_attn.q_proj.weight', Uint32Array.of(3, 17)]]);
    try {
      const p = writeHardened(s, sel, projectionCompute({ mode: 'add', strength: 1e308 }), { diffPath: join(out, 'diff.safetensors'), modelDir: join(out, 'model') }, {});
      await expect(p).rejects.toMatchObject({ code: 'OUTPUT_NON_FINITE', details: { tensor: 'model.layers.1.self_attn.q_proj.weight.values' } });
    } finally {
      await closeSources(s);
    }
    expect(existsSync(join(out, 'diff.safetensors'))).toBe(false);
    expect(existsSync(join(out, 'model'))).toBe(false);
    // The diff's folder holds no half-written temp file either.
    expect(existsSync(out) ? await readdir(out) : []).toEqual([]);
  });
});
