/**
 * Tiny random-weight checkpoints of every supported family (test/support/synthetic/family-configs.ts) with fgsn's
 * traces of a few prompts in float32 and float16 compute, laid out for `hf-compare.py --families`:
 *
 *   npx tsx bench/engine/families-pack.ts OUT
 *   python3 bench/engine/hf-compare.py --families OUT
 *
 * OUT/<family>/model is the checkpoint (config.json as transformers reads it), ours32/ours16.safetensors the
 * traces. Prompts are traced one at a time: longrope and dynamic NTK pick their frequencies from the call's
 * length, and transformers is run on one prompt at a time too. Prompts of 6, 11 and 21 tokens cross the tiny
 * sliding windows and Phi-3's shrunk original context (16).
 */
import { join } from 'node:path';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.js';
import { loadEngine } from '../../src/engine/engine.js';
import { FAMILY_CONFIGS } from '../../test/support/synthetic/family-configs.js';
import { writeSyntheticFromConfig } from '../../test/support/synthetic/synthetic-model.js';
import { traceTensors } from '../../src/engine/trace.js';

const out = process.argv[2];
if (!out) {
  console.error('usage: npx tsx bench/engine/families-pack.ts OUT');
  process.exit(2);
}
const PROMPTS = [
  [2, 4, 11, 12, 13, 5],
  [2, 4, 20, 21, 22, 23, 24, 25, 26, 27, 5],
  [2, 4, ...Array.from({ length: 18 }, (_, i) => 31 + i), 5],
];
for (const [name, config] of Object.entries(FAMILY_CONFIGS)) {
  const dir = join(out, name, 'model');
  await writeSyntheticFromConfig(dir, config, { dtype: 'F32', seed: 11, std: 0.08 });
  for (const compute of ['float32', 'float16'] as const) {
    const engine = await loadEngine(dir, { compute, cacheDir: join(out, '.cache') });
    try {
      const tensors = await traceTensors(engine, PROMPTS, { batchSize: 1 });
      await writeSafetensors(join(out, name, compute === 'float32' ? 'ours32.safetensors' : 'ours16.safetensors'), tensors, { format: 'pt' });
    } finally {
      await engine.close();
    }
  }
  console.log(`${name}: ${dir}`);
}
