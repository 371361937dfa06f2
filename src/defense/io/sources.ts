/**
 * The three weight sets a defense reads, matched by tensor name. A fine-tune given as a PEFT adapter is
 * merged on the fly, one matrix at a time (W_aligned + s·B·A), so callers never see the difference.
 */
import { isAbsolute, resolve } from 'node:path';
import { ioError, linearWeightNames, LoraAdapter, ModelCheckpoint } from '../../checkpoint/index.js';
import type { DType, ModelSpec } from '../../checkpoint/index.js';
import { sha256FileOffThread } from '../../util/index.js';
import { FgsnError } from '../../errors.js';
import type { Mat } from '../math/matrix.js';

export interface WeightSources {
  base: ModelCheckpoint;
  aligned: ModelCheckpoint;
  /** Full fine-tune, or undefined when `adapter` is given. */
  finetuned?: ModelCheckpoint;
  adapter?: LoraAdapter;
  spec: ModelSpec;
  /** The checkpoint whose files, dtype and sharding the hardened model copies. */
  layout: ModelCheckpoint;
  /** Folder whose config/tokenizer files the hardened model copies. */
  configDir: string;
}

export async function openSources(paths: { basePath: string; alignedPath: string; finetunedPath?: string; adapterPath?: string }): Promise<WeightSources> {
  if ((paths.finetunedPath === undefined) === (paths.adapterPath === undefined)) {
    throw new FgsnError('DEFENSE_OPTION_INVALID', 'give exactly one of the fine-tuned model folder and the LoRA adapter folder');
  }
  const opened: { close(): Promise<void> }[] = [];
  try {
    const base = await ModelCheckpoint.open(paths.basePath);
    opened.push(base);
    const aligned = await ModelCheckpoint.open(paths.alignedPath);
    opened.push(aligned);
    checkSameShapes(aligned, base, 'base');
    let finetuned: ModelCheckpoint | undefined;
    let adapter: LoraAdapter | undefined;
    if (paths.finetunedPath !== undefined) {
      finetuned = await ModelCheckpoint.open(paths.finetunedPath);
      opened.push(finetuned);
      checkSameShapes(aligned, finetuned, 'fine-tuned');
    } else {
      adapter = await LoraAdapter.open(paths.adapterPath!, aligned.spec);
      opened.push(adapter);
    }
    return {
      base, aligned, finetuned, adapter, spec: aligned.spec,
      layout: finetuned ?? aligned,
      configDir: finetuned?.dir ?? aligned.dir,
    };
  } catch (e) {
    await Promise.all(opened.map((o) => o.close().catch(() => undefined)));
    throw e;
  }
}

export async function closeSources(s: WeightSources): Promise<void> {
  await Promise.all([s.base.close(), s.aligned.close(), s.finetuned?.close(), s.adapter?.close()]);
}

function checkSameShapes(ref: ModelCheckpoint, other: ModelCheckpoint, what: string): void {
  for (const name of linearWeightNames(ref.spec)) {
    const a = ref.tensor(name).shape;
    if (!other.has(name)) {
      throw new FgsnError('DEFENSE_MODEL_MISMATCH', `${what} model ${other.dir} has no tensor "${name}"`, { details: { tensor: name } });
    }
    const b = other.tensor(name).shape;
    if (a.length !== b.length || a.some((x, k) => x !== b[k])) {
      throw new FgsnError('DEFENSE_MODEL_MISMATCH', `${what} model ${other.dir}: "${name}" has shape ${JSON.stringify(b)}, aligned has ${JSON.stringify(a)}`, {
        details: { tensor: name, shape: b, expected: a },
      });
    }
  }
}

export function shapeOf(s: WeightSources, name: string): [number, number] {
  const sh = s.aligned.tensor(name).shape;
  return [sh[0], sh[1]];
}

/** dtype the hardened tensor is written in: the fine-tune's own (the aligned one's for an adapter). */
export function outputDType(s: WeightSources, name: string): DType {
  return s.layout.tensor(name).dtype;
}

/**
 * A whole matrix upcast to float32: its own storage, or with `scratch` (at least rows x cols values) a view of
 * its prefix, valid until the scratch is reused: a loop over every matrix then touches no fresh memory.
 */
export async function readMat(ck: ModelCheckpoint, name: string, scratch?: Float32Array): Promise<Mat> {
  const t = ck.tensor(name);
  const data = await ck.readF32(name, scratch);
  if (scratch !== undefined) return { rows: t.shape[0], cols: t.shape[1], data };
  return { rows: t.shape[0], cols: t.shape[1], data: data.buffer.byteLength === data.byteLength ? data : data.slice() };
}

export async function readFinetuned(s: WeightSources, name: string): Promise<Mat> {
  if (s.finetuned) return readMat(s.finetuned, name);
  if (!s.adapter!.targets().includes(name)) return readMat(s.aligned, name);
  // Every row, as one run: the adapter merge is readFinetunedRows'.
  return readFinetunedRows(s, name, Uint32Array.from({ length: shapeOf(s, name)[0] }, (_, i) => i));
}

