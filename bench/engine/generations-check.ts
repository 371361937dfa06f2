/**
 * Full check of `generate` against every recorded greedy generation of the dev testbed
 * (eval/<ckpt>.generations.jsonl, ~881 prompts x 14 checkpoints), batched with left padding.
 * Any mismatch is printed with the logit gap (best - second best) at the first diverging step, measured by a
 * teacher-forced forward over the recorded response: a near-tie explains a flip between implementations.
 *
 *   npx tsx bench/engine/generations-check.ts [--batch-size 32] [--lora-mode merged|matmul] [ckpt ...]
 */
import { readdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { compareGenerations, readRecordedGenerations, testbedCheckpointDirs } from '../../test/support/testbed-generations.js';
import { loadEngine } from '../../src/engine/engine.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'batch-size': { type: 'string' }, 'lora-mode': { type: 'string' }, testbed: { type: 'string' } } });
const testbed = values.testbed ?? process.env.FGSN_TESTBED_DIR ?? new URL('../../../shared/testbed/dev', import.meta.url).pathname;
const names = positionals.length > 0 ? positionals : readdirSync(`${testbed}/eval`).filter((f) => f.endsWith('.generations.jsonl')).map((f) => f.replace('.generations.jsonl', '')).sort();
const batchSize = Number(values['batch-size'] ?? 32);
let total = 0;
let totalBad = 0;
for (const name of names) {
  const { model, adapter } = testbedCheckpointDirs(testbed, name);
  const engine = await loadEngine(model, { adapter, loraMode: values['lora-mode'] === 'matmul' ? 'matmul' : 'merged' });
  try {
    const recorded = await readRecordedGenerations(`${testbed}/eval/${name}.generations.jsonl`);
    const t0 = performance.now();
    const report = await compareGenerations(engine, recorded, { batchSize });
    const ms = performance.now() - t0;
    total += report.total;
    totalBad += report.mismatches.length;
    console.log(`${name.padEnd(22)} ${String(report.total - report.mismatches.length).padStart(4)}/${report.total} identical (${(100 * (1 - report.mismatches.length / report.total)).toFixed(2)}%)  ${ms.toFixed(0)} ms`);
    for (const m of report.mismatches) {
      console.log(`   #${m.index} step ${m.step}: recorded ${JSON.stringify(m.recordedToken)} vs ours ${JSON.stringify(m.ourToken)}; gap between them ${m.logitGap.toExponential(3)} (top-2 margin ${m.margin.toExponential(3)})`);
    }
  } finally {
    await engine.close();
  }
}
console.log(`all: ${total - totalBad}/${total} identical (${(100 * (1 - totalBad / total)).toFixed(3)}%)`);
