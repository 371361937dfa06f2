/**
 * GraphBuilder and the on-disk graph cache, run through real onnxruntime sessions: attribute encoding,
 * external-data initializers (with a file offset, in f32 and bf16), the path rules onnxruntime 1.30 enforces
 * for external data, hard links vs copies, and cache keys following file content.
 */
import { existsSync, mkdirSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ToF32, f32ToBf16 } from '../../src/checkpoint/dtypes.js';
import { WeightTable, linearRowBlocks } from '../../src/engine/onnx/blocks.js';
import { GraphBuilder, f } from '../../src/engine/onnx/graph-builder.js';
import { ensureEntry, fileFingerprint } from '../../src/engine/session/model-cache.js';
import { tempDir } from './helpers.js';

const { onnx } = onnxProto;
const tmp = tempDir('fgsn-onnx-');
afterAll(() => tmp.remove());

/** A file with 16 junk bytes, then W = [[1,2,3],[4,5,6]] as f32 (24 bytes), then W as bf16 (12 bytes). */
function weightFile(path: string): void {
  const w = new Float32Array([1, 2, 3, 4, 5, 6]);
  const bf = f32ToBf16(w);
  const buf = Buffer.alloc(16 + 24 + 12, 0xab);
  Buffer.from(w.buffer).copy(buf, 16);
  Buffer.from(bf.buffer).copy(buf, 40);
  writeFileSync(path, buf);
}

function gemmGraph(location: string, bf16 = false): GraphBuilder {
  const g = new GraphBuilder('t');
  const x = g.input('x', 'float32', ['n', 3]);
  const w = bf16
    ? g.op('Cast', [g.externalInit('w', 'bfloat16', [2, 3], { location, offset: 40, length: 12 })], { to: 1 })
    : g.externalInit('w', 'float32', [2, 3], { location, offset: 16, length: 24 });
  g.output('y', g.op('Gemm', [x, w], { transB: 1, alpha: f(2) }), 'float32', ['n', 2]);
  return g;
}

async function runGemm(onnxPath: string): Promise<number[]> {
  const s = await ort.InferenceSession.create(onnxPath);
  try {
    const r = await s.run({ x: new ort.Tensor('float32', new Float32Array([1, 0, -1, 0.5, 0.5, 0.5]), [2, 3]) });
    return Array.from(r.y.data as Float32Array);
  } finally {
    await s.release();
  }
}

