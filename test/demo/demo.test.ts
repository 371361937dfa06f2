import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoSets } from '../../src/demo/fixtures.js';
import { PLANTED_SAFETY_ROWS } from '../../src/demo/planted-model.js';
import { REPO_ROOT } from '../support/testbed.js';

const run = promisify(execFile);

interface DemoRow { model: string; asr: number; task: number; overRefusal: number; paramsPctLinear: number }

// The README's first command, end to end, on a fresh directory: needs nothing but this repository.
describe('fgsn demo (planted models, in-process pipeline)', () => {
  let dir: string;
  let rows: DemoRow[];
  let artifacts: { name: string }[];
  let rowsChanged: Record<string, number[]>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fgsn-demo-'));
    const { stdout } = await run(process.execPath, ['bin/fgsn.js', 'demo', '--json', '--dir', dir], { cwd: REPO_ROOT, maxBuffer: 1 << 24 });
    const parsed = JSON.parse(stdout) as { rows: DemoRow[]; artifacts: { name: string }[]; rowsChanged: Record<string, number[]> };
    rows = parsed.rows;
    artifacts = parsed.artifacts;
    rowsChanged = parsed.rowsChanged;
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the planted fine-tune is attacked: it complies with harmful prompts and learned its task', () => {
    const [aligned, attacked] = rows;
    expect(aligned.asr).toBe(0);
    expect(aligned.task).toBe(0);
    expect(attacked.asr).toBe(1);
    expect(attacked.task).toBe(1);
  });

  it('the default defense restores refusal, keeps the task and touches under 3% of linear weights', () => {
    const hardened = rows[2];
    expect(hardened.asr).toBeLessThanOrEqual(0.05);
    expect(hardened.task).toBe(1);
    expect(hardened.overRefusal).toBe(0);
    expect(hardened.paramsPctLinear).toBeGreaterThan(0);
    expect(hardened.paramsPctLinear).toBeLessThan(3);
    expect(artifacts.map((a) => a.name)).toEqual(expect.arrayContaining(['diff.safetensors', 'model/model.safetensors', 'model/config.json']));
  });

  it('the edited rows are rows of the planted safety neuron, nothing else', () => {
    const edited = Object.entries(rowsChanged).flatMap(([name, r]) => r.map((i) => `${name}[${i}]`));
    const planted = new Set(Object.entries(PLANTED_SAFETY_ROWS).flatMap(([name, r]) => r.map((i) => `${name}[${i}]`)));
    expect(edited.length).toBeGreaterThan(0);
    for (const e of edited) expect(planted.has(e), `${e} is not part of the planted neuron`).toBe(true);
  });

  it('probe prompts and evaluation prompts never overlap', () => {
    const s = demoSets();
    const probes = new Set([...s.harmfulProbes, ...s.benignProbes, ...s.taskProbes].map((p) => p.prompt));
    for (const e of [...s.harmfulEval, ...s.taskEval, ...s.lookalikeEval]) expect(probes.has(e.prompt)).toBe(false);
  });
});
