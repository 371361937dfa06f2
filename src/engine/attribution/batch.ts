/**
 * Batches for the attribution graph: left-padded token rows plus, per position, the next token and whether
 * predicting it counts in the loss (only response tokens do; prompt and padding never).
 */
import { leftPad } from '../runtime/batch.js';
import type { AttributionBatch } from './session.js';

export interface ScoredSequence {
  /** Prompt + response tokens, chat template applied. */
  ids: number[];
  /** Tokens [0, promptLength) are the prompt; the loss covers ids[promptLength ..]. */
  promptLength: number;
}

/** Number of loss tokens of a sequence. */
export function responseTokens(s: ScoredSequence): number {
  return Math.max(0, s.ids.length - Math.max(1, s.promptLength));
}

export function attributionBatch(seqs: readonly ScoredSequence[], padId: number): AttributionBatch {
  const padded = leftPad(seqs.map((s) => s.ids), padId);
  const T = padded.length;
  const targets = new BigInt64Array(padded.batch * T);
  const lossWeights = new Float32Array(padded.batch * T);
  seqs.forEach((s, b) => {
    const pad = T - s.ids.length;
    for (let t = 0; t + 1 < s.ids.length; t++) {
      targets[b * T + pad + t] = BigInt(s.ids[t + 1]);
      if (t + 1 >= s.promptLength) lossWeights[b * T + pad + t] = 1;
    }
  });
  return { padded, targets, lossWeights };
}
