/** Float64 rope tables for the float64 reference forwards (tests only; the engine builds its tables in the graph). */
import { ropeParameters64, type RopeSpec } from '../../src/checkpoint/rope.js';

/** cos/sin [T, dim] (emb = cat(freqs, freqs), times the attention factor) for positions 0..T-1, float64. */
export function ropeCosSin(spec: RopeSpec, T: number): { cos: Float64Array; sin: Float64Array } {
  const D = spec.headDim;
  const { invFreq, attentionFactor } = ropeParameters64(spec, T);
  const cos = new Float64Array(T * D);
  const sin = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < D / 2; j++) {
      const a = t * invFreq[j];
      cos[t * D + j] = cos[t * D + j + D / 2] = Math.cos(a) * attentionFactor;
      sin[t * D + j] = sin[t * D + j + D / 2] = Math.sin(a) * attentionFactor;
    }
  }
  return { cos, sin };
}
