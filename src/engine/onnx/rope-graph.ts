/**
 * RoPE cos/sin tables with the config's scaling (checkpoint/rope.ts), as graph nodes. Types whose
 * frequencies are fixed (none, linear, yarn, llama3) become one constant; the two that depend on the
 * call's sequence length do it in-graph from max(position_ids) + 1, as transformers' dynamic_rope_update
 * does at every forward: dynamic NTK recomputes its base, longrope switches short -> long factors.
 */
import { ropeParameters, type RopeSpec } from '../../checkpoint/index.js';
import { GraphBuilder, elemCode } from './graph-builder.js';

/** max(position_ids) + 1 as a float32 scalar. */
function seqLenOf(g: GraphBuilder, positionIds: string): string {
  const max = g.op('ReduceMax', [positionIds], { keepdims: 0 });
  return g.op('Cast', [g.op('Add', [max, g.scalarI64(1)])], { to: elemCode('float32') });
}

/** The [D/2] inverse frequencies of this call. */
export function ropeInvFreqValue(g: GraphBuilder, positionIds: string, spec: RopeSpec): string {
  const D = spec.headDim;
  const r = spec.ropeScaling ?? null;
  if (r?.type === 'dynamic') {
    // theta' = theta * (factor * s / L - (factor - 1))^(D / (D - 2)), s = max(seqLen, L); inv_i = theta'^(-2i/D).
    const s = g.op('Max', [seqLenOf(g, positionIds), g.scalarF32(r.originalMaxPositions)]);
    const ratio = g.op('Sub', [g.op('Mul', [s, g.scalarF32(r.factor / r.originalMaxPositions)]), g.scalarF32(r.factor - 1)]);
    // ln theta' = ln theta + D/(D-2) ln(ratio): checkpoint/rope.ts's dynamicTheta, in-graph; at s = L it is theta.
    const lnTheta = g.op('Add', [g.scalarF32(Math.log(spec.ropeTheta)), g.op('Mul', [g.op('Log', [ratio]), g.scalarF32(D / (D - 2))])]);
    const exps = new Float32Array(D / 2).map((_, i) => -(2 * i) / D);
    return g.op('Exp', [g.op('Mul', [g.constF32(exps, [D / 2], 'rope_exp'), lnTheta])]);
  }
  if (r?.type === 'longrope') {
    const short = ropeParameters(spec, r.originalMaxPositions).invFreq;
    const long = ropeParameters(spec, r.originalMaxPositions + 1).invFreq;
    const isLong = g.op('Greater', [seqLenOf(g, positionIds), g.scalarF32(r.originalMaxPositions)]);
    return g.op('Where', [isLong, g.constF32(long, [D / 2], 'inv_freq_long'), g.constF32(short, [D / 2], 'inv_freq_short')]);
  }
  return g.constF32(ropeParameters(spec, 1).invFreq, [D / 2], 'inv_freq');
}

/** cos/sin tables [B, 1, T, D] for position_ids [B, T] (int64): emb = cat(freqs, freqs), times the attention factor. */
export function scaledRopeTables(g: GraphBuilder, positionIds: string, spec: RopeSpec): { cos: string; sin: string } {
  const inv = ropeInvFreqValue(g, positionIds, spec);
  const pos = g.op('Unsqueeze', [g.op('Cast', [positionIds], { to: elemCode('float32') }), g.constI64([2])]);
  const freqs = g.op('Mul', [pos, inv]);
  const emb = g.op('Concat', [freqs, freqs], { axis: -1 });
  const axis1 = g.constI64([1]);
  // Every type with an attention factor keeps it fixed (it does not follow the sequence length).
  const factor = ropeParameters(spec, 1).attentionFactor;
  const scaled = (x: string): string => (factor === 1 ? x : g.op('Mul', [x, g.scalarF32(factor)]));
  return {
    cos: g.op('Unsqueeze', [scaled(g.op('Cos', [emb])), axis1]),
    sin: g.op('Unsqueeze', [scaled(g.op('Sin', [emb])), axis1]),
  };
}
