/**
 * Row-local projection modes read only the selected rows (defense/io/sources.ts readRowsMat, readFinetunedRows;
 * math/project.ts projectRowsOnly): the same values as the whole-matrix path, value for value.
 */
import { describe, expect, it } from 'vitest';
import { linearWeightNames } from '../../src/checkpoint/index.js';
import { closeSources, matrixIO, openSources, rowRuns } from '../../src/defense/io/sources.js';
import { gatherRows, type Mat } from '../../src/defense/math/matrix.js';
import { PROJECTION_MODES, isRowLocal, projectRows, projectRowsOnly, type MatrixTriple } from '../../src/defense/math/project.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

const mat = (rows: number, cols: number, f: (i: number, j: number) => number): Mat =>
  ({ rows, cols, data: Float32Array.from({ length: rows * cols }, (_, k) => f(Math.floor(k / cols), k % cols)) });

describe('rowRuns', () => {
  it('groups sorted rows into runs of consecutive indices, each with its position in the list', () => {
    expect(rowRuns(Uint32Array.of(0, 1, 2, 5, 7, 8))).toEqual([[0, 0, 3], [3, 5, 6], [4, 7, 9]]);
    expect(rowRuns(Uint32Array.of(4))).toEqual([[0, 4, 5]]);
    expect(rowRuns(new Uint32Array(0))).toEqual([]);
  });
});

describe('projectRowsOnly', () => {
  const m: MatrixTriple = {
    base: mat(5, 3, (i, j) => Math.sin(i + 2 * j)),
    aligned: mat(5, 3, (i, j) => Math.sin(i + 2 * j) + 0.1 * (i - j)),
    finetuned: mat(5, 3, (i, j) => Math.cos(3 * i - j)),
  };
  const rows = Uint32Array.of(1, 2, 4);
  const picked: MatrixTriple = { base: gatherRows(m.base, rows), aligned: gatherRows(m.aligned, rows), finetuned: gatherRows(m.finetuned, rows) };
  it('equals projectRows on the whole matrices for add, realign, row and restore', () => {
    for (const opts of [{ mode: 'add' as const, strength: 4.5 }, { mode: 'realign' as const, strength: 4.5 }, { mode: 'row' as const, alpha: 0.7 }, { mode: 'restore' as const }]) {
      expect([...projectRowsOnly(picked, opts).data]).toEqual([...projectRows(m, rows, opts).values.data]);
    }
    // add by hand, row 1 col 0: ft 0 + 4.5 * (0.1 * 1)
    expect(projectRowsOnly(picked, { mode: 'add', strength: 4.5 }).data[0]).toBeCloseTo(Math.cos(3) + 0.45, 6);
    // realign by hand, row 1 col 0: aligned sin(1) + 0.1 + 4.5 * 0.1
    expect(projectRowsOnly(picked, { mode: 'realign', strength: 4.5 }).data[0]).toBeCloseTo(Math.sin(1) + 0.1 + 0.45, 6);
  });
  it('refuses the modes that read whole matrices', () => {
    expect(PROJECTION_MODES.filter((x) => !isRowLocal(x))).toEqual(['gram', 'subspace']);
    expect(() => projectRowsOnly(picked, { mode: 'gram' })).toThrow(/whole matrices/);
  });
});

describeTestbed('selected rows read from the checkpoints', () => {
  it('equal the whole matrices gathered: full fine-tunes (f32 and fp16) and a LoRA fine-tune merged on the fly', async () => {
    for (const ft of [{ finetunedPath: testbedPath('ft_agnews_p10') }, { finetunedPath: testbedPath('ft_sst_p10_fp16') }, { adapterPath: testbedPath('lora_sst_p10') }]) {
      const s = await openSources({ basePath: testbedPath('base'), alignedPath: testbedPath('aligned'), ...ft });
      try {
        // Every 5th weight, and every weight the adapter merges into.
        const names = linearWeightNames(s.spec).filter((n, k) => k % 5 === 0 || s.adapter?.targets().includes(n));
        if (s.adapter !== undefined) expect(names.filter((n) => s.adapter!.targets().includes(n)).length).toBeGreaterThan(0);
        for (const name of names) {
          const io = matrixIO(s, name);
          const full = { base: await io.base(), aligned: await io.aligned(), finetuned: await io.finetuned() };
          const rows = Uint32Array.of(0, 1, 2, 7, 9, 10, full.base.rows - 1);
          const got = await io.selectedRows(rows);
          for (const k of ['base', 'aligned', 'finetuned'] as const) {
            expect(got[k].rows).toBe(rows.length);
            expect(got[k].data).toEqual(gatherRows(full[k], rows).data);
          }
        }
      } finally {
        await closeSources(s);
      }
    }
  });
});
