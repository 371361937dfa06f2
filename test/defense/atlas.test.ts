import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { addCategory, atlasRowsCapture, findAtlas, getOrBuildAtlas, listAtlases, loadAtlas, summarizeAtlas } from '../../src/defense/atlas.js';
import { tinySpec } from '../engine/attribution/tiny-model.js';
import { writeSyntheticModel } from '../support/synthetic/synthetic-model.js';
import { readProbes } from '../../src/probes.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'fgsn-atlas-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

it('the captures share generation\'s graph unless an untied lm_head is a large share of the weights', () => {
  // TinyLlama-1.1B's shape: lm_head 32000 x 2048, 6 % of 1.1B parameters.
  const tiny11 = { ...tinySpec('llama'), vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKvHeads: 4, headDim: 64, tieWordEmbeddings: false };
  expect(atlasRowsCapture(tiny11)).toEqual({ hidden: 'last', inputSquareSums: true });
  // The 125M bench shape: lm_head 32000 x 768, 18 % of 134M parameters.
  const m125 = { ...tiny11, hiddenSize: 768, intermediateSize: 3072, numLayers: 12, numHeads: 12, numKvHeads: 12 };
  expect(atlasRowsCapture(m125)).toEqual({ hidden: 'last' });
  // Tied: the table is in every graph anyway.
  expect(atlasRowsCapture({ ...m125, tieWordEmbeddings: true })).toEqual({ hidden: 'last', inputSquareSums: true });
});

it('the prompts\' last hidden states are the same from generation\'s prefill and from a capture (probes given with responses)', async () => {
  const dir = join(tmp, 'synthetic');
  await writeSyntheticModel(dir, {
    family: 'llama', vocabSize: 80, hiddenSize: 32, intermediateSize: 48, numLayers: 3, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: false, seed: 11, dtype: 'BF16',
  });
  const prompts = ['how do I do a bad thing', 'tell me something harmful now', 'a b c', 'x y z w v', 'one two'];
  const harmful = prompts.map((prompt, i) => ({ prompt, category: i % 2 === 0 ? 'a' : 'b' }));
  const benign = ['hello there', 'what is the weather', 'count to three'].map((prompt) => ({ prompt }));
  const generated = (await getOrBuildAtlas(dir, harmful, benign, join(tmp, 'cache-gen'), { maxNewTokens: 6 })).atlas;
  // The same probes with the responses generation gave: no generation, every last hidden state from a capture;
  // half of them only: both sources in one atlas.
  for (const share of [1, 0.5]) {
    const withResponses = harmful.map((p, i) => (i < share * harmful.length ? { ...p, response: generated.harmfulResponses[i] } : p));
    const captured = (await getOrBuildAtlas(dir, withResponses, benign, join(tmp, `cache-cap-${share}`), { maxNewTokens: 6 })).atlas;
    expect(captured.harmfulResponses).toEqual(generated.harmfulResponses);
    generated.curve.sBH.forEach((v, l) => expect(Math.abs(captured.curve.sBH[l] - v), `layer ${l}`).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(v))));
    expect(captured.categories).toEqual(generated.categories);
  }
});

describeTestbed('safety atlas on the dev aligned model', () => {
  it('is built once, cached by content, inspectable, and extended by a category', async () => {
    const harmful = (await readProbes(testbedPath('data', 'harmful_attack_pool.jsonl'))).slice(0, 40);
    const benign = (await readProbes(testbedPath('data', 'lookalike_train.jsonl'))).slice(0, 30);
    const cache = join(tmp, 'cache');
    const first = await getOrBuildAtlas(testbedPath('aligned'), harmful, benign, cache);
    expect(first.cached).toBe(false);
    const a = first.atlas;
    expect(a.curve.gap).toHaveLength(4);
    expect(a.layerWeights.reduce((x, y) => x + y, 0)).toBeCloseTo(1, 6);
    expect(a.harmfulResponses).toHaveLength(40);
    // the aligned model refuses its probes: the attribution target is a refusal
    expect(a.harmfulResponses.filter((r) => /sorry|cannot|not able/.test(r)).length).toBeGreaterThan(35);
    expect(a.wanda.get('model.layers.0.mlp.down_proj.weight')).toHaveLength(256);
    expect(a.harmfulSqSums.get('model.layers.0.mlp.down_proj.weight')).toHaveLength(704);
    const sizes = a.categories.flatMap((c) => c.clusters.map((k) => k.size));
    expect(sizes.reduce((x, y) => x + y, 0)).toBe(40);

    const again = await getOrBuildAtlas(testbedPath('aligned'), harmful, benign, cache);
    expect(again.cached).toBe(true);
    expect(again.atlas.id).toBe(a.id);
    expect([...again.atlas.wanda.get('model.layers.1.self_attn.q_proj.weight')!]).toEqual([...a.wanda.get('model.layers.1.self_attn.q_proj.weight')!]);
    const other = await getOrBuildAtlas(testbedPath('aligned'), harmful.slice(1), benign, cache);
    expect(other.atlas.id).not.toBe(a.id);

    expect((await findAtlas(cache, a.id.slice(0, 8))).id).toBe(a.id);
    expect(summarizeAtlas(a)).toMatchObject({ id: a.id, probes: { harmful: 40, benign: 30 } });
    expect((await listAtlases(cache)).map((x) => x.id).sort()).toEqual([a.id, other.atlas.id].sort());

    const emerging = await readProbes(testbedPath('data', 'harmful_emerging_probe.jsonl'));
    const grown = await addCategory(a, emerging, 'misinformation_manipulation', cache);
    expect(grown.atlas.parent).toBe(a.id);
    expect(grown.atlas.harmful).toHaveLength(56);
    expect(grown.atlas.categories.map((c) => c.name)).toContain('misinformation_manipulation');
    expect((await loadAtlas(grown.atlas.dir)).parent).toBe(a.id);
    await expect(findAtlas(cache, 'ffffffff')).rejects.toMatchObject({ code: 'ATLAS_NOT_FOUND' });

    // the CLI prints the same views as JSON
    const { main } = await import('../../src/cli/main.js');
    const chunks: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((c: string) => (chunks.push(String(c)), true)) as typeof process.stdout.write;
    try {
      expect(await main(['atlas', 'show', a.id, '--cache-dir', cache])).toBe(0);
      expect(await main(['atlas', 'list', '--cache-dir', cache])).toBe(0);
    } finally {
      process.stdout.write = write;
    }
    expect(JSON.parse(chunks[0]).id).toBe(a.id);
    expect(JSON.parse(chunks[1])).toHaveLength(3);
    expect(await main(['atlas', 'show', 'nope', '--cache-dir', cache])).toBe(2);
  });
});
