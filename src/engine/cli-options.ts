/** Options shared by the engine commands (trace, generate). */
import { FgsnError } from '../errors.js';
import type { EngineOptions } from './engine.js';

export const ENGINE_OPTION_SPEC = {
  adapter: { type: 'string' },
  'lora-mode': { type: 'string' },
  'execution-provider': { type: 'string' },
  'compute-dtype': { type: 'string' },
  'cache-dir': { type: 'string' },
  'batch-size': { type: 'string' },
  threads: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const ENGINE_OPTION_HELP = `  --adapter <dir>              PEFT LoRA adapter applied on top of <model-dir>
  --lora-mode merged|matmul    merge the adapter into cached weights (default) or run it as extra MatMuls
  --execution-provider cpu|cuda  default FGSN_EXECUTION_PROVIDER or cpu
  --compute-dtype float32|float16  forward compute type (default FGSN_COMPUTE_DTYPE or float32; float16 is for GPUs)
  --cache-dir <dir>            graph cache (default FGSN_CACHE_DIR or <tmp>/fgsn-engine-cache)
  --batch-size N               sequences per onnxruntime run (default 16)
  --threads N                  onnxruntime intra-op threads`;

export function positiveInt(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new FgsnError('CLI_USAGE', `${flag} must be a positive integer, got "${v}"`);
  return n;
}

export function engineOptions(values: Record<string, string | boolean | undefined>): EngineOptions {
  const mode = values['lora-mode'];
  if (mode !== undefined && mode !== 'merged' && mode !== 'matmul') throw new FgsnError('CLI_USAGE', `--lora-mode must be merged or matmul, got "${String(mode)}"`);
  const ep = values['execution-provider'];
  if (ep !== undefined && ep !== 'cpu' && ep !== 'cuda') throw new FgsnError('CLI_USAGE', `--execution-provider must be cpu or cuda, got "${String(ep)}"`);
  const compute = values['compute-dtype'];
  if (compute !== undefined && compute !== 'float32' && compute !== 'float16') throw new FgsnError('CLI_USAGE', `--compute-dtype must be float32 or float16, got "${String(compute)}"`);
  return {
    adapter: values.adapter as string | undefined,
    loraMode: mode,
    executionProvider: ep,
    compute,
    cacheDir: values['cache-dir'] as string | undefined,
    threads: positiveInt(values.threads as string | undefined, '--threads'),
  };
}
