/**
 * RoPE scalings as transformers computes them (modeling_rope_utils.py, 4.5x/5.x semantics): the config's
 * `rope_scaling` parsed once into a RopeScaling, and pure functions giving the inverse frequencies and the
 * attention factor (the post-scale of cos/sin) for a sequence length. The ONNX graph (engine/onnx/rope-graph.ts)
 * and the float64 references both take their numbers from here or recompute the same formulas in-graph.
 *
 * The formulas, for dim = head_dim and inv_i = theta^(-2i/dim), i < dim/2:
 * - linear:   inv_i / factor.
 * - dynamic:  theta' = theta * (factor * s / L - (factor - 1))^(dim / (dim - 2)) with s = max(seqLen, L),
 *             L = max_position_embeddings; below L it is plain RoPE. seqLen is max(position_ids) + 1 of the call
 *             (transformers' dynamic_frequency_update), so keys cached at earlier steps keep the frequencies they
 *             were rotated with, exactly as transformers' KV cache keeps them.
 * - yarn:     per frequency a ramp between interpolation (inv_i / factor) and extrapolation (inv_i) over the
 *             dimensions whose rotation count within the original context lies in [beta_slow, beta_fast];
 *             attention factor 0.1 ln(factor) + 1 (or mscale / mscale_all_dim's ratio, or the config's).
 * - longrope: inv_i / ext_i with ext = long_factor when seqLen > the original context, else short_factor;
 *             attention factor sqrt(1 + ln(factor) / ln(original)) with factor = max_pos / original.
 * - llama3:   wavelengths 2 pi / inv_i beyond original / low_freq_factor are divided by factor, those below
 *             original / high_freq_factor kept, those between interpolated smoothly.
 */
