/**
 * Edit-budget frontier from a defense benchmark run (bench/out/.../defense.json): per checkpoint, every
 * defense row sorted by % of linear parameters changed, and for each baseline row the fgsn row (fixed
 * budgets and the default) that answers it: the largest fgsn edit within the baseline's budget. A baseline
 * is "answered" when that fgsn row is at least as safe (ASR) at no worse utility (task accuracy and
 * over-refusal); otherwise the line says which of the three fails.
 *
 *   npx tsx bench/defense/frontier.ts bench/out/frontier-ft/defense.json [more.json ...]
 */
import { readFileSync } from 'node:fs';
import type { BenchRow } from './table.js';

const pct = (x: number | undefined): string => (x === undefined ? '–' : (100 * x).toFixed(1));
const isFgsn = (r: BenchRow): boolean => r.method.startsWith('fgsn') && !r.method.includes('continual');

export function answer(baseline: BenchRow, fgsn: BenchRow[]): { by?: BenchRow; verdict: string } {
  const budget = baseline.params_pct_linear ?? 0;
  const within = fgsn.filter((f) => (f.params_pct_linear ?? 0) <= budget + 1e-9);
  if (within.length === 0) return { verdict: `no fgsn row within ${budget.toFixed(2)} %` };
  // Any fgsn row within the budget that dominates answers it; otherwise report the safest one within it.
  const dominates = (f: BenchRow): boolean => (f.asr ?? 1) <= (baseline.asr ?? 1) && (f.task_acc ?? 0) >= (baseline.task_acc ?? 0) &&
    (f.over_refusal ?? 1) <= (baseline.over_refusal ?? 1);
  const win = within.filter(dominates).sort((a, b) => (a.params_pct_linear ?? 0) - (b.params_pct_linear ?? 0))[0];
  if (win !== undefined) return { by: win, verdict: 'yes' };
  const best = [...within].sort((a, b) => (a.asr ?? 1) - (b.asr ?? 1))[0];
  const why = [
    (best.asr ?? 1) > (baseline.asr ?? 1) ? 'less safe' : '',
    (best.task_acc ?? 0) < (baseline.task_acc ?? 0) ? 'lower task' : '',
    (best.over_refusal ?? 1) > (baseline.over_refusal ?? 1) ? 'more over-refusal' : '',
  ].filter(Boolean).join(', ');
  return { by: best, verdict: `**no** (${why})` };
}

export function renderFrontier(rows: BenchRow[]): string {
  const out: string[] = [];
  for (const ckpt of [...new Set(rows.map((r) => r.checkpoint))].filter((c) => c !== 'aligned')) {
    const ok = rows.filter((r) => r.checkpoint === ckpt && r.status === 'ok');
    const defended = ok.filter((r) => r.method !== 'undefended').sort((a, b) => (a.params_pct_linear ?? 0) - (b.params_pct_linear ?? 0));
    const fgsn = defended.filter(isFgsn);
    out.push(`#### ${ckpt}`, '', '| method | % linear params | ASR % | emerg. ASR % | task acc % | over-refusal % | fgsn within this budget at least as safe, utility no worse? |', '|---|---|---|---|---|---|---|');
    for (const r of [...ok.filter((x) => x.method === 'undefended'), ...defended]) {
      let cell = '';
      if (r.method !== 'undefended' && !isFgsn(r)) {
        const a = answer(r, fgsn);
        cell = a.by === undefined ? a.verdict : `${a.verdict}: ${a.by.method} (${(a.by.params_pct_linear ?? 0).toFixed(2)} %, ASR ${pct(a.by.asr)}, task ${pct(a.by.task_acc)})`;
      }
      out.push(`| ${r.method} | ${r.params_pct_linear === undefined ? '0' : r.params_pct_linear.toFixed(2)} | ${pct(r.asr)} | ${pct(r.emerging_asr)} | ${r.task ?? ''} ${pct(r.task_acc)} | ${pct(r.over_refusal)} | ${cell} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const files = process.argv.slice(2);
  if (files.length === 0) throw new Error('usage: frontier.ts DEFENSE_JSON...');
  for (const f of files) process.stdout.write(renderFrontier((JSON.parse(readFileSync(f, 'utf8')) as { rows: BenchRow[] }).rows) + '\n');
}
