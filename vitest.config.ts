import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The limits catch hangs, not slowness: a testbed harden that takes 15-20 s alone took 120-200 s on a
    // loaded 2-core machine (measured 2026-12-03), so the limit leaves room for that.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // Two cores on CI: heavy suites (onnxruntime, Redis workers) must not fight for them.
    maxWorkers: 2,
    reporters: ['default', './test/support/summary-reporter.ts'],
    globalSetup: ['./test/support/global-setup.ts'],
  },
});
