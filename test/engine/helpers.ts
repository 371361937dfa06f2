/** Shared helpers of the engine suites. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { SequenceCapture } from '../../src/engine/engine.js';
import type { ReferenceOutput } from './reference-forward.js';

/** Largest violation ratio of numpy.allclose: max |a - b| / (atol + rtol * |b|); <= 1 means allclose holds. */
export function allcloseRatio(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number): number {
  if (actual.length !== expected.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= Number.MAX_VALUE)) return Number.POSITIVE_INFINITY;
    worst = Math.max(worst, d / (atol + rtol * Math.abs(expected[i])));
  }
  return worst;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return m;
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Every activation of one captured sequence is allclose (atol = rtol = `tol`) to the reference's. */
export function expectCloseToReference(s: SequenceCapture, ref: ReferenceOutput, numLayers: number, tol: number, label: string): void {
  const close = (a: Float32Array | undefined, b: ArrayLike<number>, what: string): void => {
    expect(allcloseRatio(a!, b, tol, tol), `${label} ${what}`).toBeLessThanOrEqual(1);
  };
  close(s.embed, ref.embed, 'embed');
  for (let i = 0; i < numLayers; i++) {
    close(s.hidden![i], ref.hidden[i], `hidden ${i}`);
    close(s.mlpAct![i], ref.mlpAct[i], `mlp_act ${i}`);
  }
  close(s.finalNorm, ref.finalNorm, 'final_norm');
  close(s.logits, ref.logits, 'logits');
}
