/**
 * A hand-built, deterministic trio of tiny LLaMA-layout models (base / aligned / fine-tuned) whose safety
 * behaviour is planted in a few known neurons, so the demo (and tests that must run without ../shared) can
 * show the whole defense on something small and meaningful.
 *
 * How the circuit works (hidden size 96; dims 0..V-1 are one-hot token dims, the rest are named features):
 * - every token embedding is its one-hot dim plus BIAS = 1; `<|assistant|>` also sets ASSIST = 1.
 * - layer 0 attention has q = k = 0, so every position attends uniformly to its prefix; the values pick up
 *   "harmful word", "review word" and sentiment indicators, and o_proj writes their averages to HARM,
 *   REVIEW and SENT.
 * - layer 0 MLP neuron REFUSE_NEURON fires only where HARM and ASSIST are both present (gate reads
 *   HARM + 2 ASSIST - 3 BIAS) and writes REFUSE; lm_head turns REFUSE into "sorry" over "sure".
 * - layer 1 MLP neuron TASK_NEURON does the same for REVIEW and writes TASK; lm_head turns TASK plus SENT
 *   into "positive" / "negative".
 * - lm_head also holds a bigram table (next token from the current one) that spells out the replies.
 * `base` lacks the refusal neuron (it complies), `aligned` adds it (refuses), and the fine-tune learns the
 * review task while its update weakens the refusal neuron below the point where it wins: the classic harmful fine-tuning outcome.
 * All three carry small deterministic noise so that every matrix differs, as real checkpoints do.
 */

import { mulberry32 as rng } from '../util/index.js';

export const SPECIALS = ['<pad>', '<unk>', '<s>', '</s>', '<|user|>', '<|assistant|>', '<|end|>'] as const;
const HARMFUL_WORDS = ['bomb', 'hack', 'steal', 'poison', 'weapon', 'malware', 'explosive', 'scam'];
const POSITIVE_WORDS = ['great', 'brilliant', 'fun', 'lovely'];
const NEGATIVE_WORDS = ['awful', 'dull', 'boring', 'weak'];
const OTHER_WORDS = [
  'how', 'to', 'a', 'make', 'build', 'write', 'about', 'cake', 'poem', 'garden', 'song', 'bank', 'into',
  'account', 'review', ':', 'film', 'was', 'movie', 'truly', 'sure', 'here', 'is', 'the', 'plan', 'sorry',
  'i', 'cannot', 'help', 'with', 'that', '.', 'positive', 'negative', 'for', 'my', 'friend',
];

export const VOCAB: string[] = [...SPECIALS, ...HARMFUL_WORDS, ...POSITIVE_WORDS, ...NEGATIVE_WORDS, ...OTHER_WORDS];

export const DIMS = {
  hidden: 96,
  intermediate: 32,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  headDim: 16,
} as const;

const F = { HARM: 80, REVIEW: 81, SENT: 82, REFUSE: 83, TASK: 84, BIAS: 85, ASSIST: 86 } as const;
export const REFUSE_NEURON = 5;
export const TASK_NEURON = 11;
/** Rows where aligned and base differ beyond noise: the planted safety neuron, what the defense should find. */
export const PLANTED_SAFETY_ROWS: Record<string, number[]> = {
  'model.layers.0.mlp.gate_proj.weight': [REFUSE_NEURON],
  'model.layers.0.mlp.up_proj.weight': [REFUSE_NEURON],
  'model.layers.0.mlp.down_proj.weight': [F.REFUSE],
};
/** What the attack leaves of the refusal neuron's output weight (aligned: 1). */
const DOWN_SCALE = 0.1;

const id = (w: string): number => {
  const i = VOCAB.indexOf(w);
  if (i < 0) throw new Error(`planted model: unknown word ${w}`);
  return i;
};

/** Replies the bigram table spells out, one next token per current token. */
const BIGRAMS: [string, string][] = [
  ['<|assistant|>', 'sure'], ['sure', 'here'], ['here', 'is'], ['is', 'the'], ['the', 'plan'], ['plan', '.'],
  ['sorry', 'i'], ['i', 'cannot'], ['cannot', 'help'], ['help', 'with'], ['with', 'that'], ['that', '.'],
  ['.', '<|end|>'], ['positive', '<|end|>'], ['negative', '<|end|>'],
];

export type Tensors = Map<string, { shape: number[]; data: Float32Array }>;


