/**
 * One error catalogue for the whole service: a code means the same thing in the CLI, the API and the logs.
 * Modules throw FgsnError with a code listed here; the API maps `status`, the CLI exits with 2 for 4xx codes.
 */
export interface ErrorSpec {
  status: number;
  hint: string;
}

export const ERROR_CATALOGUE = {
  // checkpoint/: bad input files (safetensors, folders, configs, adapters)
  CHECKPOINT_NOT_FOUND: { status: 404, hint: 'Check the path; it must be a model folder, a safetensors file or a PEFT adapter folder.' },
  CHECKPOINT_IO: { status: 422, hint: 'The file could not be read; check permissions and that it is complete.' },
  CHECKPOINT_FILE_TOO_SMALL: { status: 422, hint: 'A safetensors file starts with an 8-byte header length; the upload may be truncated.' },
  CHECKPOINT_HEADER_TOO_LARGE: { status: 422, hint: 'The header length exceeds the limit (100 MB); the file is corrupt or not safetensors.' },
  CHECKPOINT_HEADER_TRUNCATED: { status: 422, hint: 'The file ends inside its JSON header; the upload may be truncated.' },
  CHECKPOINT_HEADER_NOT_UTF8: { status: 422, hint: 'The safetensors header must be UTF-8 JSON.' },
  CHECKPOINT_HEADER_NOT_JSON: { status: 422, hint: 'The safetensors header must be a JSON object.' },
  CHECKPOINT_METADATA_INVALID: { status: 422, hint: '__metadata__ must map strings to strings.' },
  CHECKPOINT_DUPLICATE_TENSOR: { status: 422, hint: 'Each tensor name may appear once.' },
  CHECKPOINT_TENSOR_ENTRY_INVALID: { status: 422, hint: 'Each tensor entry needs exactly dtype, shape and data_offsets.' },
  CHECKPOINT_DTYPE_UNSUPPORTED: { status: 422, hint: 'Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.' },
  CHECKPOINT_SHAPE_INVALID: { status: 422, hint: 'Shapes are lists of non-negative integers whose product fits in memory limits.' },
  CHECKPOINT_OFFSETS_INVALID: { status: 422, hint: 'data_offsets must be [begin, end] with begin <= end, inside the data section.' },
  CHECKPOINT_SIZE_MISMATCH: { status: 422, hint: 'A tensor occupies exactly prod(shape) * itemsize bytes.' },
  CHECKPOINT_OFFSETS_OVERLAP: { status: 422, hint: 'Tensors must not overlap and must be laid out in order.' },
  CHECKPOINT_DATA_HOLE: { status: 422, hint: 'Tensors must cover the data section with no gaps and nothing after the last one.' },
  CHECKPOINT_TENSOR_NOT_FOUND: { status: 422, hint: 'A tensor the model needs is missing from the checkpoint.' },
  CHECKPOINT_ROW_RANGE_INVALID: { status: 400, hint: 'Row ranges apply to 2-D tensors and must lie inside them.' },
  CHECKPOINT_CONFIG_MISSING: { status: 422, hint: 'A model folder needs config.json (Hugging Face format).' },
  CHECKPOINT_CONFIG_INVALID: { status: 422, hint: 'config.json is missing a field or has a value of the wrong type.' },
  CHECKPOINT_ARCH_UNSUPPORTED: { status: 422, hint: 'Supported model_type values: llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3_text; rope_scaling types llama3, linear, dynamic, yarn, longrope. The message names the refused feature; see docs/families.md.' },
  CHECKPOINT_TENSOR_SHAPE_MISMATCH: { status: 422, hint: 'A tensor shape differs from what config.json implies.' },
  CHECKPOINT_TENSOR_UNEXPECTED: { status: 422, hint: 'The checkpoint holds a tensor the architecture does not have.' },
  CHECKPOINT_INDEX_INVALID: { status: 422, hint: 'model.safetensors.index.json needs a weight_map of tensor name -> shard file.' },
  CHECKPOINT_PATH_UNSAFE: { status: 422, hint: 'File names must stay inside the model folder: no "..", absolute paths or symlinks leading out.' },
  CHECKPOINT_PICKLE_REFUSED: { status: 422, hint: 'Pickle files (.bin, .pt, .pkl) are never loaded: convert the checkpoint to safetensors (e.g. save_pretrained(..., safe_serialization=True)).' },
  CHECKPOINT_NO_WEIGHTS: { status: 422, hint: 'No model.safetensors or model.safetensors.index.json found in the folder.' },
  ADAPTER_CONFIG_INVALID: { status: 422, hint: 'adapter_config.json must be a PEFT LoRA config (peft_type LORA, r, lora_alpha, target_modules).' },
  ADAPTER_TENSOR_INVALID: { status: 422, hint: 'Adapter tensors must be lora_A [r, in] / lora_B [out, r] pairs for known target modules.' },
  ADAPTER_BASE_MISMATCH: { status: 422, hint: 'The adapter shapes do not match the base model.' },
  CHECKPOINT_NON_FINITE: { status: 422, hint: 'Weights must be finite: a NaN or Inf value was found in the named tensor; fix or re-export the checkpoint.' },
  CHECKPOINT_TOO_MANY_PROBLEMS: { status: 422, hint: 'Only the first 100 problems are listed; the rest are counted by code. Fix the listed ones and validate again.' },
  CHECKPOINT_JSON_TOO_LARGE: { status: 422, hint: 'config.json / adapter_config.json are at most 1 MiB, an index at most 16 MiB, and no JSON file nests deeper than 64 levels.' },
  ADAPTER_TARGET_PATTERN_INVALID: { status: 422, hint: 'A string target_modules is a regular expression (RE2 syntax, full match of the module path, at most 1024 characters); a list holds module names.' },
  OUTPUT_NON_FINITE: { status: 422, hint: 'A computed weight is NaN or Inf (e.g. a very large strength overflows the dtype); nothing was written or published.' },
  // engine/
  ENGINE_GRAPH_UNSUPPORTED: { status: 422, hint: 'This model configuration is not supported by the graph builder.' },
  ENGINE_EP_UNAVAILABLE: { status: 500, hint: 'The requested execution provider is not installed or cannot start; for cuda run `npm run gpu:setup` and provide CUDA 13 + cuDNN 9 (docker/Dockerfile.cuda), or set FGSN_EXECUTION_PROVIDER=cpu.' },
  ENGINE_TOKENIZER_INVALID: { status: 422, hint: 'tokenizer.json / tokenizer_config.json are missing or unreadable.' },
  ENGINE_SEQUENCE_TOO_LONG: { status: 422, hint: 'The prompt is longer than the model context (max_position_embeddings).' },
  ENGINE_RUN_FAILED: { status: 500, hint: 'onnxruntime failed to run the graph; see details.' },
  // defense/ and eval/
  PROBES_INVALID: { status: 422, hint: 'Probe files are JSONL with {"prompt", "category"?, "response"?} per line.' },
  PROBES_EMPTY: { status: 422, hint: 'A probe set needs at least one prompt.' },
  DEFENSE_MODEL_MISMATCH: { status: 422, hint: 'base, aligned and fine-tuned checkpoints must share architecture and shapes.' },
  DEFENSE_OPTION_INVALID: { status: 400, hint: 'See `fgsn harden --help` for valid options.' },
  DIFF_INVALID: { status: 422, hint: 'A row diff holds <tensor>.rows (I64) and <tensor>.values pairs written by `fgsn harden --format diff`.' },
  DIFF_SOURCE_MISMATCH: { status: 422, hint: 'The diff was made for another checkpoint (sha256 differs); pass the model it was made from, or --no-verify.' },
  ATLAS_NOT_FOUND: { status: 404, hint: 'No atlas with that id; build one with `fgsn atlas build`.' },
  EVAL_OPTION_INVALID: { status: 400, hint: 'See `fgsn eval --help`: judge preset word-level|gcg, non-empty markers, boundary token|word|substring.' },
  EVAL_DATA_INVALID: { status: 422, hint: 'Eval files are JSONL: harmful {"prompt", "category"?}, task/look-alike {"prompt", "answer"}.' },
  // cli
  CLI_USAGE: { status: 400, hint: 'Run `fgsn help` for usage.' },
  // cli/remote.ts: a job run by a fgsn server
  REMOTE_UNREACHABLE: { status: 502, hint: 'The server did not answer: check --server (URL and port) and that `fgsn serve` runs.' },
  REMOTE_REQUEST_FAILED: { status: 502, hint: 'The server refused a request; its code and hint are in the details (an API key error is 401, a bad option 400).' },
  REMOTE_JOB_FAILED: { status: 502, hint: 'The job ended failed or cancelled on the server; its error code and message are in the details (GET /v1/jobs/{id}).' },
  REMOTE_ARTIFACT_INVALID: { status: 502, hint: 'A downloaded artifact did not match the sha256 or size the job lists; run the command again (nothing partial is kept).' },
  // api / queue / storage
  VALIDATION_FAILED: { status: 400, hint: 'The request does not match the schema; see details.' },
  UNAUTHORIZED: { status: 401, hint: 'Send Authorization: Bearer <api key>.' },
  FORBIDDEN: { status: 403, hint: 'This API key lacks the scope for this operation.' },
  NOT_FOUND: { status: 404, hint: 'No such resource for this tenant.' },
  CONFLICT: { status: 409, hint: 'The resource is in a state that does not allow this operation.' },
  IDEMPOTENCY_CONFLICT: { status: 409, hint: 'This Idempotency-Key was used with a different request body.' },
  PAYLOAD_TOO_LARGE: { status: 413, hint: 'The file exceeds the configured upload size limit.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, hint: 'Check the Content-Type of the request.' },
  RANGE_NOT_SATISFIABLE: { status: 416, hint: 'The requested byte range lies outside the artifact.' },
  RATE_LIMITED: { status: 429, hint: 'Too many requests for this API key; retry after the given delay.' },
  UPLOAD_INVALID: { status: 422, hint: 'The uploaded folder is not a valid checkpoint; see details for every problem.' },
  CONFIG_INVALID: { status: 500, hint: 'Fix the environment variables named in the message.' },
  STORAGE_ERROR: { status: 500, hint: 'Artifact storage failed; check disk space or S3 settings.' },
  JOB_CANCELLED: { status: 409, hint: 'The job was cancelled.' },
  UPLOAD_OFFSET_MISMATCH: { status: 409, hint: 'A Content-Range chunk must start where the copy on the server ends: GET (or HEAD) the file for Upload-Offset (also in details.expectedOffset) and send from there.' },
  UPLOAD_RANGE_INVALID: { status: 416, hint: 'Content-Range is "bytes <start>-<end>/<total>" with start <= end < total, the same total for every chunk of a file, and a body of exactly end-start+1 bytes; DELETE the file to start over with another size.' },
  UPLOAD_BUSY: { status: 409, hint: 'Another request is writing this file right now (or the server has not yet noticed a dropped connection); retry after a short backoff.' },
  SOURCE_JOB_NOT_COMPLETED: { status: 409, hint: 'A continue job starts from a completed job; wait until the source job is completed (GET /v1/jobs/{id}) and submit again.' },
  SOURCE_JOB_NO_MODEL: { status: 409, hint: 'A continue job patches the source job\'s published model folder and report.json: the source job must have been submitted with outputs including "model" and "report" (the default), and its artifacts must not have expired.' },
  UPLOAD_CHECKSUM_MISMATCH: { status: 422, hint: 'The file bytes do not match the sha256 sent in X-Content-SHA256; upload it again.' },
  MODEL_DIR_NOT_ALLOWED: { status: 403, hint: 'Server-side model folders must lie inside FGSN_ALLOWED_MODEL_DIRS.' },
  PIPELINE_UNAVAILABLE: { status: 503, hint: 'This build of the service has no defense pipeline; update the worker image.' },
  DISK_SPACE_LOW: { status: 507, hint: 'The worker\'s data folder has too little free disk for this job (its output is about the size of the checkpoint, plus FGSN_MIN_FREE_DISK_MB); free space, lower FGSN_CACHE_MAX_BYTES or give the volume more room. The job is retried after the backoff.' },
  WORKER_LOST: { status: 500, hint: 'The worker running the job stopped repeatedly; check worker memory limits and logs.' },
  SERVICE_UNAVAILABLE: { status: 503, hint: 'A backing service (Redis) does not answer; retry after the Retry-After delay.' },
  QUOTA_EXCEEDED: { status: 429, hint: "The tenant's quota (named in details.quota) is used up; delete checkpoints, probe sets or finished jobs, or ask the operator for more." },
  INSUFFICIENT_STORAGE: { status: 507, hint: 'The server has too little free disk to take this upload; retry later or contact the operator.' },
  INTERNAL: { status: 500, hint: 'Unexpected error; see the server logs with the request id.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export class FgsnError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly hint: string;
  readonly details: unknown;

  /** `hint` replaces the catalogue's hint where the thrower knows the specific fix (e.g. the missing library). */
  constructor(code: ErrorCode, message: string, options: { details?: unknown; cause?: unknown; hint?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FgsnError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
    this.hint = options.hint ?? ERROR_CATALOGUE[code].hint;
    this.details = options.details;
  }

  /** True for problems with the caller's input (4xx): not worth retrying. */
  get isUserError(): boolean {
    return this.status >= 400 && this.status < 500;
  }

  toJSON(): { code: ErrorCode; message: string; hint: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message, hint: this.hint }
      : { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

export function isFgsnError(e: unknown): e is FgsnError {
  return e instanceof FgsnError;
}
