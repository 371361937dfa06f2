/**
 * Left-padded batches. Left padding keeps every row's last token at index T-1, which is where generation
 * reads the next-token logits and where the graph's "last token" captures look.
 */

export interface PaddedBatch {
  batch: number;
  /** Padded length T. */
  length: number;
  /** Real length of each row. */
  lengths: number[];
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  /** Position of each token among its row's real tokens (HF: cumsum(mask) - 1; padding gets 1). */
  positionIds: BigInt64Array;
}

export function leftPad(seqs: readonly (readonly number[])[], padId: number): PaddedBatch {
  const B = seqs.length;
  const T = Math.max(0, ...seqs.map((s) => s.length));
  const inputIds = new BigInt64Array(B * T);
  const attentionMask = new BigInt64Array(B * T);
  const positionIds = new BigInt64Array(B * T);
  for (let b = 0; b < B; b++) {
    const s = seqs[b];
    const pad = T - s.length;
    for (let t = 0; t < T; t++) {
      const k = b * T + t;
      if (t < pad) {
        inputIds[k] = BigInt(padId);
        positionIds[k] = 1n;
      } else {
        inputIds[k] = BigInt(s[t - pad]);
        attentionMask[k] = 1n;
        positionIds[k] = BigInt(t - pad);
      }
    }
  }
  return { batch: B, length: T, lengths: seqs.map((s) => s.length), inputIds, attentionMask, positionIds };
}

/**
 * Token weights [B, T] for the in-graph square sums: 1 for real tokens whose index within the row lies in
 * [from(row), to(row)), 0 elsewhere (padding always 0).
 */
export function tokenWeights(p: PaddedBatch, from: (row: number) => number, to: (row: number) => number): Float32Array {
  const w = new Float32Array(p.batch * p.length);
  for (let b = 0; b < p.batch; b++) {
    const pad = p.length - p.lengths[b];
    const lo = Math.max(0, from(b));
    const hi = Math.min(p.lengths[b], to(b));
    for (let i = lo; i < hi; i++) w[b * p.length + pad + i] = 1;
  }
  return w;
}

/** Rows of a [B, T, F] output belonging to row b's real tokens, as a fresh [len, F] array. */
export function unpadRows(data: Float32Array, p: PaddedBatch, b: number, features: number): Float32Array {
  const pad = p.length - p.lengths[b];
  const start = (b * p.length + pad) * features;
  return data.slice(start, start + p.lengths[b] * features);
}

/** A memory bound on a bucket: its rows x `rowBytes(longest length in it)` stays within `budgetBytes`. */
export interface BucketBound {
  budgetBytes: number;
  rowBytes(length: number): number;
}

/**
 * Groups indices into batches of similar length (sorted by length, stable), so little padding is needed: at
 * most `batchSize` per batch and, with `bound`, no more rows than fit its budget at the batch's longest length
 * (one row at least, so an input larger than the budget still runs, alone).
 */
export function lengthBuckets(lengths: readonly number[], batchSize: number, bound?: BucketBound): number[][] {
  const order = lengths.map((l, i) => [l, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: number[][] = [];
  let cur: number[] = [];
  for (const [len, i] of order) {
    // Sorted ascending: the row being added is the bucket's longest.
    const full = cur.length >= batchSize || (bound !== undefined && cur.length > 0 && (cur.length + 1) * bound.rowBytes(len) > bound.budgetBytes);
    if (full) {
      out.push(cur);
      cur = [];
    }
    cur.push(i);
  }
  if (cur.length > 0) out.push(cur);
  return out;
}
