/**
 * SLOW REFERENCE, float64, plain loops: the llama / mistral / qwen2 forward (HF eager semantics) and its
 * hand-written backward, used to check the onnxruntime attribution graph. Never call it on a real model in
 * production: it holds every weight and every activation in float64 in the JS heap.
 *
 * It processes one sequence at a time with no padding, so comparing it with the batched, left-padded ONNX
 * graph also checks that padding changes nothing.
 *
 * Loss: the SUM over the sequence's loss positions t of -log p(ids[t] | ids[<t]); the callers divide by the
 * token count when they want the mean.
 */
import type { LinearModule, ModelSpec } from '../../src/checkpoint/types.js';
import { LINEAR_MODULES, linearWeightName } from '../../src/checkpoint/types.js';
import { ropeCosSin } from './rope-reference.js';

export interface RefModel {
  spec: ModelSpec;
  /** HF names -> row-major float64 data ([out, in] for linears). */
  tensors: Map<string, Float64Array>;
}

export interface RefSequence {
  ids: number[];
  /** Positions t (>= 1) whose token is scored: -log p(ids[t] | ids[< t]). */
  lossPositions: number[];
}

/** Per direction set: weight name -> [out, in] direction matrix (only the weights to score). */
export type RefDirections = Map<string, Float64Array>;

export interface RefResult {
  lossSum: number;
  tokens: number;
  /** scores[k].get(weight)[r] = <dLossSum/dW[r, :], M_k[r, :]>. */
  scores: Map<string, Float64Array>[];
}

function get(m: RefModel, name: string): Float64Array {
  const t = m.tensors.get(name);
  if (t === undefined) throw new Error(`reference: tensor ${name} missing`);
  return t;
}

/** y[T, out] = x[T, in] W^T + b. */
function lin(x: Float64Array, T: number, nin: number, w: Float64Array, nout: number, b?: Float64Array): Float64Array {
  const y = new Float64Array(T * nout);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < nout; o++) {
      let s = b === undefined ? 0 : b[o];
      for (let i = 0; i < nin; i++) s += x[t * nin + i] * w[o * nin + i];
      y[t * nout + o] = s;
    }
  }
  return y;
}

/** dx[T, in] = dy[T, out] W. */
function linBack(dy: Float64Array, T: number, nout: number, w: Float64Array, nin: number): Float64Array {
  const dx = new Float64Array(T * nin);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < nout; o++) {
      const g = dy[t * nout + o];
      if (g === 0) continue;
      for (let i = 0; i < nin; i++) dx[t * nin + i] += g * w[o * nin + i];
    }
  }
  return dx;
}

interface Norm { y: Float64Array; inv: Float64Array }

function rmsNorm(x: Float64Array, T: number, H: number, g: Float64Array, eps: number): Norm {
  const y = new Float64Array(T * H);
  const inv = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[t * H + i] ** 2;
    inv[t] = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) y[t * H + i] = x[t * H + i] * inv[t] * g[i];
  }
  return { y, inv };
}

/** d/dx of rmsNorm: with n = x r, dn = dy g: dx = r dn - r^3 x mean(dn x). */
function rmsNormBack(dy: Float64Array, x: Float64Array, inv: Float64Array, T: number, H: number, g: Float64Array): Float64Array {
  const dx = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    const r = inv[t];
    let dot = 0;
    for (let i = 0; i < H; i++) dot += dy[t * H + i] * g[i] * x[t * H + i];
    const c = (r * r * r * dot) / H;
    for (let i = 0; i < H; i++) dx[t * H + i] = r * dy[t * H + i] * g[i] - c * x[t * H + i];
  }
  return dx;
}

/** In-place RoPE on x [T, heads*D]; `inverse` applies the transpose (the backward of the rotation). */
function rope(x: Float64Array, T: number, heads: number, D: number, cs: { cos: Float64Array; sin: Float64Array }, inverse: boolean): void {
  const half = D / 2;
  const sgn = inverse ? -1 : 1;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = t * heads * D + h * D;
      for (let j = 0; j < half; j++) {
        const c = cs.cos[t * D + j];
        const s = cs.sin[t * D + j] * sgn;
        const a = x[o + j];
        const b = x[o + j + half];
        // rotate_half pairs feature j with j + D/2: (a, b) -> (a c - b s, b c + a s).
        x[o + j] = a * c - b * s;
        x[o + j + half] = b * c + a * s;
      }
    }
  }
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

interface LayerCache {
  hIn: Float64Array; n1: Norm; q: Float64Array; k: Float64Array; v: Float64Array; probs: Float64Array; ctx: Float64Array;
  hMid: Float64Array; n2: Norm; gate: Float64Array; up: Float64Array; act: Float64Array;
}

function layerNames(i: number): Record<LinearModule, string> {
  return Object.fromEntries(LINEAR_MODULES.map((m) => [m, linearWeightName(i, m)])) as Record<LinearModule, string>;
}

function bias(m: RefModel, weightName: string, present: boolean): Float64Array | undefined {
  return present ? get(m, weightName.replace(/\.weight$/, '.bias')) : undefined;
}

