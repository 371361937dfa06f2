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
export {
  DEFENSE_METHODS, FGSN_DEFAULTS, JobScores, METHODS, SCORINGS, fgsnRanking, fgsnScores, isDefenseMethod, parseMethodOptions, planMethod, resolveLayers,
  type DefenseMethod, type EditPlan, type FgsnOptions, type FgsnRanking, type MethodOptions,
} from './methods/index.js';
export { attributionGradDotV, taskRowScores } from './scoring.js';
export { combinedCompute, editRows, mergeEditRows, rowSparseAdapterRank } from './apply.js';
export type { EditRows } from './apply.js';
export { linearRowCount, shapeOf } from './io/sources.js';
export { countRows, pickerExcluding, selectionFromJSON, selectionToJSON, union } from './math/select.js';
export type { Selection } from './math/select.js';
export { OPTION_BOUNDS, fgsnOptions, fgsnProjection, fieldInfo, methodDefinition, type FieldInfo, type OptionsOf } from './methods/index.js';
