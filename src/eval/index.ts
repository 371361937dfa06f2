/** Public API of the evaluation area: judges (pure), scoring (pure), data loading, and model evaluation. */
export {
  GCG_REFUSAL_MARKERS, WORD_LEVEL_REFUSAL_MARKERS, WORD_LEVEL_EXCLUDED_MARKERS, JUDGE_PRESETS,
  type JudgeConfig, type JudgePresetName, type MarkerBoundary,
} from './markers.js';
export {
  resolveJudge, isRefusal, findRefusalMarker, isCompliant, exactMatch, normalizeWhitespace, rate,
  type JudgeOptions, type ExactMatchOptions,
} from './judges.js';
export {
  scoreGenerations, RESERVED_SET_NAMES, UNCATEGORIZED,
  type GenerationSets, type HarmfulGeneration, type AnsweredGeneration, type LookalikeGeneration, type ScoredGeneration,
  type Scores, type CategoryScore, type MetricName, type ScoreOptions,
} from './score.js';
export {
  parseHarmfulJsonl, parseTaskJsonl, parseLookalikeJsonl, readHarmfulFile, readTaskFile, readLookalikeFile, limitItems,
  type HarmfulItem, type TaskItem, type LookalikeItem,
} from './data.js';
export {
  evaluateModel, evaluateWithGenerator, buildReport, DEFAULT_MAX_NEW_TOKENS, DEFAULT_BATCH_SIZE,
  type EvalOptions, type EvalSets, type EvalReport, type TextGenerator,
} from './evaluate.js';
