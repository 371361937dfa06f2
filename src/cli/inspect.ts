/**
 * `fgsn inspect <dir|file>`: validates a model folder, PEFT adapter folder or safetensors file and prints
 * what it is as JSON. Bad input throws a coded FgsnError, which main prints and turns into exit status 2.
 */
import { parseArgs } from 'node:util';
import { describeCheckpoint } from '../checkpoint/index.js';
import { FgsnError } from '../errors.js';

const HELP = `usage: fgsn inspect <dir|file> [--no-hash] [--no-values] [--no-tensors]

Validates a checkpoint (HF model folder, sharded or not; PEFT LoRA adapter folder; or one .safetensors
file) and prints JSON: architecture, dtype, parameter counts, tensors with shape/dtype, files with size
and sha256. Every float weight is checked for NaN/Inf in the same pass that hashes it. Exit status 2 with
a coded error on stderr when the input is invalid (CHECKPOINT_NON_FINITE names the tensor).

  --no-hash      skip the sha256 of each file
  --no-values    skip the NaN/Inf check; with --no-hash only headers are read (fast on very large checkpoints)
  --no-tensors   omit the per-tensor list
`;

export async function run(args: string[]): Promise<number> {
  const parsed = parseArgs({
    args,
    allowPositionals: true,
    options: { 'no-hash': { type: 'boolean' }, 'no-values': { type: 'boolean' }, 'no-tensors': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (parsed.values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.positionals.length !== 1) throw new FgsnError('CLI_USAGE', 'inspect: expected exactly one path (a folder or a .safetensors file)');
  const summary = await describeCheckpoint(parsed.positionals[0], { hash: !parsed.values['no-hash'], values: !parsed.values['no-values'] });
  const out = parsed.values['no-tensors'] ? { ...summary, tensors: undefined } : summary;
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  return 0;
}
