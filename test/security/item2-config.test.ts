/**
 * Issue 15 item 2: config.json is bounded. num_hidden_layers 40000 over tiny weights gave an 88 MB 422 with
 * 359,982 problems (15 s, 1.66 GB RSS); a 14 MB deeply nested config blocked the API for 7 s. Now the layer
 * count is checked against the real tensor count before anything is enumerated, every problem list is capped
 * at 100 + a count, and config size and nesting depth are bounded before parsing.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateCheckpointFolder } from '../../src/checkpoint/detect.js';
import { MAX_CONFIG_JSON_BYTES, MAX_JSON_DEPTH } from '../../src/checkpoint/json-limits.js';
import { parseJsonText } from '../../src/checkpoint/model-config.js';
import { MAX_LISTED_PROBLEMS } from '../../src/checkpoint/problems.js';
import { FgsnError } from '../../src/errors.js';
import { adapterConfig, f32Bytes, tempDir, tinyConfig, writeAdapterFolder, writeModelFolder } from '../checkpoint/fixtures.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  tmp = await tempDir('fgsn-item2-');
});
afterAll(async () => {
  await tmp.cleanup();
});

async function failed(dir: string): Promise<FgsnError[]> {
  const v = await validateCheckpointFolder(dir);
  expect(v.ok).toBe(false);
  return v.ok ? [] : v.problems;
}

function expectCoded4xx(problems: FgsnError[]): void {
  for (const p of problems) {
    expect(p).toBeInstanceOf(FgsnError);
    expect(p.status).toBeGreaterThanOrEqual(400);
    expect(p.status).toBeLessThan(500);
  }
}

describe('config fields are bounded by the tensors', () => {
  it('num_hidden_layers 40000 over tiny weights: one small coded problem, not 360,000', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'layers'));
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig({ num_hidden_layers: 40_000 })));
    const problems = await failed(dir);
    expect(problems.length).toBeLessThanOrEqual(MAX_LISTED_PROBLEMS + 1);
    expectCoded4xx(problems);
    expect(problems.map((p) => p.code)).toEqual(['CHECKPOINT_CONFIG_INVALID']);
    expect(problems[0].message).toContain('num_hidden_layers 40000');
    // What the API would send: a few hundred bytes, not 88 MB.
    expect(JSON.stringify(problems.map((p) => ({ code: p.code, message: p.message, details: p.details }))).length).toBeLessThan(4096);
  });

  it('a few layers too many still names each missing tensor', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'layers3'));
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig({ num_hidden_layers: 3 })));
    const problems = await failed(dir);
    expect(problems.length).toBe(9);
    expect(new Set(problems.map((p) => p.code))).toEqual(new Set(['CHECKPOINT_TENSOR_NOT_FOUND']));
    expect(problems[0].message).toContain('model.layers.2.');
  });
});

describe('problem lists are capped at 100 + a count', () => {
  it('300 unexpected tensors: 100 listed, one summary counting the other 200 by code', async () => {
    const extra = Array.from({ length: 300 }, (_, i) => ({ name: `junk.${i}`, dtype: 'F32' as const, shape: [1], data: () => f32Bytes([i]) }));
    const dir = await writeModelFolder(join(tmp.dir, 'junk'), { extra });
    const problems = await failed(dir);
    expect(problems.length).toBe(MAX_LISTED_PROBLEMS + 1);
    expect(problems.slice(0, 100).every((p) => p.code === 'CHECKPOINT_TENSOR_UNEXPECTED')).toBe(true);
    const last = problems[100];
    expect(last.code).toBe('CHECKPOINT_TOO_MANY_PROBLEMS');
    expect(last.details).toEqual({ omitted: 200, byCode: { CHECKPOINT_TENSOR_UNEXPECTED: 200 } });
    expectCoded4xx(problems);
  });

  it('an adapter with 300 stray tensors is capped the same way', async () => {
    const dir = await writeAdapterFolder(join(tmp.dir, 'adapter-junk'), {
      mutate: (ts) => [...ts, ...Array.from({ length: 300 }, (_, i) => ({ name: `stray.${i}`, dtype: 'F32' as const, shape: [1], data: () => f32Bytes([i]) }))],
    });
    const problems = await failed(dir);
    expect(problems.length).toBe(MAX_LISTED_PROBLEMS + 1);
    expect(problems[100].details).toEqual({ omitted: 200, byCode: { ADAPTER_TENSOR_INVALID: 200 } });
  });
});

describe('config size and nesting depth are bounded before parsing', () => {
  it('a 14 MB deeply nested config.json is refused by its size', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'big'));
    const n = 7 * 1024 * 1024;
    await writeFile(join(dir, 'config.json'), `${'['.repeat(n)}${']'.repeat(n)}`);
    const problems = await failed(dir);
    expect(problems.map((p) => p.code)).toEqual(['CHECKPOINT_JSON_TOO_LARGE']);
    expect(problems[0].message).toContain(`limit ${MAX_CONFIG_JSON_BYTES}`);
  });

  it('a small config nested 100,000 deep is refused by its depth', async () => {
    const dir = await writeModelFolder(join(tmp.dir, 'deep'));
    const n = 100_000;
    // Deep inside a field the schema passes through unchecked (rope_scaling is a free-form record).
    const text = JSON.stringify(tinyConfig()).replace(/}$/, `,"rope_scaling":{"x":${'['.repeat(n)}${']'.repeat(n)}}}`);
    expect(text.length).toBeLessThan(MAX_CONFIG_JSON_BYTES);
    await writeFile(join(dir, 'config.json'), text);
    const problems = await failed(dir);
    expect(problems.map((p) => p.code)).toEqual(['CHECKPOINT_JSON_TOO_LARGE']);
    expect(problems[0].message).toContain(`deeper than ${MAX_JSON_DEPTH}`);
  });

  it('the same bounds hold for adapter_config.json', async () => {
    const dir = await writeAdapterFolder(join(tmp.dir, 'adapter-deep'));
    const n = 50_000;
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(adapterConfig()).replace(/}$/, `,"x":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}`));
    const problems = await failed(dir);
    expect(problems.map((p) => p.code)).toEqual(['CHECKPOINT_JSON_TOO_LARGE']);
  });

  it('parseJsonText: depth limit is exact, strings with brackets do not count', () => {
    const nest = (d: number): string => `${'['.repeat(d)}${']'.repeat(d)}`;
    expect(parseJsonText(nest(MAX_JSON_DEPTH), 'f', 'CHECKPOINT_CONFIG_INVALID')).toBeDefined();
    expect(() => parseJsonText(nest(MAX_JSON_DEPTH + 1), 'f', 'CHECKPOINT_CONFIG_INVALID')).toThrow(expect.objectContaining({ code: 'CHECKPOINT_JSON_TOO_LARGE' }));
    expect(parseJsonText(JSON.stringify({ a: '[[[[\\"[[[['.repeat(100) }), 'f', 'CHECKPOINT_CONFIG_INVALID')).toEqual({ a: '[[[[\\"[[[['.repeat(100) });
    expect(() => parseJsonText('{"a":', 'f', 'ADAPTER_CONFIG_INVALID')).toThrow(expect.objectContaining({ code: 'ADAPTER_CONFIG_INVALID' }));
  });
});
