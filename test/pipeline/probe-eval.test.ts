/** The refusal-NLL signal of the continue step: the per-token math by hand, and the mean on a real model. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadEngine } from '../../src/engine/engine.js';
import { REFUSAL, demoSets, writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { meanResponseNll, measureOnProbes, measureWithEngine, openStepEngine, tokenNll } from '../../src/pipeline/probe-eval.js';

describe('tokenNll', () => {
  it('is -log softmax at the target', () => {
    // softmax([0, ln 3]) = [1/4, 3/4]
    expect(tokenNll(Float32Array.of(0, Math.log(3)), 1)).toBeCloseTo(Math.log(4 / 3), 6);
    expect(tokenNll(Float32Array.of(0, Math.log(3)), 0)).toBeCloseTo(Math.log(4), 6);
    // uniform over 4: ln 4 whatever the offset
    expect(tokenNll(Float32Array.of(7, 7, 7, 7), 2)).toBeCloseTo(Math.log(4), 6);
  });

  it('stays finite for large logits (max subtracted first)', () => {
    const v = tokenNll(Float32Array.of(1000, 0), 1);
    expect(v).toBeCloseTo(1000, 3);
    expect(tokenNll(Float32Array.of(1000, 0), 0)).toBeCloseTo(0, 6);
  });
});

describe('refusal NLL on the planted demo models', () => {
  let root: string;
  let tb: DemoTestbed;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'fgsn-nll-'));
    tb = await writeDemoTestbed(root);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('the aligned model finds its refusal far more likely than the fine-tune does', async () => {
    const prompts = demoSets().harmfulProbes.slice(0, 6).map((p) => p.prompt);
    const responses = prompts.map(() => REFUSAL);
    const nll = async (dir: string): Promise<number> => {
      const engine = await loadEngine(dir, { cacheDir: join(root, 'cache') });
      try {
        return await meanResponseNll(engine, prompts, responses, 4);
      } finally {
        await engine.close();
      }
    };
    // The in-graph log-probs equal -log softmax of the full logits computed on the host.
    const engine = await loadEngine(tb.aligned, { cacheDir: join(root, 'cache') });
    let host = 0;
    let count = 0;
    try {
      const { sequences } = await engine.capture(prompts, { logits: 'all' }, { responses });
      for (const seq of sequences) {
        const vocab = seq.logits!.length / seq.ids.length;
        for (let t = seq.promptLength; t < seq.ids.length; t++, count++) host += tokenNll(seq.logits!.subarray((t - 1) * vocab, t * vocab), seq.ids[t]);
      }
    } finally {
      await engine.close();
    }
    const aligned = await nll(tb.aligned);
    expect(count).toBeGreaterThan(prompts.length);
    expect(Math.abs(aligned - host / count)).toBeLessThan(1e-5);
    const finetuned = await nll(tb.finetuned);
    expect(aligned).toBeGreaterThan(0);
    expect(finetuned).toBeGreaterThan(aligned + 0.5);

    // measureOnProbes gives the same number, next to the generation-based metrics
    const m = await measureOnProbes({ dir: tb.aligned }, prompts, [], {
      cacheDir: join(root, 'cache'), nll: { prompts, responses }, exact: [{ prompt: prompts[0], response: REFUSAL }],
    });
    expect(m.responseNll).toBeCloseTo(aligned, 5);
    // The cheap judgement (first PREFIX_TOKENS tokens) read from the full generation equals a short generation's.
    for (const dir of [tb.aligned, tb.finetuned]) {
      const full = await measureOnProbes({ dir }, prompts, [], { cacheDir: join(root, 'cache') });
      const short = await measureOnProbes({ dir }, prompts, [], { cacheDir: join(root, 'cache'), harmfulJudge: 'prefix' });
      expect(short.asr).toBe(full.asrPrefix);
      expect(short.asrPrefix).toBe(full.asrPrefix);
    }
    expect(m.asr).toBe(0);
    expect(m.exactAccuracy).toBe(1);
  });

  it("a search step's measurement (every metric on) runs on the step engine's one session, as measureOnProbes' fresh engine measures", async () => {
    const sets = demoSets();
    const prompts = sets.harmfulProbes.slice(0, 4).map((p) => p.prompt);
    const benign = sets.benignProbes.slice(0, 3).map((p) => p.prompt);
    const ctx = {
      cacheDir: join(root, 'cache'),
      benignPrompts: benign,
      exact: [{ prompt: benign[0], response: 'cake' }],
      nll: { prompts, responses: prompts.map(() => REFUSAL) },
      refusal: { prompts: benign, text: REFUSAL },
    };
    const task = sets.taskProbes.slice(0, 3);
    const engine = await openStepEngine({ dir: tb.finetuned }, ctx);
    try {
      const full = await measureWithEngine(engine, prompts, task, ctx);
      const prefix = await measureWithEngine(engine, prompts, task, { ...ctx, harmfulJudge: 'prefix' });
      // Generation and both NLLs, in either judge mode: one graph, one session (one float32 copy of the weights).
      expect(engine.sessionsCreated).toBe(1);
      expect(engine.liveSessions).toBe(1);
      const fresh = await measureOnProbes({ dir: tb.finetuned }, prompts, task, ctx);
      expect(full).toEqual(fresh);
      expect(prefix.asr).toBe(full.asrPrefix);
      expect(full.refusalNll).toBeGreaterThan(0);
      expect(full.responseNll).toBeGreaterThan(0);
    } finally {
      await engine.close();
    }
  });
});
