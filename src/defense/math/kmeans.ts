/**
 * Deterministic k-means (k-means++ seeding from a fixed-seed generator, Lloyd iterations) on small sets of
 * hidden-state vectors: the sub-clusters of one harm category.
 */
import { mulberry32 as rng } from '../../util/index.js';

export interface KMeansResult {
  centroids: Float32Array[];
  assignment: number[];
  sizes: number[];
  inertia: number;
}


function dist2(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) {
    const d = a[k] - b[k];
    s += d * d;
  }
  return s;
}

export function kmeans(points: Float32Array[], k: number, seed = 1, maxIter = 50): KMeansResult {
  const n = points.length;
  if (n === 0) return { centroids: [], assignment: [], sizes: [], inertia: 0 };
  const kk = Math.max(1, Math.min(k, n));
  const rand = rng(seed);
  const centroids: Float32Array[] = [points[Math.floor(rand() * n)].slice()];
  const d2 = points.map((p) => dist2(p, centroids[0]));
  while (centroids.length < kk) {
    const total = d2.reduce((a, b) => a + b, 0);
    let pick = 0;
    if (total > 0) {
      let r = rand() * total;
      for (pick = 0; pick < n - 1; pick++) {
        r -= d2[pick];
        if (r <= 0) break;
      }
    }
    centroids.push(points[pick].slice());
    for (let i = 0; i < n; i++) d2[i] = Math.min(d2[i], dist2(points[i], centroids[centroids.length - 1]));
  }
  const assignment = new Array<number>(n).fill(-1);
  for (let it = 0; it < maxIter; it++) {
    let changed = false;
    for (let i = 0; i < n; i++) {
      let best = 0;
      let bd = Infinity;
      centroids.forEach((c, j) => {
        const d = dist2(points[i], c);
        if (d < bd) {
          bd = d;
          best = j;
        }
      });
      if (assignment[i] !== best) {
        assignment[i] = best;
        changed = true;
      }
    }
    const dim = points[0].length;
    const sums = centroids.map(() => new Float64Array(dim));
    const counts = centroids.map(() => 0);
    for (let i = 0; i < n; i++) {
      counts[assignment[i]]++;
      const s = sums[assignment[i]];
      for (let t = 0; t < dim; t++) s[t] += points[i][t];
    }
    centroids.forEach((c, j) => {
      if (counts[j] > 0) for (let t = 0; t < dim; t++) c[t] = sums[j][t] / counts[j];
    });
    if (!changed) break;
  }
  const sizes = centroids.map((_, j) => assignment.filter((a) => a === j).length);
  let inertia = 0;
  for (let i = 0; i < n; i++) inertia += dist2(points[i], centroids[assignment[i]]);
  return { centroids, assignment, sizes, inertia };
}
