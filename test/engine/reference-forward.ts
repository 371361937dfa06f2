/**
 * A plain TypeScript transcription of HF's eager *ForCausalLM forward (llama, mistral, qwen2, qwen3, phi3, gemma2,
 * gemma3) for ONE unpadded sequence (positions 0..T-1), for tests only. Loops and float64 accumulation, no ONNX:
 * an independent check of the graph builder. Follows modeling_<family>.py step by step: embedding (times
 * sqrt(hidden) for Gemma), RMSNorm (float32 variance; (1 + w) for Gemma), q/k/v projections (+ biases; rows of
 * the fused qkv_proj for Phi-3), per-head q/k norm (Qwen3, Gemma 3), RoPE with rotate_half and the config's
 * scaling (Gemma 3's local base on sliding layers), repeat_kv, scaled scores (soft-capped for Gemma 2), causal
 * and sliding-window softmax, o_proj, Gemma's sandwich norms, SiLU- or tanh-GELU-gated MLP (gate/up rows of
 * gate_up_proj for Phi-3), final norm, lm_head (or the tied embedding matrix), final soft cap.
 */
import { ropeCosSin } from '../support/rope-reference.js';
import type { ModelSpec } from '../../src/checkpoint/types.js';

/** Weights by HF name (float64 arrays allow finite differences below float32 resolution). */
export type Weights = (name: string) => Float32Array | Float64Array;
type W32 = ArrayLike<number>;

export interface ReferenceOutput {
  embed: Float64Array;
  hidden: Float64Array[];
  mlpAct: Float64Array[];
  finalNorm: Float64Array;
  logits: Float64Array;
}

function rmsNorm(x: Float64Array, rows: number, n: number, w: W32, eps: number): Float64Array {
  const out = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i] * x[r * n + i];
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) out[r * n + i] = w[i] * (x[r * n + i] * inv);
  }
  return out;
}

/** x [rows, nIn] @ W^T (W [nOut, nIn]) + b. */
function matmulT(x: Float64Array, rows: number, nIn: number, w: W32, nOut: number, b?: W32): Float64Array {
  const out = new Float64Array(rows * nOut);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nOut; o++) {
      let s = b === undefined ? 0 : b[o];
      for (let i = 0; i < nIn; i++) s += x[r * nIn + i] * w[o * nIn + i];
      out[r * nOut + o] = s;
    }
  }
  return out;
}

/** In place: RoPE on [T, heads, D] with positions 0..T-1 (cos/sin carry the scaling's attention factor). */
function rope(x: Float64Array, T: number, heads: number, D: number, cs: { cos: Float64Array; sin: Float64Array }): void {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * D;
      const orig = x.slice(base, base + D);
      for (let i = 0; i < D; i++) {
        const rotated = i < half ? -orig[i + half] : orig[i - half];
        x[base + i] = orig[i] * cs.cos[t * D + i] + rotated * cs.sin[t * D + i];
      }
    }
  }
}

