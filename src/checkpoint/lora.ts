/**
 * PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors) as dense deltas of base weights:
 * delta W = scaling * B @ A, produced a row range at a time so a merge never holds a full delta.
 *
 * Supported: plain LoRA on linear layers (peft_type LORA, fan_in_fan_out false, bias none, no DoRA, no
 * per-module rank/alpha patterns, no modules_to_save). Everything else is refused with
 * ADAPTER_CONFIG_INVALID rather than approximated: a wrong merge would silently change the model.
 * fan_in_fan_out only applies to GPT-2 style Conv1D layers, which none of our families have.
 */
import { join, resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import { z } from 'zod';
import { FgsnError } from '../errors.js';
import { FLOAT_DTYPES } from './dtypes.js';
import { confinedPath, isPickleName, listFolder, pickleRefused, realDirectory } from './folder-safety.js';
import { ioError } from './io.js';
import { linearWeightNames, linearWeightShape, readJsonFile } from './model-config.js';
import { preview } from './json-limits.js';
import { STRICT, ProblemCollector, type ProblemSink } from './problems.js';
import { SafetensorsFile } from './safetensors-reader.js';
import { MAX_TARGET_LIST_ENTRIES, MAX_TARGET_NAME_CHARS, compileTargetModules, type TargetMatcher } from './target-modules.js';
import type { ModelSpec, TensorInfo } from './types.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

export interface LoraConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  scaling: number;
  targetModules: string[];
  baseModelNameOrPath: string | null;
  fanInFanOut: boolean;
}

export interface LoraPair {
  a: TensorInfo;
  b: TensorInfo;
  rank: number;
  dOut: number;
  dIn: number;
}

const emptyish = z.union([z.record(z.string(), z.unknown()), z.null()]).optional();

const adapterSchema = z.object({
  peft_type: z.string(),
  r: z.number().int().positive(),
  lora_alpha: z.number().positive(),
  use_rslora: z.boolean().optional(),
  target_modules: z.union([
    z.array(z.string().min(1).max(MAX_TARGET_NAME_CHARS)).min(1).max(MAX_TARGET_LIST_ENTRIES),
    z.string().min(1),
  ]),
  base_model_name_or_path: z.string().nullish(),
  fan_in_fan_out: z.boolean().optional(),
  bias: z.string().optional(),
  use_dora: z.boolean().optional(),
  rank_pattern: emptyish,
  alpha_pattern: emptyish,
  modules_to_save: z.array(z.string()).nullish(),
});

function configError(path: string, problem: string): FgsnError {
  return new FgsnError('ADAPTER_CONFIG_INVALID', `${path}: ${problem}`, { details: { file: path } });
}

/** Validates a PEFT adapter_config.json object; `path` names it in errors. */
export function parseAdapterConfig(json: unknown, path: string): LoraConfig {
  const r = adapterSchema.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues;
    const listed = issues.slice(0, 20).map((i) => `${i.path.join('.').slice(0, 100) || '(root)'}: ${i.message.slice(0, 200)}`).join('; ');
    throw configError(path, issues.length > 20 ? `${listed} (and ${issues.length - 20} more)` : listed);
  }
  const c = r.data;
  if (c.peft_type !== 'LORA') throw configError(path, `peft_type ${preview(c.peft_type, 100)} is not supported (only LORA)`);
  if (c.fan_in_fan_out === true) throw configError(path, 'fan_in_fan_out: true (Conv1D layers) is not supported for llama/mistral/qwen2');
  if (c.use_dora === true) throw configError(path, 'use_dora: true (DoRA) is not supported');
  if (c.bias !== undefined && c.bias !== 'none') throw configError(path, `bias ${preview(c.bias, 100)} is not supported (only "none")`);
  if (c.rank_pattern && Object.keys(c.rank_pattern).length > 0) throw configError(path, 'rank_pattern (per-module ranks) is not supported');
  if (c.alpha_pattern && Object.keys(c.alpha_pattern).length > 0) throw configError(path, 'alpha_pattern (per-module alphas) is not supported');
  if (c.modules_to_save && c.modules_to_save.length > 0) throw configError(path, 'modules_to_save (fully trained copies of modules) is not supported');
  const useRslora = c.use_rslora ?? false;
  const matcher = compileTargetModules(c.target_modules, path);
  const config: LoraConfig = {
    r: c.r,
    loraAlpha: c.lora_alpha,
    useRslora,
    // PEFT: lora_alpha / r, or lora_alpha / sqrt(r) for rank-stabilised LoRA.
    scaling: useRslora ? c.lora_alpha / Math.sqrt(c.r) : c.lora_alpha / c.r,
    targetModules: typeof c.target_modules === 'string' ? [c.target_modules] : [...c.target_modules],
    baseModelNameOrPath: c.base_model_name_or_path ?? null,
    fanInFanOut: false,
  };
  MATCHERS.set(config, matcher);
  return config;
}

