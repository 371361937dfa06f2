/**
 * Rank on some harmful probes, judge on others. The attribution ranking is fitted to the probes whose
 * refusals it differentiates; an ASR measured on those same prompts is optimistic (on the held-back testbed
 * one model family reached 2 % on its ranking probes and 8 % on unseen prompts). So the target-driven search
 * ranks rows on the `rank` part and stops on the ASR of the `judge` part, and reports both.
 */
import type { Atlas } from '../defense/index.js';
import { mulberry32 } from '../util/index.js';

export interface ProbeSplit {
  rank: number[];
  judge: number[];
  /** False when there were too few probes to split (both parts are then every probe). */
  split: boolean;
}

/** Fewer harmful probes than this are not split: each half would be too small to rank or judge on. */
export const MIN_SPLIT_PROBES = 8;

/**
 * Seeded split, stratified by category so both parts cover every category: within each category the
 * indices are shuffled (Fisher-Yates on mulberry32(seed)) and round(share x size) go to `judge`, keeping at
 * least one on each side when the category has two or more. Indices come back sorted.
 */
export function splitProbes(categories: readonly (string | undefined)[], judgeShare: number, seed: number): ProbeSplit {
  const n = categories.length;
  const all = Array.from({ length: n }, (_, i) => i);
  if (judgeShare <= 0 || judgeShare >= 1 || n < MIN_SPLIT_PROBES) return { rank: all, judge: all, split: false };
  const rand = mulberry32(seed);
  const groups = new Map<string, number[]>();
  for (let i = 0; i < n; i++) {
    const c = categories[i] ?? '';
    if (!groups.has(c)) groups.set(c, []);
    groups.get(c)!.push(i);
  }
  const rank: number[] = [];
  const judge: number[] = [];
  for (const key of [...groups.keys()].sort()) {
    const g = groups.get(key)!;
    for (let i = g.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [g[i], g[j]] = [g[j], g[i]];
    }
    let k = Math.round(judgeShare * g.length);
    if (g.length >= 2) k = Math.min(g.length - 1, Math.max(1, k));
    judge.push(...g.slice(0, k));
    rank.push(...g.slice(k));
  }
  if (rank.length === 0 || judge.length === 0) return { rank: all, judge: all, split: false };
  return { rank: rank.sort((a, b) => a - b), judge: judge.sort((a, b) => a - b), split: true };
}

/** The atlas restricted to some harmful probes (attribution reads the probes and their refusals; categories re-indexed). */
export function subsetAtlas(atlas: Atlas, keep: readonly number[]): Atlas {
  const at = new Map(keep.map((orig, k) => [orig, k]));
  return {
    ...atlas,
    harmful: keep.map((i) => atlas.harmful[i]),
    harmfulResponses: keep.map((i) => atlas.harmfulResponses[i]),
    categories: atlas.categories
      .map((c) => ({
        ...c,
        probes: c.probes.filter((i) => at.has(i)).map((i) => at.get(i)!),
        clusters: c.clusters
          .map((cl) => {
            const members = cl.members.filter((i) => at.has(i)).map((i) => at.get(i)!);
            return { size: members.length, members };
          })
          .filter((cl) => cl.size > 0),
      }))
      .filter((c) => c.probes.length > 0),
  };
}
