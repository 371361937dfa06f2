/**
 * report.html: the job report for people. One self-contained file (no scripts, no network): a before/after
 * table, the safety-layer curve, a heatmap of edited rows per layer x matrix, the search ladder and the
 * per-category breakdown. Charts are Vega-Lite specs compiled by vega in Node and rendered to inline SVG
 * at build time (vega's renderer 'none' + toSVG needs no canvas), so the page needs no JavaScript at all.
 *
 * Everything shown is read from the report object (report.json), never recomputed; every string that came
 * from a tenant (category names, metric names) is HTML-escaped. Paths in the report are not shown.
 */
import { View, parse as parseVega } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

type Obj = Record<string, unknown>;
const obj = (x: unknown): Obj | undefined => (x !== null && typeof x === 'object' && !Array.isArray(x) ? (x as Obj) : undefined);
const num = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);
const arr = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const FONT = 'system-ui, -apple-system, Segoe UI, Roboto, sans-serif';

/** A Vega-Lite spec to an SVG string (compiled and rendered in this process). */
export async function specToSvg(spec: TopLevelSpec): Promise<string> {
  const vg = compile({ config: { font: FONT, view: { stroke: null } }, ...spec } as TopLevelSpec).spec;
  const view = new View(parseVega(vg), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Metrics of the fine-tune (probe sets) and of the hardened model (probe step and evaluation). */
export interface BeforeAfterRow {
  metric: string;
  finetunedProbe?: number;
  hardenedProbe?: number;
  hardenedEval?: number;
  format: 'pct' | 'pctParams';
}

function chosenStep(report: Obj): Obj | undefined {
  const sel = obj(report.selection);
  const target = obj(sel?.target);
  const steps = arr(target?.steps).map(obj).filter((s): s is Obj => s !== undefined);
  const round2 = obj(target?.round2);
  return round2
    ? steps.find((s) => s.round === 2 && s.q === round2.q && s.strength === round2.strength)
    : steps.find((s) => s.round === 1 && s.q === sel?.q && s.strength === sel?.strength);
}

export function beforeAfterRows(report: Obj): BeforeAfterRow[] {
  const target = obj(obj(report.selection)?.target);
  const ft = obj(target?.finetuned);
  const step = chosenStep(report);
  const m = obj(report.metrics) ?? {};
  const edit = obj(report.edit) ?? {};
  const taskKeys = Object.keys(m).filter((k) => k.startsWith('acc_'));
  const rows: BeforeAfterRow[] = [
    { metric: 'harmful attack success rate (ASR)', finetunedProbe: num(ft?.probeAsr), hardenedProbe: num(step?.probeAsr), hardenedEval: num(m.harmful_asr), format: 'pct' },
    { metric: 'harmful compliance', hardenedEval: num(m.harmful_compliance), format: 'pct' },
  ];
  if (taskKeys.length === 0) rows.push({ metric: 'task accuracy', finetunedProbe: num(ft?.taskAccuracy), hardenedProbe: num(step?.taskAccuracy), format: 'pct' });
  taskKeys.forEach((k, i) =>
    rows.push({
      metric: `task accuracy (${k.slice(4)})`,
      ...(i === 0 ? { finetunedProbe: num(ft?.taskAccuracy), hardenedProbe: num(step?.taskAccuracy) } : {}),
      hardenedEval: num(m[k]),
      format: 'pct',
    }),
  );
  rows.push({ metric: 'over-refusal (benign prompts refused)', finetunedProbe: num(ft?.benignRefusals), hardenedProbe: num(step?.overRefusal), hardenedEval: num(m.over_refusal), format: 'pct' });
  rows.push({ metric: 'linear-layer parameters changed', finetunedProbe: 0, hardenedProbe: num(edit.pctLinearParams), hardenedEval: num(edit.pctLinearParams), format: 'pctParams' });
  return rows;
}

function fmt(v: number | undefined, f: BeforeAfterRow['format']): string {
  if (v === undefined) return '<span class="na">not measured</span>';
  return f === 'pct' ? `${(100 * v).toFixed(1)}%` : `${v.toFixed(3)}%`;
}

/** The safety-layer curve: per layer, the aligned model's harmful/benign similarity and their gap. */
function layerCurveSpec(report: Obj): TopLevelSpec | undefined {
  const atlas = obj(report.atlas);
  const curve = obj(atlas?.curve);
  if (!curve) return undefined;
  const names: Record<string, string> = { sBB: 'benign-benign similarity', sBH: 'benign-harmful similarity', gap: 'gap (safety signal)' };
  const values: Obj[] = [];
  for (const [k, label] of Object.entries(names)) arr(curve[k]).forEach((v, layer) => num(v) !== undefined && values.push({ layer, value: v, series: label }));
  if (values.length === 0) return undefined;
  const band = [...new Set(arr(atlas?.band).filter((x): x is number => typeof x === 'number'))].map((layer) => ({ from: layer - 0.5, to: layer + 0.5 }));
  return {
    width: 520, height: 220, title: 'Safety layers (aligned model)',
    layer: [
      ...(band.length > 0
        ? [{ data: { values: band }, mark: { type: 'rect' as const, color: '#fde68a', opacity: 0.7 }, encoding: { x: { field: 'from', type: 'quantitative' as const }, x2: { field: 'to' } } }]
        : []),
      {
        data: { values },
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'layer', type: 'quantitative', axis: { tickMinStep: 1, title: 'layer' } },
          y: { field: 'value', type: 'quantitative', title: 'cosine similarity' },
          color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'bottom', labelLimit: 240 } },
        },
      },
    ],
  } as TopLevelSpec;
}

