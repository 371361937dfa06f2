/**
 * Issue 15 item 8: a checkpoint with a NaN weight passed `complete` and `fgsn inspect`. Validation (the path
 * both use) now reads every weight once, in the same pass as the hash, and refuses NaN/Inf with
 * CHECKPOINT_NON_FINITE naming the tensor, for F32, BF16 and F16 (and F64). An adapter whose target_modules
 * match no module of a known base is refused.
 */
import { createHash } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { describeCheckpoint, validateCheckpointFolder } from '../../src/checkpoint/detect.js';
import { decodeToF32, encodeFromF32 } from '../../src/checkpoint/dtypes.js';
import { firstNonFinite } from '../../src/checkpoint/finite.js';
import { parseModelConfig } from '../../src/checkpoint/model-config.js';
import { SafetensorsFile } from '../../src/checkpoint/safetensors-reader.js';
import type { DType } from '../../src/checkpoint/types.js';
import { run as inspect } from '../../src/cli/inspect.js';
import { adapterConfig, rawSafetensors, tempDir, tinyConfig, writeAdapterFolder, writeModelFolder } from '../checkpoint/fixtures.js';
import { BF16_NAN, BF16_POS_INF, F16_NAN, F16_NEG_INF, F32_NAN, F32_NEG_INF, F32_POS_INF, pokeElement } from './helpers.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  tmp = await tempDir('fgsn-item8-');
});
afterAll(async () => {
  await tmp.cleanup();
});
afterEach(() => {
  vi.restoreAllMocks();
});

const DOWN = 'model.layers.1.mlp.down_proj.weight';
const NORM = 'model.norm.weight';

describe('validation refuses non-finite weights, naming the tensor', () => {
  const cases: [string, DType, Uint8Array, string][] = [
    ['F32 NaN', 'F32', F32_NAN, 'NaN'],
    ['F32 +Inf', 'F32', F32_POS_INF, '+Inf'],
    ['F32 -Inf', 'F32', F32_NEG_INF, '-Inf'],
    ['BF16 NaN', 'BF16', BF16_NAN, 'NaN'],
    ['BF16 +Inf', 'BF16', BF16_POS_INF, '+Inf'],
    ['F16 NaN', 'F16', F16_NAN, 'NaN'],
    ['F16 -Inf', 'F16', F16_NEG_INF, '-Inf'],
  ];
  for (const [what, dtype, bytes, kind] of cases) {
    it(`${what}: complete's validation and inspect both refuse it`, async () => {
      const dir = await writeModelFolder(join(tmp.dir, what.replace(/\W+/g, '_')), { dtype, config: tinyConfig({ torch_dtype: { F32: 'float32', BF16: 'bfloat16', F16: 'float16' }[dtype as 'F32'] }) });
      await pokeElement(join(dir, 'model.safetensors'), DOWN, 37, bytes);
      const v = await validateCheckpointFolder(dir);
      expect(v.ok).toBe(false);
      if (v.ok) return;
      expect(v.problems.map((p) => p.code)).toEqual(['CHECKPOINT_NON_FINITE']);
      expect(v.problems[0].details).toMatchObject({ tensor: DOWN, element: 37, value: kind });
      expect(v.problems[0].message).toContain(DOWN);
      await expect(describeCheckpoint(dir)).rejects.toMatchObject({ code: 'CHECKPOINT_NON_FINITE', details: { tensor: DOWN } });
      await expect(describeCheckpoint(dir, { hash: false })).rejects.toMatchObject({ code: 'CHECKPOINT_NON_FINITE' });
      // `fgsn inspect` (main turns the thrown coded error into exit status 2).
      await expect(inspect([dir])).rejects.toMatchObject({ code: 'CHECKPOINT_NON_FINITE' });
    });
  }

  it('every bad tensor is named, one problem each; sharded folders too', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'sharded'), { sharded: true });
    const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    await pokeElement(join(dir, index.weight_map[DOWN]), DOWN, 0, F32_NAN);
    await pokeElement(join(dir, index.weight_map[DOWN]), DOWN, 5, F32_NAN);
    await pokeElement(join(dir, index.weight_map[NORM]), NORM, 7, F32_POS_INF);
    const v = await validateCheckpointFolder(dir);
    expect(v.ok ? [] : v.problems.map((p) => (p.details as { tensor: string }).tensor).sort()).toEqual([DOWN, NORM]);
  });

  it('an adapter with a NaN in lora_B is refused', async () => {
    const dir = await writeAdapterFolder(join(tmp.dir, 'adapter-nan'));
    const b = 'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight';
    await pokeElement(join(dir, 'adapter_model.safetensors'), b, 1, F32_NAN);
    const v = await validateCheckpointFolder(dir);
    expect(v.ok ? [] : v.problems.map((p) => [p.code, (p.details as { tensor: string }).tensor])).toEqual([['CHECKPOINT_NON_FINITE', b]]);
    await expect(describeCheckpoint(dir)).rejects.toMatchObject({ code: 'CHECKPOINT_NON_FINITE' });
  });

  it('a lone safetensors file given to inspect is checked too', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'lone'));
    await pokeElement(join(dir, 'model.safetensors'), NORM, 2, F32_NAN);
    await expect(describeCheckpoint(join(dir, 'model.safetensors'))).rejects.toMatchObject({ code: 'CHECKPOINT_NON_FINITE', details: { tensor: NORM } });
  });
});

