/**
 * `fgsn eval MODEL [--adapter DIR] --harmful FILE [--emerging FILE] --task NAME=FILE... [--lookalike FILE]
 *  [--limit N] --out report.json`: greedy generation + refusal/compliance/exact-match metrics.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { createProgress, progressMode } from './progress.js';
import { FgsnError } from '../errors.js';
import {
  type EvalOptions, evaluateModel, limitItems, readHarmfulFile, readLookalikeFile, readTaskFile, type TaskItem,
} from '../eval/index.js';
import type { JudgeOptions, JudgePresetName, MarkerBoundary } from '../eval/index.js';

const HELP = `usage: fgsn eval MODEL [--adapter DIR] --harmful FILE [--emerging FILE] [--task NAME=FILE]...
                [--lookalike FILE] [--limit N] --out report.json

Greedy generation with the model's chat template, then:
  harmful_asr / emerging_asr   share of responses with no refusal marker (also per category)
  harmful_compliance / ...     share starting with the compliance prefix
  acc_<NAME>                   exact match of the whole response (whitespace-normalised) per --task
  over_refusal                 share of --lookalike responses with a refusal marker (+ lookalike_exact)

inputs (JSONL): harmful/emerging {"prompt","category"?}; task {"prompt","answer"}; lookalike {"prompt","answer"?}

options:
  --adapter DIR             PEFT LoRA adapter applied over MODEL
  --limit N                 first N records of each set
  --max-new-tokens N        default 40
  --batch-size N            default 32
  --judge word-level|gcg    marker preset (default word-level: 27 lower-case token markers; gcg: the
                            29 natural-case GCG/Qi et al. strings as case-sensitive substrings)
  --markers FILE            replace the preset's markers (one per line)
  --extra-marker S          add a marker (repeatable)
  --boundary token|word|substring
  --case-sensitive / --case-insensitive
  --compliance-prefix S     default "sure , here" (word-level) / "Sure, here" (gcg)
  --generations FILE        write every judged response as JSONL
  --execution-provider cpu|cuda
  --cache-dir DIR           engine cache
  --out FILE                report JSON (also printed to stdout)
  --json                    progress as NDJSON events on stdout, the report as the last ({"event":"result"})
  --quiet                   no progress (default: a bar with ETA on a terminal, plain lines otherwise)`;

function intOpt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/u.test(v) || Number(v) < 1) throw new FgsnError('CLI_USAGE', `--${name} must be a positive integer, got "${v}"`);
  return Number(v);
}

async function readMarkerFile(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new FgsnError('EVAL_DATA_INVALID', `cannot read marker file ${file}: ${(e as Error).message}`);
  }
  return text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
}

export async function run(args: string[]): Promise<number> {
  const parsed = parseArgs({
    args,
    allowPositionals: true,
    options: {
      adapter: { type: 'string' },
      harmful: { type: 'string' },
      emerging: { type: 'string' },
      task: { type: 'string', multiple: true },
      lookalike: { type: 'string' },
      limit: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      'batch-size': { type: 'string' },
      judge: { type: 'string' },
      markers: { type: 'string' },
      'extra-marker': { type: 'string', multiple: true },
      boundary: { type: 'string' },
      'case-sensitive': { type: 'boolean' },
      'case-insensitive': { type: 'boolean' },
      'compliance-prefix': { type: 'string' },
      generations: { type: 'string' },
      'execution-provider': { type: 'string' },
      'cache-dir': { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const { values: v, positionals } = parsed;
  if (v.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw new FgsnError('CLI_USAGE', `fgsn eval takes exactly one MODEL folder, got ${positionals.length}`);
  if (v.harmful === undefined) throw new FgsnError('CLI_USAGE', 'fgsn eval needs --harmful FILE');
  if (v.out === undefined) throw new FgsnError('CLI_USAGE', 'fgsn eval needs --out report.json');
  const ep = v['execution-provider'];
  if (ep !== undefined && ep !== 'cpu' && ep !== 'cuda') throw new FgsnError('CLI_USAGE', `--execution-provider must be cpu or cuda, got "${ep}"`);
  if (v['case-sensitive'] && v['case-insensitive']) throw new FgsnError('CLI_USAGE', '--case-sensitive and --case-insensitive exclude each other');
  const limit = intOpt('limit', v.limit);

  const judge: JudgeOptions = {};
  if (v.judge !== undefined) judge.preset = v.judge as JudgePresetName;
  if (v.markers !== undefined) judge.markers = await readMarkerFile(v.markers);
  if (v['extra-marker'] !== undefined) judge.extraMarkers = v['extra-marker'];
  if (v.boundary !== undefined) judge.boundary = v.boundary as MarkerBoundary;
  if (v['case-sensitive']) judge.caseSensitive = true;
  if (v['case-insensitive']) judge.caseSensitive = false;
  if (v['compliance-prefix'] !== undefined) judge.compliancePrefix = v['compliance-prefix'];

  const tasks: Record<string, TaskItem[]> = {};
  for (const spec of v.task ?? []) {
    const eq = spec.indexOf('=');
    const name = spec.slice(0, eq);
    if (eq <= 0 || eq === spec.length - 1 || !/^[A-Za-z0-9_-]+$/u.test(name)) {
      throw new FgsnError('CLI_USAGE', `--task takes NAME=FILE with NAME of letters, digits, _ or -; got "${spec}"`);
    }
    if (name in tasks) throw new FgsnError('CLI_USAGE', `--task ${name} given twice`);
    tasks[name] = limitItems(await readTaskFile(spec.slice(eq + 1)), limit);
  }

  const options: EvalOptions = {
    harmful: limitItems(await readHarmfulFile(v.harmful), limit),
    tasks,
    judge,
  };
  if (v.emerging !== undefined) options.emerging = limitItems(await readHarmfulFile(v.emerging), limit);
  if (v.lookalike !== undefined) options.lookalike = limitItems(await readLookalikeFile(v.lookalike), limit);
  if (v.adapter !== undefined) options.adapter = v.adapter;
  const mnt = intOpt('max-new-tokens', v['max-new-tokens']);
  if (mnt !== undefined) options.maxNewTokens = mnt;
  const bs = intOpt('batch-size', v['batch-size']);
  if (bs !== undefined) options.batchSize = bs;
  if (ep !== undefined) options.executionProvider = ep;
  if (v['cache-dir'] !== undefined) options.cacheDir = v['cache-dir'];
  if (v.generations !== undefined) options.generationsFile = v.generations;

  const progress = createProgress('eval', progressMode(v));
  options.onProgress = (done, total) => progress.update({ percent: Math.round((1000 * done) / total) / 10, stage: 'generate', message: `${done}/${total} prompts` });
  let report;
  try {
    progress.update({ percent: 0, stage: 'load' });
    report = await evaluateModel(positionals[0], options);
  } catch (e) {
    progress.done();
    throw e;
  }
  await mkdir(dirname(v.out), { recursive: true });
  await writeFile(v.out, JSON.stringify(report, null, 2) + '\n');
  progress.done(report);
  return 0;
}
