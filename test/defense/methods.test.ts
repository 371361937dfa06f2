/**
 * The method registry's shared checks (as PEFT's shared tuner tests): every registered method goes through
 * the same ones, so a new method (one folder + one line in src/defense/methods/index.ts) is covered by
 * registering it. Plus the regression pins of the six current methods' defaults and the `--q` rule.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { linearWeightNames } from '../../src/checkpoint/model-config.js';
import { getOrBuildAtlas, type Atlas } from '../../src/defense/atlas.js';
import { closeSources, openSources, shapeOf, type WeightSources } from '../../src/defense/io/sources.js';
import { DEFENSE_METHODS, FGSN_DEFAULTS, JobScores, METHODS, OPTION_BOUNDS, fieldInfo, parseMethodOptions, planMethod } from '../../src/defense/methods/index.js';
import { demoSets, writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { isFgsnError } from '../../src/errors.js';
import { methodOptionsBinding, methodOptionsJsonSchema, optionIssues } from '../../src/api/method-options.js';
import { OPTION_FLAGS, kebab, methodsHelp } from '../../src/cli/method-flags.js';

const fields = (m: (typeof DEFENSE_METHODS)[number]): [string, z.ZodType][] => Object.entries(METHODS[m].options.shape as Record<string, z.ZodType>);

/** A value outside the field's bounds (or of the wrong kind), per kind of field. */
function outOfBounds(schema: z.ZodType): unknown[] {
  const range = fieldInfo(schema).range;
  if (range.startsWith('in [0, 1]')) return [1.5, -0.1, '2', 'x'];
  if (range.startsWith('in (0,')) return [0, OPTION_BOUNDS.pos + 1];
  if (range.startsWith('in [0,')) return [-1, OPTION_BOUNDS.nonneg + 1];
  if (range.startsWith('in [-')) return [OPTION_BOUNDS.num + 1, -1e308, 'Infinity'];
  if (range.startsWith('integer')) return [0, 1.5, OPTION_BOUNDS.int + 1];
  if (range.startsWith('one of')) return ['no-such-value', 3];
  return ['x'.repeat(OPTION_BOUNDS.string + 1), true];
}

function caught(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error');
}

describe.each(DEFENSE_METHODS)('registered method %s', (method) => {
  it('is one folder with a summary, and every option has help text and a CLI flag', () => {
    expect(existsSync(new URL(`../../src/defense/methods/${method}/index.ts`, import.meta.url))).toBe(true);
    expect(METHODS[method].name).toBe(method);
    expect(METHODS[method].summary.length).toBeGreaterThan(10);
    const help = methodsHelp();
    for (const [key, schema] of fields(method)) {
      expect(schema.description, `${method}.${key} help`).toMatch(/\w{3}/);
      expect(OPTION_FLAGS[kebab(key)]).toBe(key);
      expect(help).toContain(`--${kebab(key)} `);
      expect(help).toContain(schema.description!);
    }
  });

  it('parses its defaults from an empty object, and CLI strings to the same values', () => {
    const d = parseMethodOptions(method, {}).o as Record<string, unknown>;
    const asStrings = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, String(v)]));
    // fgsn's q is refused while the target-driven search is on (tested below): left out here.
    if (method === 'fgsn') delete asStrings.q;
    expect(parseMethodOptions(method, asStrings).o).toEqual(d);
  });

  it('rejects every out-of-bounds value and unknown key with a 400-coded error naming the field', () => {
    for (const [key, schema] of fields(method)) {
      for (const bad of outOfBounds(schema)) {
        const e = caught(() => parseMethodOptions(method, { [key]: bad }));
        expect(isFgsnError(e), `${method}.${key}=${String(bad)}`).toBe(true);
        if (!isFgsnError(e)) continue;
        expect(e.code).toBe('DEFENSE_OPTION_INVALID');
        expect(e.status).toBe(400);
        expect(e.message).toContain(`option ${key}=`);
        expect(e.details).toMatchObject({ method, option: key });
        // The API's submission check reports the same field.
        expect(optionIssues(method, { [key]: bad })[0].path).toEqual(['options', key]);
      }
    }
    const e = caught(() => parseMethodOptions(method, { noSuchOption: 1 }));
    expect(e).toMatchObject({ code: 'DEFENSE_OPTION_INVALID', details: { option: 'noSuchOption' } });
    expect((e as Error).message).toMatch(/unknown \(valid: /);
  });

  it('is documented in OpenAPI: every option with its help, bound to the method', () => {
    const doc = methodOptionsJsonSchema().anyOf as { title: string; properties: Record<string, { description?: string }>; additionalProperties: boolean }[];
    const mine = doc.find((d) => d.title === `${method} options`)!;
    expect(Object.keys(mine.properties).sort()).toEqual(fields(method).map(([k]) => k).sort());
    for (const [, p] of Object.entries(mine.properties)) expect(p.description).toBeTruthy();
    expect(mine.additionalProperties).toBe(false);
    const binding = methodOptionsBinding().find((b) => JSON.stringify(b.if).includes(`"const":"${method}"`))!;
    expect((binding.then as { properties: { options: { title: string } } }).properties.options.title).toBe(`${method} options`);
  });
});

