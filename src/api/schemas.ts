/**
 * Request and response shapes of the /v1 API (the single source of validation, of response serialization
 * and of the OpenAPI document). Schemas given an id here (`component`) are shared OpenAPI
 * components.schemas entries, referenced wherever they are used.
 */
import { z } from 'zod';
import { Method, methodOptionsBinding, methodOptionsJsonSchema, optionIssues, optionsJsonSchema } from './method-options.js';

/** Names the schema in the OpenAPI document's components.schemas (input variants get an `Input` suffix). */
function component<T extends z.ZodType>(id: string, schema: T): T {
  z.globalRegistry.add(schema, { id });
  return schema;
}

const ResourceId = z.string().min(1).max(64).describe('Resource id as returned on creation');

export const ErrorBody = component('Error', z
  .object({
    code: z.string().describe('Stable error code from the catalogue (src/errors.ts)'),
    message: z.string(),
    hint: z.string().optional(),
    details: z.unknown().optional(),
    requestId: z.string().optional(),
  }));

export const IdParams = z.object({ id: ResourceId });
export const FileParams = z.object({ id: ResourceId, name: z.string().min(1).max(1024) });
export const ArtifactParams = z.object({ id: ResourceId, '*': z.string().min(1).max(2048) });

// checkpoints
export const CheckpointCreateBody = z
  .object({ name: z.string().min(1).max(200).optional().describe('Free-form label') })
  .strict()
  .default({});

export const UploadedFileSchema = component('UploadedFile', z.object({ name: z.string(), bytes: z.number().int(), sha256: z.string() }));

/** Where a file sent in Content-Range chunks stands (the answer to a chunk that is not the last, and to GET/HEAD of a file). */
export const UploadFileStatusSchema = component('UploadFileStatus', z
  .object({
    name: z.string(),
    state: z.enum(['partial', 'complete']).describe('partial: chunks are still expected; complete: the file is stored (bytes, sha256)'),
    offset: z.number().int().describe('Bytes the server holds: the next chunk starts here (also the Upload-Offset header)'),
    total: z.number().int().describe('The size announced by Content-Range (a complete file: its size)'),
    sha256: z.string().optional().describe('Of the whole file, once complete'),
  }));

export const CheckpointSchema = component('Checkpoint', z
  .object({
    id: z.string(),
    name: z.string().optional(),
    state: z.enum(['uploading', 'validating', 'ready', 'deleting']),
    kind: z.enum(['model', 'adapter']).optional().describe('Detected on complete: full model or PEFT LoRA adapter'),
    detected: z.record(z.string(), z.unknown()).optional().describe('Architecture, dtype, parameter counts, adapter settings'),
    files: z.array(UploadedFileSchema),
    createdAt: z.string(),
    completedAt: z.string().optional(),
  }));

export const CheckpointListQuery = z.object({ limit: z.coerce.number().int().min(1).max(500).default(100) });
export const CheckpointList = component('CheckpointList', z.object({ items: z.array(CheckpointSchema) }));

// references
export const ReferenceCreateBody = z
  .object({
    aligned: ResourceId.optional().describe('Completed upload of the safety-aligned model'),
    base: ResourceId.optional().describe('Completed upload of its base (pre-alignment) model'),
    alignedPath: z.string().min(1).optional().describe('Server-side folder inside FGSN_ALLOWED_MODEL_DIRS'),
    basePath: z.string().min(1).optional(),
    name: z.string().min(1).max(200).optional(),
    visibility: z.enum(['global', 'tenant']).default('global').describe('global: usable by every tenant'),
  })
  .strict()
  .refine((b) => (b.aligned !== undefined && b.base !== undefined && b.alignedPath === undefined && b.basePath === undefined) ||
    (b.alignedPath !== undefined && b.basePath !== undefined && b.aligned === undefined && b.base === undefined), {
    message: 'give either {aligned, base} checkpoint ids or {alignedPath, basePath} server-side folders',
  });

