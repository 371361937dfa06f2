/** The defense benchmark script runs end to end on a tiny subset and checks itself against the recorded eval. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import type { BenchRow } from '../../bench/defense/table.js';
import { describeTestbed, REPO_ROOT } from '../support/testbed.js';

const exec = promisify(execFile);
const out = mkdtempSync(join(tmpdir(), 'fgsn-bench-defense-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describeTestbed('bench/defense/run.ts', () => {
  it('writes markdown + JSON; undefended and aligned rows match the recorded generations', async () => {
    const r = await exec(process.execPath, [
      '--import', 'tsx', join(REPO_ROOT, 'bench', 'defense', 'run.ts'),
      '--limit', '4', '--checkpoints', 'lora_sst_p10', '--methods', 'undefended', '--out', out,
    ], { cwd: REPO_ROOT, maxBuffer: 16 << 20 });
    const md = readFileSync(join(out, 'defense.md'), 'utf8');
    expect(r.stdout).toBe(md);
    expect(md).toContain('| lora_sst_p10 | undefended |');
    const json = JSON.parse(readFileSync(join(out, 'defense.json'), 'utf8')) as { limit: number; rows: BenchRow[] };
    expect(json.limit).toBe(4);
    expect(json.rows.map((x) => [x.checkpoint, x.method, x.status])).toEqual([
      ['aligned', 'aligned (reference)', 'ok'],
      ['lora_sst_p10', 'undefended', 'ok'],
    ]);
    for (const row of json.rows) expect(row.recorded_check).toBe('match (10 metrics); responses identical 28/28');
    expect(json.rows[1].asr).toBe(1);
    expect(json.rows[1].task).toBe('sst');
  });
});
