/** The shared grow-until-target search: its control flow on a scripted measurement. */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Selection } from '../../src/defense/math/select.js';
import { type StepMeasure, ladder, writtenSteps } from '../../src/pipeline/ladder.js';
import type { ProbeMetrics } from '../../src/pipeline/probe-eval.js';

interface Step { q: number; g: number; asr: number; guardrailsOk: boolean }

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'fgsn-ladder-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/**
 * q rows of matrix "w"; ASR = table[q][g]; the guardrail breaks where the table says so. Measured through the
 * write-mode step measure (a scratch folder per step) or directly (as the row-patch mode does).
 */
async function run(table: Record<number, Record<number, { asr: number; ok?: boolean }>>, opts: { maxPct?: number; target?: number; write?: boolean } = {}) {
  const steps: Step[] = [];
  const written: string[] = [];
  let current = { q: 0, g: 0 };
  const pick = (q: number): Selection => new Map([['w', Uint32Array.from({ length: q }, (_, i) => i)]]);
  const metrics = (): ProbeMetrics => ({ asr: table[current.q][current.g].asr, taskAccuracy: null, overRefusal: null, exactAccuracy: null, responseNll: null });
  const m: StepMeasure = opts.write === false
    ? {
      measure: async (sel, g) => {
        current = { q: sel.get('w')!.length, g };
        written.push(`${current.q}/${g}`);
        return metrics();
      },
      close: async () => undefined,
    }
    : writtenSteps(join(tmp, 'scratch'), async (sel, g, dir) => {
      await mkdir(dir, { recursive: true });
      current = { q: sel.get('w')!.length, g };
      written.push(`${current.q}/${g}`);
    }, async (dir) => {
      expect(existsSync(dir)).toBe(true);
      return metrics();
    });
  try {
    const r = await ladder<Step>({
      schedule: [0, 1, 2, 3], strengths: [1, 2], pick, pct: (sel) => sel.get('w')!.length, maxPct: opts.maxPct ?? 10, skipEmpty: true,
      measure: m.measure,
      record: (q, g, _rows, _pct, pm) => ({ q, g, asr: pm.asr, guardrailsOk: table[q][g].ok ?? true }),
      better: (s, b) => s.asr < b.asr,
      reached: (s) => s.asr <= (opts.target ?? 0),
      steps,
    });
    return { ...r, steps, written };
  } finally {
    await m.close();
  }
}

describe('ladder', () => {
  it('skips empty selections, grows g at each q, stops at the first step on target, cleans its scratch folder', async () => {
    const r = await run({ 1: { 1: { asr: 0.9 }, 2: { asr: 0.5 } }, 2: { 1: { asr: 0.3 }, 2: { asr: 0 } }, 3: { 1: { asr: 0 }, 2: { asr: 0 } } });
    expect(r.written).toEqual(['1/1', '1/2', '2/1', '2/2']);
    expect(r.reached).toBe(true);
    expect(r.best?.step).toMatchObject({ q: 2, g: 2, asr: 0 });
    expect(existsSync(join(tmp, 'scratch'))).toBe(false);
  });

  it('measures steps in memory the same way (no scratch folder)', async () => {
    const r = await run({ 1: { 1: { asr: 0.9 }, 2: { asr: 0.5 } }, 2: { 1: { asr: 0.3 }, 2: { asr: 0 } } }, { write: false });
    expect(r.written).toEqual(['1/1', '1/2', '2/1', '2/2']);
    expect(r.best?.step).toMatchObject({ q: 2, g: 2, asr: 0 });
    expect(existsSync(join(tmp, 'scratch'))).toBe(false);
  });

  it('a guardrail break ends the g ladder at that q; the best is within the guardrails', async () => {
    const r = await run({ 1: { 1: { asr: 0.9 }, 2: { asr: 0.1, ok: false } }, 2: { 1: { asr: 0.5 }, 2: { asr: 0.4 } }, 3: { 1: { asr: 0.6, ok: false }, 2: { asr: 0 } } });
    expect(r.written).toEqual(['1/1', '1/2', '2/1', '2/2', '3/1']);
    expect(r.reached).toBe(false);
    expect(r.best?.step).toMatchObject({ q: 2, g: 2, asr: 0.4 });
    expect(r.steps).toHaveLength(5);
  });

  it('a q over the parameter cap ends the search', async () => {
    const r = await run({ 1: { 1: { asr: 0.9 }, 2: { asr: 0.8 } }, 2: { 1: { asr: 0 }, 2: { asr: 0 } } }, { maxPct: 1.5 });
    expect(r.written).toEqual(['1/1', '1/2']);
    expect(r.best?.step.asr).toBe(0.8);
  });
});