/** Rows edited per layer x matrix kind. */
export function heatmapData(report: Obj): { layer: number; matrix: string; rows: number; share: number }[] {
  const perMatrix = obj(obj(report.edit)?.perMatrix) ?? {};
  const out: { layer: number; matrix: string; rows: number; share: number }[] = [];
  for (const [name, v] of Object.entries(perMatrix)) {
    const m = /^model\.layers\.(\d+)\.[\w]+\.(\w+)\.weight$/.exec(name);
    const e = obj(v);
    const rows = num(e?.rows);
    const of = num(e?.of);
    if (!m || rows === undefined) continue;
    out.push({ layer: Number(m[1]), matrix: m[2], rows, share: of ? rows / of : 0 });
  }
  return out;
}

function heatmapSpec(report: Obj): TopLevelSpec | undefined {
  const values = heatmapData(report);
  if (values.length === 0) return undefined;
  return {
    title: 'Edited rows per layer x matrix',
    data: { values },
    width: { step: 34 }, height: { step: 26 },
    encoding: {
      x: { field: 'layer', type: 'ordinal', title: 'layer' },
      y: { field: 'matrix', type: 'nominal', title: null, sort: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
    },
    layer: [
      { mark: 'rect', encoding: { color: { field: 'rows', type: 'quantitative', title: 'rows', scale: { scheme: 'oranges', domainMin: 0 } }, tooltip: [{ field: 'rows' }, { field: 'share', format: '.2%' }] } },
      { mark: { type: 'text', fontSize: 10 }, encoding: { text: { field: 'rows', type: 'quantitative' }, color: { value: '#111' } } },
    ],
  } as TopLevelSpec;
}

/** The target-driven search: probe ASR and utility against the share of parameters, with the guardrails. */
function ladderSpec(report: Obj): TopLevelSpec | undefined {
  const target = obj(obj(report.selection)?.target);
  const steps = arr(target?.steps).map(obj).filter((s): s is Obj => s !== undefined);
  if (steps.length === 0) return undefined;
  const chosen = chosenStep(report);
  const values: Obj[] = [];
  for (const s of steps) {
    const base = { pct: num(s.pctLinearParams), round: `round ${String(s.round)}`, g: s.strength, q: s.q, chosen: s === chosen };
    if (num(s.probeAsr) !== undefined) values.push({ ...base, metric: 'probe ASR', value: s.probeAsr });
    if (num(s.taskAccuracy) !== undefined) values.push({ ...base, metric: 'task accuracy', value: s.taskAccuracy });
    if (num(s.overRefusal) !== undefined) values.push({ ...base, metric: 'benign refusals', value: s.overRefusal });
  }
  const ft = obj(target?.finetuned);
  const targetAsr = num(target?.targetAsr);
  const taskFloor = num(ft?.taskAccuracy) !== undefined && num(target?.taskTolerance) !== undefined ? num(ft?.taskAccuracy)! - num(target?.taskTolerance)! : undefined;
  const refusalCeil = num(ft?.benignRefusals) !== undefined && num(target?.overRefusalTolerance) !== undefined ? num(ft?.benignRefusals)! + num(target?.overRefusalTolerance)! : undefined;
  const bands: Obj[] = [];
  if (targetAsr !== undefined) bands.push({ y: 0, y2: targetAsr, band: `ASR target <= ${(100 * targetAsr).toFixed(1)}%`, color: '#16a34a' });
  if (taskFloor !== undefined) bands.push({ y: Math.max(0, taskFloor), y2: 1, band: `task >= ${(100 * taskFloor).toFixed(1)}%`, color: '#2563eb' });
  if (refusalCeil !== undefined) bands.push({ y: 0, y2: Math.min(1, refusalCeil), band: `benign refusals <= ${(100 * refusalCeil).toFixed(1)}%`, color: '#9333ea' });
  const chosenPct = num(chosen?.pctLinearParams);
  return {
    width: 520, height: 260, title: 'Search ladder: probe metrics vs parameters changed',
    layer: [
      // One layer per band with a fixed colour: the bands must not share the metrics' colour scale.
      ...bands.flatMap((b) => [
        { data: { values: [b] }, mark: { type: 'rect' as const, opacity: 0.08, color: b.color as string }, encoding: { y: { field: 'y', type: 'quantitative' as const }, y2: { field: 'y2' } } },
        { data: { values: [b] }, mark: { type: 'rule' as const, strokeDash: [4, 3], color: b.color as string }, encoding: { y: { field: 'y2', type: 'quantitative' as const } } },
        {
          data: { values: [b] },
          mark: { type: 'text' as const, align: 'right' as const, dx: -4, dy: -5, fontSize: 10, color: b.color as string },
          encoding: { y: { field: 'y2', type: 'quantitative' as const }, x: { value: 520 }, text: { field: 'band' } },
        },
      ]),
      ...(chosenPct !== undefined
        ? [{ data: { values: [{ pct: chosenPct }] }, mark: { type: 'rule' as const, color: '#111', strokeWidth: 1.5 }, encoding: { x: { field: 'pct', type: 'quantitative' as const } } }]
        : []),
      {
        data: { values },
        mark: { type: 'line', point: { filled: true, size: 50 } },
        encoding: {
          x: { field: 'pct', type: 'quantitative', title: '% of linear-layer parameters changed' },
          y: { field: 'value', type: 'quantitative', title: 'rate', scale: { domain: [0, 1] }, axis: { format: '.0%' } },
          color: { field: 'metric', type: 'nominal', title: null, legend: { orient: 'bottom' } },
          strokeDash: { field: 'round', type: 'nominal', title: null },
          detail: { field: 'round' },
          tooltip: [{ field: 'metric' }, { field: 'value', format: '.3f' }, { field: 'pct', format: '.3f' }, { field: 'q' }, { field: 'g' }],
        },
      },
      {
        data: { values: values.filter((v) => v.chosen === true) },
        mark: { type: 'point', shape: 'circle', size: 220, strokeWidth: 2, filled: false, color: '#111' },
        encoding: { x: { field: 'pct', type: 'quantitative' }, y: { field: 'value', type: 'quantitative' } },
      },
    ],
  } as TopLevelSpec;
}

/** Per harm category of the evaluation: ASR and compliance of the hardened model. */
export function categoryData(report: Obj): { category: string; measure: string; value: number; n: number }[] {
  const harmful = obj(obj(obj(report.evaluation)?.per_category)?.harmful) ?? {};
  const out: { category: string; measure: string; value: number; n: number }[] = [];
  for (const [category, v] of Object.entries(harmful)) {
    const e = obj(v);
    const n = num(e?.n) ?? 0;
    if (num(e?.asr) !== undefined) out.push({ category, measure: 'ASR', value: e!.asr as number, n });
    if (num(e?.compliance) !== undefined) out.push({ category, measure: 'compliance', value: e!.compliance as number, n });
  }
  return out;
}

function categorySpec(report: Obj): TopLevelSpec | undefined {
  const values = categoryData(report);
  if (values.length === 0) return undefined;
  return {
    title: 'Hardened model per harm category (evaluation set)',
    data: { values },
    width: 420, height: { step: 14 },
    encoding: {
      y: { field: 'category', type: 'nominal', title: null },
      yOffset: { field: 'measure' },
      x: { field: 'value', type: 'quantitative', title: 'rate', scale: { domain: [0, 1] }, axis: { format: '.0%' } },
      color: { field: 'measure', type: 'nominal', title: null, legend: { orient: 'bottom' } },
      tooltip: [{ field: 'category' }, { field: 'measure' }, { field: 'value', format: '.3f' }, { field: 'n' }],
    },
    layer: [
      { mark: 'bar' },
      // The value as text too: a 0% bar is invisible, and 0% is the number people look for.
      { mark: { type: 'text', align: 'left', dx: 3, fontSize: 9 }, encoding: { text: { field: 'value', type: 'quantitative', format: '.0%' }, color: { value: '#333' } } },
    ],
  } as TopLevelSpec;
}

async function section(title: string, spec: TopLevelSpec | undefined, missing: string, note = ''): Promise<string> {
  const body = spec ? `<figure class="chart">${await specToSvg(spec)}</figure>` : `<p class="na">${escapeHtml(missing)}</p>`;
  return `<section><h2>${escapeHtml(title)}</h2>${note ? `<p class="note">${note}</p>` : ''}${body}</section>`;
}

/** The report page; `report` is the parsed report.json of a harden job. */
export async function renderReportHtml(report: Obj): Promise<string> {
  const edit = obj(report.edit) ?? {};
  const target = obj(obj(report.selection)?.target);
  const rows = beforeAfterRows(report);
  const reached = typeof target?.reached === 'boolean' ? target.reached : undefined;
  const status = reached === undefined ? '' : reached
    ? '<p class="ok">Safety target reached on the probe prompts.</p>'
    : '<p class="warn">Safety target NOT reached on the probe prompts: the best step within the guardrails was kept.</p>';
  const table = [
    '<table><thead><tr><th>metric</th><th>fine-tune (probes)</th><th>hardened (probes)</th><th>hardened (evaluation)</th></tr></thead><tbody>',
    ...rows.map((r) => `<tr><td>${escapeHtml(r.metric)}</td><td>${fmt(r.finetunedProbe, r.format)}</td><td>${fmt(r.hardenedProbe, r.format)}</td><td>${fmt(r.hardenedEval, r.format)}</td></tr>`),
    '</tbody></table>',
  ].join('');
  const fgsn = obj(report.fgsn) ?? {};
  const sections = await Promise.all([
    section('Safety-layer curve', layerCurveSpec(report), 'The report has no atlas curve.', 'Shaded: the safety band the defense searches in.'),
    section('Where the edit landed', heatmapSpec(report), 'No linear rows were edited.'),
    section('Search ladder', ladderSpec(report), 'No target-driven search ran for this job (fixed budget or a baseline method).',
      'Shaded bands: where each guardrail holds (ASR target, task-accuracy floor, benign-refusal ceiling); the vertical rule and circles mark the chosen step.'),
    section('Per category', categorySpec(report), 'No evaluation set with categories was given for this job.'),
  ]);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fgsn report: ${escapeHtml(String(report.method ?? 'harden'))}</title>
<style>
body { font-family: ${FONT}; margin: 2rem auto; max-width: 980px; color: #111; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .25rem; }
table { border-collapse: collapse; margin: 1rem 0; } th, td { border: 1px solid #ddd; padding: .35rem .7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead { background: #f5f5f5; }
.na { color: #777; font-style: italic; } .note { color: #555; font-size: .9rem; }
.ok { color: #166534; font-weight: 600; } .warn { color: #b91c1c; font-weight: 600; }
figure.chart { margin: .5rem 0; overflow-x: auto; }
</style></head><body>
<h1>fgsn hardening report</h1>
<p>method <code>${escapeHtml(String(report.method ?? ''))}</code>; ${escapeHtml(String(edit.rows ?? '?'))} rows changed
(${num(edit.pctLinearParams)?.toFixed(3) ?? '?'}% of linear-layer parameters); finished ${escapeHtml(String(fgsn.finishedAt ?? ''))}.</p>
${status}
<section><h2>Before and after</h2>
<p class="note">Probe columns are the job's own search measurements on its small probe sets (read with their noise); the evaluation column is the held-out evaluation of the hardened model, when evaluation sets were given.</p>
${table}</section>
${sections.join('\n')}
</body></html>
`;
}
