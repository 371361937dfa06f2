/**
 * What makes a hardened model folder publishable on the Hugging Face Hub: a generated model card
 * (README.md with YAML front matter) and the fine-tune's own documentation carried over.
 *
 * Decision: the fine-tune's README.md is kept unchanged as README.finetune.md and the card links to it
 * (merging two cards would rewrite the customer's text and its front matter); every other documentation
 * file (LICENSE*, NOTICE*, USE_POLICY.md, other *.md) is copied under its own name, since licences such as
 * Llama's require them to travel with derivatives.
 *
 * The card states only what report.json states: the same numbers, read from the report object. It never
 * contains a path of the machine that ran the job (the report's `inputs` are not read here).
 */
import { copyFile, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDocument, stringify } from 'yaml';
import { isHubId } from '../checkpoint/index.js';

export const CARD_FILE = 'README.md';
export const FINETUNE_CARD_FILE = 'README.finetune.md';
const MAX_CARD_BYTES = 1 << 20;

/** Documentation files carried from the fine-tune (never weights, never executable formats). */
export function isDocFile(name: string): boolean {
  return /^(LICEN[CS]E|NOTICE|COPYING|USE_POLICY|ACCEPTABLE_USE_POLICY|CITATION)(\.(md|txt|cff))?$/i.test(name) || /^[\w.-]+\.md$/i.test(name);
}

export { isHubId };

export interface CardSource {
  /** Front matter of the fine-tune's README.md ({} when absent or unparsable). */
  meta: Record<string, unknown>;
  /** The fine-tune's title (first "# " heading of its card), when it has one. */
  title?: string;
}

/** Splits a model card into its YAML front matter and body; an unparsable front matter counts as none. */
export function parseCard(text: string): { meta: Record<string, unknown>; body: string } {
  const m = /^---\r?\n([\s\S]*?)\r?\n---\r?\n?/.exec(text);
  if (!m) return { meta: {}, body: text };
  const doc = parseDocument(m[1]);
  const meta = doc.errors.length === 0 ? (doc.toJSON() as unknown) : null;
  return { meta: meta !== null && typeof meta === 'object' && !Array.isArray(meta) ? (meta as Record<string, unknown>) : {}, body: text.slice(m[0].length) };
}

/** Reads the fine-tune's card and config for the fields a derived card copies. */
export async function readCardSource(finetuneDir: string, configDir: string): Promise<CardSource> {
  let meta: Record<string, unknown> = {};
  let title: string | undefined;
  try {
    // A folder fgsn hardened before (continue): its README.md is our card, the customer's is README.finetune.md.
    const own = join(finetuneDir, FINETUNE_CARD_FILE);
    const p = (await stat(own).then(() => true, () => false)) ? own : join(finetuneDir, CARD_FILE);
    if ((await stat(p)).size <= MAX_CARD_BYTES) {
      const card = parseCard(await readFile(p, 'utf8'));
      meta = card.meta;
      // A continued model's folder holds fgsn's own card: its title already says so (never suffixed twice).
      title = /^#\s+(.+)$/m.exec(card.body)?.[1]?.trim().replace(/ \(safety-hardened\)$/, '');
    }
  } catch {
    // no card: the fields below fall back to the config
  }
  if (meta.base_model === undefined) {
    // Without a card, a Hub id in the config (or a PEFT adapter's config) still names what it derives from.
    for (const [dir, file, key] of [[configDir, 'config.json', '_name_or_path'], [finetuneDir, 'adapter_config.json', 'base_model_name_or_path']] as const) {
      try {
        const v = (JSON.parse(await readFile(join(dir, file), 'utf8')) as Record<string, unknown>)[key];
        if (isHubId(v)) {
          meta = { ...meta, base_model: v };
          break;
        }
      } catch {
        // absent or not JSON: nothing to copy
      }
    }
  }
  return { meta, ...(title ? { title } : {}) };
}

/** Copies the fine-tune's documentation files into the model folder; its README.md as README.finetune.md. */
export async function copyDocFiles(fromDir: string, toDir: string): Promise<string[]> {
  const out: string[] = [];
  const names = (await readdir(fromDir)).sort();
  // A folder fgsn already hardened: its README.md is our card, the customer's card is README.finetune.md.
  const hardenedBefore = names.includes(FINETUNE_CARD_FILE);
  for (const name of names) {
    if (!isDocFile(name) || (hardenedBefore && name === CARD_FILE) || !(await stat(join(fromDir, name))).isFile()) continue;
    const to = name === CARD_FILE ? FINETUNE_CARD_FILE : name;
    await copyFile(join(fromDir, name), join(toDir, to));
    out.push(to);
  }
  return out;
}

const pct = (x: unknown): string => (typeof x === 'number' ? `${(100 * x).toFixed(1)}%` : 'not measured');
type Obj = Record<string, unknown>;
const obj = (x: unknown): Obj | undefined => (x !== null && typeof x === 'object' && !Array.isArray(x) ? (x as Obj) : undefined);

/** Probe metrics of the fine-tune and of the chosen step of a target-driven search, when the report has them. */
export function probeBeforeAfter(report: Obj): { before: Obj; after: Obj } | undefined {
  const sel = obj(report.selection);
  const target = obj(sel?.target);
  const before = obj(target?.finetuned);
  const steps = Array.isArray(target?.steps) ? (target.steps as Obj[]) : [];
  const round2 = obj(target?.round2);
  const chosen = round2
    ? steps.find((s) => s.round === 2 && s.q === round2.q && s.strength === round2.strength)
    : steps.find((s) => s.round === 1 && s.q === sel?.q && s.strength === sel?.strength);
  if (!before || !chosen) return undefined;
  return {
    before: { probeAsr: before.probeAsr, taskAccuracy: before.taskAccuracy, benignRefusals: before.benignRefusals },
    after: { probeAsr: chosen.probeAsr, taskAccuracy: chosen.taskAccuracy, benignRefusals: chosen.overRefusal },
  };
}

