/**
 * Dev testbed: attribution of the aligned model's refusals on harmful probe prompts under ft_sst_p10, with
 * M = aligned - base and M = ft_sst_p10 - aligned, against the float64 reference on the same tokens.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ModelCheckpoint } from '../../src/checkpoint/index.js';
import { LoraAdapter } from '../../src/checkpoint/lora.js';
import { adapterDirection, attributionScores, checkpointDifference, scoreSequences, type AttributionResult, type ScoredSequence } from '../../src/engine/attribution/index.js';
import { referenceScores, type RefModel, type RefResult } from '../support/attribution-reference.js';
import { ChatTokenizer } from '../../src/engine/tokenizer/chat-tokenizer.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

async function loadRef(ckpt: ModelCheckpoint): Promise<RefModel> {
  const tensors = new Map<string, Float64Array>();
  for (const name of ckpt.names()) tensors.set(name, Float64Array.from(await ckpt.readF32(name)));
  return { spec: ckpt.spec, tensors };
}

/** ||a - b|| / ||b||. */
function relNorm(a: Float32Array, b: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

describeTestbed('attribution on the dev testbed (ft_sst_p10, aligned refusals)', () => {
  let cache: string;
  let ckpts: Record<'base' | 'aligned' | 'ft', ModelCheckpoint>;
  let seqs: ScoredSequence[];
  let got: AttributionResult;
  let ref: RefResult;

  beforeAll(async () => {
    cache = mkdtempSync(join(tmpdir(), 'fgsn-attr-tb-'));
    ckpts = {
      base: await ModelCheckpoint.open(testbedPath('base')),
      aligned: await ModelCheckpoint.open(testbedPath('aligned')),
      ft: await ModelCheckpoint.open(testbedPath('ft_sst_p10')),
    };
    const probes = readFileSync(testbedPath('data', 'harmful_attack_pool.jsonl'), 'utf8').trim().split('\n').slice(0, 4)
      .map((l) => JSON.parse(l) as { prompt: string; refusal: string });
    const tok = await ChatTokenizer.load(testbedPath('ft_sst_p10'));
    seqs = [];
    for (const p of probes) {
      const e = await tok.encodeChat(p.prompt, p.refusal);
      seqs.push({ ids: e.ids, promptLength: e.promptLength });
    }
    const directions = [checkpointDifference('safety', ckpts.aligned, ckpts.base), checkpointDifference('finetune', ckpts.ft, ckpts.aligned)];
    got = await scoreSequences(ckpts.ft, null, seqs, { directions, reduction: 'sum', batchSize: 4, cacheRoot: cache, threads: 2 });

    const [base, aligned, ft] = [await loadRef(ckpts.base), await loadRef(ckpts.aligned), await loadRef(ckpts.ft)];
    const diff = (a: RefModel, b: RefModel): Map<string, Float64Array> =>
      new Map([...got.scores.get('safety')!.keys()].map((n) => [n, a.tensors.get(n)!.map((x, i) => x - b.tensors.get(n)![i])]));
    ref = referenceScores(ft, seqs.map((s) => ({ ids: s.ids, lossPositions: Array.from({ length: s.ids.length - s.promptLength }, (_, i) => s.promptLength + i) })), [diff(aligned, base), diff(ft, aligned)]);
  });
  afterAll(async () => {
    for (const c of Object.values(ckpts ?? {})) await c.close();
    rmSync(cache, { recursive: true, force: true });
  });

  it('scores the response tokens only, left-padded in one batch', () => {
    expect(new Set(seqs.map((s) => s.ids.length)).size).toBeGreaterThan(1);
    expect(got.tokens).toBe(ref.tokens);
    expect(got.tokens).toBe(seqs.reduce((n, s) => n + s.ids.length - s.promptLength, 0));
    expect(got.scores.get('safety')!.size).toBe(4 * 7);
  });

  it('agrees with the float64 reference to 1e-4 relative (loss and every matrix)', () => {
    const lossErr = Math.abs(got.loss - ref.lossSum) / ref.lossSum;
    let worst = 0;
    let worstName = '';
    let worstRow = 0;
    for (const [k, dname] of ['safety', 'finetune'].entries()) {
      for (const [w, r] of ref.scores[k]) {
        const a = got.scores.get(dname)!.get(w)!;
        const e = relNorm(a, r);
        if (e > worst) [worst, worstName] = [e, `${dname} ${w}`];
        // Per row, relative to max(|row score|, 1e-3 of the matrix's largest): near-zero rows are float noise.
        const scale = Math.max(...r.map(Math.abs));
        for (let i = 0; i < r.length; i++) worstRow = Math.max(worstRow, Math.abs(a[i] - r[i]) / Math.max(Math.abs(r[i]), 1e-3 * scale));
      }
    }
    console.log(`testbed: loss ${got.loss.toFixed(4)} (${got.tokens} tokens) rel err ${lossErr.toExponential(2)}; worst matrix rel err ${worst.toExponential(2)} (${worstName}); worst row ${worstRow.toExponential(2)}`);
    expect(lossErr).toBeLessThan(1e-4);
    expect(worst).toBeLessThan(1e-4);
    expect(worstRow).toBeLessThan(5e-3);
  });

  it('in one-layer segments (small direction budget) gives the same scores as one pass', async () => {
    const directions = [checkpointDifference('safety', ckpts.aligned, ckpts.base), checkpointDifference('finetune', ckpts.ft, ckpts.aligned)];
    const seg = await scoreSequences(ckpts.ft, null, seqs, { directions, reduction: 'sum', batchSize: 2, maxDirectionBytes: 1, cacheRoot: cache, threads: 2 });
    expect(seg.layerChunks).toHaveLength(4);
    expect(Math.abs(seg.loss - got.loss) / got.loss).toBeLessThan(1e-5);
    let worst = 0;
    for (const d of ['safety', 'finetune']) for (const [w, v] of got.scores.get(d)!) worst = Math.max(worst, relNorm(seg.scores.get(d)!.get(w)!, Float64Array.from(v)));
    expect(worst).toBeLessThan(1e-5);
  });

  it('ranks the same top rows as the reference (the defense uses the ranking)', () => {
    const rows = (get: (w: string) => ArrayLike<number>): string[] => {
      const all: [string, number][] = [];
      for (const w of ref.scores[0].keys()) Array.from(get(w)).forEach((v, r) => all.push([`${w}#${r}`, -v]));
      return all.sort((a, b) => b[1] - a[1]).slice(0, Math.round(all.length * 0.02)).map((x) => x[0]);
    };
    const a = rows((w) => got.scores.get('safety')!.get(w)!);
    const b = new Set(rows((w) => ref.scores[0].get(w)!));
    expect(a.filter((x) => b.has(x)).length / a.length).toBeGreaterThan(0.99);
  });

  it('through a LoRA adapter (extra MatMuls) equals the merged checkpoint', async () => {
    const probes = readFileSync(testbedPath('data', 'harmful_attack_pool.jsonl'), 'utf8').trim().split('\n').slice(4, 7)
      .map((l) => JSON.parse(l) as { prompt: string; refusal: string });
    const sequences = probes.map((p) => ({ prompt: p.prompt, response: p.refusal }));
    const adapter = await LoraAdapter.open(testbedPath('lora_sst_p10'), ckpts.aligned.spec);
    const merged = await ModelCheckpoint.open(testbedPath('lora_sst_p10_merged'));
    try {
      const viaAdapter = await attributionScores({
        model: testbedPath('aligned'), adapter: testbedPath('lora_sst_p10'), sequences, cacheRoot: cache, threads: 2,
        directions: [checkpointDifference('safety', ckpts.aligned, ckpts.base), adapterDirection('finetune', adapter, ckpts.aligned.spec)],
      });
      const viaMerged = await attributionScores({
        model: testbedPath('lora_sst_p10_merged'), sequences, cacheRoot: cache, threads: 2,
        directions: [checkpointDifference('safety', ckpts.aligned, ckpts.base), checkpointDifference('finetune', merged, ckpts.aligned)],
      });
      expect(viaAdapter.reduction).toBe('mean');
      expect(Math.abs(viaAdapter.loss - viaMerged.loss) / viaMerged.loss).toBeLessThan(1e-4);
      let worst = 0;
      for (const d of ['safety', 'finetune']) {
        for (const [w, v] of viaMerged.scores.get(d)!) worst = Math.max(worst, relNorm(viaAdapter.scores.get(d)!.get(w)!, Float64Array.from(v)));
      }
      console.log(`testbed LoRA: adapter vs merged, loss ${viaAdapter.loss.toFixed(4)}, worst matrix rel err ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(1e-3);
    } finally {
      await adapter.close();
      await merged.close();
    }
  });
});
