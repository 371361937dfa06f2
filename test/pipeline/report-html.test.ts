/**
 * report.html: written by `--format report` (and `fgsn report`), self-contained, and rendered by a real
 * browser: headless Chromium (Debian's `chromium`, installed by .ci/run) loads it with every network request
 * refused; the charts must be SVG in the page, with no console errors. A screenshot is saved for people
 * (test-results/report-html.png).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { demoSets, writeDemoTestbed } from '../../src/demo/fixtures.js';
import { runHarden } from '../../src/pipeline/harden.js';
import { beforeAfterRows, categoryData, escapeHtml, heatmapData, renderReportHtml } from '../../src/pipeline/report-html.js';
import { REPO_ROOT } from '../support/testbed.js';

const CHROMIUM = [process.env.FGSN_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => !!p && existsSync(p));
// CI installs chromium (.ci/run): there a missing browser is a failure, not a skip.
if (!CHROMIUM && process.env.CI === 'true') throw new Error('CI=true but no chromium found (FGSN_CHROMIUM, /usr/bin/chromium)');

/** A report with a two-round search, several layers and categories, as the pipeline writes them. */
function richReport(): Record<string, unknown> {
  const steps = [
    { round: 1, q: 0.001, strength: 1, rows: 10, pctLinearParams: 0.1, probeAsr: 0.7, taskAccuracy: 0.9, overRefusal: 0.05, guardrailsOk: true },
    { round: 1, q: 0.001, strength: 2, rows: 10, pctLinearParams: 0.1, probeAsr: 0.4, taskAccuracy: 0.88, overRefusal: 0.05, guardrailsOk: true },
    { round: 1, q: 0.002, strength: 2, rows: 20, pctLinearParams: 0.2, probeAsr: 0.2, taskAccuracy: 0.86, overRefusal: 0.06, guardrailsOk: true },
    { round: 2, q: 0.00125, strength: 2, rows: 25, pctLinearParams: 0.25, probeAsr: 0.05, taskAccuracy: 0.86, overRefusal: 0.06, guardrailsOk: true },
  ];
  const perMatrix: Record<string, { rows: number; params: number; of: number }> = {};
  for (let l = 0; l < 4; l++) {
    for (const m of ['self_attn.q_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.down_proj']) perMatrix[`model.layers.${l}.${m}.weight`] = { rows: (l * 3 + m.length) % 5, params: 0, of: 64 };
  }
  return {
    fgsn: { version: 1, finishedAt: '2026-12-02T00:00:00.000Z' },
    method: 'fgsn',
    atlas: { band: [1, 2], curve: { sBB: [0.99, 0.98, 0.97, 0.99], sBH: [0.9, 0.6, 0.5, 0.8], gap: [0.09, 0.38, 0.47, 0.19] } },
    selection: {
      q: 0.002, strength: 2,
      target: {
        targetAsr: 0.1, taskTolerance: 0.05, overRefusalTolerance: 0.02, reached: true,
        finetuned: { probeAsr: 0.95, taskAccuracy: 0.9, benignRefusals: 0.05 },
        steps, round2: { q: 0.00125, strength: 2, rows: 5, probeAsr: 0.05 },
      },
    },
    edit: { rows: 25, params: 2400, pctLinearParams: 0.25, pctAllParams: 0.2, perMatrix },
    metrics: { harmful_asr: 0.04, harmful_compliance: 0.02, acc_sst: 0.87, over_refusal: 0.06 },
    evaluation: { per_category: { harmful: { '<script>alert(1)</script>': { n: 5, asr: 0.2, compliance: 0 }, fraud: { n: 10, asr: 0, compliance: 0 } } } },
  };
}