/**
 * The compiled target_modules of each parsed config. Kept beside the config, not in it: LoraConfig is plain
 * data that summaries spread into JSON.
 */
const MATCHERS = new WeakMap<LoraConfig, TargetMatcher>();

/** The matcher of a config from parseAdapterConfig; a hand-built config's list is matched by name. */
export function targetMatcher(config: LoraConfig): TargetMatcher {
  return MATCHERS.get(config) ?? compileTargetModules(config.targetModules, '(adapter config)');
}

/** `base_model.model.<name>.lora_{A,B}[.default].weight` -> `<name>.weight`, or null for any other key. */
export function parseLoraKey(key: string): { base: string; part: 'A' | 'B' } | null {
  const m = /^base_model\.model\.(.+)\.lora_(A|B)(?:\.default)?\.weight$/.exec(key);
  return m ? { base: `${m[1]}.weight`, part: m[2] as 'A' | 'B' } : null;
}

/** The module name ("q_proj") of a base weight name, for target_modules checks. */
function moduleOf(baseName: string): string {
  const parts = baseName.split('.');
  return parts[parts.length - 2];
}

/** PEFT's matching (target-modules.ts) of a base weight's module path, e.g. model.layers.0.self_attn.q_proj. */
function isTargeted(config: LoraConfig, baseName: string): boolean {
  return targetMatcher(config).matches(baseName.slice(0, -'.weight'.length));
}

export class LoraAdapter {
  /** The last A read, reused across row ranges of one target (A is small: r x dIn). */
  private cachedA: { name: string; values: Float32Array } | null = null;

  private constructor(
    readonly dir: string,
    readonly config: LoraConfig,
    readonly file: SafetensorsFile,
    private readonly pairs: Map<string, LoraPair>,
  ) {}

  static async open(dir: string, base?: ModelSpec): Promise<LoraAdapter> {
    return (await openAdapterFolder(dir, base, STRICT)) as LoraAdapter;
  }

  /** @internal */
  static fromParts(dir: string, config: LoraConfig, file: SafetensorsFile, pairs: Map<string, LoraPair>): LoraAdapter {
    return new LoraAdapter(dir, config, file, pairs);
  }

  /** Base weight names the adapter changes, sorted. */
  targets(): string[] {
    return [...this.pairs.keys()];
  }

  pair(baseName: string): LoraPair {
    const p = this.pairs.get(baseName);
    if (p === undefined) {
      throw new FgsnError('CHECKPOINT_TENSOR_NOT_FOUND', `${this.dir}: the adapter does not target "${baseName}"`, { details: { dir: this.dir, tensor: baseName } });
    }
    return p;
  }

  /** A as float32, row-major [r, dIn]. */
  async readA(baseName: string): Promise<Float32Array> {
    const p = this.pair(baseName);
    if (this.cachedA?.name === baseName) return this.cachedA.values.slice();
    return this.file.readF32(p.a.name);
  }

  /** B as float32, row-major [dOut, r]. */
  readB(baseName: string): Promise<Float32Array> {
    return this.file.readF32(this.pair(baseName).b.name);
  }

  /** scaling * B[rowStart:rowEnd] @ A as float32, row-major [rowEnd - rowStart, dIn]. */
  async deltaRowsF32(baseName: string, rowStart: number, rowEnd: number): Promise<Float32Array> {
    const p = this.pair(baseName);
    const b = await this.file.readRowsF32(p.b.name, rowStart, rowEnd);
    // A local reference: a concurrent call for another target may replace the cache while we await.
    let a = this.cachedA?.name === baseName ? this.cachedA.values : null;
    if (a === null) {
      a = await this.file.readF32(p.a.name);
      this.cachedA = { name: baseName, values: a };
    }
    return loraDeltaRows(b, a, rowEnd - rowStart, p.rank, p.dIn, this.config.scaling);
  }

  async close(): Promise<void> {
    this.cachedA = null;
    await this.file.close();
  }
}

/**
 * Pure: scaling * B @ A for `rows` rows of B ([rows, r]) and A ([r, dIn]). Accumulates each output row in
 * float64 and rounds once, so the result is the correctly rounded product up to float32 input error.
 */
export function loraDeltaRows(b: Float32Array, a: Float32Array, rows: number, rank: number, dIn: number, scaling: number): Float32Array {
  const out = new Float32Array(rows * dIn);
  const acc = new Float64Array(dIn);
  for (let i = 0; i < rows; i++) {
    acc.fill(0);
    for (let k = 0; k < rank; k++) {
      const bik = b[i * rank + k];
      if (bik === 0) continue;
      const aRow = k * dIn;
      for (let j = 0; j < dIn; j++) acc[j] += bik * a[aRow + j];
    }
    const o = i * dIn;
    for (let j = 0; j < dIn; j++) out[o + j] = scaling * acc[j];
  }
  return out;
}

