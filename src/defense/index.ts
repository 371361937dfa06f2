/** Public API of the defense area: what the pipeline, the CLI and the service import. */
export * from './math/layers.js';
export * from './math/scores.js';
export * from './math/select.js';
export * from './math/project.js';
export { topLeftSingular, symmetricEigen, type LeftSingular, type SubspaceOptions } from './math/svd.js';
export { kmeans, type KMeansResult } from './math/kmeans.js';
export type { Mat } from './math/matrix.js';
export { countEdit, projectionCompute, writeHardened, writeProjectedAdapter, type EditCounts, type RowCompute, type WriteOutcome, type WriteTargets } from './apply.js';
export { applyRowDiff, type ApplyDiffResult } from './apply-diff.js';
export { RowDiff, writeRowDiff, DIFF_FORMAT } from './io/row-diff.js';
export { writeModelFolder } from './io/model-writer.js';
export { openSources, closeSources, type WeightSources } from './io/sources.js';
export { ATLAS_VERSION, addCategory, findAtlas, getOrBuildAtlas, listAtlases, loadAtlas, summarizeAtlas, type Atlas, type AtlasOptions } from './atlas.js';
export type { DefenseMethod } from './method-names.js';
export { FGSN_DEFAULTS, SCORINGS, parseMethodOptions, type FgsnOptions, type MethodOptions } from './options.js';
export { JobScores, fgsnRanking, fgsnScores, planMethod, resolveLayers, type EditPlan, type FgsnRanking } from './methods.js';
export { attributionGradDotV, taskRowScores } from './scoring.js';
