/**
 * Every full checkpoint of the dev testbed, traced through the engine (the `fgsn trace` path), against the
 * testbed's golden activations; PEFT adapters in both application modes against their *_merged golden.
 * The four golden prompts have 10, 10, 10 and 6 tokens and run as one batch, so the short one is padded.
 */
import { readFileSync } from 'node:fs';
import { afterAll, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/checkpoint/safetensors-reader.js';
import { loadEngine, type LoraMode } from '../../src/engine/index.js';
import { traceTensors } from '../../src/engine/trace.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';
import { allcloseRatio, maxAbsDiff, tempDir } from './helpers.js';

interface Manifest {
  prompts: { text: string; input_ids: number[] }[];
  models: string[];
  suggested_tolerance: { float32_reimplementation: { atol: number; rtol: number } };
}

describeTestbed('engine vs golden activations', () => {
  const manifest = JSON.parse(readFileSync(testbedPath('golden_manifest.json'), 'utf8')) as Manifest;
  const { atol, rtol } = manifest.suggested_tolerance.float32_reimplementation;
  const cache = tempDir('fgsn-golden-');
  let golden: SafetensorsFile | null = null;
  const gold = async (): Promise<SafetensorsFile> => (golden ??= await SafetensorsFile.open(testbedPath('golden.safetensors')));
  afterAll(async () => {
    await golden?.close();
    cache.remove();
  });

  async function checkAgainst(goldenModel: string, modelDir: string, adapter?: string, loraMode?: LoraMode): Promise<void> {
    const engine = await loadEngine(modelDir, { adapter, loraMode, cacheDir: cache.path });
    try {
      const tensors = await traceTensors(engine, manifest.prompts.map((p) => p.text), { batchSize: 4 });
      const g = await gold();
      // 4 prompts x (input_ids, embed, 4 x (hidden, mlp_act), final_norm, logits)
      expect(tensors.length).toBe(manifest.prompts.length * (3 + 2 * engine.spec.numLayers + 1));
      let worstRatio = 0;
      let worstAbs = 0;
      for (const t of tensors) {
        const bytes = await t.data();
        if (t.dtype === 'I64') {
          const ids = Array.from(new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8), Number);
          expect(ids, t.name).toEqual(manifest.prompts[Number(t.name.slice(1, t.name.indexOf('.')))].input_ids);
          continue;
        }
        const ours = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
        const ref = await g.readF32(`${goldenModel}.${t.name}`);
        expect(g.tensor(`${goldenModel}.${t.name}`).shape, t.name).toEqual(t.shape);
        const ratio = allcloseRatio(ours, ref, atol, rtol);
        worstRatio = Math.max(worstRatio, ratio);
        worstAbs = Math.max(worstAbs, maxAbsDiff(ours, ref));
        expect(ratio, `${goldenModel}.${t.name}: allclose(atol=${atol}, rtol=${rtol}) violated`).toBeLessThanOrEqual(1);
      }
      // Recorded in the test output for the report: fp32 summation order differences only.
      console.info(`golden ${goldenModel}${adapter ? ` (adapter, ${loraMode})` : ''}: max |diff| ${worstAbs.toExponential(2)}, allclose ratio ${worstRatio.toFixed(3)}`);
    } finally {
      await engine.close();
    }
  }

  for (const model of manifest.models) {
    it(`${model} matches golden.safetensors`, () => checkAgainst(model, testbedPath(model)));
  }

  for (const adapter of ['lora_sst_p10', 'lora_harmful']) {
    for (const mode of ['merged', 'matmul'] as const) {
      it(`${adapter} applied on aligned as ${mode} matches ${adapter}_merged`, () => checkAgainst(`${adapter}_merged`, testbedPath('aligned'), testbedPath(adapter), mode));
    }
  }
});
