import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FgsnError } from '../errors.js';
import { runHarden } from '../pipeline/harden.js';
import { targetLine } from '../pipeline/policy.js';
import { readProbes } from '../pipeline/probes.js';
import type { DefenseMethod, HardenRequest, OutputKind } from '../pipeline/types.js';
import { defaultCacheDir, readEvalSets } from './harden-shared.js';

const USAGE = `usage: fgsn harden --base DIR --aligned DIR (--finetuned DIR | --adapter DIR)
                   --harmful H.jsonl --benign B.jsonl [--task T.jsonl] --out DIR
                   [--method fgsn|safelora|layer|antidote|resta|restore] [--format model|diff|adapter|report]...
                   [--q SHARE] [--p SHARE] [--scoring attribution|wanda|contrastive|delta] [--scope global|per-matrix]
                   [--mode add|gram|subspace|row|restore] [--strength G] [--alpha A] [--layers all|band|10-15]
                   [--band-share S] [--energy-share S] [--target-asr A] [--max-params PCT] [--task-tolerance T]
                   [--threshold TAU] [--top-k K] [--share S] [--gamma G] [--option key=value]...
                   [--eval-harmful F] [--eval-emerging F] [--eval-lookalike F] [--eval-task NAME=F]...
                   [--cache-dir DIR] [--execution-provider cpu|cuda] [--quiet] [--require-target]
                   [--utility-ceiling SHARE] [--miss-policy safety-first|guardrails-only] [--judge-share SHARE]
Probe files: JSONL {"prompt", "category"?, "response"?}.
The last line of the output says whether the safety target was reached; with --require-target the exit
status is 3 when it was not.`;

/** CLI flag -> method option key. */
const OPTION_FLAGS: Record<string, string> = {
  q: 'q', p: 'p', scoring: 'scoring', scope: 'scope', mode: 'mode', strength: 'strength', alpha: 'alpha', layers: 'layers',
  'band-share': 'bandShare', 'energy-share': 'energyShare', 'target-asr': 'targetAsr', 'max-params': 'maxParams',
  'task-tolerance': 'taskTolerance', threshold: 'threshold', 'top-k': 'topK', share: 'share', gamma: 'gamma',
  'utility-ceiling': 'utilityCeiling', 'miss-policy': 'missPolicy', 'judge-share': 'judgeShare',
};

/** Exit status of `fgsn harden --require-target` when the job finished but missed its safety target. */
export const EXIT_TARGET_MISSED = 3;

export async function run(args: string[]): Promise<number> {
  const stringOpts = Object.fromEntries(Object.keys(OPTION_FLAGS).map((k) => [k, { type: 'string' as const }]));
  const { values } = parseArgs({
    args,
    options: {
      base: { type: 'string' }, aligned: { type: 'string' }, finetuned: { type: 'string' }, adapter: { type: 'string' },
      harmful: { type: 'string' }, benign: { type: 'string' }, task: { type: 'string' }, out: { type: 'string' },
      method: { type: 'string' }, format: { type: 'string', multiple: true }, option: { type: 'string', multiple: true },
      'eval-harmful': { type: 'string' }, 'eval-emerging': { type: 'string' }, 'eval-lookalike': { type: 'string' },
      'eval-task': { type: 'string', multiple: true }, 'cache-dir': { type: 'string' }, 'execution-provider': { type: 'string' },
      quiet: { type: 'boolean' }, help: { type: 'boolean' }, 'require-target': { type: 'boolean' },
      ...stringOpts,
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
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
    method: (values.method ?? 'fgsn') as DefenseMethod,
    options,
    outputs: (values.format ?? ['model']) as OutputKind[],
    outDir: resolve(values.out!),
    cacheDir: resolve(values['cache-dir'] ?? defaultCacheDir()),
    ...(ep ? { executionProvider: ep } : {}),
    ...(evaluate ? { evaluate } : {}),
  };
  const result = await runHarden(req, {
    onProgress: (p) => {
      if (!values.quiet) process.stderr.write(`[${p.percent.toFixed(0).padStart(3)}%] ${p.stage}${p.message ? `: ${p.message}` : ''}\n`);
    },
  });
  process.stdout.write(JSON.stringify({ out: req.outDir, summary: result.summary, artifacts: result.artifacts.map((a) => a.name) }, null, 2) + '\n');
  // The last line, always: a missed target is never silent.
  const d = result.summary.targetDetails;
  process.stdout.write(targetLine({
    target: result.summary.target,
    ...(d ? { targetAsr: d.targetAsr, rule: d.rule, ...(d.probeAsr !== null ? { probeAsr: d.probeAsr } : {}) } : {}),
    pctLinearParams: result.summary.paramsChangedPctLinear,
  }) + '\n');
  if (values['require-target'] && result.summary.target === 'not reached') return EXIT_TARGET_MISSED;
  return 0;
}
