/** Public surface of the inference engine. */
export {
  Engine, loadEngine,
  type EngineOptions, type CaptureMode, type CaptureRequest, type CaptureInput, type CaptureOptions, type CaptureResult,
  type SequenceCapture, type GenerateOptions, type Generation,
} from './engine.js';
export { RemoteEngine, runInWorker } from './worker/remote-engine.js';
export { ChatTokenizer, type ChatEncoding } from './tokenizer/chat-tokenizer.js';
export { traceTensors } from './trace.js';
export { readPromptFile, parsePromptLines, type PromptRecord } from './prompt-file.js';
export { SQSUM_INPUT_OF, buildDecoderGraph, type DecoderGraphOptions, type Capture, type SqsumInput } from './model/decoder-graph.js';
export { GraphSessions, GRAPH_VERSION, type LoraMode, type LoraSource } from './model/graph-sessions.js';
export { createSession, assertProviderAvailable, computeDtypeFromEnv, cpuArenaEnabled, executionProviderFromEnv, runOptions, type ComputeDtype, type ExecutionProvider, type SessionConfig } from './session/session.js';
export { ensureEntry, defaultCacheRoot, cacheKey, fileFingerprint, type CacheEntry } from './session/model-cache.js';
export { GraphBuilder, f, elemCode, elemTypeOfDType, OPSET, IR_VERSION, type ElemType, type Dim, type Attrs, type ExternalRef } from './onnx/graph-builder.js';
export * as blocks from './onnx/blocks.js';
export { compareGenerations, readRecordedGenerations, testbedCheckpointDirs, type GenerationReport, type GenerationMismatch } from './testbed-generations.js';
