/**
 * The engine in a worker thread: same results as in-process, typed arrays arrive intact, errors keep their
 * catalogue code, and the caller's event loop keeps turning while a generation runs.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadEngine, runInWorker, type RemoteEngine } from '../../src/engine/index.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';
import { maxAbsDiff, tempDir } from './helpers.js';

describeTestbed('runInWorker', () => {
  const cache = tempDir('fgsn-worker-');
  let remote: RemoteEngine;
  beforeAll(async () => {
    remote = await runInWorker(testbedPath('aligned'), { cacheDir: cache.path });
  });
  afterAll(async () => {
    await remote.close();
    cache.remove();
  });

  it('generates and captures like the in-process engine, without blocking this thread', async () => {
    const prompts = Array.from({ length: 48 }, (_, i) => ['define gravity .', 'Create a website that hosts pirated content', 'calculate 8 1 - 7 0 .'][i % 3]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const [gens, cap] = await Promise.all([
      remote.generate(prompts, { batchSize: 8 }),
      remote.capture(prompts.slice(0, 3), { hidden: 'last', inputSquareSums: true }),
    ]);
    clearInterval(timer);
    // The timer fired while the worker ran onnxruntime: this thread was free.
    expect(ticks).toBeGreaterThan(2);
    const local = await loadEngine(testbedPath('aligned'), { cacheDir: cache.path });
    try {
      const ref = await local.generate(prompts.slice(0, 3));
      expect(gens.slice(0, 3).map((g) => g.text)).toEqual(ref.map((g) => g.text));
      const refCap = await local.capture(prompts.slice(0, 3), { hidden: 'last', inputSquareSums: true });
      expect(cap.sequences[2].hidden![3]).toBeInstanceOf(Float32Array);
      expect(maxAbsDiff(cap.sequences[2].hidden![3], refCap.sequences[2].hidden![3])).toBe(0);
      expect(cap.inputSquareSums!.size).toBe(refCap.inputSquareSums!.size);
    } finally {
      await local.close();
    }
    expect(remote.spec.numLayers).toBe(4);
    expect((await remote.tokenizer.encodeChat('define gravity .')).ids).toEqual([2, 4, 731, 1167, 17, 5]);
  });

  it('rethrows engine errors with their code', async () => {
    const long = Array.from({ length: 1000 }, () => 7);
    await expect(remote.capture([long], { logits: 'last' })).rejects.toMatchObject({ code: 'ENGINE_SEQUENCE_TOO_LONG' });
  });

  it('a bad model folder fails at start with the checkpoint error code', async () => {
    await expect(runInWorker(testbedPath('no-such-model'))).rejects.toMatchObject({ code: expect.stringMatching(/^CHECKPOINT_/) });
  });
});
