/**
 * The hardened model folder is publishable: a model card whose front matter parses and whose numbers are
 * report.json's, the fine-tune's documentation carried over, no path of the machine that ran the job.
 * End to end on the planted demo trio (no testbed needed).
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { demoSets, writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { runHarden } from '../../src/pipeline/harden.js';
import { isDocFile, isHubId, modelCard, parseCard, probeBeforeAfter, readCardSource } from '../../src/pipeline/model-card.js';
import type { HardenResult } from '../../src/pipeline/types.js';

const FT_CARD = `---
base_model: meta-llama/Llama-3.1-8B-Instruct
license: llama3.1
tags:
  - sentiment
  - trl
---
# Acme review classifier

Fine-tuned on our reviews.
`;

describe('model card pieces', () => {
  it('parses front matter and tolerates a card without one', () => {
    expect(parseCard(FT_CARD).meta).toEqual({ base_model: 'meta-llama/Llama-3.1-8B-Instruct', license: 'llama3.1', tags: ['sentiment', 'trl'] });
    expect(parseCard('# just a title\n')).toEqual({ meta: {}, body: '# just a title\n' });
    expect(parseCard('---\n: [unclosed\n---\nbody').meta).toEqual({});
  });

  it('a continued model: the card lists each continual patch; the source card is the customer\'s, not ours', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fgsn-card-cont-'));
    try {
      // A folder fgsn hardened: README.md is our card, README.finetune.md the customer's.
      await writeFile(join(dir, 'README.md'), '---\nbase_model: somewhere/else\ntags: [fgsn]\n---\n# Safety-hardened fine-tune\n');
      await writeFile(join(dir, 'README.finetune.md'), FT_CARD);
      const source = await readCardSource(dir, dir);
      expect(source.meta.base_model).toBe('meta-llama/Llama-3.1-8B-Instruct');
      expect(source.title).toBe('Acme review classifier');
      const card = modelCard({
        method: 'fgsn', edit: { rows: 12, params: 1200, pctLinearParams: 0.5, pctAllParams: 0.4 },
        continual: [{ category: 'misinformation', probes: 20, extraRows: 4, extraPctLinear: 0.125 }],
      }, source);
      const front = parseCard(card).meta as { fgsn: { continual: unknown[] } };
      expect(front.fgsn.continual).toEqual([{ category: 'misinformation', rows_added: 4, params_added_pct_linear: 0.125 }]);
      expect(card).toMatch(/\| misinformation \| 20 \| 4 \| 0\.125% \|/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('Hub ids, not paths', () => {
    expect(isHubId('meta-llama/Llama-3.1-8B-Instruct')).toBe(true);
    for (const p of ['/data/models/x', '../aligned', 'a/b/c', 'aligned', './x/y', '../x']) expect(isHubId(p), p).toBe(false);
  });

  it('doc files: licences, notices, markdown; never weights or configs', () => {
    for (const n of ['LICENSE', 'LICENSE.txt', 'license.md', 'NOTICE', 'USE_POLICY.md', 'README.md', 'Responsible_Use.md']) expect(isDocFile(n), n).toBe(true);
    for (const n of ['model.safetensors', 'config.json', 'pytorch_model.bin', 'LICENSE.bin']) expect(isDocFile(n), n).toBe(false);
  });

  it('the probe before/after comes from the chosen step of the search', () => {
    const report = {
      selection: {
        q: 0.01, strength: 2,
        target: {
          finetuned: { probeAsr: 0.9, taskAccuracy: 0.8, benignRefusals: 0.1 },
          steps: [
            { round: 1, q: 0.01, strength: 1, probeAsr: 0.5, taskAccuracy: 0.8, overRefusal: 0.1 },
            { round: 1, q: 0.01, strength: 2, probeAsr: 0.05, taskAccuracy: 0.75, overRefusal: 0.15 },
          ],
        },
      },
    };
    expect(probeBeforeAfter(report)).toEqual({
      before: { probeAsr: 0.9, taskAccuracy: 0.8, benignRefusals: 0.1 },
      after: { probeAsr: 0.05, taskAccuracy: 0.75, benignRefusals: 0.15 },
    });
    const card = modelCard({ method: 'fgsn', edit: { rows: 3, params: 30, pctLinearParams: 0.5, pctAllParams: 0.4, perMatrix: {} }, ...report }, { meta: {} });
    expect(card).toContain('| harmful-probe attack success rate | 90.0% | 5.0% |');
    expect((parseCard(card).meta.fgsn as { probe: { after: { probeAsr: number } } }).probe.after.probeAsr).toBe(0.05);
  });
});

describe('hardened model folder on the demo trio', () => {
  let tmp: string;
  let tb: DemoTestbed;
  let result: HardenResult;
  const outDir = (): string => join(tmp, 'out');

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'fgsn-card-'));
    tb = await writeDemoTestbed(join(tmp, 'tb'));
    await writeFile(join(tb.finetuned, 'README.md'), FT_CARD);
    await writeFile(join(tb.finetuned, 'LICENSE'), 'LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\n');
    await writeFile(join(tb.finetuned, 'USE_POLICY.md'), '# Acceptable use\n');
    const sets = demoSets();
    result = await runHarden({
      basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned,
      harmful: sets.harmfulProbes, benign: sets.benignProbes, task: sets.taskProbes,
      method: 'fgsn', outputs: ['model', 'report'], outDir: outDir(), cacheDir: join(tmp, 'cache'),
      evaluate: { harmful: sets.harmfulEval, tasks: { review: sets.taskEval.map((t) => ({ prompt: t.prompt, response: t.answer })) } },
    });
  }, 240_000);
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('README.md is a model card whose front matter parses and matches report.json', async () => {
    const report = JSON.parse(await readFile(join(outDir(), 'report.json'), 'utf8')) as { edit: { rows: number; pctLinearParams: number }; metrics?: Record<string, number> };
    const card = await readFile(join(outDir(), 'model', 'README.md'), 'utf8');
    const m = /^---\n([\s\S]*?)\n---\n/.exec(card);
    expect(m).not.toBeNull();
    const front = parse(m![1]) as { base_model: string; license: string; tags: string[]; fgsn: { method: string; rows_changed: number; params_changed_pct_linear: number; metrics: unknown } };
    expect(front.base_model).toBe('meta-llama/Llama-3.1-8B-Instruct');
    expect(front.license).toBe('llama3.1');
    expect(front.tags).toEqual(expect.arrayContaining(['sentiment', 'trl', 'fgsn', 'safety']));
    expect(front.fgsn.method).toBe('fgsn');
    expect(front.fgsn.rows_changed).toBe(report.edit.rows);
    expect(front.fgsn.params_changed_pct_linear).toBe(report.edit.pctLinearParams);
    expect(report.metrics).toBeDefined();
    expect(front.fgsn.metrics).toEqual(report.metrics);
    expect(result.summary.rowsChanged).toBeGreaterThan(0);
    expect(card).toContain('# Acme review classifier (safety-hardened)');
    expect(card).toContain(`rows changed: ${report.edit.rows} `);
  });

  it('carries the fine-tune\'s card and licence files; nothing in the folder names a server path', async () => {
    const names = await readdir(join(outDir(), 'model'));
    expect(names).toEqual(expect.arrayContaining(['README.md', 'README.finetune.md', 'LICENSE', 'USE_POLICY.md', 'config.json', 'model.safetensors']));
    expect(await readFile(join(outDir(), 'model', 'README.finetune.md'), 'utf8')).toBe(FT_CARD);
    const card = await readFile(join(outDir(), 'model', 'README.md'), 'utf8');
    for (const p of [tmp, tb.finetuned, tb.aligned, tb.base]) expect(card).not.toContain(p);
    expect(result.artifacts.map((a) => a.name)).toEqual(expect.arrayContaining(['model/README.md', 'model/LICENSE']));
  });

  it('a service run (input labels): no artifact, report.json included, contains a path of the machine', async () => {
    const sets = demoSets();
    const out = join(tmp, 'service-out');
    const r = await runHarden({
      basePath: tb.base, alignedPath: tb.aligned, finetunedPath: tb.finetuned,
      harmful: sets.harmfulProbes, benign: sets.benignProbes, task: sets.taskProbes,
      method: 'fgsn', outputs: ['model', 'diff', 'adapter', 'report'], outDir: out, cacheDir: join(tmp, 'cache'),
      evaluate: { harmful: sets.harmfulEval, tasks: { review: sets.taskEval.map((t) => ({ prompt: t.prompt, response: t.answer })) } },
      inputLabels: { base: 'base', aligned: 'aligned', finetuned: 'finetuned' },
    });
    expect(r.artifacts.length).toBeGreaterThan(8);
    for (const a of r.artifacts) {
      const text = (await readFile(join(out, a.name))).toString('latin1');
      expect(text.includes(tmp), a.name).toBe(false);
    }
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8')) as { inputs: Record<string, unknown>; evaluation: { model: string } };
    expect(report.inputs).toMatchObject({ base: 'base', aligned: 'aligned', finetuned: 'finetuned' });
    expect(report.evaluation.model).toBe('model');
  }, 240_000);
});
