/**
 * `fgsn remote harden`: the same job as `fgsn harden`, run by a fgsn server. Uploads the three folders (or the
 * adapter), registers the reference, posts the probe files, submits, follows the job with the progress bar,
 * then downloads every artifact into --out with its sha256 checked against the job's artifact list.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FgsnApiError, FgsnClient, type JobRequest } from '../client/index.js';
import { FgsnError } from '../errors.js';
import { targetLine } from '../pipeline/index.js';
import { readProbes } from '../probes.js';
import { EXIT_TARGET_MISSED } from './harden.js';
import { createProgress, progressMode } from './progress.js';

const USAGE = `usage: fgsn remote harden --server URL [--key KEY] (--reference ID | --base DIR --aligned DIR) (--finetuned DIR | --adapter DIR)
                          [--harmful H.jsonl] [--benign B.jsonl] [--task T.jsonl] --out DIR
                          [--method M] [--format model|diff|adapter|report]... [--option key=value]...
                          [--quiet | --json] [--require-target]
--key defaults to $FGSN_API_KEY. --reference names a reference the operator registered (GET /v1/references);
--base/--aligned upload the pair and register it, which needs an admin key. Without --harmful/--benign the
server's built-in probe sets are used.
Each file is sent whole and sent again when a transfer fails; every artifact is downloaded into --out and
its sha256 checked against the job's list (a mismatch fails the command and leaves no file).
The last line says whether the safety target was reached; with --require-target the exit status is 3 when not.`;

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === 'help') {
    process.stdout.write(USAGE + '\n');
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'harden') throw new FgsnError('CLI_USAGE', `fgsn remote: unknown subcommand "${sub}" (remote harden)\n${USAGE}`);
  const { values } = parseArgs({
    args: rest,
    options: {
      server: { type: 'string' }, key: { type: 'string' }, reference: { type: 'string' }, base: { type: 'string' }, aligned: { type: 'string' }, finetuned: { type: 'string' },
      adapter: { type: 'string' }, harmful: { type: 'string' }, benign: { type: 'string' }, task: { type: 'string' }, out: { type: 'string' },
      method: { type: 'string' }, format: { type: 'string', multiple: true }, option: { type: 'string', multiple: true },
      quiet: { type: 'boolean' }, json: { type: 'boolean' }, 'require-target': { type: 'boolean' }, help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const key = values.key ?? process.env.FGSN_API_KEY;
  const model = values.finetuned ?? values.adapter;
  const pair = values.base !== undefined && values.aligned !== undefined;
  if (!values.server || !key || !model || !values.out || (values.finetuned && values.adapter) || pair === (values.reference !== undefined)) {
    throw new FgsnError('CLI_USAGE', `fgsn remote harden needs --server, --key (or FGSN_API_KEY), either --reference or --base with --aligned, one of --finetuned / --adapter, and --out\n${USAGE}`);
  }
  const options: Record<string, string> = {};
  for (const kv of values.option ?? []) {
    const at = kv.indexOf('=');
    if (at <= 0) throw new FgsnError('CLI_USAGE', `--option ${kv}: expected key=value`);
    options[kv.slice(0, at)] = kv.slice(at + 1);
  }
  const client = new FgsnClient(values.server, key);
  const progress = createProgress('remote harden', progressMode(values));
  try {
    const step = (stage: string, percent: number, message?: string): void => progress.update({ stage, percent, ...(message ? { message } : {}) });
    const upload = async (label: string, dir: string, at: number): Promise<string> => {
      step('upload', at, `${label}: ${dir}`);
      return (await client.uploadCheckpoint(resolve(dir), (name) => step('upload', at, `${label}: ${name}`))).id;
    };
    const ft = await upload(values.finetuned ? 'fine-tune' : 'adapter', model, 0);
    const reference = values.reference ?? (await client.createReference(await upload('aligned', values.aligned!, 3), await upload('base', values.base!, 6))).id;
    const probeSet = async (kind: 'harmful' | 'benign' | 'task', file: string | undefined): Promise<string | undefined> =>
      file === undefined ? undefined : (await client.createProbeSet(kind, await readProbes(resolve(file)))).id;
    const harmful = await probeSet('harmful', values.harmful);
    const benign = await probeSet('benign', values.benign);
    const task = await probeSet('task', values.task);
    const submitted = await client.submitJob({
      finetuned: ft, reference,
      ...(values.method ? { method: values.method as NonNullable<JobRequest['method']> } : {}),
      ...(Object.keys(options).length > 0 ? { options } : {}),
      ...(harmful || benign ? { probes: { ...(harmful ? { harmful } : {}), ...(benign ? { benign } : {}) } } : {}),
      ...(task ? { task } : {}),
      ...(values.format ? { outputs: values.format as NonNullable<JobRequest['outputs']> } : {}),
    });
    // The server's own progress (0-100) maps onto 10-95 here: uploads before, downloads after.
    const job = await client.waitForJob(submitted.id, (j) => step(j.stage ?? j.state, 10 + 0.85 * j.progress, `job ${j.id} ${j.state}`));
    if (job.state !== 'completed') {
      throw new FgsnError('REMOTE_JOB_FAILED', `job ${job.id} ended ${job.state}${job.error ? `: ${job.error.code}: ${job.error.message}` : ''}`, {
        details: { jobId: job.id, state: job.state, error: job.error },
      });
    }
    const out = resolve(values.out);
    const files = await client.downloadArtifacts(job.id, out, (name) => step('download', 97, name));
    const summary = (job.summary ?? {}) as { target?: 'reached' | 'not reached' | 'not set'; targetDetails?: { targetAsr: number; rule: string; probeAsr: number | null }; paramsChangedPctLinear?: number };
    progress.done({ out, jobId: job.id, summary: job.summary, artifacts: files.map((f) => ({ name: f.name, bytes: f.bytes, sha256: f.sha256 })) });
    if (!values.json) {
      const d = summary.targetDetails;
      process.stdout.write(targetLine({
        target: summary.target ?? 'not set',
        ...(d ? { targetAsr: d.targetAsr, rule: d.rule, ...(d.probeAsr !== null ? { probeAsr: d.probeAsr } : {}) } : {}),
        ...(summary.paramsChangedPctLinear !== undefined ? { pctLinearParams: summary.paramsChangedPctLinear } : {}),
      }) + '\n');
    }
    return values['require-target'] && summary.target === 'not reached' ? EXIT_TARGET_MISSED : 0;
  } catch (e) {
    progress.done();
    if (e instanceof FgsnApiError) {
      throw new FgsnError(e.code === 'REMOTE_UNREACHABLE' ? 'REMOTE_UNREACHABLE' : 'REMOTE_REQUEST_FAILED', e.message, {
        details: { status: e.status, code: e.code, ...(e.hint ? { serverHint: e.hint } : {}) },
      });
    }
    throw e;
  }
}
