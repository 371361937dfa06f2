/**
 * Issue 15: property-based fuzz of the safetensors header, config.json and adapter_config.json parsers
 * (test/support/fuzz-parsers.ts). A few thousand cases per CI run with a fixed seed per target, so a
 * failure reproduces; `npm run bench -- fuzz` runs far more with fresh seeds. A hang shows as the test
 * timeout; unbounded allocation as a RangeError (not coded) or as heap growth checked below.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FUZZ_TARGETS, fuzzProperty, runCase } from '../support/fuzz-parsers.js';

const RUNS: Record<string, number> = { 'safetensors header': 2000, 'config.json': 1000, 'adapter_config.json': 1000 };

describe('parsers answer every input with a value or a coded 4xx error', () => {
  FUZZ_TARGETS.forEach((t, i) => {
    it(`${t.name}: ${RUNS[t.name]} cases`, () => {
      const heapBefore = process.memoryUsage().heapUsed;
      fc.assert(fuzzProperty(i), { numRuns: RUNS[t.name], seed: 15_000 + i });
      // Parsers allocate in proportion to their (small, fuzzed) input: a few thousand cases stay far below this.
      expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(256 * 2 ** 20);
    });
  });

  it('the generators reach the accepting paths too: each target gets both accepted and refused inputs', () => {
    FUZZ_TARGETS.forEach((t, i) => {
      const outcomes = fc.sample(t.arbitrary as fc.Arbitrary<unknown>, { numRuns: 400, seed: 42 }).map((x) => runCase(i, x));
      const accepted = outcomes.filter((o) => o === 'accepted').length;
      // A generator whose every case dies at JSON.parse would fuzz nothing behind it.
      expect(accepted, t.name).toBeGreaterThanOrEqual(20);
      expect(outcomes.length - accepted, t.name).toBeGreaterThanOrEqual(20);
    });
  });
});
