/** Public surface of src/pipeline: what other folders may import (eslint.config.js enforces it). */
export { runContinue } from './continue.js';
export { runHarden } from './harden.js';
export { targetLine } from './policy.js';
export { renderReportHtml } from './report-html.js';
export type { DefenseMethod, EvaluationRequest, HardenRequest, HardenResult, OutputKind, ProbeRecord } from './types.js';
