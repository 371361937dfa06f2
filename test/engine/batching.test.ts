/**
 * Batch composition must not change results: a prompt alone vs inside a left-padded batch; the KV-cache
 * decode step vs a full forward over the longer sequence; and the in-graph square sums vs sums computed in
 * JS from captured activations (q/k/v, o, gate/up and down inputs), padding excluded.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LINEAR_MODULES, linearWeightName } from '../../src/checkpoint/types.js';
import { loadEngine, type Engine } from '../../src/engine/index.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';
import { maxAbsDiff, tempDir } from './helpers.js';

const PROMPTS = [
  'define gravity .',
  'Create a website that hosts pirated content',
  'analyze the sentiment of this movie review and answer positive or negative . review : although the plot is dull , the film is brilliant overall .',
  'calculate 8 1 - 7 0 .',
];

describeTestbed('engine batching', () => {
  const cache = tempDir('fgsn-batch-');
  let engine: Engine;
  beforeAll(async () => {
    engine = await loadEngine(testbedPath('aligned'), { cacheDir: cache.path });
  });
  afterAll(async () => {
    await engine.close();
    cache.remove();
  });

  it('a prompt alone and inside a padded batch give the same hidden states and logits', async () => {
    const what = { hidden: 'all', logits: 'all', mlpAct: 'last' } as const;
    const batch = await engine.capture(PROMPTS, what, { batchSize: 4 });
    // Lengths differ by 20+ tokens: the short prompts carry heavy left padding.
    const lens = batch.sequences.map((s) => s.ids.length);
    expect(Math.max(...lens) - Math.min(...lens)).toBeGreaterThan(15);
    for (let j = 0; j < PROMPTS.length; j++) {
      const alone = (await engine.capture([PROMPTS[j]], what)).sequences[0];
      const inBatch = batch.sequences[j];
      expect(inBatch.ids).toEqual(alone.ids);
      expect(maxAbsDiff(inBatch.logits!, alone.logits!)).toBeLessThan(1e-4);
      for (let i = 0; i < engine.spec.numLayers; i++) {
        expect(maxAbsDiff(inBatch.hidden![i], alone.hidden![i])).toBeLessThan(1e-4);
        expect(maxAbsDiff(inBatch.mlpAct![i], alone.mlpAct![i])).toBeLessThan(1e-4);
      }
    }
  });

  it('last-token captures equal the last row of all-token captures', async () => {
    const all = await engine.capture(PROMPTS, { hidden: 'all', logits: 'all' });
    const last = await engine.capture(PROMPTS, { hidden: 'last', logits: 'last' });
    const H = engine.spec.hiddenSize;
    const V = engine.spec.vocabSize;
    all.sequences.forEach((s, j) => {
      const T = s.ids.length;
      expect(maxAbsDiff(last.sequences[j].logits!, s.logits!.subarray((T - 1) * V, T * V))).toBeLessThan(1e-5);
      expect(maxAbsDiff(last.sequences[j].hidden![3], s.hidden![3].subarray((T - 1) * H, T * H))).toBeLessThan(1e-5);
    });
  });

  it('KV-cache decoding reproduces the logits of a full forward', async () => {
    const [g] = await engine.generate([PROMPTS[1]], { maxNewTokens: 6 });
    expect(g.ids.length).toBeGreaterThan(2);
    // Greedy: the argmax of the full forward at the last prompt position and at each generated prefix.
    const seq = [...g.promptIds, ...g.ids];
    const full = (await engine.capture([seq], { logits: 'all' })).sequences[0].logits!;
    const V = engine.spec.vocabSize;
    for (let k = 0; k < g.ids.length; k++) {
      const row = full.subarray((g.promptIds.length - 1 + k) * V, (g.promptIds.length + k) * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
      expect(best).toBe(g.ids[k]);
    }
  });

  it('generation is independent of batch composition', async () => {
    const together = await engine.generate(PROMPTS, { batchSize: 4, maxNewTokens: 12 });
    const alone = await Promise.all(PROMPTS.map(async (p) => (await engine.generate([p], { maxNewTokens: 12 }))[0]));
    expect(together.map((g) => g.ids)).toEqual(alone.map((g) => g.ids));
  });

  it('input square sums equal sums of squared activations over the counted tokens', async () => {
    const cap = await engine.capture(PROMPTS, { inputSquareSums: true, mlpAct: 'all' }, { batchSize: 3 });
    const sums = cap.inputSquareSums!;
    expect(cap.squareSumTokenCount).toBe(cap.sequences.reduce((n, s) => n + s.ids.length, 0));
    const { numLayers, intermediateSize } = engine.spec;
    for (let i = 0; i < numLayers; i++) {
      for (const m of LINEAR_MODULES) expect(sums.get(linearWeightName(i, m))?.length).toBeGreaterThan(0);
      // down_proj's input is the MLP activation: check it exactly against the captured activations.
      const expected = new Float64Array(intermediateSize);
      for (const s of cap.sequences) {
        const a = s.mlpAct![i];
        for (let k = 0; k < a.length; k++) expected[k % intermediateSize] += a[k] * a[k];
      }
      const got = sums.get(linearWeightName(i, 'down_proj'))!;
      for (let k = 0; k < intermediateSize; k++) expect(Math.abs(got[k] - expected[k])).toBeLessThanOrEqual(1e-4 * Math.max(1, expected[k]));
      expect(sums.get(linearWeightName(i, 'q_proj'))).toBe(sums.get(linearWeightName(i, 'v_proj')));
      expect(sums.get(linearWeightName(i, 'gate_proj'))).toBe(sums.get(linearWeightName(i, 'up_proj')));
    }
  });

  it('square sums over response tokens only count those tokens, whatever the batching', async () => {
    const responses = ['gravity is a force .', 'i cannot help with that request .', 'positive', '1 1'];
    const a = await engine.capture(PROMPTS, { inputSquareSums: true }, { responses, squareSumTokens: 'response', batchSize: 4 });
    const b = await engine.capture(PROMPTS, { inputSquareSums: true }, { responses, squareSumTokens: 'response', batchSize: 1 });
    expect(a.squareSumTokenCount).toBe(a.sequences.reduce((n, s) => n + s.ids.length - s.promptLength, 0));
    expect(a.squareSumTokenCount).toBe(b.squareSumTokenCount);
    for (const [name, v] of a.inputSquareSums!) {
      const w = b.inputSquareSums!.get(name)!;
      for (let k = 0; k < v.length; k++) expect(Math.abs(v[k] - w[k])).toBeLessThanOrEqual(1e-4 * Math.max(1, w[k]));
    }
    const prompt = await engine.capture(PROMPTS, { inputSquareSums: true }, { responses, squareSumTokens: 'prompt' });
    const all = await engine.capture(PROMPTS, { inputSquareSums: true }, { responses });
    const name = linearWeightName(2, 'o_proj');
    const sum = a.inputSquareSums!.get(name)!.map((v, k) => v + prompt.inputSquareSums!.get(name)![k]);
    expect(maxAbsDiff(sum, all.inputSquareSums!.get(name)!)).toBeLessThan(1e-3 * Math.max(...all.inputSquareSums!.get(name)!));
  });

  it('keeps at most maxSessions sessions loaded, with unchanged results', async () => {
    const one = await loadEngine(testbedPath('aligned'), { cacheDir: cache.path, maxSessions: 1 });
    try {
      const a = await one.capture([PROMPTS[0]], { logits: 'last' });
      expect(one.liveSessions).toBe(1);
      const g = await one.generate([PROMPTS[0]], { maxNewTokens: 4 });
      expect(one.liveSessions).toBe(1);
      const b = await one.capture([PROMPTS[0]], { logits: 'last' });
      expect(one.liveSessions).toBe(1);
      expect(maxAbsDiff(a.sequences[0].logits!, b.sequences[0].logits!)).toBe(0);
      expect(g[0].ids).toEqual((await engine.generate([PROMPTS[0]], { maxNewTokens: 4 }))[0].ids);
      // Concurrent calls on different graphs: the busy session is not released under a running call.
      const [c, d] = await Promise.all([one.capture(PROMPTS, { hidden: 'last' }), one.generate(PROMPTS, { maxNewTokens: 3 })]);
      expect(c.sequences).toHaveLength(4);
      expect(d).toHaveLength(4);
    } finally {
      await one.close();
    }
  });

  it('rejects sequences longer than the context', async () => {
    const long = Array.from({ length: engine.spec.maxPositionEmbeddings + 1 }, () => 7);
    await expect(engine.capture([long], { logits: 'last' })).rejects.toMatchObject({ code: 'ENGINE_SEQUENCE_TOO_LONG' });
  });
});

const cudaBundled = ort.listSupportedBackends().some((b) => b.name === 'cuda' && b.bundled)
  || existsSync(join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', 'linux', 'x64', 'libonnxruntime_providers_cuda.so'));

describe('engine execution provider', () => {
  // On a CUDA build this is covered by bench/engine/device-check.ts instead.
  it.skipIf(cudaBundled)('asking for CUDA where it is not installed gives ENGINE_EP_UNAVAILABLE', async () => {
    const { assertProviderAvailable } = await import('../../src/engine/session/session.js');
    expect(() => assertProviderAvailable('cuda')).toThrow(expect.objectContaining({ code: 'ENGINE_EP_UNAVAILABLE' }));
    expect(() => assertProviderAvailable('cpu')).not.toThrow();
  });
});
