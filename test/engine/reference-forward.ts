/**
 * A plain TypeScript transcription of HF's eager LlamaForCausalLM / Qwen2ForCausalLM forward for ONE
 * unpadded sequence (positions 0..T-1), for tests only. Loops and float64 accumulation, no ONNX: an
 * independent check of the graph builder. Follows modeling_llama.py / modeling_qwen2.py step by step:
 * RMSNorm (float32 variance), q/k/v projections (+ biases), RoPE with rotate_half, repeat_kv, causal softmax,
 * o_proj, SiLU-gated MLP, final norm, lm_head (or the tied embedding matrix).
 */
import type { ModelSpec } from '../../src/checkpoint/types.js';

export type Weights = (name: string) => Float32Array;

export interface ReferenceOutput {
  embed: Float32Array;
  hidden: Float32Array[];
  mlpAct: Float32Array[];
  finalNorm: Float32Array;
  logits: Float32Array;
}

function rmsNorm(x: Float32Array, rows: number, n: number, w: Float32Array, eps: number): Float32Array {
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i] * x[r * n + i];
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) out[r * n + i] = w[i] * (x[r * n + i] * inv);
  }
  return out;
}

/** x [rows, nIn] @ W^T (W [nOut, nIn]) + b. */
function matmulT(x: Float32Array, rows: number, nIn: number, w: Float32Array, nOut: number, b?: Float32Array): Float32Array {
  const out = new Float32Array(rows * nOut);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nOut; o++) {
      let s = b === undefined ? 0 : b[o];
      for (let i = 0; i < nIn; i++) s += x[r * nIn + i] * w[o * nIn + i];
      out[r * nOut + o] = s;
    }
  }
  return out;
}

/** In place: RoPE on [T, heads, D] with positions 0..T-1. */
function rope(x: Float32Array, T: number, heads: number, D: number, theta: number): void {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * D;
      const orig = x.slice(base, base + D);
      for (let i = 0; i < D; i++) {
        const j = i % half;
        const invFreq = 1 / Math.pow(theta, (2 * j) / D);
        const angle = t * invFreq;
        const rotated = i < half ? -orig[i + half] : orig[i - half];
        x[base + i] = orig[i] * Math.cos(angle) + rotated * Math.sin(angle);
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
  const emb = w('model.embed_tokens.weight');
  let h = new Float32Array(T * H);
  ids.forEach((id, t) => h.set(emb.subarray(id * H, (id + 1) * H), t * H));
  const embed = h.slice();
  const hidden: Float32Array[] = [];
  const mlpAct: Float32Array[] = [];
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}`;
    const bias = (m: string): Float32Array | undefined => (spec.qkvBias ? w(`${p}.self_attn.${m}.bias`) : undefined);
    const xn = rmsNorm(h, T, H, w(`${p}.input_layernorm.weight`), spec.rmsNormEps);
    const q = matmulT(xn, T, H, w(`${p}.self_attn.q_proj.weight`), NH * D, bias('q_proj'));
    const k = matmulT(xn, T, H, w(`${p}.self_attn.k_proj.weight`), KV * D, bias('k_proj'));
    const v = matmulT(xn, T, H, w(`${p}.self_attn.v_proj.weight`), KV * D, bias('v_proj'));
    rope(q, T, NH, D, spec.ropeTheta);
    rope(k, T, KV, D, spec.ropeTheta);
    const ctx = new Float32Array(T * NH * D);
    const groups = NH / KV;
    for (let hh = 0; hh < NH; hh++) {
      const kvh = Math.floor(hh / groups); // repeat_kv
      for (let t = 0; t < T; t++) {
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[(t * NH + hh) * D + d] * k[(s * KV + kvh) * D + d];
          scores[s] = dot / Math.sqrt(D);
          max = Math.max(max, scores[s]);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) z += (scores[s] = Math.exp(scores[s] - max));
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += (scores[s] / z) * v[(s * KV + kvh) * D + d];
          ctx[(t * NH + hh) * D + d] = acc;
        }
      }
    }
    const attnOut = matmulT(ctx, T, NH * D, w(`${p}.self_attn.o_proj.weight`), H);
    for (let i = 0; i < h.length; i++) h[i] += attnOut[i];
    const xn2 = rmsNorm(h, T, H, w(`${p}.post_attention_layernorm.weight`), spec.rmsNormEps);
    const gate = matmulT(xn2, T, H, w(`${p}.mlp.gate_proj.weight`), I);
    const up = matmulT(xn2, T, H, w(`${p}.mlp.up_proj.weight`), I);
    const act = new Float32Array(T * I);
    for (let i = 0; i < act.length; i++) act[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    mlpAct.push(act);
    const down = matmulT(act, T, I, w(`${p}.mlp.down_proj.weight`), H);
    h = h.slice();
    for (let i = 0; i < h.length; i++) h[i] += down[i];
    hidden.push(h.slice());
  }
  const finalNorm = rmsNorm(h, T, H, w('model.norm.weight'), spec.rmsNormEps);
  const head = spec.tieWordEmbeddings ? emb : w('lm_head.weight');
  const logits = matmulT(finalNorm, T, H, head, spec.vocabSize);
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
