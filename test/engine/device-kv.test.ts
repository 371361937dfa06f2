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
      host.append(a);
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