export const ReferenceSchema = component('Reference', z
  .object({
    id: z.string(),
    name: z.string().optional(),
    visibility: z.enum(['global', 'tenant']),
    aligned: z.object({ checkpointId: z.string().optional(), source: z.enum(['upload', 'server']) }),
    base: z.object({ checkpointId: z.string().optional(), source: z.enum(['upload', 'server']) }),
    createdAt: z.string(),
  }));

export const ReferenceList = component('ReferenceList', z.object({ items: z.array(ReferenceSchema) }));

// probe sets
export const ProbeLine = z
  .object({
    prompt: z.string().min(1).max(16_384),
    category: z.string().min(1).max(100).optional(),
    response: z.string().max(65_536).optional(),
  })
  .describe('One probe; other keys on the line are ignored');

export const ProbeSetQuery = z.object({
  kind: z.enum(['harmful', 'benign', 'task']).describe('What the prompts are for'),
  name: z.string().min(1).max(200).optional(),
});

export const ProbeSetSchema = component('ProbeSet', z
  .object({
    id: z.string(),
    name: z.string().optional(),
    kind: z.enum(['harmful', 'benign', 'task']),
    count: z.number().int(),
    categories: z.record(z.string(), z.number().int()),
    builtIn: z.boolean(),
    createdAt: z.string(),
  }));

export const ProbeSetList = component('ProbeSetList', z.object({ items: z.array(ProbeSetSchema) }));

// jobs
export { Method };
export const Output = z.enum(['model', 'diff', 'adapter', 'report']);

const JobWebhook = z
  .object({
    url: z.url({ protocol: /^https?$/ }).max(2048).describe('http(s) URL called on the terminal state'),
    secret: z.string().min(16).max(256).describe('HMAC-SHA256 key for X-FGSN-Signature'),
    events: z.array(z.enum(['terminal', 'stage'])).min(1).max(2).default(['terminal'])
      .describe('terminal: job.completed / job.failed / job.cancelled (default); stage: also job.stage at every stage change'),
  })
  .strict();

export const JobCreateBody = z
  .object({
    finetuned: ResourceId.describe('Completed upload: full fine-tune or LoRA adapter over the aligned model'),
    reference: ResourceId.describe('Reference (aligned + base)'),
    method: Method.default('fgsn'),
    // Documented per method from the defense's option spec; validated by the defense's parser below.
    options: z.record(z.string(), z.unknown()).optional().meta(methodOptionsJsonSchema()),
    probes: z
      .object({ harmful: ResourceId.optional(), benign: ResourceId.optional() })
      .strict()
      .optional()
      .describe('Probe sets; default: the built-in default-harmful / default-benign'),
    task: ResourceId.optional().describe('Task probe set for task-neuron exclusion (default: benign)'),
    outputs: z.array(Output).min(1).default(['model', 'diff', 'report']),
    evaluate: z
      .union([
        z.boolean(),
        z
          .object({
            harmful: ResourceId.optional().describe('Probe set of held-out harmful prompts (attack success rate)'),
            emerging: ResourceId.optional().describe('Probe set of harmful prompts of a category not in the probes'),
            lookalike: ResourceId.optional().describe('Benign look-alike prompts (over-refusal); response = expected answer'),
            tasks: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,40}$/), ResourceId).optional().describe('Task name -> probe set whose response is the exact answer'),
            maxNewTokens: z.number().int().min(1).max(512).optional(),
          })
          .strict(),
      ])
      .default(false)
      .describe('true: evaluate on the job\'s harmful probes and benign look-alikes; or name the evaluation probe sets'),
    webhook: JobWebhook.optional(),
  })
  .strict()
  // Options are checked by the defense's parser here, at submission, not first in the worker.
  .superRefine((b, ctx) => {
    for (const issue of optionIssues(b.method, b.options)) ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
  })
  // OpenAPI: `options` bound to `method` (JSON Schema if/then per method), as the parser above enforces.
  .meta({ allOf: methodOptionsBinding() });

/** Artifacts a continue job can publish (it always writes a full model folder; no adapter). */
export const ContinueOutput = z.enum(['model', 'diff', 'report']);

