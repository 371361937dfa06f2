/**
 * Coarse scale of method.md step 1: where in depth the aligned model separates harmful from benign prompts.
 */

/** Per-layer cosine statistics of last-token hidden states. */
export interface LayerCurve {
  sBB: number[];
  sBH: number[];
  gap: number[];
}

/**
 * Mean pairwise cosines from unit vectors: with u_i normalised, sum_{i != j} u_i·u_j = ||sum u||² - n, so both
 * means cost O(n·d) instead of O(n²·d). Zero vectors count as cosine 0 with everything.
 */
export function cosineStats(benign: Float32Array[], harmful: Float32Array[]): { sBB: number; sBH: number } {
  if (benign.length < 2) throw new RangeError('cosineStats: need at least two benign vectors for s_BB');
  if (harmful.length < 1) throw new RangeError('cosineStats: need at least one harmful vector for s_BH');
  const d = benign[0].length;
  const sumB = new Float64Array(d);
  const sumH = new Float64Array(d);
  let nonZeroB = 0;
  const addUnit = (v: Float32Array, acc: Float64Array): boolean => {
    if (v.length !== d) throw new RangeError(`cosineStats: vector of length ${v.length}, expected ${d}`);
    let n2 = 0;
    for (let k = 0; k < d; k++) n2 += v[k] * v[k];
    if (n2 === 0) return false;
    const inv = 1 / Math.sqrt(n2);
    for (let k = 0; k < d; k++) acc[k] += v[k] * inv;
    return true;
  };
  for (const v of benign) if (addUnit(v, sumB)) nonZeroB++;
  for (const v of harmful) addUnit(v, sumH);
  let sBB2 = 0;
  let sBH = 0;
  for (let k = 0; k < d; k++) {
    sBB2 += sumB[k] * sumB[k];
    sBH += sumB[k] * sumH[k];
  }
  const nB = benign.length;
  return { sBB: (sBB2 - nonZeroB) / (nB * (nB - 1)), sBH: sBH / (nB * harmful.length) };
}

/** g(l) = s_BB(l) - s_BH(l) for every layer; inputs are [layer][prompt] hidden vectors. */
export function layerCurve(benignByLayer: Float32Array[][], harmfulByLayer: Float32Array[][]): LayerCurve {
  if (benignByLayer.length !== harmfulByLayer.length) throw new RangeError('layerCurve: layer counts differ');
  const curve: LayerCurve = { sBB: [], sBH: [], gap: [] };
  for (let l = 0; l < benignByLayer.length; l++) {
    const { sBB, sBH } = cosineStats(benignByLayer[l], harmfulByLayer[l]);
    curve.sBB.push(sBB);
    curve.sBH.push(sBH);
    curve.gap.push(sBB - sBH);
  }
  return curve;
}

/**
 * w(l) = max(0, g(l) - g(l-1)), normalised to sum 1. g(-1) is taken as 0 (the embedding does not yet
 * separate anything), so a gap already open after layer 0 counts for layer 0. A curve that never rises
 * gives uniform weights: no layer is singled out, rather than dividing by zero.
 */
export function layerWeights(gap: number[]): number[] {
  const raw = gap.map((g, l) => Math.max(0, g - (l === 0 ? 0 : gap[l - 1])));
  const total = raw.reduce((a, b) => a + b, 0);
  if (!(total > 0)) return gap.map(() => 1 / gap.length);
  return raw.map((w) => w / total);
}

/**
 * Smallest contiguous band [start, end] whose weights sum to at least `share`; among bands of that length,
 * the one holding the most weight, then the earliest.
 */
export function selectBand(weights: number[], share: number): number[] {
  if (!(share > 0 && share <= 1)) throw new RangeError(`selectBand: share must be in (0, 1], got ${share}`);
  const n = weights.length;
  const eps = 1e-12;
  for (let len = 1; len <= n; len++) {
    let best = -1;
    let bestSum = -Infinity;
    for (let s = 0; s + len <= n; s++) {
      let sum = 0;
      for (let l = s; l < s + len; l++) sum += weights[l];
      if (sum + eps >= share && sum > bestSum + eps) {
        best = s;
        bestSum = sum;
      }
    }
    if (best >= 0) return Array.from({ length: len }, (_, k) => best + k);
  }
  return Array.from({ length: n }, (_, k) => k);
}

/** Parses "10-15,18" into sorted unique layer indices inside [0, numLayers). */
export function parseLayerList(text: string, numLayers: number): number[] {
  const out = new Set<number>();
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new RangeError(`layer list: "${part}" is not N or N-M`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new RangeError(`layer list: "${part}" runs backwards`);
    for (let l = a; l <= b; l++) {
      if (l >= numLayers) throw new RangeError(`layer list: layer ${l} >= number of layers ${numLayers}`);
      out.add(l);
    }
  }
  if (out.size === 0) throw new RangeError('layer list is empty');
  return [...out].sort((x, y) => x - y);
}