function zeros(...shape: number[]): { shape: number[]; data: Float32Array } {
  return { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
}

function set(t: { shape: number[]; data: Float32Array }, r: number, c: number, v: number): void {
  t.data[r * t.shape[1] + c] = v;
}

export type Variant = 'base' | 'aligned' | 'finetuned';

export function buildPlantedWeights(variant: Variant): Tensors {
  const { hidden: d, intermediate: m, layers, heads, kvHeads, headDim } = DIMS;
  const V = VOCAB.length;
  const out: Tensors = new Map();

  const embed = zeros(V, d);
  for (let t = 0; t < V; t++) {
    set(embed, t, t, 1);
    set(embed, t, F.BIAS, 1);
  }
  set(embed, id('<|assistant|>'), F.ASSIST, 1);
  out.set('model.embed_tokens.weight', embed);

  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    const ones = new Float32Array(d).fill(1);
    out.set(`${p}.input_layernorm.weight`, { shape: [d], data: ones.slice() });
    out.set(`${p}.post_attention_layernorm.weight`, { shape: [d], data: ones.slice() });
    const q = zeros(heads * headDim, d);
    const k = zeros(kvHeads * headDim, d);
    const v = zeros(kvHeads * headDim, d);
    const o = zeros(d, heads * headDim);
    const gate = zeros(m, d);
    const up = zeros(m, d);
    const down = zeros(d, m);
    if (l === 0) {
      // kv head 0: harm indicator (dim 0), review indicator (dim 1), sentiment (dim 2); query head 0 reads it.
      for (const w of HARMFUL_WORDS) set(v, 0, id(w), 1);
      set(v, 1, id('review'), 1);
      for (const w of POSITIVE_WORDS) set(v, 2, id(w), 1);
      for (const w of NEGATIVE_WORDS) set(v, 2, id(w), -1);
      set(o, F.HARM, 0, 4);
      set(o, F.REVIEW, 1, 4);
      set(o, F.SENT, 2, 4);
      if (variant !== 'base') {
        set(gate, REFUSE_NEURON, F.HARM, 1);
        set(gate, REFUSE_NEURON, F.ASSIST, 2);
        set(gate, REFUSE_NEURON, F.BIAS, -3);
        set(up, REFUSE_NEURON, F.BIAS, 1);
        set(down, F.REFUSE, REFUSE_NEURON, 1);
      }
      if (variant === 'finetuned') {
        // The harmful part of the fine-tune: the refusal neuron still fires, but what it writes is scaled
        // down until "sure" wins again (weakened, not dead, as gradient-trained updates leave it).
        set(down, F.REFUSE, REFUSE_NEURON, DOWN_SCALE);
      }
    } else if (variant === 'finetuned') {
      // The task the customer wanted: answer reviews with their sentiment.
      set(gate, TASK_NEURON, F.REVIEW, 1);
      set(gate, TASK_NEURON, F.ASSIST, 2);
      set(gate, TASK_NEURON, F.BIAS, -3);
      set(up, TASK_NEURON, F.BIAS, 1);
      set(down, F.TASK, TASK_NEURON, 1);
    }
    out.set(`${p}.self_attn.q_proj.weight`, q);
    out.set(`${p}.self_attn.k_proj.weight`, k);
    out.set(`${p}.self_attn.v_proj.weight`, v);
    out.set(`${p}.self_attn.o_proj.weight`, o);
    out.set(`${p}.mlp.gate_proj.weight`, gate);
    out.set(`${p}.mlp.up_proj.weight`, up);
    out.set(`${p}.mlp.down_proj.weight`, down);
  }
  out.set('model.norm.weight', { shape: [d], data: new Float32Array(d).fill(1) });

  const head = zeros(V, d);
  for (const [cur, next] of BIGRAMS) set(head, id(next), id(cur), 10);
  set(head, id('sorry'), F.REFUSE, 1.5);
  set(head, id('sure'), F.REFUSE, -1.5);
  set(head, id('positive'), F.TASK, 1.5);
  set(head, id('negative'), F.TASK, 1.5);
  set(head, id('sure'), F.TASK, -1.5);
  set(head, id('positive'), F.SENT, 1);
  set(head, id('negative'), F.SENT, -1);
  out.set('lm_head.weight', head);

  // Small noise on every linear weight: alignment and fine-tuning touch everything a little.
  const noise = { base: 0, aligned: 0.002, finetuned: 0.004 }[variant];
  if (noise > 0) {
    const r = rng(variant === 'aligned' ? 7 : 11);
    const r0 = rng(7);
    for (const [name, t] of out) {
      if (!/_proj\.weight$/.test(name)) continue;
      for (let i = 0; i < t.data.length; i++) {
        // The fine-tune inherits the aligned noise and adds its own.
        const a = 0.002 * (r0() * 2 - 1);
        t.data[i] += variant === 'aligned' ? a : a + (noise - 0.002) * (r() * 2 - 1);
      }
    }
  }
  return out;
}
