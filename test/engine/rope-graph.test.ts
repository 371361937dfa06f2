/**
 * The in-graph RoPE tables (engine/onnx/rope-graph.ts) through a real onnxruntime session, for every scaling,
 * against checkpoint/rope.ts: calls whose positions stay within the original context and calls that go beyond
 * it (where dynamic NTK recomputes its base and longrope switches to its long factors).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { ropeParameters, type RopeScaling, type RopeSpec } from '../../src/checkpoint/rope.js';
import { GraphBuilder } from '../../src/engine/onnx/graph-builder.js';
import { scaledRopeTables } from '../../src/engine/onnx/rope-graph.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('fgsn-rope-');
afterAll(() => tmp.remove());

const D = 8;
const ORIGINAL = 16;
const SCALINGS: Record<string, RopeScaling | null> = {
  none: null,
  linear: { type: 'linear', factor: 4 },
  dynamic: { type: 'dynamic', factor: 4, originalMaxPositions: ORIGINAL },
  yarn: { type: 'yarn', factor: 4, originalMaxPositions: ORIGINAL, attentionFactor: 0.1 * Math.log(4) + 1, betaFast: 32, betaSlow: 1, truncate: true },
  longrope: { type: 'longrope', shortFactor: [1, 1.5, 2, 3], longFactor: [2, 4, 8, 16], originalMaxPositions: ORIGINAL, attentionFactor: Math.sqrt(1.5) },
  llama3: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: ORIGINAL },
};

async function tables(spec: RopeSpec, positions: number[][]): Promise<{ cos: Float32Array; sin: Float32Array }> {
  const g = new GraphBuilder('rope');
  const pos = g.input('position_ids', 'int64', ['batch', 'tokens']);
  const { cos, sin } = scaledRopeTables(g, pos, spec);
  g.output('cos', cos, 'float32', ['batch', 1, 'tokens', D]);
  g.output('sin', sin, 'float32', ['batch', 1, 'tokens', D]);
  const path = join(tmp.path, `rope-${Math.random().toString(36).slice(2)}.onnx`);
  writeFileSync(path, g.toModelBytes());
  const s = await ort.InferenceSession.create(path);
  try {
    const B = positions.length;
    const T = positions[0].length;
    const ids = new ort.Tensor('int64', BigInt64Array.from(positions.flat().map(BigInt)), [B, T]);
    const r = await s.run({ position_ids: ids });
    return { cos: r.cos.data as Float32Array, sin: r.sin.data as Float32Array };
  } finally {
    await s.release();
  }
}

describe('scaledRopeTables', () => {
  for (const [name, scaling] of Object.entries(SCALINGS)) {
    it(`${name}: cos/sin match rope.ts below and beyond the original context`, async () => {
      const spec: RopeSpec = { headDim: D, ropeTheta: 10000, ropeScaling: scaling };
      // Two calls: a prefill within the original context, and a batch whose largest position is past it.
      for (const positions of [[[0, 1, 5, 15]], [[3, 4, 30, 40], [1, 1, 2, 3]]]) {
        const seqLen = Math.max(...positions.flat()) + 1;
        const { invFreq, attentionFactor } = ropeParameters(spec, seqLen);
        const got = await tables(spec, positions);
        positions.flat().forEach((p, n) => {
          for (let i = 0; i < D; i++) {
            const a = p * invFreq[i % (D / 2)];
            expect(got.cos[n * D + i]).toBeCloseTo(Math.cos(a) * attentionFactor, 5);
            expect(got.sin[n * D + i]).toBeCloseTo(Math.sin(a) * attentionFactor, 5);
          }
        });
      }
    });
  }

  it('dynamic and longrope really change beyond the original context (the test above can fail)', () => {
    for (const name of ['dynamic', 'longrope']) {
      const spec: RopeSpec = { headDim: D, ropeTheta: 10000, ropeScaling: SCALINGS[name] };
      expect(ropeParameters(spec, ORIGINAL + 25).invFreq[1]).not.toBeCloseTo(ropeParameters(spec, ORIGINAL).invFreq[1], 4);
    }
  });
});
