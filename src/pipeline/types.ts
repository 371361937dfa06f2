/**
 * The contract between the callers of a defense job (CLI, BullMQ worker) and the pipeline that runs it.
 * The pipeline is the only place that knows the order of stages; callers see progress and artifacts.
 */

import type { DefenseMethod } from '../defense/index.js';
import type { ProbeRecord } from '../probes.js';

// Defined below this folder (defense and storage read them too); re-exported for the pipeline's callers.
export type { DefenseMethod, ProbeRecord };
export type OutputKind = 'model' | 'diff' | 'adapter' | 'report';

export interface HardenRequest {
  basePath: string;
  alignedPath: string;
  /** Exactly one of finetunedPath (full weights) and adapterPath (PEFT LoRA over aligned). */
  finetunedPath?: string;
  adapterPath?: string;
  harmful: ProbeRecord[];
  benign: ProbeRecord[];
  /** Task probes for task-neuron exclusion; default: benign. */
  task?: ProbeRecord[];
  method: DefenseMethod;
  /** Method options (validated by the defense module; unknown keys are an error). */
  options?: Record<string, unknown>;
  outputs: OutputKind[];
  /** Empty or missing folder the pipeline fills with the artifacts (callers publish it atomically). */
  outDir: string;
  /** Shared cache for atlases and built graphs (content-addressed, safe to share between jobs). */
  cacheDir: string;
  executionProvider?: 'cpu' | 'cuda';
  /** Optional evaluation sets for the report (probe records; `response` is the expected answer). */
  evaluate?: EvaluationRequest;
  /**
   * Names the report shows for the inputs instead of their paths (a service passes checkpoint ids or roles:
   * nothing a tenant sees may contain a path of the server). The CLI leaves it unset: its user gave the paths.
   */
  inputLabels?: { base: string; aligned: string; finetuned?: string; adapter?: string };
  /** The caller's effective configuration (the CLI's flags and --config), recorded in the report for replay. */
  config?: Record<string, unknown>;
}

export interface EvaluationRequest {
  harmful?: ProbeRecord[];
  emerging?: ProbeRecord[];
  lookalike?: ProbeRecord[];
  /** Task name -> probes whose `response` is the exact expected answer. */
  tasks?: Record<string, ProbeRecord[]>;
  maxNewTokens?: number;
}

export interface StageProgress {
  stage: string;
  /** Overall progress of the job, 0..100. */
  percent: number;
  message?: string;
}

export interface ArtifactInfo {
  /** Relative path inside outDir, e.g. "model/model.safetensors", "diff.safetensors", "report.json". */
  name: string;
  bytes: number;
  sha256: string;
}

import type { PassCounts } from '../engine/index.js';

export interface HardenResult {
  artifacts: ArtifactInfo[];
  /** The fgsn-report.json content (options, atlas id, rows/params changed, timings, metrics). */
  report: Record<string, unknown>;
  summary: {
    method: DefenseMethod;
    rowsChanged: number;
    paramsChanged: number;
    paramsChangedPctLinear: number;
    stageSeconds: Record<string, number>;
    /** Graph runs per stage (forward, forward+backward) and the token positions they ran over. */
    stageCosts?: Record<string, PassCounts>;
    metrics?: Record<string, number>;
    /** Whether the safety target was reached ('not set': fixed budget or a baseline method). Never omitted. */
    target: 'reached' | 'not reached' | 'not set';
    /** The kept step and the best frontier points when the job had a target. */
    targetDetails?: {
      targetAsr: number;
      rule: string;
      /** Judged probe ASR of the kept step (the fine-tune's when nothing was kept). */
      probeAsr: number | null;
      /** ASR on the probes that ranked the rows. */
      rankAsr: number | null;
      taskLoss: number | null;
      overRefusalRise: number | null;
      utilityCeiling: number;
      frontier: Record<string, unknown>[];
    };
  };
}

export interface HardenHooks {
  onProgress?: (p: StageProgress) => void | Promise<void>;
  /** Checked between stages (and inside long stages where cheap); an aborted job throws JOB_CANCELLED. */
  signal?: AbortSignal;
}
