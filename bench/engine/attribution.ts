/**
 * Cost of one attribution scoring pass (forward + hand-built backward + 2 direction sets) relative to one
 * plain forward pass (the engine's decoder graph, logits of every token), same batches, same process.
 *
 *   npx tsx bench/engine/attribution.ts [--prompts 32] [--batch 8] [--repeats 3] [--threads N]
 *
 * Model: the dev testbed's aligned model; sequences: harmful attack-pool prompts + the aligned refusal;
 * directions: aligned - base and ft_sst_p10 - aligned. Prints JSON with median seconds and the ratio.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ModelCheckpoint } from '../../src/checkpoint/index.js';
import { AttributionSession, attributionBatch, checkpointDifference, loadDirections, scoreSequences, type ScoredSequence } from '../../src/engine/attribution/index.js';
import { DEFAULT_GRAPH_OPTIONS } from '../../src/engine/model/decoder-graph.js';
import { GraphSessions } from '../../src/engine/model/graph-sessions.js';
import { lengthBuckets } from '../../src/engine/runtime/batch.js';
import { ort } from '../../src/engine/session/session.js';
import { ChatTokenizer } from '../../src/engine/tokenizer/chat-tokenizer.js';
import { TESTBED_DEV } from '../../test/support/testbed.js';

const { values } = parseArgs({
  options: {
    prompts: { type: 'string', default: '32' },
    batch: { type: 'string', default: '8' },
    repeats: { type: 'string', default: '3' },
    threads: { type: 'string' },
  },
});
const nPrompts = Number(values.prompts);
const batchSize = Number(values.batch);
const repeats = Number(values.repeats);
const threads = values.threads === undefined ? undefined : Number(values.threads);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const cacheRoot = mkdtempSync(join(tmpdir(), 'fgsn-bench-attr-'));
  const path = (p: string): string => join(TESTBED_DEV, p);
  const [base, aligned, ft] = await Promise.all([path('base'), path('aligned'), path('ft_sst_p10')].map((d) => ModelCheckpoint.open(d)));
  try {
    const tok = await ChatTokenizer.load(path('aligned'));
    const probes = readFileSync(path('data/harmful_attack_pool.jsonl'), 'utf8').trim().split('\n').slice(0, nPrompts)
      .map((l) => JSON.parse(l) as { prompt: string; refusal: string });
    const seqs: ScoredSequence[] = [];
    for (const p of probes) {
      const e = await tok.encodeChat(p.prompt, p.refusal);
      seqs.push({ ids: e.ids, promptLength: e.promptLength });
    }
    const directions = [checkpointDifference('safety', aligned, base), checkpointDifference('finetune', ft, aligned)];
    const attrOpts = { directions, batchSize, cacheRoot, threads };

    // Forward: the engine's decoder graph on the same length buckets.
    const fwd = new GraphSessions(aligned, null, { cacheRoot, threads });
    const session = await fwd.session(DEFAULT_GRAPH_OPTIONS);
    const batches = lengthBuckets(seqs.map((s) => s.ids.length), batchSize).map((idx) => attributionBatch(idx.map((i) => seqs[i]), tok.padTokenId).padded);
    const forwardOnce = async (): Promise<number> => {
      const t0 = performance.now();
      for (const p of batches) {
        const dims = [p.batch, p.length];
        await session.run({
          input_ids: new ort.Tensor('int64', p.inputIds, dims),
          attention_mask: new ort.Tensor('int64', p.attentionMask, dims),
          position_ids: new ort.Tensor('int64', p.positionIds, dims),
        });
      }
      return (performance.now() - t0) / 1000;
    };
    // The scoring pass alone: warm session, directions already loaded, same batches.
    const attrSession = await AttributionSession.open(aligned, null, { directionSets: 2, layerFrom: 0, layerTo: aligned.spec.numLayers, cacheRoot, threads });
    const dirs = await loadDirections(directions, aligned.spec, attrSession.weights);
    const attrBatches = lengthBuckets(seqs.map((s) => s.ids.length), batchSize).map((idx) => attributionBatch(idx.map((i) => seqs[i]), tok.padTokenId));
    const attributionOnce = async (): Promise<number> => {
      const t0 = performance.now();
      for (const b of attrBatches) await attrSession.run(b, dirs);
      return (performance.now() - t0) / 1000;
    };
    // End to end: session from the cached graph, direction reading, runs.
    const endToEnd = async (): Promise<number> => (await scoreSequences(aligned, null, seqs, attrOpts)).seconds;
    // End to end in one-layer segments (what a model whose directions exceed the budget runs).
    const segmented = async (): Promise<number> => (await scoreSequences(aligned, null, seqs, { ...attrOpts, maxDirectionBytes: 1 })).seconds;

    await forwardOnce();
    await attributionOnce();
    await endToEnd(); // the graph files are cached from here on
    await segmented();
    const fw: number[] = [];
    const at: number[] = [];
    const e2e: number[] = [];
    const seg: number[] = [];
    for (let i = 0; i < repeats; i++) {
      fw.push(await forwardOnce());
      at.push(await attributionOnce());
      e2e.push(await endToEnd());
      seg.push(await segmented());
    }
    await fwd.close();
    await attrSession.release();
    const tokens = seqs.reduce((n, s) => n + s.ids.length, 0);
    const result = {
      model: 'dev/aligned',
      sequences: seqs.length,
      tokens,
      batchSize,
      directionSets: directions.length,
      forwardSeconds: median(fw),
      attributionPassSeconds: median(at),
      ratio: median(at) / median(fw),
      endToEndSeconds: median(e2e),
      endToEndRatio: median(e2e) / median(fw),
      segmentedEndToEndSeconds: median(seg),
      segmentedEndToEndRatio: median(seg) / median(fw),
      note: 'ratio: warm attribution pass (forward + backward + 2 direction sets) over warm forward pass; endToEnd adds session creation from the cached graph and reading both direction sets; segmented = one-layer segments (boundary forward + 4 segment graphs)',
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await Promise.all([base, aligned, ft].map((c) => c.close()));
    rmSync(cacheRoot, { recursive: true, force: true });
  }
}

await main();
