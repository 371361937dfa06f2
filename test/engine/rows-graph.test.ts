/**
 * Generation and teacher-forced scoring share one graph (the KV-cache graph with logits of selected rows,
 * DecoderGraphOptions.logitRows): an engine doing both holds ONE session, one float32 copy of the weights, and
 * never rebuilds it when it switches between them. The log-probs still equal -log softmax of the full logits
 * of the plain (non-KV) capture graph, position by position, with padding in the batch, a one-token sequence
 * (nothing to score) and chat-formatted responses.
 */
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { expectedTensors } from '../../src/checkpoint/model-config.js';
import { loadEngine, type Engine } from '../../src/engine/index.js';
import { buildDecoderGraph } from '../../src/engine/model/decoder-graph.js';
import { tinySpec } from './attribution/tiny-model.js';
import { tokenNll } from '../../src/pipeline/probe-eval.js';
import { writeSyntheticModel, type SyntheticModelOptions } from '../support/synthetic/synthetic-model.js';
import { tempDir } from './helpers.js';

const SEQS = [
  [2, 4, 11, 12, 13, 5, 40, 41, 42, 6],
  [2, 4, 30, 5, 33, 34, 6],
  [2, 4, 20, 21, 22, 23, 24, 25, 26, 27, 5, 50],
  [7],
];
const PROMPTS = [[2, 4, 11, 12, 13, 5], [2, 4, 20, 21, 22, 23, 24, 25, 26, 27, 5], [2, 4, 30, 5]];

/** -log softmax of the capture graph's logits at every next token, computed on the host in float64. */
async function hostLogProbs(e: Engine, inputs: (string | readonly number[])[], responses?: string[]): Promise<number[][]> {
  const cap = await e.capture(inputs, { logits: 'all' }, { batchSize: 2, ...(responses ? { responses } : {}) });
  return cap.sequences.map((s) => {
    const V = e.spec.vocabSize;
    return Array.from({ length: s.ids.length - 1 }, (_, t) => -tokenNll(s.logits!.subarray(t * V, (t + 1) * V), s.ids[t + 1]));
  });
}

const MODELS: Record<string, SyntheticModelOptions> = {
  'qwen2, tied, bf16': {
    family: 'qwen2', vocabSize: 60, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
    tieWordEmbeddings: true, seed: 7, std: 0.08, dtype: 'BF16',
  },
  'llama, untied lm_head, f32': {
    family: 'llama', vocabSize: 80, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: false, seed: 3, dtype: 'F32',
  },
  // Untied: the rows graph reads the embedding rows from inputs_embeds (upcast in JS), the capture graph gathers
  // and casts them in the graph; bf16 checks that both upcasts agree.
  'llama, untied lm_head, bf16': {
    family: 'llama', vocabSize: 80, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: false, seed: 5, dtype: 'BF16',
  },
};

