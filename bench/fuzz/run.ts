/**
 * Long property-based fuzz of the tenant-facing parsers (issue 15): safetensors header, config.json,
 * adapter_config.json, with the generators and property of test/security/fuzz.test.ts but fresh seeds and
 * a time budget instead of a fixed count.
 *
 *   npm run bench -- fuzz [--seconds 60] [--seed N]
 *
 * Per parser: cases run, cases/s, share accepted, the slowest case (a "hang" is any case over --hang-ms,
 * default 1000), heap growth, and the process's peak RSS. Exit status 1 on any crash (a throw that is not a
 * coded 4xx FgsnError, with the seed and shrunk input printed), hang, or a peak RSS over --rss-mb (512).
 * Cases/s is a ratio-free figure by nature; the parse share (time inside the parser / total, the rest being
 * input generation) says how much of it is the parsers.
 */
import fc from 'fast-check';
import { parseArgs } from 'node:util';
import { FUZZ_TARGETS, runCase } from '../../test/support/fuzz-parsers.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    seed: { type: 'string' },
    'hang-ms': { type: 'string', default: '1000' },
    'rss-mb': { type: 'string', default: '512' },
  },
});
const budgetMs = (Number(values.seconds) * 1000) / FUZZ_TARGETS.length;
const hangMs = Number(values['hang-ms']);
const rssLimitMb = Number(values['rss-mb']);
let seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);

const BATCH = 500;
let failed = false;
const rows: string[] = [];
for (let i = 0; i < FUZZ_TARGETS.length; i++) {
  const t = FUZZ_TARGETS[i];
  const heapBefore = process.memoryUsage().heapUsed;
  let cases = 0;
  let accepted = 0;
  let parseNs = 0n;
  let slowestMs = 0;
  const start = process.hrtime.bigint();
  const elapsedMs = (): number => Number(process.hrtime.bigint() - start) / 1e6;
  while (elapsedMs() < budgetMs && !failed) {
    const batchSeed = seed++;
    const r = fc.check(
      fc.property(t.arbitrary as fc.Arbitrary<unknown>, (x) => {
        const t0 = process.hrtime.bigint();
        const outcome = runCase(i, x);
        const dt = process.hrtime.bigint() - t0;
        parseNs += dt;
        slowestMs = Math.max(slowestMs, Number(dt) / 1e6);
        cases++;
        if (outcome === 'accepted') accepted++;
        if (Number(dt) / 1e6 > hangMs) throw new Error(`case took ${(Number(dt) / 1e6).toFixed(0)} ms (hang threshold ${hangMs} ms)`);
      }),
      { numRuns: BATCH, seed: batchSeed },
    );
    if (r.failed) {
      failed = true;
      process.stderr.write(`${t.name}: FAILED with seed ${batchSeed}: ${String(r.errorInstance)}\ncounterexample: ${JSON.stringify(r.counterexample, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)).slice(0, 2000)}\n`);
    }
  }
  const seconds = elapsedMs() / 1000;
  const heapMb = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  rows.push(
    `${t.name.padEnd(20)} ${String(cases).padStart(9)} cases  ${(cases / seconds).toFixed(0).padStart(7)} cases/s  ` +
      `accepted ${((100 * accepted) / Math.max(1, cases)).toFixed(1).padStart(5)}%  parse share ${((100 * Number(parseNs)) / 1e9 / seconds).toFixed(0).padStart(3)}%  ` +
      `slowest ${slowestMs.toFixed(1)} ms  heap ${heapMb >= 0 ? '+' : ''}${heapMb.toFixed(0)} MB`,
  );
}
const peakRssMb = process.resourceUsage().maxRSS / 1024;
process.stdout.write(`${rows.join('\n')}\npeak RSS ${peakRssMb.toFixed(0)} MB (limit ${rssLimitMb}); first seed ${values.seed ?? 'random'}\n`);
if (peakRssMb > rssLimitMb) {
  process.stderr.write(`peak RSS ${peakRssMb.toFixed(0)} MB over the ${rssLimitMb} MB limit\n`);
  failed = true;
}
process.stdout.write(failed ? 'FAIL\n' : 'no crash, no hang\n');
process.exit(failed ? 1 : 0);
