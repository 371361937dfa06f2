import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FgsnError } from '../errors.js';
import { runContinue } from '../pipeline/continue.js';
import { readProbes } from '../pipeline/probes.js';
import { defaultCacheDir } from './harden-shared.js';

const USAGE = `usage: fgsn continue --hardened DIR --category NAME --probes P.jsonl --out DIR
                     [--q SHARE] [--target-asr A] [--max-extra-params PCT] [--strength G] [--mode MODE]
                     [--cache-dir DIR] [--execution-provider cpu|cuda] [--quiet]
Patches the output of an earlier \`fgsn harden\` (DIR holds report.json and model/) for a new harm category:
only rows not projected before are edited; the report gives the extra share of parameters.`;

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      hardened: { type: 'string' }, category: { type: 'string' }, probes: { type: 'string' }, out: { type: 'string' },
      q: { type: 'string' }, 'target-asr': { type: 'string' }, 'max-extra-params': { type: 'string' }, strength: { type: 'string' },
      mode: { type: 'string' }, 'cache-dir': { type: 'string' }, 'execution-provider': { type: 'string' }, quiet: { type: 'boolean' }, help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  for (const k of ['hardened', 'category', 'probes', 'out'] as const) {
    if (!values[k]) throw new FgsnError('CLI_USAGE', `--${k} is required\n${USAGE}`);
  }
  const num = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new FgsnError('CLI_USAGE', `--${name} must be a non-negative number`);
    return n;
  };
  const options: Record<string, unknown> = {};
  if (values.strength) options.strength = values.strength;
  if (values.mode) options.mode = values.mode;
  const ep = values['execution-provider'];
  if (ep !== undefined && ep !== 'cpu' && ep !== 'cuda') throw new FgsnError('CLI_USAGE', '--execution-provider is cpu or cuda');
  const q = num('q', values.q);
  const targetAsr = num('target-asr', values['target-asr']);
  const maxExtraParams = num('max-extra-params', values['max-extra-params']);
  const r = await runContinue({
    hardenedDir: resolve(values.hardened!), category: values.category!, probes: await readProbes(values.probes!), outDir: resolve(values.out!),
    cacheDir: resolve(values['cache-dir'] ?? defaultCacheDir()), options,
    ...(q !== undefined ? { q } : {}), ...(targetAsr !== undefined ? { targetAsr } : {}), ...(maxExtraParams !== undefined ? { maxExtraParams } : {}),
    ...(ep ? { executionProvider: ep } : {}),
  }, {
    onProgress: (p) => {
      if (!values.quiet) process.stderr.write(`[${p.percent.toFixed(0).padStart(3)}%] ${p.stage}${p.message ? `: ${p.message}` : ''}\n`);
    },
  });
  process.stdout.write(JSON.stringify({ out: values.out, extraRows: r.extraRows, extraPctLinear: r.extraPctLinear, totalPctLinear: r.totalPctLinear }, null, 2) + '\n');
  return 0;
}
