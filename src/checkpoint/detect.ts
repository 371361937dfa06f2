/**
 * Entry points that take "some path" from a user: decide whether it is a model folder, a PEFT adapter
 * folder or a lone safetensors file, validate it (all problems at once for uploads), and describe it
 * (the `fgsn inspect` JSON).
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { sha256File } from '../util/index.js';
import { FgsnError } from '../errors.js';
import { isPickleName } from './folder-safety.js';
import { ioError } from './io.js';
import { ADAPTER_CONFIG, LoraAdapter, openAdapterFolder } from './lora.js';
import { linearParameterCount } from './model-config.js';
import { INDEX_FILE, ModelCheckpoint, openModelFolder } from './model-folder.js';
import { scanSafetensorsFile, type ScanOptions } from './finite.js';
import { ProblemCollector, STRICT, type ProblemSink } from './problems.js';
import { SafetensorsFile } from './safetensors-reader.js';
import type { DType, ModelFamily, ModelSpec, TensorInfo } from './types.js';

export type OpenedCheckpoint =
  | { kind: 'model'; model: ModelCheckpoint }
  | { kind: 'adapter'; adapter: LoraAdapter }
  | { kind: 'file'; file: SafetensorsFile };

export interface FileSummary {
  /** Relative to the checkpoint folder (the file name for a lone file). */
  name: string;
  bytes: number;
  /** Hex sha256 of the whole file; null when hashing was skipped. */
  sha256: string | null;
}

export interface TensorSummary {
  name: string;
  shape: number[];
  dtype: DType;
  file: string;
}

export interface CheckpointSummary {
  kind: 'model' | 'adapter' | 'file';
  path: string;
  family: ModelFamily | null;
  modelType: string | null;
  architectures: string[] | null;
  /** Model: dtype of the linear weights. Adapter/file: the common dtype of its tensors, null if mixed. */
  dtype: DType | null;
  parameterCount: number;
  /** Elements in the 7 linear weights per layer (model only). */
  linearParameterCount: number | null;
  sharded: boolean;
  spec: ModelSpec | null;
  metadata: Record<string, string>;
  tensors: TensorSummary[];
  /** Tolerated non-parameter buffers (model only; e.g. rotary inv_freq). */
  ignoredTensors: string[];
  files: FileSummary[];
  adapter: {
    r: number; loraAlpha: number; scaling: number; useRslora: boolean; targetModules: string[];
    baseModelNameOrPath: string | null; targets: string[];
  } | null;
}

export interface DescribeOptions {
  /** sha256 every file (streamed); default true. Off for quick looks at huge checkpoints. */
  hash?: boolean;
  /**
   * Check every float weight for NaN/Inf; default true. Done in the same pass as the hash, so each byte is
   * read once. Off only for quick looks (`fgsn inspect --no-values`): a refusal needs the scan.
   */
  values?: boolean;
}

export interface ValidateOptions extends DescribeOptions {
  /** The model an adapter will be applied to, when known: shapes and target_modules are checked against it. */
  base?: ModelSpec;
}

async function pathKind(path: string): Promise<'dir' | 'file'> {
  try {
    const st = await stat(path);
    if (st.isDirectory()) return 'dir';
    if (st.isFile()) return 'file';
  } catch (e) {
    throw ioError(path, e);
  }
  throw new FgsnError('CHECKPOINT_NOT_FOUND', `${path}: neither a file nor a directory`, { details: { path } });
}

async function isAdapterFolder(dir: string): Promise<boolean> {
  try {
    await stat(join(dir, ADAPTER_CONFIG));
    return true;
  } catch {
    return false;
  }
}

export async function openCheckpoint(pathIn: string): Promise<OpenedCheckpoint> {
  const path = resolve(pathIn);
  if ((await pathKind(path)) === 'file') {
    if (isPickleName(basename(path))) {
      throw new FgsnError('CHECKPOINT_PICKLE_REFUSED', `${path}: pickle files are never loaded; convert the checkpoint to safetensors`, { details: { file: path } });
    }
    return { kind: 'file', file: await SafetensorsFile.open(path) };
  }
  if (await isAdapterFolder(path)) return { kind: 'adapter', adapter: await LoraAdapter.open(path) };
  return { kind: 'model', model: await ModelCheckpoint.open(path) };
}

export type ValidationResult =
  | { ok: true; kind: 'model' | 'adapter'; summary: CheckpointSummary }
  | { ok: false; problems: FgsnError[] };

/**
 * Checks a folder as a model or adapter and reports every problem found (the first MAX_LISTED_PROBLEMS, then
 * a count), for the upload `complete` endpoint's 422. Reads every weight once to refuse NaN/Inf values; the
 * summary is hashed in that same pass only when asked (uploads are hashed on receipt).
 */
export async function validateCheckpointFolder(dirIn: string, opts: ValidateOptions = {}): Promise<ValidationResult> {
  const dir = resolve(dirIn);
  const collector = new ProblemCollector();
  const opened = await collector.attempt(async (): Promise<OpenedCheckpoint | null> => {
    if ((await pathKind(dir)) !== 'dir') throw new FgsnError('CHECKPOINT_NOT_FOUND', `${dir}: not a directory`, { details: { dir } });
    if (await isAdapterFolder(dir)) {
      const adapter = await openAdapterFolder(dir, opts.base, collector);
      return adapter === null ? null : { kind: 'adapter', adapter };
    }
    const model = await openModelFolder(dir, collector);
    return model === null ? null : { kind: 'model', model };
  });
  if (opened === null || collector.total > 0) {
    if (opened) await closeOpened(opened);
    return { ok: false, problems: collector.list() };
  }
  try {
    const hashes = await collector.attempt(() => scanWeights(opened, { hash: opts.hash ?? false, finite: opts.values ?? true }, collector));
    if (hashes === null || collector.total > 0) return { ok: false, problems: collector.list() };
    const summary = await summarize(opened, dir, opts.hash ?? false, hashes);
    return { ok: true, kind: opened.kind === 'adapter' ? 'adapter' : 'model', summary };
  } finally {
    await closeOpened(opened);
  }
}

