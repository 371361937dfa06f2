/**
 * The one entrance to the inference engine for every other folder of src/ (enforced by eslint.config.js).
 * onnxruntime is imported only inside src/engine; nothing exported here hands out an `ort` type.
 *
 * The facade, on a loaded `Engine` (loadEngine(modelDir, opts)):
 * - capture:   `engine.capture(inputs, what, opts)`: activations, logits, input square sums;
 * - generate:  `engine.generate(prompts, opts)`: greedy generation with the KV cache;
 * - score:     `engine.logProbs(inputs, {responses})`: teacher-forced log-probabilities, computed in the graph;
 * - attribute: `engine.attribute(prompts, responses, {directions})`: first-order attribution of the NLL;
 * - patch:     `engine.setRowPatch(rows)` on an engine loaded with `rowPatch: true`: later runs use those rows.
 * The rest is what the CLI's engine commands, the worker's cache bound and the pipeline's cost counters need.
 */
export {
  Engine, loadEngine,
  type EngineOptions, type AttributeOptions, type RowPatch, type SequenceLogProbs,
  type CaptureMode, type CaptureRequest, type CaptureInput, type CaptureOptions, type CaptureResult,
  type SequenceCapture, type GenerateOptions, type Generation, type RowsCapture,
} from './engine.js';
export {
  attributionScores, checkpointDifference, adapterDirection,
  type AttributionOptions, type AttributionResult, type DirectionSource, type Reduction,
} from './attribution/index.js';
export { ChatTokenizer, type ChatEncoding } from './tokenizer/chat-tokenizer.js';
export { traceTensors } from './trace.js';
export { readPromptFile, parsePromptLines, type PromptRecord } from './prompt-file.js';
export { ENGINE_OPTION_HELP, ENGINE_OPTION_SPEC, engineOptions, positiveInt } from './cli-options.js';
export { GRAPH_VERSION, type LoraMode } from './model/graph-sessions.js';
export {
  assertProviderAvailable, computeDtypeFromEnv, executionProviderFromEnv, withEngineProcessEnv, ENGINE_PROCESS_ENV, ENGINE_PROCESS_EXEC_ARGV,
  type ComputeDtype, type ExecutionProvider,
} from './session/session.js';
export { defaultCacheRoot } from './session/model-cache.js';
export {
  enforceCacheBound, holdEntry, releaseAllHolds, cacheBytes, scanCache, cacheGroupRoots, cacheMaxBytesFor,
  resolveCacheMaxBytes, DEFAULT_CACHE_MAX_BYTES, DEFAULT_CACHE_DISK_SHARE, type BoundResult, type EntryHold,
} from './session/cache-lifecycle.js';
export { passCounts, passDelta, addPasses, type PassCounts } from './runtime/counters.js';