for (const [label, model] of Object.entries(MODELS)) {
  describe(`one graph for generation and scoring (${label})`, () => {
    const tmp = tempDir('fgsn-rowsgraph-');
    afterAll(() => tmp.remove());

    it('generate and logProbs on a rowPatch engine with maxSessions 1 share one session, never rebuilt', async () => {
      const dir = join(tmp.path, 'model');
      await writeSyntheticModel(dir, model);
      const cacheDir = join(tmp.path, 'cache');
      const e = await loadEngine(dir, { cacheDir, rowPatch: true, maxSessions: 1 });
      try {
        const gen1 = await e.generate(PROMPTS, { maxNewTokens: 8, batchSize: 3, stopTokenIds: [] });
        const lp1 = await e.logProbs(SEQS, { batchSize: 3 });
        // A step: a row patch, then both again (the search's pattern).
        e.setRowPatch(new Map([['model.layers.0.mlp.down_proj.weight', { rows: Uint32Array.of(1, 3), values: new Float32Array(2 * model.intermediateSize).fill(0.5) }]]));
        const gen2 = await e.generate(PROMPTS, { maxNewTokens: 8, batchSize: 3, stopTokenIds: [] });
        const lp2 = await e.logProbs(SEQS, { batchSize: 3 });
        expect(e.liveSessions).toBe(1);
        expect(e.sessionsCreated).toBe(1);
        expect(gen1.every((g) => g.ids.length === 8)).toBe(true);
        expect(gen2.map((g) => g.ids.length)).toEqual([8, 8, 8]);
        expect(lp1.map((s) => s.logprobs.length)).toEqual(SEQS.map((s) => s.length - 1));
        // The patch reached the shared graph (the counts above cannot pass on a graph that ignores it).
        expect(Math.max(...lp1.flatMap((s, i) => Array.from(s.logprobs, (v, t) => Math.abs(v - lp2[i].logprobs[t]))))).toBeGreaterThan(1e-3);
        // A capture is another graph: with maxSessions 1 it replaces the shared one (counted as a new session).
        await e.capture([PROMPTS[0]], { logits: 'last' });
        expect(e.sessionsCreated).toBe(2);
        expect(e.liveSessions).toBe(1);
      } finally {
        await e.close();
      }
    });

    it('logProbs equals -log softmax of the capture graph logits (1e-5), padding and responses included', async () => {
      const e = await loadEngine(join(tmp.path, 'model'), { cacheDir: join(tmp.path, 'cache') });
      try {
        for (const [inputs, responses] of [[SEQS, undefined], [['hello there', 'a b c d e'], ['x y', 'z']]] as const) {
          const got = await e.logProbs(inputs as (string | number[])[], { batchSize: 3, ...(responses ? { responses: [...responses] } : {}) });
          const want = await hostLogProbs(e, inputs as (string | number[])[], responses ? [...responses] : undefined);
          got.forEach((s, i) => {
            expect(s.logprobs.length).toBe(want[i].length);
            s.logprobs.forEach((v, t) => expect(Math.abs(v - want[i][t]), `seq ${i} position ${t}: ${v} vs ${want[i][t]}`).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want[i][t]))));
          });
        }
        expect(e.sessionsCreated).toBe(2);
      } finally {
        await e.close();
      }
    });

    it('rowsCapture: generation, last hidden states and square sums on one session, equal to the capture graph (1e-5)', async () => {
      const dir = join(tmp.path, 'model');
      const plain = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache'), maxSessions: 1 });
      const shared = await loadEngine(dir, { cacheDir: join(tmp.path, 'cache-rows'), maxSessions: 1, rowsCapture: { hidden: 'last', inputSquareSums: true } });
      const close = (got: Float32Array, want: Float32Array, what: string): void => {
        expect(got.length, what).toBe(want.length);
        const scale = Math.max(1, ...Array.from(want, Math.abs));
        expect(Math.max(...Array.from(got, (v, k) => Math.abs(v - want[k]))), what).toBeLessThanOrEqual(1e-5 * scale);
      };
      try {
        const what = { hidden: 'last', inputSquareSums: true } as const;
        // Two buckets (batch 2 over three prompts of different lengths): each prompt's hidden states from its own row.
        const gens = await shared.generate(PROMPTS, { maxNewTokens: 4, batchSize: 2, stopTokenIds: [], hidden: 'last' });
        const got = await shared.capture(SEQS, what, { batchSize: 2 });
        const gotText = await shared.capture(['hello there', 'x y'], { inputSquareSums: true }, { responses: ['a b c d e', 'z'], squareSumTokens: 'response' });
        expect(shared.sessionsCreated).toBe(1);
        const wantPrompts = await plain.capture(PROMPTS, { hidden: 'last' }, { batchSize: 3 });
        const want = await plain.capture(SEQS, what, { batchSize: 2 });
        const wantText = await plain.capture(['hello there', 'x y'], { inputSquareSums: true }, { responses: ['a b c d e', 'z'], squareSumTokens: 'response' });
        const L = shared.spec.numLayers;
        gens.forEach((g, i) => {
          expect(g.promptIds).toEqual(PROMPTS[i]);
          for (let l = 0; l < L; l++) close(g.promptHidden![l], wantPrompts.sequences[i].hidden![l], `prompt ${i} layer ${l}`);
        });
        want.sequences.forEach((s, i) => {
          for (let l = 0; l < L; l++) close(got.sequences[i].hidden![l], s.hidden![l], `sequence ${i} layer ${l}`);
        });
        for (const [w, g] of [[want, got], [wantText, gotText]] as const) {
          expect(g.squareSumTokenCount).toBe(w.squareSumTokenCount);
          expect([...g.inputSquareSums!.keys()]).toEqual([...w.inputSquareSums!.keys()]);
          for (const [name, v] of w.inputSquareSums!) close(g.inputSquareSums!.get(name)!, v, name);
        }
        // Only what was asked for leaves the shared graph.
        expect(gotText.sequences[0].hidden).toBeUndefined();
        // A capture the rows graph does not compute gets its own graph.
        await shared.capture([PROMPTS[0]], { logits: 'last' });
        expect(shared.sessionsCreated).toBe(2);
        await expect(plain.generate(PROMPTS, { maxNewTokens: 2, hidden: 'last' })).rejects.toThrow(/rowsCapture/);
      } finally {
        await plain.close();
        await shared.close();
      }
    });
  });
}

describe('the rows graph and the embedding table', () => {
  const rowsGraph = (tie: boolean): onnxProto.onnx.ModelProto => {
    const spec = { ...tinySpec('llama'), tieWordEmbeddings: tie };
    const shapes = new Map(expectedTensors(spec).map((t) => [t.name, t.shape]));
    const resolve = (name: string) => {
      const shape = shapes.get(name);
      return shape === undefined ? undefined : { dtype: 'BF16' as const, shape, location: 'w.bin', offset: 0, length: shape.reduce((a, b) => a * b, 1) * 2 };
    };
    const g = buildDecoderGraph(spec, resolve, {
      kvCache: true, logits: 'none', hidden: 'none', mlpAct: 'none', embed: 'none', finalNorm: 'none', inputSquareSums: false, logitRows: true, embedsInput: true,
    });
    return onnxProto.onnx.ModelProto.decode(g.toModelBytes());
  };
  const inputs = (m: onnxProto.onnx.ModelProto): string[] => (m.graph?.input ?? []).map((i) => i.name ?? '');
  const tableValues = (m: onnxProto.onnx.ModelProto): string[] => (m.graph?.initializer ?? []).map((t) => t.name ?? '').filter((n) => n.startsWith('model.embed_tokens.weight'));

  it('an untied model takes its embedding rows as inputs_embeds: no table in the graph (it would be resident for nothing)', () => {
    const m = rowsGraph(false);
    expect(inputs(m)).toContain('inputs_embeds');
    expect(inputs(m)).toContain('input_ids');
    expect(tableValues(m)).toEqual([]);
  });

  it('a tied model gathers from its table, which is also its lm_head', () => {
    const m = rowsGraph(true);
    expect(inputs(m)).not.toContain('inputs_embeds');
    expect(tableValues(m).length).toBeGreaterThan(0);
  });
});