export const JobContinueBody = z
  .object({
    category: z.string().min(1).max(100).describe('Name of the new harm category (recorded in the report)'),
    probes: ResourceId.describe('Harmful probe set of the new category'),
    task: ResourceId.optional().describe('Task probe set (with responses) for the task-accuracy guardrail'),
    outputs: z.array(ContinueOutput).min(1).default(['model', 'diff', 'report']),
    options: z
      .object({
        targetAsr: z.union([z.number().min(0).max(1), z.literal('off')]).optional()
          .describe("Category probe ASR the guarded search aims for (default: the source job's); 'off' patches a fixed share q"),
        maxExtraParams: z.number().min(0).max(100).optional().describe('Largest extra share of linear-weight parameters, in % (default 1)'),
        exactTolerance: z.number().min(0).max(1).optional().describe("How far exact match on the atlas' benign probes may fall (default 0.02)"),
        q: z.number().gt(0).max(1).optional().describe("A fixed budget: this share of all linear rows at the source job's final strength"),
        edit: z.record(z.string(), z.unknown()).optional().meta(optionsJsonSchema('fgsn'))
          .describe("FGSN options of the new rows' edit (e.g. strength, mode); default: the source job's own"),
      })
      .strict()
      .default({}),
    webhook: JobWebhook.optional(),
  })
  .strict()
  .superRefine((b, ctx) => {
    for (const issue of optionIssues('fgsn', b.options.edit)) ctx.addIssue({ code: 'custom', path: ['options', 'edit', ...issue.path.slice(1)], message: issue.message });
  });

export const JobState = z.enum(['queued', 'running', 'completed', 'failed', 'cancelled']);

const ArtifactEntry = component('ArtifactEntry', z.object({ name: z.string(), bytes: z.number().int(), sha256: z.string() }));

export const JobSchema = component('Job', z
  .object({
    id: z.string(),
    state: JobState,
    stage: z.string().nullable(),
    progress: z.number().describe('0..100'),
    attempts: z.object({ made: z.number().int(), max: z.number().int() }),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    timings: z.record(z.string(), z.number()).describe('Seconds per finished stage; keys pipeline.<stage>.<forwardPasses|forwardTokens|backwardPasses|backwardTokens> are counts of graph runs and the token positions they processed'),
    summary: z.record(z.string(), z.unknown()).nullable(),
    artifacts: z.array(ArtifactEntry).nullable(),
    error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }).nullable(),
    cancelRequested: z.boolean(),
    estimatedFinishAt: z.string().nullable().describe('Running jobs: expected finish time, extrapolated from progress since the start; null otherwise'),
    request: z.record(z.string(), z.unknown()),
  }));

export const JobListQuery = z.object({
  state: JobState.optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(200).optional(),
});

export const JobList = component('JobList', z.object({ items: z.array(JobSchema), nextCursor: z.string().nullable() }));

export const ArtifactSchema = component('Artifact', ArtifactEntry.extend({ url: z.string() }));
export const ArtifactList = component('ArtifactList', z.object({ jobId: z.string(), state: JobState, items: z.array(ArtifactSchema) }));

export const Health = component('Health', z.object({ status: z.string(), checks: z.record(z.string(), z.object({ ok: z.boolean(), detail: z.string().optional() })).optional() }));

/** Error responses of an operation, by status; every one answers in the Error shape. */
export function errorResponses<C extends number>(...codes: C[]): Record<C, typeof ErrorBody> {
  return Object.fromEntries(codes.map((c) => [c, ErrorBody])) as Record<C, typeof ErrorBody>;
}

/**
 * Errors every authenticated (/v1) operation can answer besides its own: 401 (no or unknown key), 429 (rate
 * limit or too many failed authentications, with Retry-After) and 503 (Redis away, with Retry-After).
 */
export function authErrorResponses<C extends number>(...codes: C[]): Record<C | 401 | 429 | 503, typeof ErrorBody> {
  return errorResponses<C | 401 | 429 | 503>(...codes, 401, 429, 503);
}
