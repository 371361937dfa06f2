import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FgsnError } from '../errors.js';
import { runHarden, targetLine } from '../pipeline/index.js';
import { readProbes } from '../probes.js';
import { DEFENSE_METHODS, parseMethodOptions } from '../defense/index.js';
import type { HardenRequest, OutputKind } from '../pipeline/index.js';
import { type FlagValues, effectiveConfig, mergeFlags, readHardenConfig } from './harden-config.js';
import { defaultCacheDir, readEvalSets } from './harden-shared.js';
import { OPTION_FLAGS, methodFlag, methodsHelp } from './method-flags.js';
import { createProgress, progressMode } from './progress.js';

const USAGE = `usage: fgsn harden --base DIR --aligned DIR (--finetuned DIR | --adapter DIR)
                   --harmful H.jsonl --benign B.jsonl [--task T.jsonl] --out DIR
                   [--method ${DEFENSE_METHODS.join('|')}] [--format model|diff|adapter|report]...
                   [--<option> VALUE]... [--option key=value]...
                   [--eval-harmful F] [--eval-emerging F] [--eval-lookalike F] [--eval-task NAME=F]...
                   [--cache-dir DIR] [--execution-provider cpu|cuda] [--quiet | --json] [--config harden.yaml]
                   [--require-target]
Probe files: JSONL {"prompt", "category"?, "response"?}.
--config FILE: every option above as YAML keys (long flag names; format: [..]; option: {k: v};
  eval-task: {name: file}); paths relative to the file; flags on the command line win. A report.json is
  accepted too and replays its run (report.json records the effective config).
Progress: a bar with elapsed time and ETA on a terminal, plain lines otherwise; --json prints NDJSON events
  ({"event":"progress",...} then {"event":"result",...}) on stdout.
The last line of the output says whether the safety target was reached (with --json: the result event's
summary.target); with --require-target the exit status is 3 when it was not.

${methodsHelp()}`;

/** Exit status of `fgsn harden --require-target` when the job finished but missed its safety target. */
export const EXIT_TARGET_MISSED = 3;

export async function run(args: string[]): Promise<number> {
  const stringOpts = Object.fromEntries(Object.keys(OPTION_FLAGS).map((k) => [k, { type: 'string' as const }]));
  const { values: cli } = parseArgs({
    args,
    options: {
      base: { type: 'string' }, aligned: { type: 'string' }, finetuned: { type: 'string' }, adapter: { type: 'string' },
      harmful: { type: 'string' }, benign: { type: 'string' }, task: { type: 'string' }, out: { type: 'string' },
      method: { type: 'string' }, format: { type: 'string', multiple: true }, option: { type: 'string', multiple: true },
      'eval-harmful': { type: 'string' }, 'eval-emerging': { type: 'string' }, 'eval-lookalike': { type: 'string' },
      'eval-task': { type: 'string', multiple: true }, 'cache-dir': { type: 'string' }, 'execution-provider': { type: 'string' },
      quiet: { type: 'boolean' }, help: { type: 'boolean' }, json: { type: 'boolean' }, config: { type: 'string' }, 'require-target': { type: 'boolean' },
      ...stringOpts,
    },
    strict: true,
  });
  if (cli.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const stringFlags = ['base', 'aligned', 'finetuned', 'adapter', 'harmful', 'benign', 'task', 'out', 'method', 'eval-harmful', 'eval-emerging', 'eval-lookalike', 'cache-dir', 'execution-provider', ...Object.keys(OPTION_FLAGS)];
  const values = (cli.config ? mergeFlags(await readHardenConfig(cli.config, stringFlags), cli as FlagValues) : cli) as typeof cli;
  for (const k of ['base', 'aligned', 'harmful', 'benign', 'out'] as const) {
    if (!values[k]) throw new FgsnError('CLI_USAGE', `--${k} is required\n${USAGE}`);
  }
  if (!values.finetuned === !values.adapter) throw new FgsnError('CLI_USAGE', `give exactly one of --finetuned and --adapter\n${USAGE}`);
  const options: Record<string, unknown> = {};
  for (const [flag, key] of Object.entries(OPTION_FLAGS)) {
    const v = (values as Record<string, unknown>)[flag];
    if (typeof v === 'string') options[key] = v;
  }
  for (const kv of values.option ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new FgsnError('CLI_USAGE', `--option needs key=value, got "${kv}"`);
    options[kv.slice(0, i)] = kv.slice(i + 1);
  }
  // Checked at the edge, before any file is read: a bad option fails at once, naming the field.
  const method = methodFlag(values.method);
  parseMethodOptions(method, options);
  const ep = values['execution-provider'];
  if (ep !== undefined && ep !== 'cpu' && ep !== 'cuda') throw new FgsnError('CLI_USAGE', '--execution-provider is cpu or cuda');
  const evaluate = await readEvalSets(values);
  const req: HardenRequest = {
    basePath: resolve(values.base!),
    alignedPath: resolve(values.aligned!),
    ...(values.finetuned ? { finetunedPath: resolve(values.finetuned) } : { adapterPath: resolve(values.adapter!) }),
    harmful: await readProbes(values.harmful!),
    benign: await readProbes(values.benign!),
    ...(values.task ? { task: await readProbes(values.task) } : {}),
    method,
    options,
    outputs: (values.format ?? ['model']) as OutputKind[],
    outDir: resolve(values.out!),
    cacheDir: resolve(values['cache-dir'] ?? defaultCacheDir()),
    ...(ep ? { executionProvider: ep } : {}),
    ...(evaluate ? { evaluate } : {}),
    config: effectiveConfig(values as FlagValues),
  };
  const progress = createProgress('harden', progressMode(values));
  let result;
  try {
    result = await runHarden(req, { onProgress: (p) => progress.update(p) });
  } catch (e) {
    progress.done();
    throw e;
  }
  progress.done({ out: req.outDir, summary: result.summary, artifacts: result.artifacts.map((a) => a.name) });
  // The last line, always: a missed target is never silent (in --json mode the result event carries it).
  const d = result.summary.targetDetails;
  if (!values.json) {
    process.stdout.write(targetLine({
      target: result.summary.target,
      ...(d ? { targetAsr: d.targetAsr, rule: d.rule, ...(d.probeAsr !== null ? { probeAsr: d.probeAsr } : {}) } : {}),
      pctLinearParams: result.summary.paramsChangedPctLinear,
    }) + '\n');
  }
  if (values['require-target'] && result.summary.target === 'not reached') return EXIT_TARGET_MISSED;
  return 0;
}