describe('GraphBuilder', () => {
  it('runs external f32 and bf16 initializers read at a file offset, with a FLOAT attribute', async () => {
    for (const bf16 of [false, true]) {
      const dir = join(tmp.path, `ext-${bf16}`);
      mkdirSync(dir);
      weightFile(join(dir, 'weights.bin'));
      writeFileSync(join(dir, 'm.onnx'), gemmGraph('weights.bin', bf16).toModelBytes());
      // y = 2 * x @ W^T
      expect(await runGemm(join(dir, 'm.onnx'))).toEqual([2 * (1 - 3), 2 * (4 - 6), 2 * 3, 2 * 7.5]);
    }
    expect(Array.from(bf16ToF32(f32ToBf16(new Float32Array([1, 2, 3]))))).toEqual([1, 2, 3]);
  });

  it('splits a weight into row blocks over its stored bytes (lm_head), giving the same product as one Gemm', async () => {
    // W [5, 3] with W[r][c] = 3r + c - 7 (exact in bf16), after 10 junk bytes; x [2, 3].
    const rows = 5;
    const w = Float32Array.from({ length: rows * 3 }, (_, i) => i - 7);
    const x = new Float32Array([1, -2, 0.5, 3, 0, -1]);
    const expected: number[] = [];
    for (let n = 0; n < 2; n++) for (let r = 0; r < rows; r++) expected.push(x[n * 3] * w[r * 3] + x[n * 3 + 1] * w[r * 3 + 1] + x[n * 3 + 2] * w[r * 3 + 2]);
    for (const dtype of ['F32', 'BF16'] as const) {
      const dir = join(tmp.path, `rows-${dtype}`);
      mkdirSync(dir);
      const bytes = dtype === 'F32' ? Buffer.from(w.buffer) : Buffer.from(f32ToBf16(w).buffer);
      writeFileSync(join(dir, 'w.bin'), Buffer.concat([Buffer.alloc(10, 0xcd), bytes]));
      const g = new GraphBuilder('rows');
      const table = new WeightTable(g, (name) => (name === 'head' ? { dtype, shape: [rows, 3], location: 'w.bin', offset: 10, length: bytes.length } : undefined));
      // At least 1.5 rows of float32 per block: floor(5 / 1.5) = 3 blocks of 2, 2 and 1 rows.
      const blocks = table.rowBlocks('head', 1.5 * 3 * 4);
      expect(blocks).toHaveLength(3);
      g.output('y', linearRowBlocks(g, g.input('x', 'float32', ['n', 3]), blocks), 'float32', ['n', rows]);
      writeFileSync(join(dir, 'm.onnx'), g.toModelBytes());
      const s = await ort.InferenceSession.create(join(dir, 'm.onnx'));
      try {
        const r = await s.run({ x: new ort.Tensor('float32', x, [2, 3]) });
        expect(r.y.dims).toEqual([2, rows]);
        expect(Array.from(r.y.data as Float32Array)).toEqual(expected);
      } finally {
        await s.release();
      }
    }
  });

  it('refuses external locations that leave the graph folder', () => {
    for (const bad of ['../w.bin', '/abs/w.bin', 'a/../../w.bin', 'a\\w.bin']) {
      expect(() => gemmGraph(bad), bad).toThrow(expect.objectContaining({ code: 'ENGINE_GRAPH_UNSUPPORTED' }));
    }
  });

  it('outputInPlace renames a node\'s output (no Identity copy), and copies inputs and values output already', async () => {
    const g = new GraphBuilder('t');
    const x = g.input('x', 'float32', ['n']);
    const y = g.op('Add', [x, x]);
    const z = g.op('Mul', [y, y]);
    g.output('z', z, 'float32');
    g.outputInPlace('a', y, 'float32');
    g.outputInPlace('b', y, 'float32');
    g.outputInPlace('c', x, 'float32');
    const bytes = g.toModelBytes();
    const model = onnx.ModelProto.decode(bytes);
    // z's own Identity, then b's and c's; a is the Add's output renamed, read by the Mul under its new name.
    expect(model.graph!.node!.filter((n) => n.opType === 'Identity').map((n) => n.output![0])).toEqual(['z', 'b', 'c']);
    expect(model.graph!.node!.find((n) => n.opType === 'Add')!.output).toEqual(['a']);
    expect(model.graph!.node!.find((n) => n.opType === 'Mul')!.input).toEqual(['a', 'a']);
    const s = await ort.InferenceSession.create(bytes);
    try {
      const out = await s.run({ x: new ort.Tensor('float32', new Float32Array([1, 2]), [2]) });
      expect([...(out.a.data as Float32Array)]).toEqual([2, 4]);
      expect([...(out.b.data as Float32Array)]).toEqual([2, 4]);
      expect([...(out.c.data as Float32Array)]).toEqual([1, 2]);
      expect([...(out.z.data as Float32Array)]).toEqual([4, 16]);
    } finally {
      await s.release();
    }
  });

  it('refuses a value defined twice', () => {
    const g = new GraphBuilder('t');
    g.input('x', 'float32', [1]);
    expect(() => g.input('x', 'float32', [1])).toThrow(expect.objectContaining({ code: 'ENGINE_GRAPH_UNSUPPORTED' }));
  });

  it('onnxruntime refuses a symlink to a weight file outside the folder (why the cache hard-links or copies)', async () => {
    const outside = join(tmp.path, 'outside.bin');
    weightFile(outside);
    const dir = join(tmp.path, 'symlinked');
    mkdirSync(dir);
    symlinkSync(outside, join(dir, 'weights.bin'));
    writeFileSync(join(dir, 'm.onnx'), gemmGraph('weights.bin').toModelBytes());
    await expect(ort.InferenceSession.create(join(dir, 'm.onnx'))).rejects.toThrow(/escapes model directory|External data/);
  });
});

describe('graph cache entries', () => {
  const graph = (locationOf: (s: string) => string): Uint8Array => gemmGraph(locationOf(src)).toModelBytes();
  const src = join(tmp.path, 'shard.bin');
  weightFile(src);

  it('hard-links weight files beside model.onnx on the same filesystem and reuses the entry', async () => {
    const root = join(tmp.path, 'cache');
    const first = await ensureEntry({ cacheRoot: root, key: 'k1', sources: [src], graph });
    expect(first.created).toBe(true);
    expect(first.files[0]).toMatchObject({ location: 'w0.safetensors', mode: 'hardlink' });
    expect(statSync(join(first.dir, 'w0.safetensors')).ino).toBe(statSync(src).ino);
    expect(await runGemm(first.onnxPath)).toEqual([-4, -4, 6, 15]);
    const again = await ensureEntry({ cacheRoot: root, key: 'k1', sources: [src], graph: () => { throw new Error('must not rebuild'); } });
    expect(again.created).toBe(false);
  });

  it.skipIf(!existsSync('/dev/shm') || statSync('/dev/shm').dev === statSync(tmp.path).dev)('copies when the source is on another filesystem', async () => {
    const other = join('/dev/shm', `fgsn-${process.pid}-w.bin`);
    try {
      weightFile(other);
      const e = await ensureEntry({ cacheRoot: join(tmp.path, 'cache2'), key: 'k', sources: [other], graph: () => gemmGraph('w0.safetensors').toModelBytes() });
      expect(e.files[0].mode).toBe('copy');
      expect(await runGemm(e.onnxPath)).toEqual([-4, -4, 6, 15]);
    } finally {
      rmSync(other, { force: true });
    }
  });

  it('fingerprints change when a file is rewritten', () => {
    const p = join(tmp.path, 'fp.bin');
    weightFile(p);
    const a = fileFingerprint(p);
    utimesSync(p, new Date(), new Date(Date.now() + 5000));
    expect(fileFingerprint(p)).not.toBe(a);
  });
});