/** The model card text for a hardened model, from the job report and the fine-tune's card. */
export function modelCard(report: Obj, source: CardSource): string {
  const edit = obj(report.edit) ?? {};
  const metrics = obj(report.metrics);
  const probe = probeBeforeAfter(report);
  const continual = (Array.isArray(report.continual) ? report.continual : []).map(obj).filter((c): c is Obj => c !== undefined);
  const copied: Obj = {};
  for (const k of ['base_model', 'license', 'license_name', 'license_link', 'language', 'pipeline_tag']) {
    if (source.meta[k] !== undefined) copied[k] = source.meta[k];
  }
  const tags = Array.isArray(source.meta.tags) ? source.meta.tags.filter((t): t is string => typeof t === 'string') : [];
  const front: Obj = {
    ...copied,
    // The output is a full (merged) model even when the fine-tune was a PEFT adapter.
    library_name: 'transformers',
    tags: [...new Set([...tags, 'fgsn', 'safety', 'safety-realignment'])],
    fgsn: {
      method: report.method,
      rows_changed: edit.rows,
      params_changed: edit.params,
      params_changed_pct_linear: edit.pctLinearParams,
      params_changed_pct_all: edit.pctAllParams,
      ...(probe ? { probe } : {}),
      ...(metrics ? { metrics } : {}),
      ...(continual.length > 0 ? { continual: continual.map((c) => ({ category: c.category, rows_added: c.extraRows, params_added_pct_linear: c.extraPctLinear })) } : {}),
    },
  };
  const name = source.title ?? 'the fine-tuned model';
  const perMatrix = Object.entries(obj(edit.perMatrix) ?? {})
    .map(([k, v]) => [k, obj(v) ?? {}] as const)
    .filter(([, v]) => typeof v.rows === 'number' && v.rows > 0);
  const lines = [
    '---',
    stringify(front, { lineWidth: 0 }).trimEnd(),
    '---',
    '',
    `# ${source.title ? `${source.title} (safety-hardened)` : 'Safety-hardened fine-tune'}`,
    '',
    `This is ${name} with the safety behaviour its fine-tuning eroded repaired by [fgsn](https://arxiv.org/abs/2508.09190):`,
    'a training-free projection of a few rows of its linear weights along the safety direction (aligned minus',
    'base weights). Every other weight is the fine-tune\'s (merged into the aligned model when the fine-tune was a',
    'LoRA adapter); the folder loads like the original.',
    '',
    '## What was changed',
    '',
    `- method: \`${String(report.method)}\``,
    `- rows changed: ${String(edit.rows)} (${String(edit.params)} parameters, ${Number(edit.pctLinearParams).toFixed(3)}% of the linear-layer parameters, ${Number(edit.pctAllParams).toFixed(3)}% of all)`,
    '',
    ...(perMatrix.length > 0
      ? ['| matrix | rows changed | of |', '|---|---|---|', ...perMatrix.map(([k, v]) => `| \`${k}\` | ${String(v.rows)} | ${String(v.of)} |`), '']
      : []),
    '## Metrics',
    '',
  ];
  if (probe) {
    lines.push(
      'On the job\'s probe prompts (the search\'s own measurements; small sets, so read them with their noise):',
      '',
      '| | fine-tune | hardened |',
      '|---|---|---|',
      `| harmful-probe attack success rate | ${pct(probe.before.probeAsr)} | ${pct(probe.after.probeAsr)} |`,
      `| task-probe accuracy | ${pct(probe.before.taskAccuracy)} | ${pct(probe.after.taskAccuracy)} |`,
      `| benign-probe refusals | ${pct(probe.before.benignRefusals)} | ${pct(probe.after.benignRefusals)} |`,
      '',
    );
  }
  if (metrics) {
    lines.push('Evaluation of the hardened model on held-out sets:', '', '| metric | value |', '|---|---|', ...Object.entries(metrics).map(([k, v]) => `| ${k} | ${typeof v === 'number' ? v.toFixed(4) : String(v)} |`), '');
  }
  if (!probe && !metrics) lines.push('No metrics were measured for this job (no evaluation sets and no target-driven search).', '');
  if (continual.length > 0) {
    // `fgsn continue` patches: the rows above include them; the metrics above were measured before them.
    lines.push(
      '## Continual patches',
      '',
      'Harm categories added after the hardening (`fgsn continue`), each editing only rows not edited before. The rows',
      'changed above include them; the metrics above were measured before them.',
      '',
      '| category | probes | rows added | % of linear parameters |',
      '|---|---|---|---|',
      ...continual.map((c) => `| ${String(c.category)} | ${String(c.probes)} | ${String(c.extraRows)} | ${Number(c.extraPctLinear).toFixed(3)}% |`),
      '',
    );
  }
  lines.push(
    '## Files',
    '',
    '- `fgsn-report.json`: the job report these numbers come from (options, selected rows, timings).',
    `- \`${FINETUNE_CARD_FILE}\`: the fine-tune's own model card, unchanged (when it had one); its licence and notice files are carried over too.`,
    '',
  );
  return lines.join('\n');
}

/** Writes README.md (the card) and the fine-tune's documentation files into `modelDir`; returns the names. */
export async function writeModelCard(modelDir: string, finetuneDir: string, configDir: string, report: Obj): Promise<string[]> {
  const source = await readCardSource(finetuneDir, configDir);
  const docs = await copyDocFiles(finetuneDir, modelDir);
  await writeFile(join(modelDir, CARD_FILE), modelCard(report, source));
  return [CARD_FILE, ...docs];
}
