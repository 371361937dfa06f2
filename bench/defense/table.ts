/** Rows of the defense benchmark and their markdown rendering (pure). */

export interface BenchRow {
  checkpoint: string;
  /** `aligned` (reference), `undefended`, or a defense method. */
  method: string;
  status: 'ok' | 'unavailable' | 'failed';
  note?: string;
  asr?: number;
  compliance?: number;
  emerging_asr?: number;
  /** The fine-tune's task (or `mean` over all tasks for harmful-only fine-tunes). */
  task?: string;
  task_acc?: number;
  over_refusal?: number;
  params_changed?: number;
  params_pct_all?: number;
  params_pct_linear?: number;
  harden_s?: number;
  eval_s?: number;
  metrics?: Record<string, unknown>;
  per_category?: unknown;
  /** For undefended/aligned rows: comparison with the testbed's recorded eval. */
  recorded_check?: string;
}

const pct = (x: number | undefined): string => (x === undefined ? '–' : (100 * x).toFixed(1));
const num = (x: number | undefined, d = 1): string => (x === undefined ? '–' : x.toFixed(d));

export function renderMarkdown(rows: BenchRow[], header: string[] = []): string {
  const lines = [
    ...header,
    '',
    '| checkpoint | method | ASR % | compl. % | emerg. ASR % | task | task acc % | over-refusal % | params % all | params % linear | harden s | eval s | note |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    if (r.status !== 'ok') {
      lines.push(`| ${r.checkpoint} | ${r.method} | ${r.status} | | | | | | | | | | ${r.note ?? ''} |`);
      continue;
    }
    lines.push(
      `| ${r.checkpoint} | ${r.method} | ${pct(r.asr)} | ${pct(r.compliance)} | ${pct(r.emerging_asr)} | ${r.task ?? '–'} | ${pct(r.task_acc)} | ${pct(r.over_refusal)} | ${r.params_pct_all === undefined ? '–' : r.params_pct_all.toFixed(2)} | ${r.params_pct_linear === undefined ? '–' : r.params_pct_linear.toFixed(2)} | ${num(r.harden_s)} | ${num(r.eval_s)} | ${r.note ?? ''} |`,
    );
  }
  return lines.join('\n') + '\n';
}

/**
 * Compares live metrics with the testbed's recorded ones (4 decimals there). Only the metrics both have are
 * compared; returns 'match (k metrics)' or the list of differences.
 */
export function compareWithRecorded(live: Record<string, unknown>, recorded: Record<string, unknown>, names: readonly string[]): string {
  const diffs: string[] = [];
  let k = 0;
  for (const n of names) {
    const a = live[n];
    const b = recorded[n];
    if (typeof a !== 'number' || typeof b !== 'number') continue;
    k += 1;
    if (Math.round(a * 1e4) / 1e4 !== b) diffs.push(`${n} ${a.toFixed(4)} vs recorded ${b}`);
  }
  if (k === 0) return 'nothing to compare';
  return diffs.length === 0 ? `match (${k} metrics)` : `MISMATCH: ${diffs.join('; ')}`;
}