describe('each byte is read once', () => {
  it('inspect with hashing: the weights file is read exactly once, in one pass that also yields its sha256', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'once'), { dtype: 'BF16', config: tinyConfig({ torch_dtype: 'bfloat16' }) });
    const file = join(dir, 'model.safetensors');
    const raw = vi.spyOn(SafetensorsFile.prototype, 'readRaw');
    const bytes = vi.spyOn(SafetensorsFile.prototype, 'readBytes');
    const summary = await describeCheckpoint(dir);
    const read = raw.mock.calls.reduce((n, [, out]) => n + out.byteLength, 0);
    expect(read).toBe((await stat(file)).size);
    expect(bytes).not.toHaveBeenCalled();
    const expected = createHash('sha256').update(await readFile(file)).digest('hex');
    expect(summary.files.find((f) => f.name === 'model.safetensors')?.sha256).toBe(expected);
  });

  it('validation without hashing reads the data section once (not the header again)', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'once-nohash'));
    const f = await SafetensorsFile.open(join(dir, 'model.safetensors'));
    const dataBytes = f.fileSize - f.dataStart;
    await f.close();
    const raw = vi.spyOn(SafetensorsFile.prototype, 'readRaw');
    expect((await validateCheckpointFolder(dir)).ok).toBe(true);
    expect(raw.mock.calls.reduce((n, [, out]) => n + out.byteLength, 0)).toBe(dataBytes);
  });
});

describe('chunked scan of a large file with unaligned tensors', () => {
  it('finds a NaN in an element that straddles the 8 MiB read boundary, at the right index, hash and check alike', async () => {
    // A 3-byte U8 tensor first puts the F32 tensor at an odd offset; 3M floats span two 8 MiB reads.
    const n = 3 * 1024 * 1024;
    const header = JSON.stringify({ pad: { dtype: 'U8', shape: [3], data_offsets: [0, 3] }, w: { dtype: 'F32', shape: [n], data_offsets: [3, 3 + 4 * n] } });
    const data = new Uint8Array(3 + 4 * n);
    const file = join(tmp.dir, 'unaligned.safetensors');
    await writeFile(file, rawSafetensors(header, data));
    const dataStart = 8 + Buffer.byteLength(header);
    // Elements near where the first read of the data section (or of the whole file, when hashing) ends.
    const nearData = Math.floor((8 * 2 ** 20 - 3) / 4);
    const nearFile = Math.floor((8 * 2 ** 20 - dataStart - 3) / 4);
    for (const k of [0, nearData - 1, nearData, nearData + 1, nearFile, nearFile + 1, n - 1]) {
      await writeFile(file, rawSafetensors(header, data));
      await pokeElement(file, 'w', k, F32_NAN);
      for (const hash of [false, true]) {
        await expect(describeCheckpoint(file, { hash }), `element ${k}, hash ${hash}`).rejects.toMatchObject({ code: 'CHECKPOINT_NON_FINITE', details: { tensor: 'w', element: k } });
      }
    }
    await writeFile(file, rawSafetensors(header, data));
    const summary = await describeCheckpoint(file);
    expect(summary.files[0].sha256).toBe(createHash('sha256').update(await readFile(file)).digest('hex'));
  });
});

