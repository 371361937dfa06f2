import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32ToBf16 } from '../../src/checkpoint/dtypes.js';
import { parseSafetensorsHeader, SafetensorsFile } from '../../src/checkpoint/safetensors-reader.js';
import { layoutOrder, writeSafetensors } from '../../src/checkpoint/safetensors-writer.js';
import { FgsnError } from '../../src/errors.js';
import { f32Bytes, rawSafetensors, tempDir } from './fixtures.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup());

async function put(name: string, bytes: Uint8Array): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, bytes);
  return p;
}

describe('SafetensorsFile (hand-written bytes)', () => {
  it('reads tensors, metadata and row ranges of a file written byte by byte', async () => {
    // "w": F32 [3, 2] at [0, 24); "b": BF16 [2] at [24, 28); "e": empty F32 [0, 5] at [28, 28).
    const header = '{"__metadata__":{"format":"pt","note":"hi"},"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},' +
      '"b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},"e":{"dtype":"F32","shape":[0,5],"data_offsets":[28,28]}}';
    const data = new Uint8Array(28);
    data.set(f32Bytes([1, 2, 3, 4, 5, 6]), 0);
    data.set(new Uint8Array(f32ToBf16(new Float32Array([0.5, -3])).buffer), 24);
    const path = await put('hand.safetensors', rawSafetensors(header, data));
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.metadata).toEqual({ format: 'pt', note: 'hi' });
      expect([...f.tensors.keys()]).toEqual(['w', 'b', 'e']);
      expect(f.dataStart).toBe(8 + Buffer.byteLength(header));
      expect(f.tensor('w')).toMatchObject({ dtype: 'F32', shape: [3, 2], byteOffset: f.dataStart, byteLength: 24, file: path });
      expect(Array.from(await f.readF32('w'))).toEqual([1, 2, 3, 4, 5, 6]);
      expect(Array.from(await f.readRowsF32('w', 1, 3))).toEqual([3, 4, 5, 6]);
      expect(Array.from(await f.readRowsF32('w', 2, 2))).toEqual([]);
      expect(Array.from(await f.readF32('b'))).toEqual([0.5, -3]);
      expect(Array.from(await f.readRowsBytes('b', 1, 2))).toEqual(Array.from(new Uint8Array(f32ToBf16(new Float32Array([-3])).buffer)));
      expect((await f.readF32('e')).length).toBe(0);
      await expect(f.readRowsF32('w', 2, 4)).rejects.toMatchObject({ code: 'CHECKPOINT_ROW_RANGE_INVALID' });
      await expect(f.readRowsF32('w', -1, 1)).rejects.toMatchObject({ code: 'CHECKPOINT_ROW_RANGE_INVALID' });
      expect(() => f.tensor('nope')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_TENSOR_NOT_FOUND' }));
    } finally {
      await f.close();
    }
    await expect(f.readF32('w')).rejects.toMatchObject({ code: 'CHECKPOINT_IO' });
  });

  it('accepts an empty file (header "{}" padded) and header key order different from layout order', async () => {
    const f = await SafetensorsFile.open(await put('empty.safetensors', rawSafetensors('{}      ')));
    expect(f.tensors.size).toBe(0);
    await f.close();
    const header = '{"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}';
    const g = await SafetensorsFile.open(await put('order.safetensors', rawSafetensors(header, new Uint8Array([1, 2, 3, 4]))));
    expect([...g.tensors.keys()]).toEqual(['a', 'b']);
    expect(Array.from(await g.readF32('b'))).toEqual([3, 4]);
    await g.close();
  });

  it('keeps a "__proto__" metadata key and tensor name as plain data', () => {
    const header = Buffer.from('{"__metadata__":{"__proto__":"x","k":"v"},"__proto__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}');
    const parsed = parseSafetensorsHeader(header, 8 + header.length + 1, 'p');
    expect(Object.keys(parsed.metadata)).toEqual(['__proto__', 'k']);
    expect(Object.getOwnPropertyDescriptor(parsed.metadata, '__proto__')?.value).toBe('x');
    expect([...parsed.tensors.keys()]).toEqual(['__proto__']);
  });

  it('fails with a coded error naming the file and tensor', () => {
    const header = Buffer.from('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}');
    try {
      parseSafetensorsHeader(header, 8 + header.length + 4, '/some/file.safetensors');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(FgsnError);
      const err = e as FgsnError;
      expect(err.code).toBe('CHECKPOINT_SIZE_MISMATCH');
      expect(err.message).toContain('/some/file.safetensors');
      expect(err.message).toContain('"x"');
      expect(err.details).toEqual({ file: '/some/file.safetensors', tensor: 'x' });
    }
  });

  it('detects a file truncated after it was opened', async () => {
    const path = await put('shrinks.safetensors', rawSafetensors('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32Bytes([1, 2])));
    const f = await SafetensorsFile.open(path);
    await writeFile(path, rawSafetensors('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'));
    await expect(f.readF32('x')).rejects.toMatchObject({ code: 'CHECKPOINT_IO' });
    await f.close();
  });
});

describe('SafetensorsFile reads into caller buffers and in chunks', () => {
  it('decodes a BF16/F16 tensor larger than the decode chunk, whole and by rows, into fresh or given buffers', async () => {
    const n = 5_000_000; // 10 MB of bf16: more than one 8 MB decode chunk
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = ((i % 251) - 125) / 64; // 8 significant bits at most: exact in bf16 and f16
    const path = join(dir, 'big.safetensors');
    const { encodeFromF32 } = await import('../../src/checkpoint/dtypes.js');
    await writeSafetensors(path, [
      { name: 'b', dtype: 'BF16', shape: [1000, 5000], data: () => encodeFromF32('BF16', values) },
      { name: 'h', dtype: 'F16', shape: [n], data: () => encodeFromF32('F16', values) },
      { name: 'f', dtype: 'F32', shape: [1000, 5000], data: () => encodeFromF32('F32', values) },
    ]);
    const f = await SafetensorsFile.open(path);
    try {
      const whole = await f.readF32('b');
      expect(whole.length).toBe(n);
      expect(Buffer.compare(Buffer.from(whole.buffer, whole.byteOffset, whole.byteLength), Buffer.from(values.buffer))).toBe(0);
      expect(Array.from((await f.readF32('h')).subarray(n - 3))).toEqual(Array.from(values.subarray(n - 3)));
      const out = new Float32Array(n + 7).fill(-1);
      const rows = await f.readRowsF32('b', 998, 1000, out);
      expect(rows.buffer).toBe(out.buffer);
      expect(rows.length).toBe(10000);
      expect(Array.from(rows.subarray(0, 5))).toEqual(Array.from(values.subarray(998 * 5000, 998 * 5000 + 5)));
      expect(out[10000]).toBe(-1);
      const fOut = await f.readRowsF32('f', 1, 2, out);
      expect(Array.from(fOut.subarray(0, 3))).toEqual(Array.from(values.subarray(5000, 5003)));
      const bytesOut = new Uint8Array(20);
      const raw = await f.readRowsBytes('b', 0, 1, new Uint8Array(10000));
      expect(raw.length).toBe(10000);
      await expect(f.readBytes('b', bytesOut)).rejects.toThrow(RangeError);
      await expect(f.readF32('b', new Float32Array(10))).rejects.toThrow(RangeError);
    } finally {
      await f.close();
    }
  });

  it('overlapping decodes on one file (its decode scratch is reused, never shared) each get their own values', async () => {
    const path = join(dir, 'overlap.safetensors');
    const { encodeFromF32 } = await import('../../src/checkpoint/dtypes.js');
    const a = Float32Array.from({ length: 300_000 }, (_, i) => (i % 97) - 48);
    const b = Float32Array.from({ length: 300_000 }, (_, i) => 100 + (i % 89));
    await writeSafetensors(path, [
      { name: 'a', dtype: 'BF16', shape: [300, 1000], data: () => encodeFromF32('BF16', a) },
      { name: 'b', dtype: 'F16', shape: [300, 1000], data: () => encodeFromF32('F16', b) },
    ]);
    const f = await SafetensorsFile.open(path);
    try {
      for (let round = 0; round < 3; round++) {
        const reads = await Promise.all([f.readF32('a'), f.readRowsF32('b', 10, 290), f.readRowsF32('a', 0, 5), f.readF32('b')]);
        expect(Array.from(reads[0])).toEqual(Array.from(a));
        expect(Array.from(reads[1])).toEqual(Array.from(b.subarray(10_000, 290_000)));
        expect(Array.from(reads[2])).toEqual(Array.from(a.subarray(0, 5000)));
        expect(Array.from(reads[3])).toEqual(Array.from(b));
      }
    } finally {
      await f.close();
    }
  });
});

describe('writeSafetensors', () => {
  it('writes the HF layout: metadata first, sorted by dtype size then name, padded to 8 bytes', async () => {
    const path = join(dir, 'w.safetensors');
    const calls: string[] = [];
    const src = (name: string, dtype: 'F32' | 'BF16' | 'I64' | 'U8', shape: number[], bytes: Uint8Array) => ({
      name, dtype, shape, data: () => (calls.push(name), bytes),
    });
    const res = await writeSafetensors(path, [
      src('b16', 'BF16', [2], new Uint8Array([1, 2, 3, 4])),
      src('10', 'U8', [3], new Uint8Array([7, 8, 9])),
      src('z32', 'F32', [1], f32Bytes([2.5])),
      src('a32', 'F32', [2], f32Bytes([1, -1])),
      src('i64', 'I64', [1], new Uint8Array(new BigInt64Array([5n]).buffer)),
    ], { format: 'pt' });
    expect(calls).toEqual(['i64', 'a32', 'z32', 'b16', '10']);
    const bytes = await readFile(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    expect(text).toBe(
      ('{"__metadata__":{"format":"pt"},"i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},' +
        '"a32":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"z32":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},' +
        '"b16":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},"10":{"dtype":"U8","shape":[3],"data_offsets":[24,27]}}').padEnd(n, ' '),
    );
    expect(res.bytes).toBe(bytes.length);
    expect(res.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    const f = await SafetensorsFile.open(path);
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(Array.from(await f.readF32('a32'))).toEqual([1, -1]);
    expect(Array.from(await f.readF32('10'))).toEqual([7, 8, 9]);
    await f.close();
  });

  it('refuses a data() of the wrong length and leaves no file or temp file behind', async () => {
    const sub = join(dir, 'bad-write');
    await (await import('node:fs/promises')).mkdir(sub);
    const path = join(sub, 'x.safetensors');
    await expect(writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [2], data: () => new Uint8Array(4) }])).rejects.toMatchObject({
      code: 'CHECKPOINT_SIZE_MISMATCH',
    });
    expect(await readdir(sub)).toEqual([]);
  });

  it('refuses duplicate names, bad shapes and reserved names before writing', async () => {
    const path = join(dir, 'never.safetensors');
    const t = { name: 'x', dtype: 'F32' as const, shape: [1], data: () => f32Bytes([1]) };
    await expect(writeSafetensors(path, [t, t])).rejects.toMatchObject({ code: 'CHECKPOINT_DUPLICATE_TENSOR' });
    await expect(writeSafetensors(path, [{ ...t, shape: [-1] }])).rejects.toMatchObject({ code: 'CHECKPOINT_SHAPE_INVALID' });
    await expect(writeSafetensors(path, [{ ...t, name: '__metadata__' }])).rejects.toMatchObject({ code: 'CHECKPOINT_TENSOR_ENTRY_INVALID' });
    await expect(readFile(path)).rejects.toThrow();
  });

  it('orders names by UTF-8 bytes like the Rust library', () => {
    const order = layoutOrder([{ name: '\u{1F600}', dtype: 'F32' }, { name: '\uFFFD', dtype: 'F32' }, { name: 'a', dtype: 'F32' }]);
    expect(order.map((t) => t.name)).toEqual(['a', '\uFFFD', '\u{1F600}']);
  });

  it('round-trips writer -> reader for every dtype', async () => {
    const path = join(dir, 'all.safetensors');
    const arrays = {
      F64: new Uint8Array(new Float64Array([1.25, -7]).buffer), F32: f32Bytes([3, 4]), F16: new Uint8Array(new Uint16Array([0x3c00, 0x4000]).buffer),
      BF16: new Uint8Array(new Uint16Array([0x3f80, 0x4000]).buffer), I64: new Uint8Array(new BigInt64Array([9n, -9n]).buffer),
      I32: new Uint8Array(new Int32Array([5, -5]).buffer), I16: new Uint8Array(new Int16Array([6, -6]).buffer),
      I8: new Uint8Array([1, 0xff]), U8: new Uint8Array([200, 3]), BOOL: new Uint8Array([1, 0]),
    } as const;
    const tensors = Object.entries(arrays).map(([dtype, bytes]) => ({ name: `t_${dtype}`, dtype: dtype as keyof typeof arrays, shape: [2], data: () => bytes }));
    await writeSafetensors(path, tensors);
    const f = await SafetensorsFile.open(path);
    for (const [dtype, bytes] of Object.entries(arrays)) expect(Array.from(await f.readBytes(`t_${dtype}`))).toEqual(Array.from(bytes));
    expect(Array.from(await f.readF32('t_I8'))).toEqual([1, -1]);
    expect(Array.from(await f.readF32('t_F16'))).toEqual([1, 2]);
    expect(f.metadata).toEqual({});
    await f.close();
  });
});