/**
 * Opens and checks an adapter folder: config, weights file (never pickle), A/B pairing, ranks, dtypes, and
 * shapes against `base` when given. STRICT throws the first problem; a collector gets all of them.
 */
export async function openAdapterFolder(dirIn: string, base: ModelSpec | undefined, sink: ProblemSink): Promise<LoraAdapter | null> {
  const dir = resolve(dirIn);
  try {
    if (!(await stat(dir)).isDirectory()) throw new FgsnError('CHECKPOINT_NOT_FOUND', `${dir}: not a directory`, { details: { dir } });
  } catch (e) {
    throw ioError(dir, e);
  }
  const realDir = await realDirectory(dir);
  const entries = await listFolder(dir);
  const collector = new ProblemCollector();
  const configPath = join(dir, ADAPTER_CONFIG);

  let config: LoraConfig | null = null;
  await collector.attempt(async () => {
    const real = await confinedPath(realDir, ADAPTER_CONFIG, dir);
    if (real === null) throw configError(configPath, 'missing (a PEFT adapter folder needs adapter_config.json)');
    const json = await readJsonFile(real, 'ADAPTER_CONFIG_INVALID');
    config = parseAdapterConfig(json, configPath);
  });

  let file: SafetensorsFile | null = null;
  if (entries.includes(ADAPTER_WEIGHTS)) {
    await collector.attempt(async () => {
      const real = await confinedPath(realDir, ADAPTER_WEIGHTS, dir);
      if (real === null) throw new FgsnError('CHECKPOINT_NO_WEIGHTS', `${dir}: ${ADAPTER_WEIGHTS} is a dangling link`, { details: { dir } });
      file = await SafetensorsFile.open(real);
    });
  } else {
    const pickles = entries.filter(isPickleName);
    collector.report(
      pickles.length > 0
        ? pickleRefused(dir, pickles)
        : new FgsnError('CHECKPOINT_NO_WEIGHTS', `${dir}: no ${ADAPTER_WEIGHTS}`, { details: { dir, files: entries } }),
    );
  }

  const f = file as SafetensorsFile | null;
  const cfg = config as LoraConfig | null;
  let pairs = new Map<string, LoraPair>();
  if (f !== null) pairs = checkPairs(f, cfg, base, collector);
  if (collector.problems.length > 0 || f === null || cfg === null) {
    await f?.close();
    collector.drainTo(sink);
    return null;
  }
  return LoraAdapter.fromParts(realDir, cfg, f, pairs);
}