describe('firstNonFinite on raw bits', () => {
  it('finds the first NaN/Inf of each float dtype at any byte offset, ignores integer dtypes', () => {
    const f32 = new Uint8Array(new Float32Array([1, -0, 3.4e38, NaN, Infinity]).buffer);
    expect(firstNonFinite('F32', f32)).toBe(3);
    // Unaligned view: same answer through the aligned copy.
    const shifted = new Uint8Array(f32.byteLength + 1);
    shifted.set(f32, 1);
    expect(firstNonFinite('F32', shifted.subarray(1))).toBe(3);
    expect(firstNonFinite('BF16', Uint8Array.of(0x80, 0x3f, 0x7f, 0x7f, 0x80, 0x7f))).toBe(2);
    expect(firstNonFinite('F16', Uint8Array.of(0xff, 0x7b, 0x00, 0x7c))).toBe(1);
    expect(firstNonFinite('F64', new Uint8Array(new Float64Array([1e308, -Infinity]).buffer))).toBe(1);
    expect(firstNonFinite('I32', new Uint8Array(new Int32Array([0x7f800000]).buffer))).toBe(-1);
  });
});

describe('firstNonFinite agrees with decoding every value', () => {
  it('every float dtype, lengths around the 4096-word blocks, bad values at block edges and in odd tails', () => {
    const specials = [NaN, Infinity, -Infinity];
    for (const dtype of ['F32', 'BF16', 'F16', 'F64'] as const) {
      for (const n of [1, 2, 3, 4095, 4096, 4097, 8191, 8192, 8193, 12_289]) {
        const clean = new Float32Array(n).map((_, i) => Math.sin(i) * 100);
        expect(firstNonFinite(dtype, encodeFromF32(dtype, clean)), `${dtype} n=${n} clean`).toBe(-1);
        for (const at of new Set([0, n - 1, 2047, 2048, 4095, 4096, 8191, 8192, 8193].filter((i) => i < n))) {
          const v = clean.slice();
          v[at] = specials[at % 3];
          if (at + 3 < n) v[at + 3] = NaN;
          const bytes = encodeFromF32(dtype, v);
          const reference = Array.from(decodeToF32(dtype, bytes)).findIndex((x) => !Number.isFinite(x));
          expect(firstNonFinite(dtype, bytes), `${dtype} n=${n} at=${at}`).toBe(reference);
        }
      }
    }
  });
});

describe('an adapter is checked against a known base', () => {
  const base = parseModelConfig(tinyConfig(), 'base config.json');

  it('target_modules that match no module of the base: refused when the base is known', async () => {
    const dir = await writeAdapterFolder(join(tmp.dir, 'foreign'), {
      config: adapterConfig({ target_modules: ['c_attn'] }),
      mutate: (ts) => ts.slice(0, 2).map((t) => ({ ...t, name: t.name.replace('self_attn.q_proj', 'attn.c_attn') })),
    });
    expect((await validateCheckpointFolder(dir)).ok).toBe(true);
    const v = await validateCheckpointFolder(dir, { base });
    expect(v.ok).toBe(false);
    const problems = v.ok ? [] : v.problems;
    expect(problems.map((p) => p.code)).toContain('ADAPTER_BASE_MISMATCH');
    expect(problems.map((p) => p.message).join('\n')).toContain('match no linear module of the base llama model');
  });

  it('a matching adapter still passes with the base', async () => {
    const dir = await writeAdapterFolder(join(tmp.dir, 'fits'));
    expect((await validateCheckpointFolder(dir, { base })).ok).toBe(true);
  });
});
