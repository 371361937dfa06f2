import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from 'vitest';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The dev testbed: ../shared/testbed/dev beside the checkout (CI lays shared/ there), or FGSN_TESTBED_DIR. */
export const TESTBED_DEV = process.env.FGSN_TESTBED_DIR ?? resolve(REPO_ROOT, '..', 'shared', 'testbed', 'dev');
export const HAS_TESTBED = existsSync(join(TESTBED_DEV, 'aligned', 'config.json'));

export function testbedPath(...parts: string[]): string {
  return join(TESTBED_DEV, ...parts);
}

/**
 * describe() for suites that need the dev testbed. Without it the suite is reported as skipped
 * (visible in the summary), never silently passed. In CI the testbed must be there.
 */
export const describeTestbed: typeof describe = ((name: string, fn: () => void) => {
  if (!HAS_TESTBED && process.env.CI) {
    throw new Error(`dev testbed not found at ${TESTBED_DEV}; CI must run beside ../shared`);
  }
  return HAS_TESTBED ? describe(name, fn) : describe.skip(`${name} (dev testbed not found at ${TESTBED_DEV})`, fn);
}) as typeof describe;
