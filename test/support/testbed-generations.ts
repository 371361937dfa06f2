/**
 * Checks greedy generation against recorded generations (the testbed's eval/<ckpt>.generations.jsonl) and
 * explains every mismatch by the logits at the first diverging step: a flip between two implementations is
 * only acceptable when the two tokens were nearly tied.
 */
import { parseJsonl, readJsonlText } from '../../src/util/jsonl.js';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Engine } from '../../src/engine/engine.js';

export interface RecordedGeneration {
  prompt: string;
  response: string;
}

export async function readRecordedGenerations(path: string): Promise<RecordedGeneration[]> {
  return parseJsonl(await readJsonlText(path), { source: path, empty: false }, (v, at) => {
    if (typeof v.prompt !== 'string' || typeof v.response !== 'string') throw at.fail('expected "prompt" and "response" strings');
    return { prompt: v.prompt, response: v.response };
  });
}

/** A testbed checkpoint name -> the model folder, plus the adapter folder for a PEFT adapter. */
export function testbedCheckpointDirs(testbed: string, name: string): { model: string; adapter?: string } {
  const dir = join(testbed, name);
  const adapterConfig = join(dir, 'adapter_config.json');
  if (!existsSync(adapterConfig)) return { model: dir };
  const cfg = JSON.parse(readFileSync(adapterConfig, 'utf8')) as { base_model_name_or_path?: string };
  return { model: resolve(dir, cfg.base_model_name_or_path ?? '../aligned'), adapter: dir };
}

export interface GenerationMismatch {
  index: number;
  prompt: string;
  recorded: string;
  ours: string;
  /** First generated position where the token sequences differ. */
  step: number;
  /** Token text at that step ('<stop>' when one side ended there). */
  recordedToken: string;
  ourToken: string;
  /** logit(our token) - logit(recorded token) at that step, from a teacher-forced forward (>= 0). */
  logitGap: number;
  /** Best minus second-best logit at that step. */
  margin: number;
}

export interface GenerationReport {
  total: number;
  mismatches: GenerationMismatch[];
}

export async function compareGenerations(engine: Engine, recorded: readonly RecordedGeneration[], opts: { batchSize?: number; maxNewTokens?: number } = {}): Promise<GenerationReport> {
  const gens = await engine.generate(recorded.map((r) => r.prompt), opts);
  const eos = engine.eosTokenIds;
  const mismatches: GenerationMismatch[] = [];
  for (let i = 0; i < recorded.length; i++) {
    if (gens[i].text === recorded[i].response) continue;
    const want = await engine.tokenizer.encode(recorded[i].response);
    const got = gens[i].ids;
    let step = 0;
    while (step < want.length && step < got.length && want[step] === got[step]) step++;
    const STOP = -1;
    const MAXLEN = -2;
    const wantTok = step < want.length ? want[step] : STOP;
    const gotTok = step < got.length ? got[step] : gens[i].finishReason === 'stop' ? STOP : MAXLEN;
    const prefix = [...gens[i].promptIds, ...got.slice(0, step)];
    const cap = await engine.capture([prefix], { logits: 'last' });
    const logits = cap.sequences[0].logits as Float32Array;
    let best = -Infinity;
    let second = -Infinity;
    for (const v of logits) {
      if (v > best) {
        second = best;
        best = v;
      } else if (v > second) second = v;
    }
    // A stop is scored by the most likely stop token.
    const logitOf = (t: number): number => (t === STOP ? Math.max(...eos.map((e) => logits[e])) : t === MAXLEN ? Number.NaN : logits[t]);
    const text = async (t: number): Promise<string> => (t === MAXLEN ? '<max-length>' : t === STOP ? '<stop>' : await engine.tokenizer.decode([t], false));
    mismatches.push({
      index: i,
      prompt: recorded[i].prompt,
      recorded: recorded[i].response,
      ours: gens[i].text,
      step,
      recordedToken: await text(wantTok),
      ourToken: await text(gotTok),
      logitGap: logitOf(gotTok) - logitOf(wantTok),
      margin: best - second,
    });
  }
  return { total: recorded.length, mismatches };
}
