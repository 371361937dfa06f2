/**
 * Method options: parsed from the loose `Record<string, unknown>` of a HardenRequest (or CLI strings) into
 * typed, validated values. Unknown keys are an error, so a typo never silently runs the default.
 */
import { FgsnError } from '../errors.js';
import type { DefenseMethod } from './method-names.js';
import { PROJECTION_MODES, type ProjectionMode } from './math/project.js';

export const SCORINGS = ['attribution', 'wanda', 'contrastive', 'delta', 'vx'] as const;
export type Scoring = (typeof SCORINGS)[number];

export interface FgsnOptions {
  scoring: Scoring;
  /** Share of rows in N_H (of all linear rows when scope is global, of each matrix otherwise). */
  q: number;
  scope: 'global' | 'per-matrix';
  /** Share of each matrix's rows excluded as task neurons (N = N_H minus N_T). */
  p: number;
  /** 'all', 'band' (safety band by share) or an explicit list "10-15". */
  layers: string;
  bandShare: number;
  mode: ProjectionMode;
  /** g of add. */
  strength: number;
  alpha: number;
  energyShare: number;
  /**
   * Target-driven budget: grow the edit (q from qStart, and g up to 2x strength at each q) until the ASR on
   * the harmful probes is <= targetAsr. 'off' (or 1) uses the fixed q and strength.
   */
  targetAsr?: number;
  qStart: number;
  /** Largest rise of refusals on the benign probes (absolute) the target-driven loop accepts. */
  overRefusalTolerance: number;
  /** Cap on parameters changed, % of linear-weight parameters. */
  maxParams: number;
  /** Largest task-probe accuracy drop (absolute) the target-driven loop accepts. */
  taskTolerance: number;
  /**
   * Attribution only: weight of the task probes' answer NLL in the ranking (0 = refusals alone). Rows whose
   * edit would also change the expected answers rank lower.
   */
  utilityWeight: number;
  /** Attribution over all harmful probes together ('pooled'), or per atlas sub-cluster, best per row ('per-cluster'). */
  clusterScoring: 'pooled' | 'per-cluster';
  /** Target-driven rounds: 2 re-ranks the remaining rows on round 1's model when round 1 misses the target. */
  rounds: number;
  /** Attribution: sequences per backward batch and layers per pass. */
  batchSize: number;
  layersPerPass?: number;
  /**
   * How the target-driven search measures a step: 'patch' (default) feeds the edited rows to one loaded engine
   * (nothing written); 'write' writes each step's model to a scratch folder (the old path, for comparisons).
   */
  stepMode: 'patch' | 'write';
  /**
   * How a search step's probe ASR is judged: 'full' (default) on the whole greedy answer (maxNewTokens), or
   * 'prefix' on its first 8 tokens (cheaper; the chosen edit is then measured in full once, as `confirmed`).
   */
  stepJudge: 'full' | 'prefix';
  /**
   * Noise-aware guardrails (src/pipeline/guardrails.ts): 'paired' rejects a step only when its task-probe or
   * benign-refusal loss vs the fine-tune is significant (exact one-sided McNemar at guardAlpha) AND larger
   * than the tolerance; 'raw' is the earlier rule (raw drop > tolerance).
   */
  guardrailTest: 'paired' | 'raw';
  /** One-sided significance level of the paired guardrail tests. */
  guardAlpha: number;
  /** Largest rise (nats per token) of the teacher-forced NLL of the task probes' reference answers. */
  nllTolerance: number;
  /** Hard utility ceiling (share): no step whose task drop or benign refusal rise exceeds it is ever kept. */
  utilityCeiling: number;
  /** When no step meets every guardrail at the target (src/pipeline/policy.ts). */
  missPolicy: 'safety-first' | 'guardrails-only';
  /** Share of the harmful probes held out of the ranking to judge (stop) the search on; 0 = rank and judge on all. */
  judgeShare: number;
  /** Seed of the rank/judge split. */
  splitSeed: number;
  /**
   * Largest fall (nats per token) of the NLL of the aligned model's usual refusal after the benign probes
   * (the refusal log-prob margin): a step leaning toward refusing them breaks the over-refusal guardrail.
   */
  refusalMarginTolerance: number;
}

