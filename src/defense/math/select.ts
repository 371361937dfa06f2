/**
 * Neuron sets: top-q by score (global over all matrices or per matrix), top-p per matrix, set difference.
 * A selection maps a weight name to its sorted, unique row indices. Ties break by matrix name then row index,
 * so the same scores always give the same set.
 */

export type Selection = Map<string, Uint32Array>;
export type RowScores = Map<string, Float32Array>;

/** Top `share` of rows by score. `scope: 'global'` ranks all rows of all matrices together. */
export function topShare(scores: RowScores, share: number, scope: 'global' | 'per-matrix'): Selection {
  if (!(share >= 0 && share <= 1)) throw new RangeError(`topShare: share must be in [0, 1], got ${share}`);
  const names = [...scores.keys()].sort();
  const out: Selection = new Map();
  if (scope === 'per-matrix') {
    for (const name of names) {
      const s = scores.get(name)!;
      out.set(name, topRows(s, Math.round(share * s.length)));
    }
    return out;
  }
  let total = 0;
  for (const name of names) total += scores.get(name)!.length;
  return topCountGlobal(scores, Math.round(share * total));
}

/** The `count` best rows over all matrices. */
export function topCountGlobal(scores: RowScores, count: number): Selection {
  const names = [...scores.keys()].sort();
  const entries: { s: number; m: number; r: number }[] = [];
  names.forEach((name, m) => {
    const s = scores.get(name)!;
    for (let r = 0; r < s.length; r++) entries.push({ s: s[r], m, r });
  });
  entries.sort((a, b) => b.s - a.s || a.m - b.m || a.r - b.r);
  const picked = new Map<number, number[]>();
  for (let k = 0; k < Math.min(count, entries.length); k++) {
    const e = entries[k];
    const list = picked.get(e.m);
    if (list) list.push(e.r);
    else picked.set(e.m, [e.r]);
  }
  const out: Selection = new Map();
  names.forEach((name, m) => out.set(name, Uint32Array.from((picked.get(m) ?? []).sort((a, b) => a - b))));
  return out;
}

/**
 * A picker of the best `round(share * totalRows)` rows over all matrices that are in none of `excluded`
 * (rows already edited, task rows): excluded rows never fill the count, so fewer come back when the scored
 * rows run out.
 */
export function pickerExcluding(scores: RowScores, excluded: Selection[], totalRows: number): (share: number) => Selection {
  const masked: RowScores = new Map();
  for (const [n, v] of scores) {
    const m = v.slice();
    for (const sel of excluded) for (const r of sel.get(n) ?? []) m[r] = -Infinity;
    masked.set(n, m);
  }
  return (share) => {
    const sel = topCountGlobal(masked, Math.round(share * totalRows));
    for (const [n, rows] of sel) sel.set(n, rows.filter((r) => Number.isFinite(masked.get(n)![r])));
    return sel;
  };
}

/** Indices of the `count` highest scores, sorted ascending. NaN scores rank last. */
export function topRows(scores: Float32Array, count: number): Uint32Array {
  const idx = Array.from({ length: scores.length }, (_, i) => i);
  const key = (i: number): number => (Number.isNaN(scores[i]) ? -Infinity : scores[i]);
  idx.sort((a, b) => key(b) - key(a) || a - b);
  return Uint32Array.from(idx.slice(0, Math.max(0, Math.min(count, idx.length))).sort((a, b) => a - b));
}

/** N = A \ B per matrix. */
export function difference(a: Selection, b: Selection): Selection {
  const out: Selection = new Map();
  for (const [name, rows] of a) {
    const minus = b.get(name);
    if (!minus || minus.length === 0) {
      out.set(name, rows.slice());
      continue;
    }
    const drop = new Set(minus);
    out.set(name, Uint32Array.from([...rows].filter((r) => !drop.has(r))));
  }
  return out;
}

export function union(a: Selection, b: Selection): Selection {
  const out: Selection = new Map();
  for (const name of new Set([...a.keys(), ...b.keys()])) {
    const s = new Set([...(a.get(name) ?? []), ...(b.get(name) ?? [])]);
    out.set(name, Uint32Array.from([...s].sort((x, y) => x - y)));
  }
  return out;
}

export function countRows(sel: Selection): number {
  let n = 0;
  for (const rows of sel.values()) n += rows.length;
  return n;
}

export function selectionToJSON(sel: Selection): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const name of [...sel.keys()].sort()) out[name] = [...sel.get(name)!];
  return out;
}

export function selectionFromJSON(obj: Record<string, number[]>): Selection {
  const out: Selection = new Map();
  for (const [name, rows] of Object.entries(obj)) out.set(name, Uint32Array.from([...new Set(rows)].sort((a, b) => a - b)));
  return out;
}
