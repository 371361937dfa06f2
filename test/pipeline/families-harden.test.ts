/**
 * The defense job end to end (runHarden, method fgsn at a fixed budget: --target-asr off --q 0.01) on tiny
 * random-weight checkpoints of every family: base, aligned and fine-tune are three seeds of the same config.
 * Nothing here measures safety (random weights neither refuse nor comply); what it shows is that atlas,
 * attribution, selection and projection run per family, that the rows edited are rows of the family's own
 * linear weights (Phi-3's fused qkv_proj / gate_up_proj included), that every other tensor and config.json are
 * left as they were, and that the hardened folder loads and generates.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { linearWeightNames } from '../../src/checkpoint/model-config.js';
import { ModelCheckpoint } from '../../src/checkpoint/model-folder.js';
import { loadEngine } from '../../src/engine/index.js';
import { writeSyntheticFromConfig } from '../support/synthetic/synthetic-model.js';
import { runHarden } from '../../src/pipeline/harden.js';
import type { ProbeRecord } from '../../src/pipeline/types.js';
import { tempDir } from '../engine/helpers.js';
import { FAMILY_CONFIGS } from '../support/synthetic/family-configs.js';

const words = (seed: number, n: number): string => Array.from({ length: n }, (_, i) => `w${7 + ((seed * 7 + i * 5) % 50)}`).join(' ');
const probes = (seed: number, n: number): ProbeRecord[] => Array.from({ length: n }, (_, i) => ({ prompt: words(seed + i, 5), response: words(seed + 31 * i, 4) }));

const tmp = tempDir('fgsn-fharden-');
afterAll(() => tmp.remove());

describe.each(Object.keys(FAMILY_CONFIGS))('fixed-budget harden on a tiny %s', (name) => {
  it('edits ~1% of the rows of its own linear weights, leaves the rest and config.json alone, and the result generates', async () => {
    const root = join(tmp.path, name.replace(/\W/g, '_'));
    const [base, aligned, ft] = ['base', 'aligned', 'ft'].map((k) => join(root, k));
    await writeSyntheticFromConfig(base, FAMILY_CONFIGS[name], { dtype: 'BF16', seed: 1, std: 0.08 });
    await writeSyntheticFromConfig(aligned, FAMILY_CONFIGS[name], { dtype: 'BF16', seed: 2, std: 0.08 });
    await writeSyntheticFromConfig(ft, FAMILY_CONFIGS[name], { dtype: 'BF16', seed: 3, std: 0.08 });
    const outDir = join(root, 'out');
    const r = await runHarden({
      basePath: base, alignedPath: aligned, finetunedPath: ft, harmful: probes(1, 6), benign: probes(100, 6), task: probes(200, 6),
      method: 'fgsn', options: { targetAsr: 'off', q: 0.01 }, outputs: ['model', 'diff'], outDir, cacheDir: join(root, 'cache'),
    });
    expect(r.summary.rowsChanged).toBeGreaterThan(0);
    const before = await ModelCheckpoint.open(ft);
    const after = await ModelCheckpoint.open(join(outDir, 'model'));
    try {
      expect(after.spec).toEqual(before.spec);
      expect(JSON.parse(await readFile(join(outDir, 'model', 'config.json'), 'utf8'))).toEqual(JSON.parse(await readFile(join(ft, 'config.json'), 'utf8')));
      const linear = new Set(linearWeightNames(before.spec));
      let rowsChanged = 0;
      const changedWeights = new Set<string>();
      for (const n of before.names()) {
        const a = await before.readF32(n);
        const b = await after.readF32(n);
        expect(after.tensor(n).dtype, n).toBe(before.tensor(n).dtype);
        const cols = before.tensor(n).shape.length === 2 ? before.tensor(n).shape[1] : a.length;
        for (let row = 0; row * cols < a.length; row++) {
          let same = true;
          for (let j = 0; j < cols; j++) if (a[row * cols + j] !== b[row * cols + j]) same = false;
          if (!same) {
            // Only rows of the family's linear weights ever change.
            expect(linear.has(n), `${n} changed`).toBe(true);
            rowsChanged++;
            changedWeights.add(n);
          }
        }
      }
      expect(rowsChanged).toBe(r.summary.rowsChanged);
      console.info(`${name}: ${rowsChanged} rows changed in ${[...changedWeights].length} weights (${[...changedWeights].map((n) => n.replace(/^model\.layers\./, '')).join(', ')})`);
      if (before.spec.fusedProjections) {
        // Phi-3: the edited rows lie inside the fused matrices (rows of q, k or v in qkv_proj; gate or up in gate_up_proj).
        expect([...changedWeights].every((n) => /\.(qkv|o|gate_up|down)_proj\./.test(n))).toBe(true);
        expect([...changedWeights].some((n) => /\.(qkv|gate_up)_proj\./.test(n))).toBe(true);
      }
      const engine = await loadEngine(join(outDir, 'model'), { cacheDir: join(root, 'cache') });
      try {
        const [g] = await engine.generate([[2, 4, 11, 12, 13, 5]], { maxNewTokens: 4, stopTokenIds: [] });
        expect(g.ids).toHaveLength(4);
      } finally {
        await engine.close();
      }
    } finally {
      await before.close();
      await after.close();
    }
  }, 120_000);
});
