import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FGSN_DEFAULTS } from '../../src/defense/methods/index.js';
import { readHardenReport, reportedFgsnOptions } from '../../src/pipeline/report-schema.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'fgsn-report-schema-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const report = {
  fgsn: { version: 1, startedAt: '2026-12-03T00:00:00Z', finishedAt: '2026-12-03T00:01:00Z' },
  method: 'fgsn', target: 'reached',
  // As harden stores them: parsed, q alongside the target (the search ignores q; stored, not re-refused).
  options: { ...FGSN_DEFAULTS, strength: 6 },
  inputs: { base: '/m/base', aligned: '/m/aligned', finetuned: '/m/ft', sourceSha256: {}, probes: { harmful: 1 } },
  atlas: { id: 'abc', band: [1, 2] },
  selection: { strength: 4.5, q: 0.01 },
  edit: { rows: 3 },
  rows: { 'model.layers.0.mlp.down_proj.weight': [1, 5] },
  aNewerField: { kept: true },
};

async function write(name: string, body: unknown): Promise<string> {
  const dir = join(tmp, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'report.json'), JSON.stringify(body));
  return dir;
}

describe('report.json schema (read back by fgsn continue)', () => {
  it('reads a harden report typed, keeping unknown fields, and its fgsn options as stored', async () => {
    const r = await readHardenReport(await write('ok', report));
    expect(r.selection.strength).toBe(4.5);
    expect(r.rows['model.layers.0.mlp.down_proj.weight']).toEqual([1, 5]);
    expect(r.aNewerField).toEqual({ kept: true });
    expect(reportedFgsnOptions(r)).toMatchObject({ strength: 6, q: 0.01, targetAsr: 0.02 });
    // A fixed-budget job stored no targetAsr: it stays absent (no default filled in).
    const { targetAsr: _t, ...fixed } = FGSN_DEFAULTS;
    expect(reportedFgsnOptions(await readHardenReport(await write('fixed', { ...report, options: fixed })))).not.toHaveProperty('targetAsr');
    expect(reportedFgsnOptions({ ...r, method: 'resta' })).toBeUndefined();
  });

  it('refuses a missing or broken report with a coded error naming the field', async () => {
    await expect(readHardenReport(join(tmp, 'none'))).rejects.toMatchObject({ code: 'DEFENSE_OPTION_INVALID' });
    const { atlas: _a, ...noAtlas } = report;
    await expect(readHardenReport(await write('no-atlas', noAtlas))).rejects.toThrow(/atlas/);
    await expect(readHardenReport(await write('bad-rows', { ...report, rows: { w: [-1] } }))).rejects.toThrow(/rows\.w\.0/);
    await expect(readHardenReport(await write('bad-method', { ...report, method: 'nope' }))).rejects.toMatchObject({ code: 'DEFENSE_OPTION_INVALID', status: 400 });
  });
});