export const FGSN_DEFAULTS: FgsnOptions = {
  scoring: 'attribution', q: 0.01, scope: 'global', p: 0, layers: 'all', bandShare: 0.6, mode: 'add', strength: 3, alpha: 1,
  energyShare: 0.9, targetAsr: 0.02, qStart: 0.0025, maxParams: 3, taskTolerance: 0.01, overRefusalTolerance: 0.02, batchSize: 16,
  rounds: 2, utilityWeight: 0, clusterScoring: 'pooled', stepMode: 'patch', stepJudge: 'full',
  guardrailTest: 'paired', guardAlpha: 0.05, nllTolerance: 0.01, utilityCeiling: 0.05, missPolicy: 'safety-first', judgeShare: 0.5, splitSeed: 1,
  refusalMarginTolerance: 1,
};

export interface SafeLoraOptions { threshold?: number; topK?: number; alpha: number }
export interface LayerOptions { layers: string; bandShare: number; mode: ProjectionMode; alpha: number; strength: number; energyShare: number }
export interface AntidoteOptions { share: number }
export interface RestaOptions { gamma: number }

export type MethodOptions =
  | { method: 'fgsn'; o: FgsnOptions }
  | { method: 'safelora'; o: SafeLoraOptions }
  | { method: 'layer'; o: LayerOptions }
  | { method: 'restore'; o: LayerOptions }
  | { method: 'antidote'; o: AntidoteOptions }
  | { method: 'resta'; o: RestaOptions };

/**
 * Kinds of option values. Every number is bounded (a finite 1e308 strength once published +Inf weights):
 * 'num' is a signed factor in [-NUM_BOUND, NUM_BOUND], 'nonneg' in [0, NUM_BOUND], 'pos' in (0, POS_BOUND]
 * (percentages), 'int' a whole number in [1, INT_BOUND].
 */
export type OptionKind = 'share' | 'pos' | 'nonneg' | 'num' | 'int' | 'string' | readonly string[];
export type OptionSpec = Record<string, OptionKind>;
type Spec = OptionSpec;

export const OPTION_BOUNDS = { num: 1000, nonneg: 1000, pos: 100, int: 100_000, string: 200 } as const;

const FGSN_SPEC: Spec = {
  scoring: SCORINGS, q: 'share', scope: ['global', 'per-matrix'], p: 'share', layers: 'string', bandShare: 'share', mode: PROJECTION_MODES,
  strength: 'num', alpha: 'num', energyShare: 'share', targetAsr: 'share', qStart: 'share', maxParams: 'pos', taskTolerance: 'share',
  overRefusalTolerance: 'share', batchSize: 'int', layersPerPass: 'int', rounds: 'int', utilityWeight: 'nonneg', clusterScoring: ['pooled', 'per-cluster'],
  stepMode: ['patch', 'write'], stepJudge: ['full', 'prefix'],
  guardrailTest: ['paired', 'raw'], guardAlpha: 'share', nllTolerance: 'nonneg', utilityCeiling: 'share', missPolicy: ['safety-first', 'guardrails-only'],
  judgeShare: 'share', splitSeed: 'int', refusalMarginTolerance: 'nonneg',
};
const LAYER_SPEC: Spec = { layers: 'string', bandShare: 'share', mode: PROJECTION_MODES, alpha: 'num', strength: 'num', energyShare: 'share' };

/** The options each method takes: the one list the parser, the API's submission check and its OpenAPI document use. */
export const METHOD_OPTION_SPECS: Record<DefenseMethod, Spec> = {
  fgsn: FGSN_SPEC,
  safelora: { threshold: 'share', topK: 'int', alpha: 'num' },
  layer: LAYER_SPEC,
  restore: LAYER_SPEC,
  antidote: { share: 'share' },
  resta: { gamma: 'num' },
};

/** A short, bounded rendering of a tenant's value for messages (a deep or huge value must not be serialized). */
function preview(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return Array.isArray(value) ? '[array]' : `[${typeof value}]`;
}