describe('report.html pieces', () => {
  it('the before/after rows are report.json\'s numbers (chosen step of round 2, evaluation metrics)', () => {
    const rows = beforeAfterRows(richReport());
    const asr = rows.find((r) => r.metric.startsWith('harmful attack'))!;
    expect(asr).toMatchObject({ finetunedProbe: 0.95, hardenedProbe: 0.05, hardenedEval: 0.04 });
    expect(rows.find((r) => r.metric === 'task accuracy (sst)')).toMatchObject({ finetunedProbe: 0.9, hardenedProbe: 0.86, hardenedEval: 0.87 });
    expect(rows.find((r) => r.metric.startsWith('linear-layer'))?.hardenedEval).toBe(0.25);
  });

  it('heatmap and category data; tenant strings are escaped', async () => {
    const h = heatmapData(richReport());
    expect(h).toHaveLength(16);
    expect(h.find((c) => c.layer === 2 && c.matrix === 'gate_proj')).toMatchObject({ rows: (6 + 'mlp.gate_proj'.length) % 5 });
    expect(categoryData(richReport()).filter((c) => c.measure === 'ASR').map((c) => c.value)).toEqual([0.2, 0]);
    expect(escapeHtml('<a href="x">&\'')).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
    const html = await renderReportHtml(richReport());
    expect(html).not.toContain('<script>alert(1)</script>');
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);
  });
});

describe.skipIf(!CHROMIUM)('report.html in headless Chromium', () => {
  let tmp: string;
  let puppeteer: typeof import('puppeteer-core').default;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'fgsn-report-'));
    puppeteer = (await import('puppeteer-core')).default;
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  async function load(file: string, screenshot?: string): Promise<{ svgs: number; marks: number; scripts: number; errors: string[]; requests: string[]; text: string }> {
    const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.setRequestInterception(true);
      page.on('request', (r) => {
        if (r.url().startsWith('file:') && r.url() === pathToFileURL(file).href) void r.continue();
        else {
          requests.push(r.url());
          void r.abort();
        }
      });
      await page.setViewport({ width: 1100, height: 900 });
      await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
      const svgs = await page.$$eval('figure.chart > svg', (s) => s.filter((e) => e.getBoundingClientRect().width > 100 && e.getBoundingClientRect().height > 50).length);
      const marks = await page.$$eval('figure.chart svg path, figure.chart svg line', (s) => s.length);
      const text = await page.$eval('body', (b) => b.innerText);
      const scripts = (await page.$$('script')).length;
      if (screenshot) await page.screenshot({ path: screenshot as `${string}.png`, fullPage: true });
      return { svgs, marks, scripts, errors, requests, text };
    } finally {
      await browser.close();
    }
  }

  it('a real job with --format report: report.html renders its four charts, offline, without errors', async () => {
    const tb = await writeDemoTestbed(join(tmp, 'tb'));
    const sets = demoSets();
    const outDir = join(tmp, 'out');
    const r = await runHarden({
      basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned,
      harmful: sets.harmfulProbes, benign: sets.benignProbes, task: sets.taskProbes,
      method: 'fgsn', outputs: ['diff', 'report'], outDir, cacheDir: join(tmp, 'cache'),
      evaluate: undefined,
    });
    expect(r.artifacts.map((a) => a.name)).toContain('report.html');
    const page = await load(join(outDir, 'report.html'));
    expect(page.errors).toEqual([]);
    expect(page.requests).toEqual([]);
    expect(page.svgs).toBe(3); // curve, heatmap, ladder; no evaluation sets: per category says so
    expect(page.text).toContain('No evaluation set with categories');
    const report = JSON.parse(await readFile(join(outDir, 'report.json'), 'utf8')) as { edit: { rows: number } };
    expect(page.text).toContain(`${report.edit.rows} rows changed`);
  }, 240_000);

  it('fgsn report REPORT.json renders a full report (two rounds, categories); screenshot saved', async () => {
    const json = join(tmp, 'rich.json');
    await (await import('node:fs/promises')).writeFile(json, JSON.stringify(richReport()));
    const out = join(tmp, 'rich.html');
    expect(await main(['report', json, '--out', out])).toBe(0);
    await mkdir(join(REPO_ROOT, 'test-results'), { recursive: true });
    const page = await load(out, join(REPO_ROOT, 'test-results', 'report-html.png'));
    expect(page.errors).toEqual([]);
    expect(page.requests).toEqual([]);
    expect(page.svgs).toBe(4);
    expect(page.marks).toBeGreaterThan(20);
    expect(page.text).toContain('<script>alert(1)</scr'); // shown as text (axis labels are truncated), not run
    expect(page.scripts).toBe(0);
    expect(page.text).toContain('95.0%');
  }, 120_000);
});
