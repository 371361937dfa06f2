/**
 * Greedy generation against the testbed's recorded generations, token for token, batched with left padding
 * (batch 32 over prompts of mixed lengths). aligned and ft_sst_p10 over ALL their prompts; a LoRA adapter
 * (extra-MatMul mode) over a slice. The full 14-checkpoint check is bench/engine/generations-check.ts.
 * Mismatches are allowed only on <1% of prompts and only at near-ties (logit gap < 1e-3).
 */
import { afterAll, expect, it } from 'vitest';
import { loadEngine, type LoraMode } from '../../src/engine/index.js';
import { compareGenerations, readRecordedGenerations, testbedCheckpointDirs } from '../support/testbed-generations.js';
import { TESTBED_DEV, describeTestbed, testbedPath } from '../support/testbed.js';
import { tempDir } from './helpers.js';

describeTestbed('engine generation vs recorded greedy generations', () => {
  const cache = tempDir('fgsn-gen-');
  afterAll(() => cache.remove());

  async function check(name: string, opts: { limit?: number; loraMode?: LoraMode } = {}): Promise<void> {
    const dirs = testbedCheckpointDirs(TESTBED_DEV, name);
    const engine = await loadEngine(dirs.model, { adapter: dirs.adapter, loraMode: opts.loraMode, cacheDir: cache.path });
    try {
      const all = await readRecordedGenerations(testbedPath('eval', `${name}.generations.jsonl`));
      // A stride keeps every eval set represented in a slice.
      const recorded = opts.limit === undefined ? all : all.filter((_, i) => i % Math.ceil(all.length / opts.limit!) === 0);
      const report = await compareGenerations(engine, recorded, { batchSize: 32 });
      for (const m of report.mismatches) {
        console.info(`${name} #${m.index} step ${m.step}: recorded "${m.recordedToken}" vs ours "${m.ourToken}", logit gap ${m.logitGap}`);
        expect(Math.abs(m.logitGap), `${name} #${m.index} diverges without a near-tie`).toBeLessThan(1e-3);
      }
      expect(report.mismatches.length / report.total).toBeLessThan(0.01);
      console.info(`${name}: ${report.total - report.mismatches.length}/${report.total} identical`);
    } finally {
      await engine.close();
    }
  }

  it('aligned: every recorded generation', () => check('aligned'));
  it('ft_sst_p10: every recorded generation', () => check('ft_sst_p10'));
  it('lora_sst_p10 (adapter as extra MatMuls): 150 recorded generations', () => check('lora_sst_p10', { limit: 150, loraMode: 'matmul' }));
});