export function referenceForward(spec: ModelSpec, w: Weights, ids: readonly number[]): ReferenceOutput {
  const T = ids.length;
  const H = spec.hiddenSize;
  const D = spec.headDim;
  const NH = spec.numHeads;
  const KV = spec.numKvHeads;
  const I = spec.intermediateSize;
  const cs = ropeCosSin(spec, T);
  // Gemma 3's sliding layers rotate with their own base and no scaling.
  const localCs = spec.localRopeTheta === undefined ? cs : ropeCosSin({ headDim: D, ropeTheta: spec.localRopeTheta, ropeScaling: null }, T);
  // Gemma stores norm weights as offsets from 1.
  const normW = (name: string): W32 => (spec.normWeightOffset ? Float64Array.from(w(name), (x) => 1 + x) : w(name));
  const norm = (x: Float64Array, rows: number, n: number, name: string): Float64Array => rmsNorm(x, rows, n, normW(name), spec.rmsNormEps);
  const rowsOf = (m: Float32Array | Float64Array, from: number, count: number, cols: number): W32 => m.subarray(from * cols, (from + count) * cols);
  const emb = w('model.embed_tokens.weight');
  let h = new Float64Array(T * H);
  ids.forEach((id, t) => h.set(emb.subarray(id * H, (id + 1) * H), t * H));
  if (spec.embedScale !== undefined) h = h.map((x) => x * spec.embedScale!);
  const embed = h.slice();
  const hidden: Float64Array[] = [];
  const mlpAct: Float64Array[] = [];
  const scale = spec.attnScale ?? 1 / Math.sqrt(D);
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}`;
    const bias = (m: string, present: boolean): W32 | undefined => (present ? w(`${p}.${m}.bias`) : undefined);
    const xn = norm(h, T, H, `${p}.input_layernorm.weight`);
    let q: Float64Array, k: Float64Array, v: Float64Array;
    if (spec.fusedProjections) {
      // Phi-3: rows [0, NH D) of qkv_proj are q, the next KV D are k, the last KV D are v.
      const qkv = w(`${p}.self_attn.qkv_proj.weight`);
      q = matmulT(xn, T, H, rowsOf(qkv, 0, NH * D, H), NH * D);
      k = matmulT(xn, T, H, rowsOf(qkv, NH * D, KV * D, H), KV * D);
      v = matmulT(xn, T, H, rowsOf(qkv, NH * D + KV * D, KV * D, H), KV * D);
    } else {
      q = matmulT(xn, T, H, w(`${p}.self_attn.q_proj.weight`), NH * D, bias('self_attn.q_proj', spec.qkvBias));
      k = matmulT(xn, T, H, w(`${p}.self_attn.k_proj.weight`), KV * D, bias('self_attn.k_proj', spec.qkvBias));
      v = matmulT(xn, T, H, w(`${p}.self_attn.v_proj.weight`), KV * D, bias('self_attn.v_proj', spec.qkvBias));
    }
    if (spec.qkNorm) {
      // Per head: [T, heads, D] rows of length D.
      q = norm(q, T * NH, D, `${p}.self_attn.q_norm.weight`);
      k = norm(k, T * KV, D, `${p}.self_attn.k_norm.weight`);
    }
    const sliding = (spec.slidingWindow ?? null) !== null && spec.slidingLayers?.[l] === true;
    const layerCs = sliding ? localCs : cs;
    rope(q, T, NH, D, layerCs);
    rope(k, T, KV, D, layerCs);
    const ctx = new Float64Array(T * NH * D);
    const groups = NH / KV;
    for (let hh = 0; hh < NH; hh++) {
      const kvh = Math.floor(hh / groups); // repeat_kv
      for (let t = 0; t < T; t++) {
        // Causal, and within the window on sliding layers: keys s with t - window < s <= t.
        const first = sliding ? Math.max(0, t - (spec.slidingWindow as number) + 1) : 0;
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let s = first; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[(t * NH + hh) * D + d] * k[(s * KV + kvh) * D + d];
          let sc = dot * scale;
          if (spec.attnSoftcap) sc = spec.attnSoftcap * Math.tanh(sc / spec.attnSoftcap);
          scores[s] = sc;
          max = Math.max(max, scores[s]);
        }
        let z = 0;
        for (let s = first; s <= t; s++) z += (scores[s] = Math.exp(scores[s] - max));
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let s = first; s <= t; s++) acc += (scores[s] / z) * v[(s * KV + kvh) * D + d];
          ctx[(t * NH + hh) * D + d] = acc;
        }
      }
    }
    let attnOut = matmulT(ctx, T, NH * D, w(`${p}.self_attn.o_proj.weight`), H, bias('self_attn.o_proj', spec.oBias));
    if (spec.sandwichNorms) attnOut = norm(attnOut, T, H, `${p}.post_attention_layernorm.weight`);
    for (let i = 0; i < h.length; i++) h[i] += attnOut[i];
    const xn2 = norm(h, T, H, `${p}.${spec.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`);
    let gate: Float64Array, up: Float64Array;
    if (spec.fusedProjections) {
      // Phi-3: gate_up_proj rows [0, I) are the gate, [I, 2I) the up projection.
      const gu = w(`${p}.mlp.gate_up_proj.weight`);
      gate = matmulT(xn2, T, H, rowsOf(gu, 0, I, H), I);
      up = matmulT(xn2, T, H, rowsOf(gu, I, I, H), I);
    } else {
      gate = matmulT(xn2, T, H, w(`${p}.mlp.gate_proj.weight`), I, bias('mlp.gate_proj', spec.mlpBias));
      up = matmulT(xn2, T, H, w(`${p}.mlp.up_proj.weight`), I, bias('mlp.up_proj', spec.mlpBias));
    }
    const act = new Float64Array(T * I);
    const gelu = (z: number): number => 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z * z * z)));
    for (let i = 0; i < act.length; i++) {
      act[i] = (spec.hiddenAct === 'gelu_pytorch_tanh' ? gelu(gate[i]) : gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    }
    mlpAct.push(act);
    let down = matmulT(act, T, I, w(`${p}.mlp.down_proj.weight`), H, bias('mlp.down_proj', spec.mlpBias));
    if (spec.sandwichNorms) down = norm(down, T, H, `${p}.post_feedforward_layernorm.weight`);
    h = h.slice();
    for (let i = 0; i < h.length; i++) h[i] += down[i];
    hidden.push(h.slice());
  }
  const finalNorm = norm(h, T, H, 'model.norm.weight');
  const head = spec.tieWordEmbeddings ? emb : w('lm_head.weight');
  let logits = matmulT(finalNorm, T, H, head, spec.vocabSize);
  if (spec.finalSoftcap) logits = logits.map((x) => spec.finalSoftcap! * Math.tanh(x / spec.finalSoftcap!));
  return { embed, hidden, mlpAct, finalNorm, logits };
}

/** Greedy continuation by repeated full forwards (no cache): the slow, obvious way. */
export function referenceGreedy(spec: ModelSpec, w: Weights, prompt: readonly number[], maxNew: number, stop: ReadonlySet<number>): number[] {
  const seq = [...prompt];
  const out: number[] = [];
  for (let n = 0; n < maxNew; n++) {
    const { logits } = referenceForward(spec, w, seq);
    const V = spec.vocabSize;
    const row = logits.subarray((seq.length - 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
    if (stop.has(best)) break;
    out.push(best);
    seq.push(best);
  }
  return out;
}
