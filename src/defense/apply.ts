/**
 * Streams a hardened checkpoint: matrix by matrix (one matrix triple in memory), the selected rows get new
 * values; everything is first written as a row diff, and the model folder is rebuilt from the source plus
 * that diff, so `fgsn apply-diff` reproduces it bit for bit by construction. A LoRA input with gram/subspace
 * can also come out as an adapter (B rows projected, A kept).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import {
  appendRowUpdate, decodeToF32, encodeFromF32, isHubId, linearParameterCount, linearWeightNames,
  writeSafetensors, type WriteResult,
} from '../checkpoint/index.js';
import { FgsnError } from '../errors.js';
import { releaseBuffer } from '../util/index.js';
import type { Mat } from './math/matrix.js';
import { type ProjectionOptions, isRowLocal, projectLoraB, projectRows, projectRowsOnly } from './math/project.js';
import type { Selection } from './math/select.js';
import { writeModelFolder } from './io/model-writer.js';
import { RowDiff, writeRowDiff, type DiffTensorPlan } from './io/row-diff.js';
import { type MatrixIO, type WeightSources, checkpointHashes, matrixIO, outputDType, shapeOf } from './io/sources.js';

/** New fp32 values of `rows` (sorted) of one matrix, [rows.length * dIn], in a fresh array the caller owns (and may free). */
export type RowCompute = (io: MatrixIO, rows: Uint32Array) => Promise<Float32Array>;

/**
 * The projection of method.md step 3 as a RowCompute. Row-local modes (realign, add, row, restore) read only the
 * selected rows; gram and subspace read the whole matrices.
 */
export function projectionCompute(opts: ProjectionOptions): RowCompute {
  return async (io, rows) => {
    if (isRowLocal(opts.mode)) {
      const m = await io.selectedRows(rows);
      const out = projectRowsOnly(m, opts).data;
      for (const x of [m.base, m.aligned, m.finetuned]) releaseBuffer(x.data);
      return out;
    }
    const [base, aligned, finetuned] = await Promise.all([io.base(), io.aligned(), io.finetuned()]);
    return projectRows({ base, aligned, finetuned }, rows, opts).values.data;
  };
}

/** Rows of each part computed by that part's compute, in the order the union asks for them. */
export function combinedCompute(parts: { selection: Selection; compute: RowCompute }[]): RowCompute {
  return async (io, rows) => {
    // The column count without reading the matrix: row-local parts read only their rows.
    const dIn = io.cols;
    const out = new Float32Array(rows.length * dIn);
    for (const part of parts) {
      const own = new Set(part.selection.get(io.name) ?? []);
      const idx = [...rows.keys()].filter((k) => own.has(rows[k]));
      if (idx.length === 0) continue;
      const values = await part.compute(io, Uint32Array.from(idx, (k) => rows[k]));
      idx.forEach((k, j) => out.set(values.subarray(j * dIn, (j + 1) * dIn), k * dIn));
    }
    return out;
  };
}

/** New rows of some linear weights: name -> sorted row indices and their [rows * dIn] float32 values. */
export type EditRows = Map<string, { rows: Uint32Array; values: Float32Array }>;

/**
 * The rows `writeHardened` would write for `selection` edited by `compute`, in memory: the same computes,
 * rounded to the output dtype as the written model stores them (an engine row patch of these rows gives the
 * written model's outputs). A search step measures its candidate this way instead of writing a model.
 * Holds only the selected rows (at most the search's parameter cap) and one matrix triple at a time.
 */
export async function editRows(s: WeightSources, selection: Selection, compute: RowCompute): Promise<EditRows> {
  const out: EditRows = new Map();
  for (const name of linearWeightNames(s.spec)) {
    const rows = selection.get(name);
    if (rows === undefined || rows.length === 0) continue;
    const dtype = outputDType(s, name);
    const values = await compute(matrixIO(s, name), rows);
    if (dtype === 'F32') {
      out.set(name, { rows, values });
      continue;
    }
    const stored = encodeFromF32(dtype, values);
    out.set(name, { rows, values: decodeToF32(dtype, stored) });
    releaseBuffer(values);
    releaseBuffer(stored);
  }
  return out;
}

