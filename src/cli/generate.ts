/**
 * `fgsn generate <model-dir> [--adapter <dir>] --prompts <file.jsonl> [--max-new-tokens N] [--batch-size N]`:
 * greedy, batched (left padding) generation with the KV cache; one JSON line per prompt on stdout:
 * {"prompt", "response", "tokens" (generated ids, stop token excluded), "finish_reason"}.
 */
import { parseArgs } from 'node:util';
import { ENGINE_OPTION_HELP, ENGINE_OPTION_SPEC, engineOptions, loadEngine, positiveInt, readPromptFile } from '../engine/index.js';
import { FgsnError } from '../errors.js';

const HELP = `usage: fgsn generate <model-dir> --prompts <file.jsonl> [--max-new-tokens N] [options]

Greedy decoding of each {"prompt": ...} line in the chat template, stopping at generation_config.json's
eos_token_id(s) or after N new tokens (default: generation_config max_new_tokens, else 40).

${ENGINE_OPTION_HELP}
  --max-new-tokens N
`;

export async function run(args: string[]): Promise<number> {
  const parsed = parseArgs({ args, allowPositionals: true, options: { ...ENGINE_OPTION_SPEC, prompts: { type: 'string' }, 'max-new-tokens': { type: 'string' } } });
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.positionals.length !== 1) throw new FgsnError('CLI_USAGE', 'generate: expected exactly one <model-dir>');
  if (v.prompts === undefined) throw new FgsnError('CLI_USAGE', 'generate: --prompts is required');
  const prompts = await readPromptFile(v.prompts);
  const engine = await loadEngine(parsed.positionals[0], engineOptions(v));
  try {
    const gens = await engine.generate(prompts.map((p) => p.prompt), {
      maxNewTokens: positiveInt(v['max-new-tokens'], '--max-new-tokens'),
      batchSize: positiveInt(v['batch-size'], '--batch-size'),
    });
    const lines = gens.map((g, j) => JSON.stringify({ prompt: prompts[j].prompt, response: g.text, tokens: g.ids, finish_reason: g.finishReason }));
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await engine.close();
  }
  return 0;
}
