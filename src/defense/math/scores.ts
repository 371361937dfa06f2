/**
 * Row (neuron) scores of method.md step 2. All take one linear weight [dOut, dIn] (row-major fp32) and
 * per-input-feature activation statistics, and return one score per output row.
 */
import type { Mat } from './matrix.js';

/** sum_j |W_ij| * ||X_j||: Wanda importance summed over a row. */
export function wandaRowScores(w: Mat, inputNorms: Float32Array): Float32Array {
  return weightedAbsRowSums(w, inputNorms, 'wandaRowScores');
}

/** Divides by the mean row score (matrices then compare) and multiplies by the layer weight w(l). */
export function normaliseRowScores(scores: Float32Array, layerWeight = 1): Float32Array {
  let mean = 0;
  for (let i = 0; i < scores.length; i++) mean += scores[i];
  mean /= scores.length;
  const out = new Float32Array(scores.length);
  if (!(mean > 0)) return out;
  for (let i = 0; i < scores.length; i++) out[i] = (scores[i] / mean) * layerWeight;
  return out;
}

/**
 * Contrastive: weights feature j by how much more energy it carries on harmful than on benign tokens,
 * max(0, rms_H(j) - rms_B(j)), where rms = sqrt(sum of squares / tokens). Features both sets use equally score 0,
 * which is exactly what the plain Wanda score fails to discount.
 */
export function contrastiveRowScores(
  w: Mat,
  harmfulSquareSums: Float32Array,
  harmfulTokens: number,
  benignSquareSums: Float32Array,
  benignTokens: number,
): Float32Array {
  if (harmfulTokens <= 0 || benignTokens <= 0) throw new RangeError('contrastiveRowScores: token counts must be positive');
  const weightsJ = new Float32Array(w.cols);
  for (let j = 0; j < w.cols; j++) {
    weightsJ[j] = Math.max(0, Math.sqrt(harmfulSquareSums[j] / harmfulTokens) - Math.sqrt(benignSquareSums[j] / benignTokens));
  }
  return weightedAbsRowSums(w, weightsJ, 'contrastiveRowScores');
}

/**
 * Forward-only proxy of "the change of V_i . x on harmful vs benign probes": the mean square of the safety
 * direction's output, E[(V_i . x)^2], on harmful minus benign tokens, with the input's second moments taken
 * diagonal (cross-feature terms dropped; the atlas keeps per-feature square sums only):
 * sum_j V_ij^2 (sumsq_H(j) / T_H - sumsq_B(j) / T_B). Needs no backward pass and no fine-tuned model.
 */
export function safetyOutputRowScores(
  v: Mat,
  harmfulSquareSums: Float32Array,
  harmfulTokens: number,
  benignSquareSums: Float32Array,
  benignTokens: number,
): Float32Array {
  if (harmfulTokens <= 0 || benignTokens <= 0) throw new RangeError('safetyOutputRowScores: token counts must be positive');
  if (harmfulSquareSums.length !== v.cols || benignSquareSums.length !== v.cols) {
    throw new RangeError(`safetyOutputRowScores: ${harmfulSquareSums.length} / ${benignSquareSums.length} feature sums for ${v.cols} columns`);
  }
  const weightsJ = new Float64Array(v.cols);
  for (let j = 0; j < v.cols; j++) weightsJ[j] = harmfulSquareSums[j] / harmfulTokens - benignSquareSums[j] / benignTokens;
  const out = new Float32Array(v.rows);
  for (let i = 0; i < v.rows; i++) {
    let acc = 0;
    const o = i * v.cols;
    for (let j = 0; j < v.cols; j++) acc += v.data[o + j] * v.data[o + j] * weightsJ[j];
    out[i] = acc;
  }
  return out;
}

/** Delta-aware: sum_j |D_ij| * ||X_H,j||: how much the fine-tune changed the row where harmful inputs live. */
export function deltaRowScores(delta: Mat, harmfulNorms: Float32Array): Float32Array {
  return weightedAbsRowSums(delta, harmfulNorms, 'deltaRowScores');
}

/**
 * First-order attribution: the engine gives s_i = <dL/dW_i, V_i> with L the NLL of the refusals; moving row i
 * along +V_i changes L by about s_i per unit step, so the gain in refusal likelihood is -s_i.
 */
export function attributionRowScores(gradDotV: Float32Array): Float32Array {
  const out = new Float32Array(gradDotV.length);
  for (let i = 0; i < out.length; i++) out[i] = -gradDotV[i];
  return out;
}

/**
 * Per-cluster attribution combined: row i scores max_c -<dL_c/dW_i, V_i> / T_c, its best per-token gain over
 * the clusters, so each cluster's own top rows compete for the budget instead of being averaged away.
 */
export function perClusterRowScores(gradDotVs: Float32Array[], tokens: number[]): Float32Array {
  if (gradDotVs.length === 0 || gradDotVs.length !== tokens.length) throw new RangeError(`${gradDotVs.length} clusters, ${tokens.length} token counts`);
  const out = new Float32Array(gradDotVs[0].length).fill(-Infinity);
  gradDotVs.forEach((g, c) => {
    if (g.length !== out.length) throw new RangeError(`cluster ${c}: ${g.length} rows, expected ${out.length}`);
    const scale = 1 / Math.max(1, tokens[c]);
    for (let i = 0; i < out.length; i++) out[i] = Math.max(out[i], -g[i] * scale);
  });
  return out;
}

/**
 * Attribution with a utility term: -(<dL_h/dW_i, V_i> / T_h + w * <dL_u/dW_i, V_i> / T_u), the first-order
 * decrease of the mean refusal NLL plus w times the mean NLL of the expected task answers, when V_i is added
 * to row i. Both sums are divided by their token counts so w weighs a token against a token.
 */
export function utilityAwareRowScores(harm: Float32Array, harmTokens: number, util: Float32Array, utilTokens: number, weight: number): Float32Array {
  if (harm.length !== util.length) throw new RangeError(`${harm.length} harm scores for ${util.length} utility scores`);
  const out = new Float32Array(harm.length);
  const a = 1 / Math.max(1, harmTokens);
  const b = weight / Math.max(1, utilTokens);
  for (let i = 0; i < out.length; i++) out[i] = -(harm[i] * a + util[i] * b);
  return out;
}

function weightedAbsRowSums(w: Mat, colWeights: Float32Array, what: string): Float32Array {
  if (colWeights.length !== w.cols) throw new RangeError(`${what}: ${colWeights.length} feature weights for ${w.cols} columns`);
  const out = new Float32Array(w.rows);
  for (let i = 0; i < w.rows; i++) {
    let s = 0;
    const o = i * w.cols;
    for (let j = 0; j < w.cols; j++) s += Math.abs(w.data[o + j]) * colWeights[j];
    out[i] = s;
  }
  return out;
}

/** Per-feature L2 norms from sums of squares. */
export function normsFromSquareSums(squareSums: Float32Array): Float32Array {
  const out = new Float32Array(squareSums.length);
  for (let j = 0; j < out.length; j++) out[j] = Math.sqrt(Math.max(0, squareSums[j]));
  return out;
}
