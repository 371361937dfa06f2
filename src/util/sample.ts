/**
 * Up to n items spread evenly over xs, order kept. Probe files are often grouped (by category, by source
 * file), so a prefix would measure one group only.
 */
export function evenSample<T>(xs: readonly T[], n: number): T[] {
  if (xs.length <= n) return [...xs];
  if (n <= 0) return [];
  return Array.from({ length: n }, (_, k) => xs[Math.floor((k * xs.length) / n)]);
}
