/**
 * `fgsn attribute <model-dir> --probes <file.jsonl> --direction NAME=A:B ... --out <scores.safetensors>`:
 * first-order attribution scores <dL/dW[r,:], M[r,:]> of every linear weight row (src/engine/attribution).
 */
import { parseArgs } from 'node:util';
import { LoraAdapter, ModelCheckpoint, type TensorSource, writeSafetensors } from '../checkpoint/index.js';
import {
  adapterDirection, attributionScores, checkpointDifference, type DirectionSource, positiveInt, readPromptFile,
} from '../engine/index.js';
import { FgsnError } from '../errors.js';

const HELP = `usage: fgsn attribute <model-dir> --probes <file.jsonl> --direction NAME=A_DIR:B_DIR [...] --out <scores.safetensors> [options]

Loss: NLL of each line's response tokens (chat template of <model-dir>) under <model-dir> (+ --adapter).
Writes float32 tensors "<NAME>.<weight name>" [out] = <dLoss/dW[r, :], M[r, :]> for every linear weight,
with M = weights of A_DIR - weights of B_DIR (or an adapter's scaling * B A). Prints a JSON summary.

  --probes <file.jsonl>          lines {"prompt", "<response-field>"}
  --response-field NAME          field holding the response (default "response"; the testbed's is "refusal")
  --direction NAME=A_DIR:B_DIR   direction set M = A - B (repeatable)
  --adapter-direction NAME=DIR   direction set M = scaling * B A of a PEFT LoRA adapter over <model-dir>
  --adapter <dir>                PEFT LoRA adapter applied on top of <model-dir> for the loss
  --reduction mean|sum           mean over all response tokens (default) or sum
  --batch-size N                 sequences per onnxruntime run (default 8)
  --max-direction-mb N           memory for direction inputs per pass (default: a quarter of the checkpoint, 64-1024; smaller = more passes)
  --execution-provider cpu|cuda  default cpu
  --cache-dir <dir>              graph cache (default FGSN_CACHE_DIR or <tmp>/fgsn-engine-cache)
  --threads N                    onnxruntime intra-op threads
`;

function splitNamed(v: string, flag: string): [string, string] {
  const i = v.indexOf('=');
  if (i <= 0 || i === v.length - 1) throw new FgsnError('CLI_USAGE', `${flag} expects NAME=VALUE, got "${v}"`);
  return [v.slice(0, i), v.slice(i + 1)];
}

export async function run(args: string[]): Promise<number> {
  const parsed = parseArgs({
    args,
    allowPositionals: true,
    options: {
      probes: { type: 'string' },
      'response-field': { type: 'string' },
      direction: { type: 'string', multiple: true },
      'adapter-direction': { type: 'string', multiple: true },
      adapter: { type: 'string' },
      reduction: { type: 'string' },
      'batch-size': { type: 'string' },
      'max-direction-mb': { type: 'string' },
      'execution-provider': { type: 'string' },
      'cache-dir': { type: 'string' },
      threads: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.positionals.length !== 1) throw new FgsnError('CLI_USAGE', 'attribute: expected exactly one <model-dir>');
  if (v.probes === undefined || v.out === undefined) throw new FgsnError('CLI_USAGE', 'attribute: --probes and --out are required');
  const reduction = v.reduction ?? 'mean';
  if (reduction !== 'mean' && reduction !== 'sum') throw new FgsnError('CLI_USAGE', `--reduction must be mean or sum, got "${reduction}"`);
  const ep = v['execution-provider'];
  if (ep !== undefined && ep !== 'cpu' && ep !== 'cuda') throw new FgsnError('CLI_USAGE', `--execution-provider must be cpu or cuda, got "${ep}"`);
  const model = parsed.positionals[0];
  const field = v['response-field'] ?? 'response';
  const sequences = (await readPromptFile(v.probes)).map((p, i) => {
    const response = p.extra[field];
    if (typeof response !== 'string') throw new FgsnError('PROBES_INVALID', `${v.probes}: line ${i + 1} has no string "${field}"`, { details: { file: v.probes, index: i } });
    return { prompt: p.prompt, response };
  });
  const maxMb = positiveInt(v['max-direction-mb'], '--max-direction-mb');

  const opened: { close(): Promise<void> }[] = [];
  try {
    const directions: DirectionSource[] = [];
    for (const d of v.direction ?? []) {
      const [name, pair] = splitNamed(d, '--direction');
      const [a, b, ...rest] = pair.split(':');
      if (a === undefined || b === undefined || a === '' || b === '' || rest.length > 0) throw new FgsnError('CLI_USAGE', `--direction expects NAME=A_DIR:B_DIR, got "${d}"`);
      const ca = await ModelCheckpoint.open(a);
      opened.push(ca);
      const cb = await ModelCheckpoint.open(b);
      opened.push(cb);
      directions.push(checkpointDifference(name, ca, cb));
    }
    if ((v['adapter-direction'] ?? []).length > 0) {
      const base = await ModelCheckpoint.open(model);
      opened.push(base);
      for (const d of v['adapter-direction'] ?? []) {
        const [name, dir] = splitNamed(d, '--adapter-direction');
        const ad = await LoraAdapter.open(dir, base.spec);
        opened.push(ad);
        directions.push(adapterDirection(name, ad, base.spec));
      }
    }
    if (directions.length === 0) throw new FgsnError('CLI_USAGE', 'attribute: give at least one --direction or --adapter-direction');
    const res = await attributionScores({
      model,
      adapter: v.adapter,
      sequences,
      directions,
      reduction,
      batchSize: positiveInt(v['batch-size'], '--batch-size'),
      maxDirectionBytes: maxMb === undefined ? undefined : maxMb * 2 ** 20,
      executionProvider: ep,
      cacheRoot: v['cache-dir'],
      threads: positiveInt(v.threads, '--threads'),
    });
    const tensors: TensorSource[] = [];
    for (const [dname, m] of res.scores) {
      for (const [w, s] of m) tensors.push({ name: `${dname}.${w}`, dtype: 'F32', shape: [s.length], data: () => new Uint8Array(s.buffer, s.byteOffset, s.byteLength) });
    }
    const written = await writeSafetensors(v.out, tensors, {
      format: 'pt', producer: 'fgsn attribute', loss: String(res.loss), reduction: res.reduction, tokens: String(res.tokens),
    });
    process.stdout.write(JSON.stringify({
      out: v.out, sequences: sequences.length, tokens: res.tokens, loss: res.loss, reduction: res.reduction,
      directions: [...res.scores.keys()], tensors: tensors.length, layerChunks: res.layerChunks, seconds: res.seconds, sha256: written.sha256,
    }) + '\n');
  } finally {
    for (const o of opened.reverse()) await o.close();
  }
  return 0;
}