import { FgsnError } from '../errors.js';

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'dynamic'; factor: number; originalMaxPositions: number }
  | {
    type: 'yarn'; factor: number; originalMaxPositions: number; attentionFactor: number; betaFast: number; betaSlow: number; truncate: boolean;
  }
  | { type: 'longrope'; shortFactor: number[]; longFactor: number[]; originalMaxPositions: number; attentionFactor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

export type RopeType = RopeScaling['type'];
export const ROPE_TYPES: readonly RopeType[] = ['linear', 'dynamic', 'yarn', 'longrope', 'llama3'];

/** What the rope computation needs of a model. */
export interface RopeSpec {
  headDim: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling | null;
}

export interface RopeParameters {
  /** head_dim / 2 inverse frequencies, rounded to float32 as torch holds them. */
  invFreq: Float32Array;
  /** Multiplies cos and sin (1 for most types). */
  attentionFactor: number;
}

/** theta^(-2i/dim), the exponent rounded to float32 as torch's arange(0, dim, 2).float() / dim is. */
function baseInvFreq(dim: number, theta: number): Float64Array {
  const out = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = 1 / Math.pow(theta, Math.fround((2 * i) / dim));
  return out;
}

/** The new base of dynamic NTK scaling at sequence length seqLen (theta itself up to the original context). */
export function dynamicTheta(theta: number, dim: number, factor: number, originalMaxPositions: number, seqLen: number): number {
  const s = Math.max(seqLen, originalMaxPositions);
  return theta * Math.pow((factor * s) / originalMaxPositions - (factor - 1), dim / (dim - 2));
}

/** yarn's [low, high] dimension range of the ramp (find_correction_range). */
export function yarnCorrectionRange(dim: number, theta: number, originalMaxPositions: number, betaFast: number, betaSlow: number, truncate: boolean): [number, number] {
  // The dimension at which a frequency rotates `rotations` times within the original context.
  const at = (rotations: number): number => (dim * Math.log(originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = at(betaFast);
  let high = at(betaSlow);
  if (truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  return [Math.max(low, 0), Math.min(high, dim - 1)];
}

/** Inverse frequencies (rounded to float32, as the graph holds them) and attention factor for a call whose largest position is seqLen - 1. */
export function ropeParameters(spec: RopeSpec, seqLen: number): RopeParameters {
  const p = ropeParameters64(spec, seqLen);
  return { invFreq: Float32Array.from(p.invFreq), attentionFactor: p.attentionFactor };
}

/** ropeParameters in float64 (for the float64 references). */
export function ropeParameters64(spec: RopeSpec, seqLen: number): { invFreq: Float64Array; attentionFactor: number } {
  const dim = spec.headDim;
  const theta = spec.ropeTheta;
  const r = spec.ropeScaling ?? null;
  let inv: Float64Array;
  let attentionFactor = 1;
  if (r === null) {
    inv = baseInvFreq(dim, theta);
  } else if (r.type === 'linear') {
    inv = baseInvFreq(dim, theta).map((x) => x / r.factor);
  } else if (r.type === 'dynamic') {
    inv = baseInvFreq(dim, dynamicTheta(theta, dim, r.factor, r.originalMaxPositions, seqLen));
  } else if (r.type === 'yarn') {
    const base = baseInvFreq(dim, theta);
    const [low, high0] = yarnCorrectionRange(dim, theta, r.originalMaxPositions, r.betaFast, r.betaSlow, r.truncate);
    const high = low === high0 ? high0 + 0.001 : high0;
    inv = base.map((x, i) => {
      const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
      // ramp 0: high frequency, kept (extrapolated); ramp 1: low frequency, interpolated.
      const extrapolation = 1 - ramp;
      return (x / r.factor) * (1 - extrapolation) + x * extrapolation;
    });
    attentionFactor = r.attentionFactor;
  } else if (r.type === 'longrope') {
    const ext = seqLen > r.originalMaxPositions ? r.longFactor : r.shortFactor;
    inv = baseInvFreq(dim, theta).map((x, i) => x / ext[i]);
    attentionFactor = r.attentionFactor;
  } else {
    const lowWavelen = r.originalMaxPositions / r.lowFreqFactor;
    const highWavelen = r.originalMaxPositions / r.highFreqFactor;
    inv = baseInvFreq(dim, theta).map((x) => {
      const wavelen = (2 * Math.PI) / x;
      if (wavelen < highWavelen) return x;
      if (wavelen > lowWavelen) return x / r.factor;
      const smooth = (r.originalMaxPositions / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
      return (1 - smooth) * (x / r.factor) + smooth * x;
    });
  }
  return { invFreq: inv, attentionFactor };
}

const finitePos = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;

export interface RopeConfigContext {
  headDim: number;
  maxPositionEmbeddings: number;
  /** Top-level original_max_position_embeddings (Phi-3 writes it there rather than in rope_scaling). */
  topLevelOriginalMax?: number | null;
}

/**
 * config.json's rope_scaling -> RopeScaling (null for none / "default"). Bad or missing fields are
 * CHECKPOINT_CONFIG_INVALID; a rope type we do not implement is CHECKPOINT_ARCH_UNSUPPORTED naming it.
 */
export function parseRopeScaling(raw: Record<string, unknown> | null | undefined, ctx: RopeConfigContext, source: string): RopeScaling | null {
  if (raw === null || raw === undefined) return null;
  const invalid = (problem: string): never => {
    throw new FgsnError('CHECKPOINT_CONFIG_INVALID', `${source}: rope_scaling ${problem}`, { details: { file: source, feature: 'rope_scaling' } });
  };
  // "type" is the field's older name (transformers reads both).
  const type = raw.rope_type ?? raw.type ?? 'default';
  if (typeof type !== 'string') invalid('rope_type is not a string');
  if (type === 'default') return null;
  if (!(ROPE_TYPES as readonly string[]).includes(type as string)) {
    throw new FgsnError('CHECKPOINT_ARCH_UNSUPPORTED', `${source}: rope_scaling type "${String(type)}" is not supported (supported: ${ROPE_TYPES.join(', ')})`, {
      details: { file: source, feature: `rope_scaling.${String(type)}` },
    });
  }
  const num = (key: string, fallback?: number): number => {
    const v = raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      return invalid(`${type as string}: "${key}" is required`);
    }
    if (!finitePos(v)) return invalid(`${type as string}: "${key}" must be a positive finite number, got ${JSON.stringify(v)}`);
    return v;
  };
  const intNum = (key: string, fallback?: number): number => {
    const v = num(key, fallback);
    if (!Number.isInteger(v)) invalid(`${type as string}: "${key}" must be an integer`);
    return v;
  };
  const half = ctx.headDim / 2;
  switch (type) {
    case 'linear':
      return { type: 'linear', factor: num('factor') };
    case 'dynamic':
      // transformers' dynamic NTK scales relative to max_position_embeddings.
      return { type: 'dynamic', factor: num('factor'), originalMaxPositions: ctx.maxPositionEmbeddings };
    case 'yarn': {
      const originalMaxPositions = intNum('original_max_position_embeddings', ctx.maxPositionEmbeddings);
      const factor = raw.factor === undefined || raw.factor === null ? ctx.maxPositionEmbeddings / originalMaxPositions : num('factor');
      const mscale = (scale: number, m: number): number => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
      let attentionFactor: number;
      if (raw.attention_factor !== undefined && raw.attention_factor !== null) attentionFactor = num('attention_factor');
      else if (finitePos(raw.mscale) && finitePos(raw.mscale_all_dim)) attentionFactor = mscale(factor, raw.mscale) / mscale(factor, raw.mscale_all_dim);
      else attentionFactor = mscale(factor, 1);
      const truncate = raw.truncate ?? true;
      if (typeof truncate !== 'boolean') invalid('yarn: "truncate" must be a boolean');
      // `or 32` / `or 1` in transformers: a falsy value means the default.
      const betaFast = raw.beta_fast ? num('beta_fast') : 32;
      const betaSlow = raw.beta_slow ? num('beta_slow') : 1;
      return { type: 'yarn', factor, originalMaxPositions, attentionFactor, betaFast, betaSlow, truncate: truncate as boolean };
    }
    case 'longrope': {
      const list = (key: string): number[] => {
        const v = raw[key];
        if (!Array.isArray(v) || v.length !== half || !v.every(finitePos)) invalid(`longrope: "${key}" must be ${half} positive numbers (head_dim / 2)`);
        return [...(v as number[])];
      };
      const shortFactor = list('short_factor');
      const longFactor = list('long_factor');
      // Phi-3 keeps the pretraining context at the top level; the factor is then the context ratio.
      const top = ctx.topLevelOriginalMax ?? null;
      let originalMaxPositions: number;
      let factor: number;
      if (top !== null) {
        originalMaxPositions = top;
        factor = ctx.maxPositionEmbeddings / top;
      } else {
        originalMaxPositions = intNum('original_max_position_embeddings', ctx.maxPositionEmbeddings);
        factor = num('factor', 1);
      }
      const attentionFactor = raw.attention_factor !== undefined && raw.attention_factor !== null
        ? num('attention_factor')
        : factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(originalMaxPositions));
      return { type: 'longrope', shortFactor, longFactor, originalMaxPositions, attentionFactor };
    }
    default: {
      const r = {
        type: 'llama3' as const, factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'),
        originalMaxPositions: intNum('original_max_position_embeddings'),
      };
      if (r.highFreqFactor <= r.lowFreqFactor) invalid('llama3: high_freq_factor must be greater than low_freq_factor');
      return r;
    }
  }
}

/** RopeScaling -> the rope_scaling object transformers reads (for the config.json we generate). */
export function ropeScalingJson(r: RopeScaling | null | undefined): Record<string, unknown> | null {
  if (!r) return null;
  switch (r.type) {
    case 'linear':
      return { rope_type: 'linear', factor: r.factor };
    case 'dynamic':
      return { rope_type: 'dynamic', factor: r.factor };
    case 'yarn':
      return {
        rope_type: 'yarn', factor: r.factor, original_max_position_embeddings: r.originalMaxPositions, attention_factor: r.attentionFactor,
        beta_fast: r.betaFast, beta_slow: r.betaSlow, ...(r.truncate ? {} : { truncate: false }),
      };
    case 'longrope':
      return {
        rope_type: 'longrope', short_factor: r.shortFactor, long_factor: r.longFactor, original_max_position_embeddings: r.originalMaxPositions,
        attention_factor: r.attentionFactor,
      };
    case 'llama3':
      return {
        rope_type: 'llama3', factor: r.factor, low_freq_factor: r.lowFreqFactor, high_freq_factor: r.highFreqFactor,
        original_max_position_embeddings: r.originalMaxPositions,
      };
  }
}