function checkPairs(
  f: SafetensorsFile, config: LoraConfig | null, base: ModelSpec | undefined, collector: ProblemCollector,
): Map<string, LoraPair> {
  const bad = (code: 'ADAPTER_TENSOR_INVALID' | 'ADAPTER_BASE_MISMATCH', tensor: string, problem: string): void =>
    collector.report(new FgsnError(code, `${f.path}: tensor "${tensor}": ${problem}`, { details: { file: f.path, tensor } }));

  const halves = new Map<string, { a?: TensorInfo; b?: TensorInfo }>();
  for (const t of f.tensors.values()) {
    const key = parseLoraKey(t.name);
    if (key === null) {
      bad('ADAPTER_TENSOR_INVALID', t.name, 'not a LoRA weight (expected base_model.model.<module>.lora_A.weight / lora_B.weight)');
      continue;
    }
    const h = halves.get(key.base) ?? {};
    if ((key.part === 'A' ? h.a : h.b) !== undefined) {
      bad('ADAPTER_TENSOR_INVALID', t.name, `a second lora_${key.part} for ${key.base} (both ".default" and plain keys?)`);
      continue;
    }
    if (key.part === 'A') h.a = t;
    else h.b = t;
    halves.set(key.base, h);
  }
  if (f.tensors.size === 0) collector.report(new FgsnError('ADAPTER_TENSOR_INVALID', `${f.path}: no LoRA tensors`, { details: { file: f.path } }));

  // PEFT refuses a config whose target_modules match no module of the model it is applied to.
  if (config !== null && base !== undefined) {
    const matcher = targetMatcher(config);
    if (!linearWeightNames(base).some((n) => matcher.matches(n.slice(0, -'.weight'.length)))) {
      collector.report(new FgsnError('ADAPTER_BASE_MISMATCH', `${f.path}: target_modules ${preview(config.targetModules, 200)} match no linear module of the base ${base.family} model`, {
        details: { file: f.path, targetModules: config.targetModules.slice(0, 20) },
      }));
    }
  }

  const pairs = new Map<string, LoraPair>();
  for (const baseName of [...halves.keys()].sort()) {
    const { a, b } = halves.get(baseName) as { a?: TensorInfo; b?: TensorInfo };
    if (a === undefined || b === undefined) {
      bad('ADAPTER_TENSOR_INVALID', (a ?? b)?.name ?? baseName, `lora_${a === undefined ? 'A' : 'B'} for ${baseName} is missing`);
      continue;
    }
    let ok = true;
    for (const t of [a, b]) {
      if (!FLOAT_DTYPES.has(t.dtype)) {
        bad('ADAPTER_TENSOR_INVALID', t.name, `dtype ${t.dtype} is not a float dtype`);
        ok = false;
      }
    }
    if (a.shape.length !== 2 || b.shape.length !== 2) {
      bad('ADAPTER_TENSOR_INVALID', a.shape.length !== 2 ? a.name : b.name, `lora_A must be [r, in] and lora_B [out, r]; got ${JSON.stringify(a.shape)} and ${JSON.stringify(b.shape)}`);
      continue;
    }
    const [rank, dIn] = a.shape;
    const [dOut, rankB] = b.shape;
    if (rank !== rankB) {
      bad('ADAPTER_TENSOR_INVALID', b.name, `rank mismatch: lora_A has ${rank} rows, lora_B has ${rankB} columns`);
      ok = false;
    }
    if (config !== null && rank !== config.r) {
      bad('ADAPTER_TENSOR_INVALID', a.name, `rank ${rank} differs from adapter_config.json r = ${config.r}`);
      ok = false;
    }
    if (config !== null && !isTargeted(config, baseName)) {
      bad('ADAPTER_TENSOR_INVALID', a.name, `module "${moduleOf(baseName)}" is not in target_modules ${preview(config.targetModules, 200)}`);
      ok = false;
    }
    if (base !== undefined) {
      const expected = linearWeightShape(base, baseName);
      if (expected === null) {
        bad('ADAPTER_BASE_MISMATCH', a.name, `${baseName} is not a linear weight of the base ${base.family} model`);
        ok = false;
      } else if (expected[0] !== dOut || expected[1] !== dIn) {
        bad('ADAPTER_BASE_MISMATCH', a.name, `delta would be [${dOut}, ${dIn}] but the base weight ${baseName} is [${expected[0]}, ${expected[1]}]`);
        ok = false;
      }
    }
    if (ok) pairs.set(baseName, { a, b, rank, dOut, dIn });
  }
  return pairs;
}

/**
 * Pure: a row-sparse edit appended to a LoRA pair as a rank-k update (k = rows.length), padded with zeros to
 * `outRank`. With A' = [A; deltas / scaling; 0] ([outRank, dIn]) and B' = [B, one-hot columns e_rows[j], 0]
 * ([dOut, outRank]), scaling * B' A' = scaling * B A + sum_j e_rows[j] deltas[j]: the merge gains exactly
 * the edited rows' deltas. `a`/`b` null (or rank 0) starts a fresh adapter. Zero padding lets every module
 * of one adapter share one rank (PEFT's `r`; per-module rank_pattern is not understood by every server).
 */
export function appendRowUpdate(
  pair: { a: Float32Array; b: Float32Array; rank: number } | null,
  dOut: number,
  dIn: number,
  rows: Uint32Array,
  deltas: Float32Array,
  scaling: number,
  outRank: number,
): { a: Float32Array; b: Float32Array } {
  const r0 = pair?.rank ?? 0;
  const k = rows.length;
  if (r0 + k > outRank) throw new RangeError(`rank ${r0} + ${k} rows exceeds the output rank ${outRank}`);
  if (deltas.length !== k * dIn) throw new RangeError(`deltas: expected ${k * dIn} values, got ${deltas.length}`);
  const a = new Float32Array(outRank * dIn);
  const b = new Float32Array(dOut * outRank);
  if (pair !== null && r0 > 0) {
    a.set(pair.a.subarray(0, r0 * dIn));
    for (let i = 0; i < dOut; i++) b.set(pair.b.subarray(i * r0, (i + 1) * r0), i * outRank);
  }
  for (let j = 0; j < k; j++) {
    const row = rows[j];
    if (row >= dOut) throw new RangeError(`row ${row} is outside [0, ${dOut})`);
    for (let c = 0; c < dIn; c++) a[(r0 + j) * dIn + c] = deltas[j * dIn + c] / scaling;
    b[row * outRank + r0 + j] = 1;
  }
  return { a, b };
}

/** A Hub repository id ("owner/name"), as opposed to a path on some machine. */
export function isHubId(s: unknown): s is string {
  return typeof s === 'string' && /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(s) && !s.includes('..');
}
