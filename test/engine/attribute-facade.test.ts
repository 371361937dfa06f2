/**
 * Engine.attribute, the facade's attribution (what defense/scoring.ts calls): on the demo's planted trio it
 * gives the standalone driver's scores (attributionScores on the same folders), whether all layers run in one
 * pass or one layer per pass (segments), and defense's attributionGradDotV returns the same sums.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/index.js';
import { attributionGradDotV, closeSources, openSources, type WeightSources } from '../../src/defense/index.js';
import { demoSets, writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { attributionScores, checkpointDifference, loadEngine, type AttributionResult, type Engine } from '../../src/engine/index.js';
import { maxAbsDiff, tempDir } from './helpers.js';

describe('Engine.attribute (engine facade)', () => {
  const tmp = tempDir('fgsn-attr-facade-');
  let tb: DemoTestbed;
  let engine: Engine;
  let base: ModelCheckpoint;
  let aligned: ModelCheckpoint;
  let sources: WeightSources;
  const probes = demoSets().harmfulProbes.slice(0, 6);
  const prompts = probes.map((p) => p.prompt);
  const responses = probes.map((p) => p.response);
  const cacheDir = () => join(tmp.path, 'cache');

  beforeAll(async () => {
    tb = await writeDemoTestbed(join(tmp.path, 'demo'));
    engine = await loadEngine(tb.finetuned, { cacheDir: cacheDir() });
    base = await ModelCheckpoint.open(tb.base);
    aligned = await ModelCheckpoint.open(tb.aligned);
    sources = await openSources({ basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned });
  }, 120_000);
  afterAll(async () => {
    await engine?.close();
    await base?.close();
    await aligned?.close();
    if (sources) await closeSources(sources);
    tmp.remove();
  });

  const close = (a: AttributionResult, b: AttributionResult): void => {
    expect(a.tokens).toBe(b.tokens);
    expect(a.loss).toBeCloseTo(b.loss, 5);
    const sa = a.scores.get('V')!;
    const sb = b.scores.get('V')!;
    expect([...sa.keys()].sort()).toEqual([...sb.keys()].sort());
    let scale = 0;
    for (const v of sb.values()) for (const x of v) scale = Math.max(scale, Math.abs(x));
    expect(scale).toBeGreaterThan(0);
    for (const [w, v] of sa) expect(maxAbsDiff(v, sb.get(w)!), w).toBeLessThan(1e-5 * scale + 1e-7);
  };

  it('matches the standalone driver, in one pass and one layer per pass', async () => {
    const directions = [checkpointDifference('V', aligned, base)];
    const standalone = await attributionScores({
      model: tb.finetuned, sequences: prompts.map((prompt, i) => ({ prompt, response: responses[i] })),
      directions, reduction: 'sum', cacheRoot: cacheDir(),
    });
    const onePass = await engine.attribute(prompts, responses, { directions, reduction: 'sum' });
    const perLayer = await engine.attribute(prompts, responses, { directions, reduction: 'sum', layersPerPass: 1 });
    expect(onePass.layerChunks).toEqual([[0, 2]]);
    expect(perLayer.layerChunks).toEqual([[0, 1], [1, 2]]);
    close(onePass, standalone);
    close(perLayer, standalone);
  }, 300_000);

  it('is what defense scores rows with (attributionGradDotV: summed NLL, V = aligned - base)', async () => {
    const viaDefense = await attributionGradDotV(sources, engine, prompts, responses, { cacheDir: tmp.path });
    const direct = await engine.attribute(prompts, responses, { directions: [checkpointDifference('V', aligned, base)], reduction: 'sum' });
    expect(viaDefense.tokens).toBe(direct.tokens);
    expect(viaDefense.loss).toBeCloseTo(direct.loss, 5);
    for (const [w, v] of direct.scores.get('V')!) expect(maxAbsDiff(viaDefense.scores.get(w)!, v), w).toBeLessThan(1e-6);
  }, 300_000);

  it('checkpointDifference writes V into the buffer it is given; overlapping calls never share its scratch', async () => {
    const v = checkpointDifference('V', aligned, base);
    const expected = async (w: string, r0: number, r1: number): Promise<Float32Array> => {
      const [x, y] = await Promise.all([aligned.readRowsF32(w, r0, r1), base.readRowsF32(w, r0, r1)]);
      return x.map((e, i) => e - y[i]);
    };
    const wq = 'model.layers.0.self_attn.q_proj.weight';
    const wd = 'model.layers.1.mlp.down_proj.weight';
    const cols = aligned.tensor(wq).shape[1];
    const out = new Float32Array(3 * cols);
    for (let round = 0; round < 2; round++) {
      const [a, b, c] = await Promise.all([v.rows(wq, 2, 5, out), v.rows(wd, 0, 4), v.rows(wq, 0, 1)]);
      expect(a.buffer).toBe(out.buffer);
      expect(a.byteOffset).toBe(out.byteOffset);
      const [ea, eb, ec] = await Promise.all([expected(wq, 2, 5), expected(wd, 0, 4), expected(wq, 0, 1)]);
      expect(ea.some((x) => x !== 0)).toBe(true);
      expect(Array.from(a)).toEqual(Array.from(ea));
      expect(Array.from(b)).toEqual(Array.from(eb));
      expect(Array.from(c)).toEqual(Array.from(ec));
    }
  });

  it('refuses prompts and responses of different lengths', async () => {
    await expect(engine.attribute(prompts, responses.slice(1), { directions: [checkpointDifference('V', aligned, base)] }))
      .rejects.toMatchObject({ code: 'DEFENSE_OPTION_INVALID' });
  });
});