export async function describeCheckpoint(pathIn: string, opts: DescribeOptions = {}): Promise<CheckpointSummary> {
  const path = resolve(pathIn);
  const hash = opts.hash ?? true;
  const opened = await openCheckpoint(path);
  try {
    // STRICT: the first non-finite tensor is thrown, like every other problem of an opened checkpoint.
    const hashes = await scanWeights(opened, { hash, finite: opts.values ?? true }, STRICT);
    return await summarize(opened, path, hash, hashes);
  } finally {
    await closeOpened(opened);
  }
}

/** The safetensors files of an opened checkpoint. */
function weightFiles(o: OpenedCheckpoint): SafetensorsFile[] {
  if (o.kind === 'file') return [o.file];
  if (o.kind === 'adapter') return [o.adapter.file];
  const m = o.model;
  return [...new Set(m.names().map((n) => m.file(n)))];
}

/** One pass per weights file: sha256 (when asked) and NaN/Inf checks together. Keyed by absolute path. */
async function scanWeights(o: OpenedCheckpoint, opts: ScanOptions, sink: ProblemSink): Promise<Map<string, string | null>> {
  const hashes = new Map<string, string | null>();
  for (const f of weightFiles(o)) hashes.set(f.path, (await scanSafetensorsFile(f, opts, sink)).sha256);
  return hashes;
}

export async function closeOpened(o: OpenedCheckpoint): Promise<void> {
  if (o.kind === 'model') await o.model.close();
  else if (o.kind === 'adapter') await o.adapter.close();
  else await o.file.close();
}

/** sha256File with a read failure as the checkpoint layer's I/O error (code, path). */
async function hashFile(path: string): Promise<string> {
  try {
    return await sha256File(path);
  } catch (e) {
    throw ioError(path, e);
  }
}

/** `scanned` holds the hashes of weights files taken during the values scan; other files are hashed here. */
async function fileSummary(root: string, path: string, hash: boolean, scanned: Map<string, string | null>): Promise<FileSummary> {
  let bytes: number;
  try {
    bytes = (await stat(path)).size;
  } catch (e) {
    throw ioError(path, e);
  }
  const known = scanned.get(path);
  const sha256 = !hash ? null : typeof known === 'string' ? known : await hashFile(path);
  return { name: relative(root, path) || basename(path), bytes, sha256 };
}

function commonDtype(tensors: Iterable<TensorInfo>): DType | null {
  const set = new Set<DType>();
  for (const t of tensors) set.add(t.dtype);
  return set.size === 1 ? [...set][0] : null;
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function tensorSummary(root: string, t: TensorInfo): TensorSummary {
  return { name: t.name, shape: [...t.shape], dtype: t.dtype, file: relative(root, t.file) || basename(t.file) };
}

async function summarize(o: OpenedCheckpoint, path: string, hash: boolean, scanned: Map<string, string | null>): Promise<CheckpointSummary> {
  const base = {
    path, dtype: null, parameterCount: 0, family: null, modelType: null, architectures: null, linearParameterCount: null, sharded: false, spec: null,
    metadata: {}, ignoredTensors: [], adapter: null,
  };
  if (o.kind === 'file') {
    const f = o.file;
    const tensors = [...f.tensors.values()];
    return {
      kind: 'file', ...base, dtype: commonDtype(tensors), metadata: { ...f.metadata },
      parameterCount: tensors.reduce((n, t) => n + numel(t.shape), 0),
      tensors: tensors.map((t) => tensorSummary(dirname(path), t)),
      files: [await fileSummary(dirname(path), f.path, hash, scanned)],
    };
  }
  if (o.kind === 'adapter') {
    const a = o.adapter;
    const tensors = [...a.file.tensors.values()];
    const configFile = join(a.dir, ADAPTER_CONFIG);
    return {
      kind: 'adapter', ...base, dtype: commonDtype(tensors), metadata: { ...a.file.metadata },
      parameterCount: tensors.reduce((n, t) => n + numel(t.shape), 0),
      tensors: tensors.map((t) => tensorSummary(a.dir, t)),
      files: [await fileSummary(a.dir, configFile, hash, scanned), await fileSummary(a.dir, a.file.path, hash, scanned)],
      adapter: { ...a.config, targets: a.targets() },
    };
  }
  const m = o.model;
  const config = m.config;
  const architectures = Array.isArray(config.architectures) ? config.architectures.filter((x): x is string => typeof x === 'string') : null;
  const configFiles = [join(m.dir, 'config.json'), ...(m.sharded ? [join(m.dir, INDEX_FILE)] : [])];
  const files: FileSummary[] = [];
  for (const f of [...configFiles, ...m.files]) files.push(await fileSummary(m.dir, f, hash, scanned));
  const firstFile = m.names().length > 0 ? m.file(m.names()[0]) : null;
  return {
    kind: 'model', ...base, family: m.spec.family, modelType: typeof config.model_type === 'string' ? config.model_type : null,
    architectures, dtype: m.dtype, parameterCount: m.parameterCount, linearParameterCount: linearParameterCount(m.spec),
    sharded: m.sharded, spec: m.spec, metadata: firstFile ? { ...firstFile.metadata } : {},
    tensors: m.names().map((n) => tensorSummary(m.dir, m.tensor(n))), ignoredTensors: [...m.ignored], files,
  };
}