describe('the plan of every registered method on the tiny planted model', () => {
  let tmp: string;
  let tb: DemoTestbed;
  let sources: WeightSources;
  let atlas: Atlas;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'fgsn-methods-'));
    tb = await writeDemoTestbed(join(tmp, 'tb'));
    const sets = demoSets();
    atlas = (await getOrBuildAtlas(tb.aligned, sets.harmfulProbes, sets.benignProbes, join(tmp, 'cache'))).atlas;
    sources = await openSources({ basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned });
  }, 120_000);
  afterAll(async () => {
    if (sources) await closeSources(sources);
    await rm(tmp, { recursive: true, force: true });
  });

  it.each(DEFENSE_METHODS)('%s: default options give a plan of valid rows with a compute', async (method) => {
    const job = new JobScores(sources, atlas, demoSets().taskProbes, { cacheDir: join(tmp, 'cache') });
    const plan = await planMethod(job, parseMethodOptions(method, {}));
    const linear = new Set(linearWeightNames(sources.spec));
    let rows = 0;
    for (const [name, sel] of plan.selection) {
      expect(linear.has(name)).toBe(true);
      for (const r of sel) expect(r).toBeLessThan(shapeOf(sources, name)[0]);
      rows += sel.length;
    }
    expect(typeof plan.compute).toBe('function');
    expect(plan.details).toBeTypeOf('object');
    // Every method but a thresholded Safe LoRA (which may find no matrix below it) edits something here.
    if (method !== 'safelora') expect(rows).toBeGreaterThan(0);
  }, 120_000);

  it('a job over another atlas shares the scores that do not read the atlas, not the attribution', async () => {
    const job = new JobScores(sources, atlas, demoSets().taskProbes, { cacheDir: join(tmp, 'cache') });
    const other = job.withAtlas({ ...atlas });
    const task = [job.taskScores(), other.taskScores()];
    const grads = [job.gradDotV(), other.gradDotV()];
    // One task-neuron computation for both (the search's ranking job would otherwise run it a second time).
    expect(task[1]).toBe(task[0]);
    expect(grads[1]).not.toBe(grads[0]);
    await Promise.all([...task, ...grads]);
  }, 120_000);
});

