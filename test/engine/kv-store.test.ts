/** The append-only, time-major KV cache of generation: layout, row dropping and views, by hand. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ModelSpec } from '../../src/checkpoint/types.js';
import { GraphBuilder } from '../../src/engine/onnx/graph-builder.js';
import { KvStore, type NewKv } from '../../src/engine/runtime/forward.js';
import {
  ARENA_AUTO_MIN_BYTES, cpuArenaEnabled, createSession, ENGINE_PROCESS_ENV, ort, runOptions, withEngineProcessEnv,
} from '../../src/engine/session/session.js';

// 1 layer, 1 KV head of dim 2: an entry is (b, t, d) -> 100 * b + 10 * t + d (t = absolute position)
const spec = { numLayers: 1, numKvHeads: 1, headDim: 2 } as ModelSpec;
const step = (batch: number, from: number, t: number): NewKv => {
  const data = Float32Array.from({ length: batch * t * 2 }, (_, k) => {
    const b = Math.floor(k / (t * 2));
    const ti = Math.floor((k % (t * 2)) / 2);
    return 100 * b + 10 * (from + ti) + (k % 2);
  });
  const x = new ort.Tensor('float32', data, [batch, 1, t, 2]);
  return { keys: [x], values: [new ort.Tensor('float32', data.map((v) => -v), [batch, 1, t, 2])] };
};

describe('KvStore', () => {
  it('appends [B, KV, T, D] steps as time-major [P, B, KV, D] and feeds a view of the first P positions', () => {
    const kv = new KvStore(spec, 2, 4);
    kv.append(step(2, 0, 2));
    kv.append(step(2, 2, 1));
    const v = kv.view();
    expect(v.length).toBe(3);
    expect(v.keys[0].dims).toEqual([3, 2, 1, 2]);
    // position-major: (t0 b0) (t0 b1) (t1 b0) (t1 b1) (t2 b0) (t2 b1)
    expect([...(v.keys[0].data as Float32Array)]).toEqual([0, 1, 100, 101, 10, 11, 110, 111, 20, 21, 120, 121]);
    expect([...(v.values[0].data as Float32Array)]).toEqual([-0, -1, -100, -101, -10, -11, -110, -111, -20, -21, -120, -121].map((x) => x));
    expect(() => kv.append(step(2, 3, 2))).toThrow(/full/);
  });

  it('drops finished rows in place, keeping every position of the others', () => {
    const kv = new KvStore(spec, 3, 3);
    kv.append(step(3, 0, 2));
    kv.keepRows([0, 2]);
    const v = kv.view();
    expect(v.keys[0].dims).toEqual([2, 2, 1, 2]);
    expect([...(v.keys[0].data as Float32Array)]).toEqual([0, 1, 200, 201, 10, 11, 210, 211]);
    // the next step has the new batch size
    kv.append(step(2, 2, 1));
    expect([...(kv.view().keys[0].data as Float32Array)].slice(8)).toEqual([20, 21, 120, 121]);
    expect(() => kv.append(step(3, 3, 1))).toThrow(RangeError);
  });
});

describe('engine process environment', () => {
  it('fills the defaults, and a value the host set wins', () => {
    expect(withEngineProcessEnv({ PATH: '/bin' })).toEqual({ PATH: '/bin', ...ENGINE_PROCESS_ENV });
    expect(withEngineProcessEnv({ FGSN_ORT_ARENA: '1' }).FGSN_ORT_ARENA).toBe('1');
    expect(withEngineProcessEnv({ GLIBC_TUNABLES: 'glibc.malloc.tcache_count=0' }).GLIBC_TUNABLES).toBe('glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1');
    expect(withEngineProcessEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES).toBe('glibc.malloc.hugetlb=0');
  });

  it('FGSN_ORT_ARENA=auto gives the arena to big checkpoints only, and only arena sessions are asked to shrink it', async () => {
    const before = process.env.FGSN_ORT_ARENA;
    const dir = mkdtempSync(join(tmpdir(), 'fgsn-arena-'));
    try {
      process.env.FGSN_ORT_ARENA = 'auto';
      expect([cpuArenaEnabled(), cpuArenaEnabled(ARENA_AUTO_MIN_BYTES - 1), cpuArenaEnabled(ARENA_AUTO_MIN_BYTES)]).toEqual([false, false, true]);
      process.env.FGSN_ORT_ARENA = '0';
      expect(cpuArenaEnabled(ARENA_AUTO_MIN_BYTES)).toBe(false);
      delete process.env.FGSN_ORT_ARENA;
      expect(cpuArenaEnabled()).toBe(true);
      const g = new GraphBuilder('mm');
      const a = g.input('a', 'float32', [2, 2]);
      g.output('c', g.op('MatMul', [a, a]), 'float32', [2, 2]);
      writeFileSync(join(dir, 'mm.onnx'), g.toModelBytes());
      process.env.FGSN_ORT_ARENA = 'auto';
      const small = await createSession(join(dir, 'mm.onnx'), { checkpointBytes: 1 << 20 });
      const big = await createSession(join(dir, 'mm.onnx'), { checkpointBytes: ARENA_AUTO_MIN_BYTES });
      try {
        expect(runOptions(small)).toEqual({});
        expect(runOptions(big)).toEqual({ extra: { memory: { enable_memory_arena_shrinkage: 'cpu:0' } } });
        // onnxruntime runs each with its own options.
        const feeds = { a: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [2, 2]) };
        for (const s of [small, big]) expect([...((await s.run(feeds, runOptions(s))).c.data as Float32Array)]).toEqual([7, 10, 15, 22]);
      } finally {
        await small.release();
        await big.release();
      }
    } finally {
      if (before === undefined) delete process.env.FGSN_ORT_ARENA;
      else process.env.FGSN_ORT_ARENA = before;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
