/** Public surface of src/pipeline: what other folders may import (eslint.config.js enforces it). */
export { runContinue, type ContinueRequest, type ContinueResult } from './continue.js';
export { readHardenReport } from './report-schema.js';
// What a search measures per step (bench/scale's compute floor counts the same passes).
export { GUARDRAIL_PROBES, PREFIX_TOKENS } from './probe-eval.js';
// The atlas a continue job starts from: found in the cache, or rebuilt (queue may not import defense itself).
export { findAtlas, getOrBuildAtlas } from '../defense/index.js';
export { runHarden } from './harden.js';
export { targetLine } from './policy.js';
export { renderReportHtml } from './report-html.js';
export type { DefenseMethod, EvaluationRequest, HardenRequest, HardenResult, OutputKind, ProbeRecord } from './types.js';