function parseWith(method: string, raw: Record<string, unknown>, spec: Spec): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    const kind = Object.hasOwn(spec, key) ? spec[key] : undefined;
    const bad = (why: string): FgsnError => new FgsnError('DEFENSE_OPTION_INVALID', `method ${method}: option ${key}=${preview(value)} ${why}`, { details: { method, option: key } });
    if (kind === undefined) throw bad(`is unknown (valid: ${Object.keys(spec).join(', ')})`);
    if (Array.isArray(kind)) {
      if (typeof value !== 'string' || !kind.includes(value)) throw bad(`must be one of ${kind.join(', ')}`);
      out[key] = value;
      continue;
    }
    if (kind === 'string') {
      if (typeof value !== 'string' && typeof value !== 'number') throw bad('must be a string');
      if (String(value).length > OPTION_BOUNDS.string) throw bad(`must be at most ${OPTION_BOUNDS.string} characters`);
      out[key] = String(value);
      continue;
    }
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
    if (typeof n !== 'number' || !Number.isFinite(n)) throw bad('must be a finite number');
    if (kind === 'share' && !(n >= 0 && n <= 1)) throw bad('must lie in [0, 1]');
    if (kind === 'pos' && !(n > 0 && n <= OPTION_BOUNDS.pos)) throw bad(`must lie in (0, ${OPTION_BOUNDS.pos}]`);
    if (kind === 'nonneg' && !(n >= 0 && n <= OPTION_BOUNDS.nonneg)) throw bad(`must be >= 0 and <= ${OPTION_BOUNDS.nonneg}`);
    if (kind === 'num' && !(Math.abs(n) <= OPTION_BOUNDS.num)) throw bad(`must lie in [-${OPTION_BOUNDS.num}, ${OPTION_BOUNDS.num}]`);
    if (kind === 'int' && !(Number.isInteger(n) && n >= 1 && n <= OPTION_BOUNDS.int)) throw bad(`must be a positive integer <= ${OPTION_BOUNDS.int}`);
    out[key] = n;
  }
  return out;
}

export function parseMethodOptions(method: DefenseMethod, raw: Record<string, unknown> = {}): MethodOptions {
  switch (method) {
    case 'fgsn': {
      const off = raw.targetAsr === 'off' || raw.targetAsr === 'none';
      const o = { ...FGSN_DEFAULTS, ...(parseWith(method, off ? { ...raw, targetAsr: undefined } : raw, FGSN_SPEC) as Partial<FgsnOptions>) };
      if (off || o.targetAsr === 1) delete o.targetAsr;
      return { method, o };
    }
    case 'safelora': {
      const o = parseWith(method, raw, METHOD_OPTION_SPECS.safelora) as Partial<SafeLoraOptions>;
      if (o.threshold !== undefined && o.topK !== undefined) {
        throw new FgsnError('DEFENSE_OPTION_INVALID', 'method safelora: give threshold or topK, not both');
      }
      return { method, o: { alpha: o.alpha ?? 1, ...(o.topK !== undefined ? { topK: o.topK } : { threshold: o.threshold ?? 0.65 }) } };
    }
    case 'layer':
    case 'restore': {
      const o = parseWith(method, raw, LAYER_SPEC) as Partial<LayerOptions>;
      if (method === 'restore' && o.mode !== undefined && o.mode !== 'restore') {
        throw new FgsnError('DEFENSE_OPTION_INVALID', 'method restore always uses mode restore; use method layer for other modes');
      }
      return {
        method,
        o: { layers: 'band', bandShare: 0.6, mode: method === 'restore' ? 'restore' : 'gram', alpha: 1, strength: 1, energyShare: 0.9, ...o },
      } as MethodOptions;
    }
    case 'antidote':
      return { method, o: { share: 0.05, ...(parseWith(method, raw, METHOD_OPTION_SPECS.antidote) as Partial<AntidoteOptions>) } };
    case 'resta':
      return { method, o: { gamma: 0.5, ...(parseWith(method, raw, METHOD_OPTION_SPECS.resta) as Partial<RestaOptions>) } };
    default:
      throw new FgsnError('DEFENSE_OPTION_INVALID', `unknown method "${String(method)}" (fgsn, safelora, layer, antidote, resta, restore)`);
  }
}