/**
 * Rows `rows` (sorted ascending) of a weight, [rows.length, cols], read run by run of consecutive rows: a
 * search step's edit touches ~1 % of a matrix's rows, and reading (and upcasting) whole matrices for it cost
 * each step three checkpoints' worth of reads and left that much garbage to V8 (bench/scale: +40-90 MiB RSS).
 */
export async function readRowsMat(ck: ModelCheckpoint, name: string, rows: Uint32Array): Promise<Mat> {
  const cols = ck.tensor(name).shape[1];
  const data = new Float32Array(rows.length * cols);
  // Each run decoded straight into its place (no block per run to copy from).
  await Promise.all(rowRuns(rows).map(([at, start, end]) => ck.readRowsF32(name, start, end, data.subarray(at * cols, (at + end - start) * cols))));
  return { rows: rows.length, cols, data };
}

/** readRowsMat of the fine-tune (merged with its adapter, as readFinetuned does, when it is one). */
export async function readFinetunedRows(s: WeightSources, name: string, rows: Uint32Array): Promise<Mat> {
  if (s.finetuned) return readRowsMat(s.finetuned, name, rows);
  const al = await readRowsMat(s.aligned, name, rows);
  if (!s.adapter!.targets().includes(name)) return al;
  for (const [at, start, end] of rowRuns(rows)) {
    // One run at a time: the adapter caches one matrix's A between calls.
    const delta = await s.adapter!.deltaRowsF32(name, start, end);
    const o = at * al.cols;
    for (let k = 0; k < delta.length; k++) al.data[o + k] = Math.fround(al.data[o + k] + delta[k]);
  }
  return al;
}

/** Sorted rows as runs of consecutive indices: [position of the run's first row in `rows`, start, end). */
export function rowRuns(rows: Uint32Array): [number, number, number][] {
  const runs: [number, number, number][] = [];
  for (let k = 0; k < rows.length; k++) {
    const last = runs[runs.length - 1];
    if (last !== undefined && rows[k] === last[2]) last[2]++;
    else runs.push([k, rows[k], rows[k] + 1]);
  }
  return runs;
}

/** Lazily read, memoised triple for one matrix. */
export interface MatrixIO {
  name: string;
  /** Input features (columns) of the matrix, without reading it. */
  cols: number;
  base(): Promise<Mat>;
  aligned(): Promise<Mat>;
  finetuned(): Promise<Mat>;
  /** Rows `rows` (sorted) of the three, [rows.length, cols] each, without reading the whole matrices; fresh arrays the caller owns. */
  selectedRows(rows: Uint32Array): Promise<{ base: Mat; aligned: Mat; finetuned: Mat }>;
}

/** Rows of all linear weights together (the unit of a global share q). */
export function linearRowCount(s: WeightSources): number {
  let total = 0;
  for (const n of linearWeightNames(s.spec)) total += shapeOf(s, n)[0];
  return total;
}

export function matrixIO(s: WeightSources, name: string): MatrixIO {
  const memo = new Map<string, Promise<Mat>>();
  const once = (k: string, f: () => Promise<Mat>): Promise<Mat> => {
    let p = memo.get(k);
    if (!p) memo.set(k, (p = f()));
    return p;
  };
  return {
    name,
    cols: shapeOf(s, name)[1],
    base: () => once('b', () => readMat(s.base, name)),
    aligned: () => once('a', () => readMat(s.aligned, name)),
    finetuned: () => once('f', () => readFinetuned(s, name)),
    selectedRows: async (rows) => {
      const [base, aligned, finetuned] = await Promise.all([readRowsMat(s.base, name, rows), readRowsMat(s.aligned, name, rows), readFinetunedRows(s, name, rows)]);
      return { base, aligned, finetuned };
    },
  };
}

const hashMemo = new WeakMap<ModelCheckpoint, Promise<Record<string, string>>>();

/** sha256 of every weight file of a checkpoint, keyed by file name (once per opened checkpoint). */
export function checkpointHashes(ck: ModelCheckpoint): Promise<Record<string, string>> {
  let p = hashMemo.get(ck);
  if (!p) {
    p = (async () => {
      const out: Record<string, string> = {};
      // Off the main thread, so a caller can hash while it does other work (writeHardened writes the model).
      for (const f of ck.files) {
        try {
          out[f.split('/').pop()!] = await sha256FileOffThread(f);
        } catch (e) {
          throw ioError(f, e);
        }
      }
      return out;
    })();
    hashMemo.set(ck, p);
  }
  return p;
}

/** The aligned folder a PEFT adapter points at (base_model_name_or_path, relative to the adapter folder). */
export function adapterBasePath(adapterDir: string, baseModelNameOrPath: string | null): string | null {
  if (!baseModelNameOrPath) return null;
  return isAbsolute(baseModelNameOrPath) ? baseModelNameOrPath : resolve(adapterDir, baseModelNameOrPath);
}
