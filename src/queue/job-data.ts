import type { HardenRequest } from '../pipeline/index.js';

/**
 * A probe set by reference: its NDJSON lives in the blob store under `key`; the worker checks `sha256`
 * before use. Job data stays small however large the sets are, and is not copied per slot or per job.
 */
export interface ProbeRef {
  id: string;
  key: string;
  sha256: string;
  count: number;
}

/** The pipeline request minus what the worker decides itself, with probe sets by reference. */
export interface HardenJobInput extends Omit<HardenRequest, 'outDir' | 'cacheDir' | 'executionProvider' | 'harmful' | 'benign' | 'task' | 'evaluate'> {
  harmful: ProbeRef;
  benign: ProbeRef;
  task?: ProbeRef;
  evaluate?: {
    harmful?: ProbeRef;
    emerging?: ProbeRef;
    lookalike?: ProbeRef;
    /** Task name -> probe set whose `response` is the expected answer. */
    tasks?: Record<string, ProbeRef>;
    maxNewTokens?: number;
  };
}

/** What every job carries in Redis, whatever its kind. */
interface JobDataBase {
  jobId: string;
  tenant: string;
  /** events: 'terminal' (always) and 'stage' (a job.stage delivery at every stage change). */
  webhook?: { url: string; secret?: string; events?: ('terminal' | 'stage')[] };
  /** The request as the client sent it (secrets removed), echoed in status and webhooks. */
  request: Record<string, unknown>;
}

/**
 * What a harden job carries in Redis: everything resolved by the API at submission (server-side paths of
 * the checkpoints, probe-set references), so a worker needs neither the API's records nor its authorization.
 * `kind` is absent on jobs queued before continue jobs existed: absent means harden.
 */
export interface HardenJobData extends JobDataBase {
  kind?: 'harden';
  input: HardenJobInput;
}

/**
 * A continue job (POST /v1/jobs/{id}/continue): patches the published output of a completed job of the
 * same tenant for a new harm category (pipeline/continue.ts). The checkpoint paths are the source job's,
 * resolved again by the API: the worker needs them to open the base and aligned models, and the path
 * scrubber needs them to keep them out of what the tenant sees.
 */
export interface ContinueJobInput {
  /** The completed job whose published artifacts (report.json, model/) the patch starts from. */
  sourceJobId: string;
  basePath: string;
  alignedPath: string;
  finetunedPath?: string;
  adapterPath?: string;
  category: string;
  /** The new category's harmful probes. */
  probes: ProbeRef;
  task?: ProbeRef;
  /**
   * The atlas probe sets of the job chain's first (harden) job: when the cached atlas the source's report
   * names was evicted, the worker rebuilds it from these (same inputs, same id).
   */
  atlasProbes?: { harmful: ProbeRef; benign: ProbeRef };
  /** Artifacts to publish: model, diff, report (default all three). */
  outputs?: ('model' | 'diff' | 'report')[];
  q?: number;
  targetAsr?: number | 'off';
  maxExtraParams?: number;
  exactTolerance?: number;
  options?: Record<string, unknown>;
}

export interface ContinueJobData extends JobDataBase {
  kind: 'continue';
  input: ContinueJobInput;
}

/**
 * What of a job's published output a continue job needs: the report and the model folder it patches. Here,
 * not in run-continue.ts, so the API can check a source job without loading the pipeline.
 */
export function continuableArtifacts(artifacts: { name: string }[]): boolean {
  return artifacts.some((a) => a.name === 'report.json') && artifacts.some((a) => a.name.startsWith('model/') && a.name.endsWith('.safetensors'));
}

/** Any job of the queue; the processor dispatches on `kind` (absent = harden). */
export type FgsnJobData = HardenJobData | ContinueJobData;

/** Progress as the processor reports it through BullMQ's updateProgress. */
export interface HardenProgress {
  stage: string;
  percent: number;
  message?: string;
  /** Seconds spent in each finished stage, in order. */
  timings: Record<string, number>;
  attempt: number;
}

export interface HardenJobResult {
  artifacts: { name: string; bytes: number; sha256: string }[];
  summary: Record<string, unknown>;
  timings: Record<string, number>;
}

/** How the processor reports a coded failure through BullMQ's string failedReason. */
export const CODED_ERROR_PREFIX = 'FGSN ';

export interface CodedError {
  code: string;
  message: string;
  details?: unknown;
}

export function encodeCodedError(e: CodedError): string {
  return CODED_ERROR_PREFIX + JSON.stringify(e);
}

export function decodeCodedError(failedReason: string | undefined): CodedError | undefined {
  if (failedReason === undefined || failedReason === '') return undefined;
  if (failedReason.startsWith(CODED_ERROR_PREFIX)) {
    try {
      return JSON.parse(failedReason.slice(CODED_ERROR_PREFIX.length)) as CodedError;
    } catch {
      // fall through: report the raw text
    }
  }
  if (/stalled more than allowable limit/i.test(failedReason)) {
    return { code: 'WORKER_LOST', message: failedReason };
  }
  if (/^Unexpected exit code/.test(failedReason)) {
    // The sandboxed processor died (out of memory, killed): the worker itself lived on.
    return { code: 'WORKER_LOST', message: `the job's processor process died (${failedReason})` };
  }
  return { code: 'INTERNAL', message: failedReason };
}
