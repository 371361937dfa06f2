/** Public API of the checkpoint layer: everything other areas import comes through here. */
export * from './types.js';
export { bf16ToF32, f32ToBf16, f16ToF32, f32ToF16, decodeToF32, encodeFromF32, FLOAT_DTYPES } from './dtypes.js';
export { SafetensorsFile, parseSafetensorsHeader, DEFAULT_MAX_HEADER_BYTES, type ParsedHeader, type OpenOptions } from './safetensors-reader.js';
export { writeSafetensors, layoutOrder, type TensorSource, type WriteResult } from './safetensors-writer.js';
export {
  parseModelConfig, expectedTensors, linearWeightNames, linearWeightShape, linearParameterCount, parameterCount,
  readGenerationConfig, type ExpectedTensor, type GenerationConfig,
} from './model-config.js';
export { ModelCheckpoint, SINGLE_FILE, INDEX_FILE } from './model-folder.js';
export { LoraAdapter, parseAdapterConfig, parseLoraKey, loraDeltaRows, ADAPTER_CONFIG, ADAPTER_WEIGHTS, type LoraConfig, type LoraPair } from './lora.js';
export {
  openCheckpoint, validateCheckpointFolder, describeCheckpoint, closeOpened,
  type OpenedCheckpoint, type ValidationResult, type CheckpointSummary, type FileSummary, type TensorSummary, type DescribeOptions, type ValidateOptions,
} from './detect.js';
export { isPickleName } from './folder-safety.js';
export { firstNonFinite, scanSafetensorsFile } from './finite.js';
export { MAX_LISTED_PROBLEMS } from './problems.js';
export { ioError } from './io.js';
export { compileTargetModules, type TargetMatcher } from './target-modules.js';
export { appendRowUpdate, isHubId } from './lora.js';
export { modelConfigJson } from './model-config.js';
export { ropeParameters } from './rope.js';
export type { RopeSpec } from './rope.js';