describe('method options: the current values kept', () => {
  it('keeps each method\'s defaults exactly', () => {
    expect(FGSN_DEFAULTS).toEqual({
      scoring: 'attribution', q: 0.01, scope: 'global', p: 0, layers: 'all', bandShare: 0.6, mode: 'realign', strength: 3, alpha: 1,
      energyShare: 0.9, targetAsr: 0.02, qStart: 0.0025, maxParams: 3, taskTolerance: 0.01, overRefusalTolerance: 0.02, batchSize: 16,
      rounds: 2, round2From: 'chosen', utilityWeight: 0, clusterScoring: 'pooled', stepMode: 'patch', stepJudge: 'full',
      guardrailTest: 'paired', guardAlpha: 0.05, nllTolerance: 0.01, utilityCeiling: 0.05, missPolicy: 'safety-first', judgeShare: 0.5, splitSeed: 1,
      refusalMarginTolerance: 1,
    });
    expect(parseMethodOptions('safelora', {}).o).toEqual({ alpha: 1, threshold: 0.65 });
    expect(parseMethodOptions('layer', {}).o).toEqual({ layers: 'band', bandShare: 0.6, mode: 'gram', alpha: 1, strength: 1, energyShare: 0.9 });
    expect(parseMethodOptions('restore', {}).o).toEqual({ layers: 'band', bandShare: 0.6, mode: 'restore', alpha: 1, strength: 1, energyShare: 0.9 });
    expect(parseMethodOptions('antidote', {}).o).toEqual({ share: 0.05 });
    expect(parseMethodOptions('resta', {}).o).toEqual({ gamma: 0.5 });
  });

  it('keeps the parser\'s rules and messages', () => {
    expect(parseMethodOptions('fgsn', { q: '0.02', mode: 'gram', targetAsr: 'off' }).o).toMatchObject({ q: 0.02, mode: 'gram' });
    expect(parseMethodOptions('fgsn', { targetAsr: 'none' }).o.targetAsr).toBeUndefined();
    expect(parseMethodOptions('fgsn', { targetAsr: 1 }).o.targetAsr).toBeUndefined();
    expect(parseMethodOptions('fgsn', { targetAsr: '0.1' }).o.targetAsr).toBe(0.1);
    expect(() => parseMethodOptions('fgsn', { q: 1.5 })).toThrow(/\[0, 1\]/);
    expect(() => parseMethodOptions('fgsn', { targetAsr: 1.5 })).toThrow(/\[0, 1\]/);
    expect(() => parseMethodOptions('fgsn', { mode: 'nope' })).toThrow(/one of/);
    expect(() => parseMethodOptions('resta', { q: 0.1 })).toThrow(/unknown/);
    expect(parseMethodOptions('safelora', { topK: 3 }).o).toEqual({ alpha: 1, topK: 3 });
    expect(() => parseMethodOptions('safelora', { topK: 3, threshold: 0.5 })).toThrow(/not both/);
    expect(() => parseMethodOptions('restore', { mode: 'gram' })).toThrow(/restore/);
    expect(() => parseMethodOptions('bogus' as 'fgsn', {})).toThrow(expect.objectContaining({ code: 'DEFENSE_OPTION_INVALID' }));
    expect(parseMethodOptions('fgsn', { utilityWeight: '0.5', rounds: '1', layers: 12 }).o).toMatchObject({ utilityWeight: 0.5, rounds: 1, layers: '12' });
    expect(() => parseMethodOptions('fgsn', { utilityWeight: -1 })).toThrow(/>= 0/);
    expect(() => parseMethodOptions('fgsn', { rounds: 0 })).toThrow(/positive integer/);
  });

  it('refuses q with the target-driven search (it would be ignored), naming q and what to give instead', () => {
    for (const raw of [{ q: 0.02 }, { q: '0.02', targetAsr: 0.05 }]) {
      const e = caught(() => parseMethodOptions('fgsn', raw));
      expect(e).toMatchObject({ code: 'DEFENSE_OPTION_INVALID', status: 400, details: { option: 'q' } });
      expect((e as Error).message).toMatch(/targetAsr off.*qStart/);
      expect(optionIssues('fgsn', raw)[0].path).toEqual(['options', 'q']);
    }
    const fixed = parseMethodOptions('fgsn', { q: 0.02, targetAsr: 'off' }).o;
    expect(fixed.q).toBe(0.02);
    expect(fixed).not.toHaveProperty('targetAsr');
    expect(parseMethodOptions('fgsn', { qStart: 0.005 }).o).toMatchObject({ qStart: 0.005, targetAsr: 0.02 });
  });
});
