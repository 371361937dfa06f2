/**
 * `fgsn trace <model-dir> [--adapter <dir>] --prompts <file.jsonl> --out <file.safetensors>`: activations of
 * every token of each chat-formatted prompt, in the testbed's golden layout (see src/engine/trace.ts).
 */
import { parseArgs } from 'node:util';
import { writeSafetensors } from '../checkpoint/index.js';
import {
  ENGINE_OPTION_HELP, ENGINE_OPTION_SPEC, engineOptions, loadEngine, positiveInt, readPromptFile, traceTensors,
} from '../engine/index.js';
import { FgsnError } from '../errors.js';

const HELP = `usage: fgsn trace <model-dir> --prompts <file.jsonl> --out <file.safetensors> [options]

For each line {"prompt": ...} (index j) applies the chat template with the generation prompt and writes
float32 tensors p{j}.embed, p{j}.layers.{i}.hidden, p{j}.layers.{i}.mlp_act, p{j}.final_norm, p{j}.logits
([tokens, features], every token) and p{j}.input_ids (int64). Prints a JSON summary.

${ENGINE_OPTION_HELP}
`;

export async function run(args: string[]): Promise<number> {
  const parsed = parseArgs({ args, allowPositionals: true, options: { ...ENGINE_OPTION_SPEC, prompts: { type: 'string' }, out: { type: 'string' } } });
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.positionals.length !== 1) throw new FgsnError('CLI_USAGE', 'trace: expected exactly one <model-dir>');
  if (v.prompts === undefined || v.out === undefined) throw new FgsnError('CLI_USAGE', 'trace: --prompts and --out are required');
  const prompts = await readPromptFile(v.prompts);
  const engine = await loadEngine(parsed.positionals[0], engineOptions(v));
  try {
    const tensors = await traceTensors(engine, prompts.map((p) => p.prompt), { batchSize: positiveInt(v['batch-size'], '--batch-size') });
    const written = await writeSafetensors(v.out, tensors, { format: 'pt', producer: 'fgsn trace' });
    process.stdout.write(JSON.stringify({ out: v.out, prompts: prompts.length, tensors: tensors.length, bytes: written.bytes, sha256: written.sha256 }) + '\n');
  } finally {
    await engine.close();
  }
  return 0;
}