/** Rows of both edits together (per matrix, rows merged in order); where both edit a row, `b`'s value wins. */
export function mergeEditRows(a: EditRows, b: EditRows): EditRows {
  const out: EditRows = new Map(a);
  for (const [name, eb] of b) {
    const ea = out.get(name);
    if (ea === undefined) {
      out.set(name, eb);
      continue;
    }
    const dIn = ea.values.length / Math.max(1, ea.rows.length) || eb.values.length / Math.max(1, eb.rows.length);
    const from = new Map<number, Float32Array>();
    ea.rows.forEach((r, k) => from.set(r, ea.values.subarray(k * dIn, (k + 1) * dIn)));
    eb.rows.forEach((r, k) => from.set(r, eb.values.subarray(k * dIn, (k + 1) * dIn)));
    const rows = Uint32Array.from([...from.keys()].sort((x, y) => x - y));
    const values = new Float32Array(rows.length * dIn);
    rows.forEach((r, k) => values.set(from.get(r)!, k * dIn));
    out.set(name, { rows, values });
  }
  return out;
}

export interface EditCounts {
  rows: number;
  params: number;
  pctAllParams: number;
  pctLinearParams: number;
  perMatrix: Record<string, { rows: number; params: number; of: number }>;
  perLayer: Record<string, { rows: number; params: number }>;
}

export function countEdit(s: WeightSources, sel: Selection): EditCounts {
  const perMatrix: EditCounts['perMatrix'] = {};
  const perLayer: EditCounts['perLayer'] = {};
  let rows = 0;
  let params = 0;
  for (const name of linearWeightNames(s.spec)) {
    const n = sel.get(name)?.length ?? 0;
    const [dOut, dIn] = shapeOf(s, name);
    perMatrix[name] = { rows: n, params: n * dIn, of: dOut };
    const layer = /^model\.layers\.(\d+)\./.exec(name)?.[1] ?? 'other';
    const l = (perLayer[layer] ??= { rows: 0, params: 0 });
    l.rows += n;
    l.params += n * dIn;
    rows += n;
    params += n * dIn;
  }
  return {
    rows, params,
    pctAllParams: (100 * params) / s.layout.parameterCount,
    pctLinearParams: (100 * params) / linearParameterCount(s.spec),
    perMatrix, perLayer,
  };
}

export interface WriteTargets {
  /** Row diff path (kept), or undefined to use a temporary one. */
  diffPath?: string;
  modelDir?: string;
  adapterDir?: string;
  /**
   * Options of gram/subspace for an adapter input: the adapter keeps its rank with B's rows projected.
   * Without it the adapter output is the row-sparse edit appended as a rank-k update (any method, any input).
   */
  adapterProjection?: ProjectionOptions;
}

export interface WriteOutcome {
  diff?: { path: string; bytes: number; sha256: string };
  modelFiles?: string[];
  adapterFiles?: string[];
  sourceSha256: Record<string, string>;
  /** Weight files written (absolute path -> size and sha256 of the bytes written). */
  written: Map<string, WriteResult>;
}

/**
 * Writes the requested outputs for `selection` edited by `compute`. For an adapter input the diff is taken
 * against the aligned model and also carries the merged adapter rows (the model output is a merged model).
 */