/** Forward and backward of one sequence; `wantGrad` false skips the backward. */
function runSequence(m: RefModel, seq: RefSequence, dirs: RefDirections[], wantGrad: boolean, scores: Map<string, Float64Array>[]): number {
  const s = m.spec;
  const T = seq.ids.length;
  const H = s.hiddenSize, D = s.headDim, NH = s.numHeads, KV = s.numKvHeads, I = s.intermediateSize, V = s.vocabSize;
  const G = NH / KV;
  // cos/sin of positions 0..T-1 with the config's scaling (attention factor included).
  const cs = ropeCosSin(s, T);
  const embed = get(m, 'model.embed_tokens.weight');
  let h: Float64Array = new Float64Array(T * H);
  for (let t = 0; t < T; t++) h.set(embed.subarray(seq.ids[t] * H, (seq.ids[t] + 1) * H), t * H);

  const caches: LayerCache[] = [];
  const scale = 1 / Math.sqrt(D);
  for (let l = 0; l < s.numLayers; l++) {
    const n = layerNames(l);
    const p = `model.layers.${l}`;
    const n1 = rmsNorm(h, T, H, get(m, `${p}.input_layernorm.weight`), s.rmsNormEps);
    const q = lin(n1.y, T, H, get(m, n.q_proj), NH * D, bias(m, n.q_proj, s.qkvBias));
    const k = lin(n1.y, T, H, get(m, n.k_proj), KV * D, bias(m, n.k_proj, s.qkvBias));
    const v = lin(n1.y, T, H, get(m, n.v_proj), KV * D, bias(m, n.v_proj, s.qkvBias));
    rope(q, T, NH, D, cs, false);
    rope(k, T, KV, D, cs, false);
    const probs = new Float64Array(NH * T * T);
    const ctx = new Float64Array(T * NH * D);
    for (let hh = 0; hh < NH; hh++) {
      const kh = Math.floor(hh / G);
      for (let t = 0; t < T; t++) {
        const row = probs.subarray((hh * T + t) * T, (hh * T + t + 1) * T);
        let mx = -Infinity;
        for (let u = 0; u <= t; u++) {
          let d = 0;
          for (let j = 0; j < D; j++) d += q[t * NH * D + hh * D + j] * k[u * KV * D + kh * D + j];
          row[u] = d * scale;
          mx = Math.max(mx, row[u]);
        }
        let z = 0;
        for (let u = 0; u <= t; u++) z += row[u] = Math.exp(row[u] - mx);
        for (let u = 0; u <= t; u++) row[u] /= z;
        for (let u = 0; u <= t; u++) {
          for (let j = 0; j < D; j++) ctx[t * NH * D + hh * D + j] += row[u] * v[u * KV * D + kh * D + j];
        }
      }
    }
    const o = lin(ctx, T, NH * D, get(m, n.o_proj), H, bias(m, n.o_proj, s.oBias));
    const hMid = new Float64Array(T * H);
    for (let i = 0; i < T * H; i++) hMid[i] = h[i] + o[i];
    const n2 = rmsNorm(hMid, T, H, get(m, `${p}.post_attention_layernorm.weight`), s.rmsNormEps);
    const gate = lin(n2.y, T, H, get(m, n.gate_proj), I, bias(m, n.gate_proj, s.mlpBias));
    const up = lin(n2.y, T, H, get(m, n.up_proj), I, bias(m, n.up_proj, s.mlpBias));
    const act = new Float64Array(T * I);
    for (let i = 0; i < T * I; i++) act[i] = gate[i] * sigmoid(gate[i]) * up[i];
    const down = lin(act, T, I, get(m, n.down_proj), H, bias(m, n.down_proj, s.mlpBias));
    const hOut = new Float64Array(T * H);
    for (let i = 0; i < T * H; i++) hOut[i] = hMid[i] + down[i];
    caches.push({ hIn: h, n1, q, k, v, probs, ctx, hMid, n2, gate, up, act });
    h = hOut;
  }
  const nf = rmsNorm(h, T, H, get(m, 'model.norm.weight'), s.rmsNormEps);
  const head = s.tieWordEmbeddings ? embed : get(m, 'lm_head.weight');
  const logits = lin(nf.y, T, H, head, V);

  // dlogits of the summed NLL: softmax - onehot at the positions predicting a scored token.
  const dlogits = new Float64Array(T * V);
  let loss = 0;
  for (const pos of seq.lossPositions) {
    const t = pos - 1;
    const row = logits.subarray(t * V, (t + 1) * V);
    let mx = -Infinity;
    for (let c = 0; c < V; c++) mx = Math.max(mx, row[c]);
    let z = 0;
    for (let c = 0; c < V; c++) z += Math.exp(row[c] - mx);
    loss += Math.log(z) + mx - row[seq.ids[pos]];
    for (let c = 0; c < V; c++) dlogits[t * V + c] += Math.exp(row[c] - mx) / z;
    dlogits[t * V + seq.ids[pos]] -= 1;
  }
  if (!wantGrad) return loss;

  const score = (name: string, delta: Float64Array, x: Float64Array, nout: number, nin: number): void => {
    dirs.forEach((dir, k) => {
      const M = dir.get(name);
      if (M === undefined) return;
      const xm = lin(x, T, nin, M, nout);
      const acc = scores[k].get(name) ?? new Float64Array(nout);
      for (let t = 0; t < T; t++) for (let r = 0; r < nout; r++) acc[r] += delta[t * nout + r] * xm[t * nout + r];
      scores[k].set(name, acc);
    });
  };

  let dh = rmsNormBack(linBack(dlogits, T, V, head, H), h, nf.inv, T, H, get(m, 'model.norm.weight'));
  for (let l = s.numLayers - 1; l >= 0; l--) {
    const c = caches[l];
    const n = layerNames(l);
    const p = `model.layers.${l}`;
    // MLP: residual passes dh through; down's output gradient is dh itself.
    score(n.down_proj, dh, c.act, H, I);
    const dact = linBack(dh, T, H, get(m, n.down_proj), I);
    const dgate = new Float64Array(T * I);
    const dup = new Float64Array(T * I);
    for (let i = 0; i < T * I; i++) {
      const sg = sigmoid(c.gate[i]);
      dup[i] = dact[i] * c.gate[i] * sg;
      dgate[i] = dact[i] * c.up[i] * sg * (1 + c.gate[i] * (1 - sg));
    }
    score(n.gate_proj, dgate, c.n2.y, I, H);
    score(n.up_proj, dup, c.n2.y, I, H);
    const dn2 = linBack(dgate, T, I, get(m, n.gate_proj), H);
    const dn2u = linBack(dup, T, I, get(m, n.up_proj), H);
    for (let i = 0; i < T * H; i++) dn2[i] += dn2u[i];
    const dMid = rmsNormBack(dn2, c.hMid, c.n2.inv, T, H, get(m, `${p}.post_attention_layernorm.weight`));
    for (let i = 0; i < T * H; i++) dMid[i] += dh[i];

    // Attention.
    score(n.o_proj, dMid, c.ctx, H, NH * D);
    const dctx = linBack(dMid, T, H, get(m, n.o_proj), NH * D);
    const dq = new Float64Array(T * NH * D);
    const dk = new Float64Array(T * KV * D);
    const dv = new Float64Array(T * KV * D);
    for (let hh = 0; hh < NH; hh++) {
      const kh = Math.floor(hh / G);
      for (let t = 0; t < T; t++) {
        const row = c.probs.subarray((hh * T + t) * T, (hh * T + t + 1) * T);
        const dp = new Float64Array(t + 1);
        let dot = 0;
        for (let u = 0; u <= t; u++) {
          let d = 0;
          for (let j = 0; j < D; j++) {
            const go = dctx[t * NH * D + hh * D + j];
            d += go * c.v[u * KV * D + kh * D + j];
            dv[u * KV * D + kh * D + j] += row[u] * go;
          }
          dp[u] = d;
          dot += d * row[u];
        }
        for (let u = 0; u <= t; u++) {
          const ds = row[u] * (dp[u] - dot) * scale;
          for (let j = 0; j < D; j++) {
            dq[t * NH * D + hh * D + j] += ds * c.k[u * KV * D + kh * D + j];
            dk[u * KV * D + kh * D + j] += ds * c.q[t * NH * D + hh * D + j];
          }
        }
      }
    }
    rope(dq, T, NH, D, cs, true);
    rope(dk, T, KV, D, cs, true);
    score(n.q_proj, dq, c.n1.y, NH * D, H);
    score(n.k_proj, dk, c.n1.y, KV * D, H);
    score(n.v_proj, dv, c.n1.y, KV * D, H);
    const dn1 = linBack(dq, T, NH * D, get(m, n.q_proj), H);
    const dn1k = linBack(dk, T, KV * D, get(m, n.k_proj), H);
    const dn1v = linBack(dv, T, KV * D, get(m, n.v_proj), H);
    for (let i = 0; i < T * H; i++) dn1[i] += dn1k[i] + dn1v[i];
    const dIn = rmsNormBack(dn1, c.hIn, c.n1.inv, T, H, get(m, `${p}.input_layernorm.weight`));
    for (let i = 0; i < T * H; i++) dIn[i] += dMid[i];
    dh = dIn;
  }
  return loss;
}

/** Summed NLL of all sequences (no backward). */
export function referenceLoss(m: RefModel, seqs: RefSequence[]): { lossSum: number; tokens: number } {
  let lossSum = 0;
  let tokens = 0;
  for (const s of seqs) {
    lossSum += runSequence(m, s, [], false, []);
    tokens += s.lossPositions.length;
  }
  return { lossSum, tokens };
}

/** Summed NLL and, per direction set, the per-row inner products of its gradient with the directions. */
export function referenceScores(m: RefModel, seqs: RefSequence[], dirs: RefDirections[]): RefResult {
  const scores = dirs.map(() => new Map<string, Float64Array>());
  let lossSum = 0;
  let tokens = 0;
  for (const s of seqs) {
    lossSum += runSequence(m, s, dirs, true, scores);
    tokens += s.lossPositions.length;
  }
  return { lossSum, tokens, scores };
}
