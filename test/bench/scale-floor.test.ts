import { expect, it } from 'vitest';
import { floorTokens } from '../../bench/scale/floor.js';

// Hand-checked token-forward counts (bench/scale/floor.ts says what each pass is).
const x = { harmfulTokens: 1000, benignTokens: 200, harmfulProbes: 16, benignProbes: 16 };
const atlas = 16 * 40 + 1000 + 200; // 1840

it('a fixed budget: atlas + one attribution over the harmful sequences; task passes only when asked', () => {
  expect(floorTokens({ options: { p: 0, utilityWeight: 0 }, selection: {} }, x)).toBe(atlas + 3 * 1000);
  expect(floorTokens(null, x)).toBe(atlas + 3 * 1000);
  expect(floorTokens({ options: { p: 0.01 }, selection: {} }, x)).toBe(atlas + 200 + 3 * 1000);
  expect(floorTokens({ options: { utilityWeight: 1 }, selection: {} }, x)).toBe(atlas + 3 * (1000 + 200));
});

it('a target-driven search: ranking share per round, the fine-tune and every step measured', () => {
  const target = { steps: [{ round: 1 }, { round: 1 }, { round: 2 }], probes: { harmful: 16, rank: 8 } };
  // harmful 16 x (18 + 40) + benign 16 x (18 + 40) + the refusal's 40 tokens after each benign probe
  const measure = 16 * 58 + 16 * 58 + 16 * 40; // 2496
  expect(floorTokens({ options: { p: 0 }, selection: { stepJudge: 'full', target } }, x)).toBe(atlas + 2 * 3 * 500 + 4 * measure);
  // Prefix judgement: steps generate 8 harmful tokens; the chosen step is measured once more in full.
  const prefix = 16 * 26 + 16 * 58 + 16 * 40; // 1984
  expect(floorTokens({ selection: { stepJudge: 'prefix', target: { ...target, confirmed: {} } } }, x)).toBe(atlas + 3000 + measure + 3 * prefix + measure);
  // Already within the target: ranked once, the fine-tune measured, no step.
  expect(floorTokens({ selection: { target: { steps: [], probes: { harmful: 16, rank: 8 } } } }, x)).toBe(atlas + 3 * 500 + measure);
  // The guardrails read the first 100 benign probes and the first 200 answered ones.
  const many = { ...x, benignProbes: 150, answeredProbes: 300 };
  const measureMany = 16 * 58 + 100 * 58 + 200 * (18 + 80) + 100 * 40;
  expect(floorTokens({ selection: { target: { steps: [{ round: 1 }], probes: { harmful: 16, rank: 16 } } } }, many)).toBe(atlas + 3 * 1000 + 2 * measureMany);
});