export async function writeHardened(
  s: WeightSources,
  selection: Selection,
  compute: RowCompute,
  targets: WriteTargets,
  metadata: Record<string, string>,
  onMatrix?: (name: string) => void | Promise<void>,
): Promise<WriteOutcome> {
  // The sources' hashes (provenance in the report and the diff) are computed on a worker thread while the
  // outputs are written: with a model output the diff is first written to scratch without them and the model
  // from it, and a diff output is then written again, with them, from the scratch diff's values (the same
  // encoding of the same values: byte-identical to writing it directly). Only a diff-only job waits for them.
  const hashing = checkpointHashes(s.layout);
  // A rejection is taken by the awaits below; never left unhandled while the writes run.
  hashing.catch(() => undefined);
  const outcome: WriteOutcome = { sourceSha256: {}, written: new Map() };
  if (targets.diffPath !== undefined || targets.modelDir !== undefined) {
    const tmpDir = targets.modelDir !== undefined ? await mkdirTmp(targets.modelDir) : null;
    const diffPath = tmpDir !== null ? join(tmpDir, 'rows.diff.safetensors') : targets.diffPath!;
    try {
      const plans: DiffTensorPlan[] = [];
      for (const name of linearWeightNames(s.spec)) {
        const picked = selection.get(name) ?? new Uint32Array(0);
        const merged = s.adapter !== undefined && s.adapter.targets().includes(name);
        if (picked.length === 0 && !merged) continue;
        const [dOut, dIn] = shapeOf(s, name);
        const rows = merged ? Uint32Array.from({ length: dOut }, (_, i) => i) : picked;
        plans.push({
          name, rows, dIn, dtype: outputDType(s, name),
          values: async () => {
            await onMatrix?.(name);
            const io = matrixIO(s, name);
            const edited = picked.length > 0 ? await compute(io, picked) : new Float32Array(0);
            if (!merged) return edited;
            const full: Mat = await io.finetuned();
            const out = full.data.slice();
            for (let k = 0; k < picked.length; k++) out.set(edited.subarray(k * dIn, (k + 1) * dIn), picked[k] * dIn);
            return out;
          },
        });
      }
      await mkdir(dirname(diffPath), { recursive: true });
      const provenance = async (): Promise<Record<string, string>> => ({ ...metadata, 'fgsn.source_sha256': JSON.stringify(await hashing) });
      const w = await writeRowDiff(diffPath, plans, tmpDir !== null ? metadata : await provenance());
      let published = w;
      if (targets.modelDir !== undefined) {
        const diff = await RowDiff.open(diffPath);
        try {
          outcome.modelFiles = await writeModelFolder(s.layout, s.configDir, diff, targets.modelDir, outcome.written);
          if (targets.diffPath !== undefined) {
            await mkdir(dirname(targets.diffPath), { recursive: true });
            const again = plans.map((p) => ({ ...p, values: () => diff.file.readF32(`${p.name}.values`) }));
            published = await writeRowDiff(targets.diffPath, again, await provenance());
          }
        } finally {
          await diff.close();
        }
      }
      if (targets.diffPath !== undefined) {
        outcome.diff = { path: targets.diffPath, ...published };
        outcome.written.set(resolve(targets.diffPath), published);
      }
    } finally {
      if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
    }
  }
  outcome.sourceSha256 = await hashing;
  if (targets.adapterDir !== undefined) {
    outcome.adapterFiles = targets.adapterProjection !== undefined
      ? await writeProjectedAdapter(s, selection, targets.adapterProjection, targets.adapterDir)
      : await writeRowSparseAdapter(s, selection, compute, targets.adapterDir, metadata, onMatrix);
  }
  return outcome;
}

