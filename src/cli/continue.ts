import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FgsnError } from '../errors.js';
import { runContinue } from '../pipeline/index.js';
import { readProbes } from '../probes.js';
import { defaultCacheDir } from './harden-shared.js';

const USAGE = `usage: fgsn continue --hardened DIR --category NAME --probes P.jsonl --out DIR [--task T.jsonl]
                     [--target-asr A|off] [--max-extra-params PCT] [--exact-tolerance T] [--q SHARE]
                     [--strength G] [--mode MODE] [--cache-dir DIR] [--execution-provider cpu|cuda] [--quiet]
Patches the output of an earlier \`fgsn harden\` (DIR holds report.json and model/) for a new harm category:
only rows not projected before are edited; the report gives the extra share of parameters.
Default: nothing is edited when the hardened model already refuses the category's probes (--target-asr,
default the hardening job's); otherwise a guarded search grows the patch until they are refused and the NLL
of the aligned model's refusals is halved toward the aligned model's,
while task probes (--task), the atlas' benign probes' exact match (--exact-tolerance, default 0.02) and
their refusals stay within tolerance of the hardened model; at most --max-extra-params % (default 1).
--q SHARE (or --target-asr off) patches a fixed share of rows at the hardening job's final strength.`;

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      hardened: { type: 'string' }, category: { type: 'string' }, probes: { type: 'string' }, out: { type: 'string' },
      q: { type: 'string' }, 'target-asr': { type: 'string' }, task: { type: 'string' }, 'exact-tolerance': { type: 'string' }, 'max-extra-params': { type: 'string' }, strength: { type: 'string' },
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
  const targetAsr = values['target-asr'] === 'off' ? 'off' as const : num('target-asr', values['target-asr']);
  const exactTolerance = num('exact-tolerance', values['exact-tolerance']);
  const maxExtraParams = num('max-extra-params', values['max-extra-params']);
  const r = await runContinue({
    hardenedDir: resolve(values.hardened!), category: values.category!, probes: await readProbes(values.probes!), outDir: resolve(values.out!),
    cacheDir: resolve(values['cache-dir'] ?? defaultCacheDir()), options,
    ...(q !== undefined ? { q } : {}), ...(targetAsr !== undefined ? { targetAsr } : {}), ...(maxExtraParams !== undefined ? { maxExtraParams } : {}),
    ...(exactTolerance !== undefined ? { exactTolerance } : {}), ...(values.task ? { task: await readProbes(values.task) } : {}),
    ...(ep ? { executionProvider: ep } : {}),
  }, {
    onProgress: (p) => {
      if (!values.quiet) process.stderr.write(`[${p.percent.toFixed(0).padStart(3)}%] ${p.stage}${p.message ? `: ${p.message}` : ''}\n`);
    },
  });
  process.stdout.write(JSON.stringify({ out: values.out, extraRows: r.extraRows, extraPctLinear: r.extraPctLinear, totalPctLinear: r.totalPctLinear }, null, 2) + '\n');
  return 0;
}
