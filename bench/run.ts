/**
 * `npm run bench -- <name> [args...]`: runs one benchmark by name; with no name, lists them. Each benchmark
 * prints its figures as ratios to a baseline measured in the same run (see its own header for options).
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCHES: Record<string, { file: string; what: string }> = {
  checkpoint: { file: 'checkpoint/rw.ts', what: '2 GB synthetic checkpoint read + rewrite vs cat/cp, peak RSS' },
  engine: { file: 'engine/throughput.ts', what: 'prefill/decode tokens/s vs onnxruntime MatMul peak, peak RSS of a bf16 model' },
  attribution: { file: 'engine/attribution.ts', what: 'one attribution (backward) scoring pass vs one forward pass' },
  generations: { file: 'engine/generations-check.ts', what: 'every recorded dev-testbed generation, token for token' },
  'device-check': { file: 'engine/device-check.ts', what: 'on a GPU machine: CUDA logits vs CPU, tokens/s' },
  defense: { file: 'defense/run.ts', what: 'every dev fine-tune: undefended, fgsn, baselines (ASR, task, over-refusal, % params, s)' },
  frontier: { file: 'defense/frontier.ts', what: 'edit-budget frontier tables from a defense run\'s JSON' },
  scale: { file: 'scale/run.ts', what: 'harden on synthetic 125M/1.1B bf16 trios: per-stage wall, bytes written, peak RSS vs floors; PyTorch peer' },
  api: { file: 'api/run.ts', what: 'status polling throughput/p99 and 1 GB upload throughput with server RSS' },
  'api-jobs': { file: 'api/jobs.ts', what: 'N concurrent harden jobs end to end through serve + worker, every artifact sha256-checked; wall vs in-process floor' },
  fuzz: { file: 'fuzz/run.ts', what: 'property-based fuzz of the header/config/adapter parsers: cases/s, no crash, hang or RSS growth' },
};

const [name, ...rest] = process.argv.slice(2);
const bench = name === undefined ? undefined : BENCHES[name];
if (bench === undefined) {
  if (name !== undefined) process.stderr.write(`unknown benchmark "${name}"\n`);
  process.stdout.write('usage: npm run bench -- <name> [options]\n\n');
  for (const [n, b] of Object.entries(BENCHES)) process.stdout.write(`  ${n.padEnd(12)} bench/${b.file}: ${b.what}\n`);
  process.exit(name === undefined ? 0 : 2);
}
const here = dirname(fileURLToPath(import.meta.url));
const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, bench.file), ...rest], { stdio: 'inherit' });
process.exit(r.status ?? 1);