async function mkdirTmp(near: string): Promise<string> {
  const dir = join(resolve(near, '..'), `.fgsn-tmp-${process.pid}-${Date.now()}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** LoRA form (method.md): B'[N] = B[N] + alpha((P B)[N] - B[N]), A and every other tensor byte-for-byte. */
export async function writeProjectedAdapter(s: WeightSources, selection: Selection, opts: ProjectionOptions, outDir: string): Promise<string[]> {
  const adapter = s.adapter;
  if (!adapter) throw new FgsnError('DEFENSE_OPTION_INVALID', 'the adapter output needs a LoRA adapter input (--adapter)');
  if (opts.mode !== 'gram' && opts.mode !== 'subspace') {
    throw new FgsnError('DEFENSE_OPTION_INVALID', `the adapter output keeps the LoRA form only for mode gram or subspace, not ${opts.mode}`);
  }
  await mkdir(outDir, { recursive: true });
  const bNames = new Map<string, string>();
  for (const t of adapter.targets()) bNames.set(adapter.pair(t).b.name, t);
  const f = adapter.file;
  await writeSafetensors(
    join(outDir, 'adapter_model.safetensors'),
    f.names().map((name) => {
      const t = f.tensor(name);
      return {
        name, dtype: t.dtype, shape: [...t.shape],
        data: async () => {
          const bytes = await f.readBytes(name);
          const target = bNames.get(name);
          const rows = target === undefined ? undefined : selection.get(target);
          if (target === undefined || rows === undefined || rows.length === 0) return bytes;
          const io = matrixIO(s, target);
          const [base, aligned] = await Promise.all([io.base(), io.aligned()]);
          const v: Mat = { rows: aligned.rows, cols: aligned.cols, data: aligned.data.map((x, k) => x - base.data[k]) };
          const bData = await f.readF32(name);
          const b: Mat = { rows: t.shape[0], cols: t.shape[1], data: bData };
          const newRows = projectLoraB(v, b, rows, opts).values;
          const out = bData.slice();
          for (let k = 0; k < rows.length; k++) out.set(newRows.data.subarray(k * b.cols, (k + 1) * b.cols), rows[k] * b.cols);
          return encodeFromF32(t.dtype, out);
        },
      };
    }),
    f.metadata,
  );
  const configPath = join(adapter.dir, 'adapter_config.json');
  const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  config.base_model_name_or_path = await publicBaseRef(s);
  await writeFile(join(outDir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  return ['adapter_model.safetensors', 'adapter_config.json'];
}

/**
 * base_model_name_or_path of an output adapter: what it applies to, as something a user can publish. A Hub
 * id from the input adapter's config or the model's config.json (`_name_or_path`), else the input adapter's
 * own relative path, else null (PEFT then takes the base model from the caller). Never an absolute path:
 * it would name a folder of the machine that ran the job.
 */
export async function publicBaseRef(s: WeightSources): Promise<string | null> {
  const own = s.adapter?.config.baseModelNameOrPath ?? null;
  if (isHubId(own)) return own;
  try {
    const named = (JSON.parse(await readFile(join(s.layout.dir, 'config.json'), 'utf8')) as { _name_or_path?: unknown })._name_or_path;
    if (isHubId(named)) return named;
  } catch {
    // no readable config.json: fall through
  }
  return own !== null && own !== '' && !isAbsolute(own) ? own : null;
}

/** Output rank of the row-sparse adapter: the input adapter's rank plus the most rows edited in one matrix. */
export function rowSparseAdapterRank(s: WeightSources, selection: Selection): number {
  let k = 0;
  for (const rows of selection.values()) k = Math.max(k, rows.length);
  return (s.adapter?.config.r ?? 0) + k;
}

const loraKey = (weightName: string, part: 'A' | 'B'): string => `base_model.model.${weightName.slice(0, -'.weight'.length)}.lora_${part}.weight`;
const escapeRegex = (x: string): string => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Adapter in, adapter out for every row-sparse method: the edit of k rows of a matrix is a rank-k update
 * (appendRowUpdate) appended to the input adapter's pair, or a fresh adapter over the fine-tune for a full
 * model input. Its merge equals the hardened model up to float32 rounding. Written in float32 (an appended
 * delta rounded to bfloat16 would no longer merge to the hardened rows); one shared rank, zero-padded.
 */
export async function writeRowSparseAdapter(
  s: WeightSources,
  selection: Selection,
  compute: RowCompute,
  outDir: string,
  metadata: Record<string, string>,
  onMatrix?: (name: string) => void | Promise<void>,
): Promise<string[]> {
  const adapter = s.adapter;
  const edited = [...selection].filter(([, rows]) => rows.length > 0).map(([name]) => name);
  const modules = [...new Set([...(adapter?.targets() ?? []), ...edited])].sort();
  let rank = rowSparseAdapterRank(s, selection);
  // Nothing edited on a full model: a valid adapter that changes nothing (rank 1, zeros) on one matrix.
  if (modules.length === 0) {
    modules.push(linearWeightNames(s.spec)[0]);
    rank = 1;
  }
  const scaling = adapter?.config.scaling ?? 1;
  const pending = new Map<string, Promise<{ a: Float32Array; b: Float32Array }>>();
  const pairOf = (name: string): Promise<{ a: Float32Array; b: Float32Array }> => {
    let p = pending.get(name);
    if (p === undefined) {
      p = (async () => {
        await onMatrix?.(name);
        const [dOut, dIn] = shapeOf(s, name);
        const rows = selection.get(name) ?? new Uint32Array(0);
        let deltas = new Float32Array(0);
        if (rows.length > 0) {
          const io = matrixIO(s, name);
          const [values, current] = await Promise.all([compute(io, rows), io.finetuned()]);
          deltas = new Float32Array(rows.length * dIn);
          for (let j = 0; j < rows.length; j++) {
            for (let c = 0; c < dIn; c++) deltas[j * dIn + c] = values[j * dIn + c] - current.data[rows[j] * dIn + c];
          }
        }
        const own = adapter !== undefined && adapter.targets().includes(name)
          ? { a: await adapter.readA(name), b: await adapter.readB(name), rank: adapter.config.r }
          : null;
        return appendRowUpdate(own, dOut, dIn, rows, deltas, scaling, rank);
      })();
      pending.set(name, p);
    }
    return p;
  };
  await mkdir(outDir, { recursive: true });
  await writeSafetensors(
    join(outDir, 'adapter_model.safetensors'),
    modules.flatMap((name) => {
      const [dOut, dIn] = shapeOf(s, name);
      return [
        { name: loraKey(name, 'A'), dtype: 'F32' as const, shape: [rank, dIn], data: async () => encodeFromF32('F32', (await pairOf(name)).a) },
        {
          name: loraKey(name, 'B'), dtype: 'F32' as const, shape: [dOut, rank],
          data: async () => {
            const b = (await pairOf(name)).b;
            pending.delete(name); // A was written first (same dtype, name order): the pair is done
            return encodeFromF32('F32', b);
          },
        },
      ];
    }),
    { ...(adapter?.file.metadata ?? {}), format: 'pt', ...metadata },
  );
  const inputConfig = adapter
    ? (JSON.parse(await readFile(join(adapter.dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>)
    : { peft_type: 'LORA', task_type: 'CAUSAL_LM', bias: 'none', fan_in_fan_out: false, use_rslora: false, lora_dropout: 0, inference_mode: true };
  const useRslora = adapter?.config.useRslora ?? false;
  const originalCovers = adapter !== undefined && modules.every((m) => adapter.targets().includes(m));
  const config: Record<string, unknown> = {
    ...inputConfig,
    r: rank,
    // Same scaling as the input (1 for a fresh adapter): lora_alpha / r, or / sqrt(r) for rsLoRA.
    lora_alpha: useRslora ? scaling * Math.sqrt(rank) : scaling * rank,
    // A list matches module-name suffixes (every layer); new modules are named exactly, as PEFT's full-match regex.
    target_modules: originalCovers ? inputConfig.target_modules : modules.map((m) => escapeRegex(m.slice(0, -'.weight'.length))).join('|'),
    base_model_name_or_path: await publicBaseRef(s),
  };
  await writeFile(join(outDir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  return ['adapter_model.safetensors', 'adapter_config.json'];
}

