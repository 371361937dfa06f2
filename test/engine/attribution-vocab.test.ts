/**
 * Attribution memory that does not grow with the vocabulary (issue 11), checked on the graphs' structure
 * (no timing, no RSS): no attribution graph hands a [*, vocab] tensor back to the caller, the loss head never
 * forms the log-softmax or one-hot [rows, vocab] copies, and the chunked path runs the head on a bounded
 * number of rows whatever the batch. That the chunked path gives the reference scores is checked in
 * attribution-graph.test.ts and attribution-testbed.test.ts.
 */
import onnxProto from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { expectedTensors } from '../../src/checkpoint/model-config.js';
import type { ModelSpec } from '../../src/checkpoint/types.js';
import { buildAttributionGraph, type AttributionGraphOptions } from '../../src/engine/attribution/graph.js';
import { headRows } from '../../src/engine/attribution/index.js';
import type { WeightRef } from '../../src/engine/onnx/blocks.js';
import { tinySpec } from './attribution/tiny-model.js';

const { onnx } = onnxProto;

// A vocabulary no other dimension of the model shares, so a vocab-sized dimension is unambiguous.
const VOCAB = 997;

function resolver(spec: ModelSpec): (name: string) => WeightRef | undefined {
  const shapes = new Map(expectedTensors(spec).map((t) => [t.name, t.shape]));
  return (name) => {
    const shape = shapes.get(name);
    if (shape === undefined) return undefined;
    return { dtype: 'BF16', shape, location: 'weights.bin', offset: 0, length: shape.reduce((a, b) => a * b, 1) * 2 };
  };
}

function decoded(spec: ModelSpec, opts: AttributionGraphOptions): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(buildAttributionGraph(spec, resolver(spec), opts).toModelBytes());
}

function outputDims(m: onnxProto.onnx.ModelProto): { name: string; dims: (number | string)[] }[] {
  return (m.graph?.output ?? []).map((o) => ({
    name: o.name ?? '',
    dims: (o.type?.tensorType?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue))),
  }));
}

const ops = (m: onnxProto.onnx.ModelProto): string[] => (m.graph?.node ?? []).map((n) => n.opType ?? '');

describe.each(['llama', 'qwen2'] as const)(`attribution graphs of a %s model with a ${VOCAB}-token vocabulary`, (family) => {
  const spec: ModelSpec = { ...tinySpec(family), vocabSize: VOCAB, numLayers: 3 };
  const L = spec.numLayers;
  const variants: [string, AttributionGraphOptions][] = [
    ['full graph', { directionSets: 2 }],
    ['top segment with its loss head', { directionSets: 1, layerFrom: 1, layerTo: L, mode: 'segment' }],
    ['top segment without loss head', { directionSets: 1, layerFrom: 1, layerTo: L, mode: 'segment', lossHead: false }],
    ['forward-only chunk', { directionSets: 1, layerFrom: 1, layerTo: L, mode: 'segment', boundaries: [L] }],
    ['forward-only boundaries', { directionSets: 1, boundaries: [1, 2] }],
    ['loss head', { directionSets: 1, layerFrom: L, layerTo: L, mode: 'head' }],
  ];

  it.each(variants)('%s: no output has a vocabulary-sized dimension', (_, opts) => {
    const outs = outputDims(decoded(spec, opts));
    expect(outs.length).toBeGreaterThan(0);
    for (const o of outs) expect(o.dims, o.name).not.toContain(VOCAB);
  });

  it('the loss head outputs only the loss and the gradient at its input, and keeps no log-softmax or one-hot', () => {
    const head = decoded(spec, { directionSets: 1, layerFrom: L, layerTo: L, mode: 'head' });
    expect(outputDims(head).sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      { name: 'grad_in', dims: ['rows', spec.hiddenSize] },
      { name: 'loss_sum', dims: [] },
    ]);
    // The head's inputs: the top residual, the targets and the weights of the rows it is given, nothing per batch.
    expect((head.graph?.input ?? []).map((i) => i.name).sort()).toEqual(['hidden_in', 'loss_weights', 'targets']);
    for (const m of [head, decoded(spec, { directionSets: 1 })]) {
      expect(ops(m)).not.toContain('LogSoftmax');
      expect(ops(m)).not.toContain('OneHot');
      // Only the counted rows reach lm_head: they are gathered (NonZero of the loss weights) before it.
      expect(ops(m)).toContain('NonZero');
    }
  });

  it('a chunk without its loss head takes the gradient at the top like any segment', () => {
    const seg = decoded(spec, { directionSets: 1, layerFrom: 1, layerTo: L, mode: 'segment', lossHead: false });
    const inputs = (seg.graph?.input ?? []).map((i) => i.name);
    expect(inputs).toContain('grad_out');
    expect(inputs).not.toContain('targets');
    expect(outputDims(seg).map((o) => o.name)).not.toContain('loss_sum');
    // No lm_head weight in the graph: the chunk's session holds its own layers only.
    const inits = (seg.graph?.initializer ?? []).map((t) => t.name ?? '');
    expect(inits.some((n) => n.startsWith('lm_head') || (spec.tieWordEmbeddings && n.startsWith('model.embed_tokens')))).toBe(false);
  });
});

describe('headRows', () => {
  it('bounds the loss head run to about 16 MiB per [rows, vocab] float32 tensor, whatever the vocabulary', () => {
    for (const v of [20, 32_000, 128_256, 256_000]) {
      const rows = headRows(v);
      expect(rows).toBeGreaterThanOrEqual(16);
      if (v >= 32_000) expect(rows * v * 4).toBeLessThanOrEqual(16 << 20);
    }
    expect(headRows(32_000)).toBe(131);
    expect(headRows(128_256)).toBe(32);
  });
});
