/**
 * The device-resident KV store's bookkeeping and merge graph (runtime/device-kv.ts), checked on the CPU
 * provider, where the same merge graph returns host tensors: after any sequence of appends and row drops its
 * past must equal the host KvStore's, value for value. Whether CUDA keeps the tensors on the device is for
 * the device check (bench/engine/device-check.ts); here only that the CPU path never asks for it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelSpec } from '../../src/checkpoint/types.js';
import { isFgsnError } from '../../src/errors.js';
import { createMergeSession, DeviceKvStore, generationKv, presentOutputNames, withDeviceKvOutputs } from '../../src/engine/runtime/device-kv.js';
import { KvStore, type KvCache, type NewKv } from '../../src/engine/runtime/forward.js';
import { providerBindingDir } from '../../src/engine/session/ep-diagnosis.js';
import { ort } from '../../src/engine/session/session.js';

const spec = { numLayers: 2, numKvHeads: 2, headDim: 3 } as ModelSpec;
let merge: ort.InferenceSession;

beforeAll(async () => {
  merge = await createMergeSession(spec.numLayers, { executionProvider: 'cpu' });
});
afterAll(async () => {
  await merge.release();
});

let seed = 1;
function added(batch: number, t: number): NewKv {
  const make = (): ort.Tensor => new ort.Tensor('float32', Float32Array.from({ length: batch * spec.numKvHeads * t * spec.headDim }, () => (seed = (seed * 48271) % 2147483647) / 2147483647), [batch, spec.numKvHeads, t, spec.headDim]);
  return { keys: [make(), make()], values: [make(), make()] };
}

function copyKv(a: NewKv): NewKv {
  const copy = (t: ort.Tensor): ort.Tensor => new ort.Tensor('float32', (t.data as Float32Array).slice(), t.dims);
  return { keys: a.keys.map(copy), values: a.values.map(copy) };
}

function expectSame(a: KvCache, b: KvCache): void {
  expect(a.length).toBe(b.length);
  for (const kind of ['keys', 'values'] as const) {
    a[kind].forEach((t, i) => {
      expect(t.dims).toEqual(b[kind][i].dims);
      expect(Array.from(t.data as Float32Array)).toEqual(Array.from(b[kind][i].data as Float32Array));
    });
  }
}

describe('DeviceKvStore on the CPU provider', () => {
  it('holds the same past as the host KvStore through prefill, decode steps and dropped rows', async () => {
    const host = new KvStore(spec, 3, 10);
    const dev = new DeviceKvStore(merge, spec, 3);
    expectSame(await dev.view(), host.view());
    const steps: [number, number, number[] | null][] = [[3, 4, null], [3, 1, [0, 2]], [2, 1, null], [2, 1, [1]], [1, 1, null]];
    for (const [batch, t, keep] of steps) {
      const a = added(batch, t);
      // The host store frees what it appended (KvStore.append): it gets its own copy.
      host.append(copyKv(a));
      dev.append(a);
      if (keep !== null) {
        host.keepRows(keep);
        dev.keepRows(keep);
      }
      expectSame(await dev.view(), host.view());
    }
    expect(dev.length).toBe(8);
    dev.dispose(added(1, 1));
    expect((await dev.view()).length).toBe(0);
  });

  it('refuses a second append before the past was read (the engine never does that)', () => {
    const dev = new DeviceKvStore(merge, spec, 1);
    dev.append(added(1, 1));
    expect(() => dev.append(added(1, 1))).toThrow(/two appends/);
  });
});

describe('the host KvStore frees its memory when done, not when V8 collects it', () => {
  it('frees appended steps at once and its own buffers (and the last step) on dispose; views into shared buffers stay', () => {
    const host = new KvStore(spec, 2, 4);
    const a = added(2, 2);
    const values = Array.from(a.keys[0].data as Float32Array);
    host.append(a);
    for (const t of [...a.keys, ...a.values]) expect((t.data as Float32Array).length).toBe(0);
    const past = host.view();
    // [B, KV, T, D] -> [T, B, KV, D]: position 0 of row 0, head 0 is the first D values of the step.
    expect(Array.from((past.keys[0].data as Float32Array).subarray(0, spec.headDim))).toEqual(values.slice(0, spec.headDim));
    const last = added(2, 1);
    // A step whose tensors are views into one shared buffer (not the engine's case) is left alone.
    const shared = new Float32Array(2 * 2 * 1 * 3 * 2);
    const view = new ort.Tensor('float32', shared.subarray(0, 12), [2, 2, 1, 3]);
    host.dispose({ keys: [...last.keys, view], values: last.values });
    for (const t of [...last.keys, ...last.values]) expect((t.data as Float32Array).length).toBe(0);
    expect((view.data as Float32Array).length).toBe(12);
    expect((past.keys[0].data as Float32Array).length).toBe(0);
    expect(host.length).toBe(0);
    // A second release of the same buffers is a no-op, not a TypeError.
    expect(() => host.dispose(last)).not.toThrow();
  });
});

describe('which sessions keep KV on the device', () => {
  it('only KV-cache graphs on CUDA with deviceKv on', () => {
    const cuda = { executionProvider: 'cuda' as const, deviceKv: true };
    expect(withDeviceKvOutputs(cuda, true, 2).preferredOutputLocation).toEqual({
      'present.0.key': 'gpu-buffer', 'present.0.value': 'gpu-buffer', 'present.1.key': 'gpu-buffer', 'present.1.value': 'gpu-buffer',
    });
    expect(presentOutputNames(2)).toHaveLength(4);
    for (const [cfg, kv] of [[cuda, false], [{ executionProvider: 'cuda' as const }, true], [{ executionProvider: 'cpu' as const, deviceKv: true }, true]] as const) {
      expect(withDeviceKvOutputs(cfg, kv, 2)).toBe(cfg);
    }
  });

  it('generation on the CPU provider keeps the host KvStore even when deviceKv is asked for; CUDA takes the device store', async () => {
    const kvSession = { inputNames: ['input_ids', 'past_key_values.0.key'] } as unknown as ort.InferenceSession;
    expect(await generationKv(kvSession, { executionProvider: 'cpu', deviceKv: true }, spec, 2, 8)).toBeInstanceOf(KvStore);
    expect(await generationKv(kvSession, { executionProvider: 'cuda' }, spec, 2, 8)).toBeInstanceOf(KvStore);
    // With deviceKv on CUDA it builds the merge session on CUDA, which a machine without the provider cannot start.
    if (existsSync(join(providerBindingDir(), 'libonnxruntime_providers_cuda.so'))) return;
    const err = await generationKv(kvSession, { executionProvider: 'cuda', deviceKv: true }, spec, 2, 8).then(() => undefined, (e: unknown) => e);
    expect(isFgsnError(err) && err.code).toBe('ENGINE_EP_UNAVAILABLE');
  });
});
