/**
 * A Hugging Face model folder (config.json + model.safetensors, or shards + model.safetensors.index.json),
 * validated against the architecture its config describes: every parameter present with the implied shape,
 * nothing unexplained, every file inside the folder. Tensors are read lazily, by name, from their shard.
 */
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { FgsnError } from '../errors.js';
import { FLOAT_DTYPES } from './dtypes.js';
import { confinedPath, isPickleName, listFolder, pickleRefused, realDirectory } from './folder-safety.js';
import { ioError } from './io.js';
import { expectedTensorCount, expectedTensors, linearWeightShape, readJsonFile, parseModelConfig } from './model-config.js';
import { SafetensorsFile } from './safetensors-reader.js';
import { MAX_LISTED_PROBLEMS, ProblemCollector, STRICT, type ProblemSink } from './problems.js';
import type { DType, ModelSpec, TensorInfo } from './types.js';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

/**
 * Non-parameter buffers that older transformers versions saved (RoPE inverse frequencies). They are
 * derived from config.json, so they are tolerated and ignored rather than refused as unexpected.
 */
const IGNORED_BUFFER = /^model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$/;

const indexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).nullish(),
  weight_map: z.record(z.string(), z.string()),
});

export class ModelCheckpoint {
  private constructor(
    readonly dir: string,
    readonly spec: ModelSpec,
    readonly config: Record<string, unknown>,
    readonly dtype: DType,
    readonly files: string[],
    readonly sharded: boolean,
    readonly parameterCount: number,
    /** Tolerated non-parameter buffers found in the files (see IGNORED_BUFFER). */
    readonly ignored: string[],
    private readonly byName: Map<string, SafetensorsFile>,
    private readonly order: string[],
  ) {}

  static async open(dir: string): Promise<ModelCheckpoint> {
    const result = await openModelFolder(dir, STRICT);
    // With a strict sink every problem has thrown already.
    return result as ModelCheckpoint;
  }

  /** @internal used by openModelFolder once every check has passed. */
  static fromParts(parts: {
    dir: string; spec: ModelSpec; config: Record<string, unknown>; dtype: DType; files: string[]; sharded: boolean;
    parameterCount: number; ignored: string[]; byName: Map<string, SafetensorsFile>; order: string[];
  }): ModelCheckpoint {
    return new ModelCheckpoint(parts.dir, parts.spec, parts.config, parts.dtype, parts.files, parts.sharded, parts.parameterCount, parts.ignored, parts.byName, parts.order);
  }

  /** Parameter names in model order (embeddings, layers, norm, lm_head). */
  names(): string[] {
    return [...this.order];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  file(name: string): SafetensorsFile {
    const f = this.byName.get(name);
    if (f === undefined) {
      throw new FgsnError('CHECKPOINT_TENSOR_NOT_FOUND', `${this.dir}: no tensor named "${name}"`, { details: { dir: this.dir, tensor: name } });
    }
    return f;
  }

  tensor(name: string): TensorInfo {
    return this.file(name).tensor(name);
  }

  readBytes(name: string, out?: Uint8Array): Promise<Uint8Array> {
    return this.file(name).readBytes(name, out);
  }

  readRowsBytes(name: string, rowStart: number, rowEnd: number, out?: Uint8Array): Promise<Uint8Array> {
    return this.file(name).readRowsBytes(name, rowStart, rowEnd, out);
  }

  /** Upcast to float32; `out` (optional, long enough) is reused instead of allocating. */
  readF32(name: string, out?: Float32Array): Promise<Float32Array> {
    return this.file(name).readF32(name, out);
  }

  readRowsF32(name: string, rowStart: number, rowEnd: number, out?: Float32Array): Promise<Float32Array> {
    return this.file(name).readRowsF32(name, rowStart, rowEnd, out);
  }

  async close(): Promise<void> {
    await Promise.all([...new Set(this.byName.values())].map((f) => f.close()));
  }
}

async function requireDirectory(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (e) {
    throw ioError(dir, e);
  }
  if (!isDir) throw new FgsnError('CHECKPOINT_NOT_FOUND', `${dir}: not a directory`, { details: { dir } });
}

/**
 * Opens and checks a model folder. With STRICT, returns a ModelCheckpoint or throws the first problem.
 * With a collector, records every problem it can find and returns null when there was any.
 * Files are closed on every failure path.
 */
export async function openModelFolder(dirIn: string, sink: ProblemSink): Promise<ModelCheckpoint | null> {
  const dir = resolve(dirIn);
  await requireDirectory(dir);
  const realDir = await realDirectory(dir);
  const collector = new ProblemCollector();
  const opened: SafetensorsFile[] = [];
  const fail = async (): Promise<null> => {
    await Promise.all(opened.map((f) => f.close()));
    collector.drainTo(sink);
    return null;
  };

  const entries = await listFolder(dir);
  // Config and weights are checked independently so a validation pass can name problems in both.
  let parsed: { json: Record<string, unknown>; spec: ModelSpec } | null = null;
  if (!entries.includes('config.json')) {
    collector.report(new FgsnError('CHECKPOINT_CONFIG_MISSING', `${dir}: no config.json`, { details: { dir } }));
  } else {
    parsed = await collector.attempt(async () => {
      const path = join(dir, 'config.json');
      const real = await confinedPath(realDir, 'config.json', dir);
      if (real === null) throw new FgsnError('CHECKPOINT_CONFIG_MISSING', `${path}: dangling link`, { details: { dir } });
      const json = await readJsonFile(real, 'CHECKPOINT_CONFIG_INVALID');
      return { json: json as Record<string, unknown>, spec: parseModelConfig(json, path) };
    });
  }

  const byName = new Map<string, SafetensorsFile>();
  const files: string[] = [];
  const problemsBeforeWeights = collector.total;
  // Pickle files next to safetensors weights are simply never looked at; only a folder with nothing else is refused.
  const sharded = !entries.includes(SINGLE_FILE) && entries.includes(INDEX_FILE);
  if (entries.includes(SINGLE_FILE)) {
    // transformers prefers model.safetensors over an index too.
    await collector.attempt(async () => {
      const real = await confinedPath(realDir, SINGLE_FILE, dir);
      if (real === null) throw new FgsnError('CHECKPOINT_NO_WEIGHTS', `${dir}: ${SINGLE_FILE} is a dangling link`, { details: { dir } });
      const f = await SafetensorsFile.open(real);
      opened.push(f);
      files.push(real);
      for (const name of f.tensors.keys()) byName.set(name, f);
    });
  } else if (sharded) {
    await collector.attempt(() => openShards(dir, realDir, collector, opened, files, byName));
  } else {
    const pickles = entries.filter(isPickleName);
    collector.report(
      pickles.length > 0
        ? pickleRefused(dir, pickles)
        : new FgsnError('CHECKPOINT_NO_WEIGHTS', `${dir}: no ${SINGLE_FILE} or ${INDEX_FILE}`, { details: { dir, files: entries } }),
    );
  }
  // With a broken weights file every tensor in it would also be "missing": skip that noise.
  const weightsReadable = collector.total === problemsBeforeWeights;
  if (parsed === null || !weightsReadable) return fail();
  // Checked by arithmetic before expectedTensors enumerates anything: a config claiming 40,000 layers over a
  // few tiny tensors is one problem, not 360,000 "missing tensor" ones built at a cost of seconds and GBs.
  // Up to MAX_LISTED_PROBLEMS missing tensors are still named one by one below.
  const expectedCount = expectedTensorCount(parsed.spec);
  if (expectedCount > byName.size + MAX_LISTED_PROBLEMS) {
    const s = parsed.spec;
    collector.report(new FgsnError('CHECKPOINT_CONFIG_INVALID', `${join(dir, 'config.json')}: describes ${expectedCount} tensors (num_hidden_layers ${s.numLayers}) but the weights hold ${byName.size}`, {
      details: { file: join(dir, 'config.json'), expectedTensors: expectedCount, storedTensors: byName.size, numHiddenLayers: s.numLayers },
    }));
    return fail();
  }
  const { order, ignored, dtype, parameterCount } = checkTensors(dir, parsed.spec, byName, collector);
  if (collector.problems.length > 0) return fail();
  // The canonical path: shard paths (realpaths) are inside it, so relative names are clean.
  return ModelCheckpoint.fromParts({
    dir: realDir, spec: parsed.spec, config: parsed.json, dtype, files, sharded, parameterCount, ignored, byName, order,
  });
}

async function openShards(
  dir: string, realDir: string, collector: ProblemCollector, opened: SafetensorsFile[], files: string[], byName: Map<string, SafetensorsFile>,
): Promise<void> {
  const indexPath = join(dir, INDEX_FILE);
  const real = await confinedPath(realDir, INDEX_FILE, dir);
  if (real === null) throw new FgsnError('CHECKPOINT_INDEX_INVALID', `${indexPath}: dangling link`, { details: { file: indexPath } });
  const parsed = indexSchema.safeParse(await readJsonFile(real, 'CHECKPOINT_INDEX_INVALID'));
  if (!parsed.success) {
    throw new FgsnError('CHECKPOINT_INDEX_INVALID', `${indexPath}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`, {
      details: { file: indexPath },
    });
  }
  const weightMap = parsed.data.weight_map;
  const shardNames = [...new Set(Object.values(weightMap))].sort();
  if (shardNames.length === 0) throw new FgsnError('CHECKPOINT_INDEX_INVALID', `${indexPath}: weight_map is empty`, { details: { file: indexPath } });
  const shards = new Map<string, SafetensorsFile>();
  for (const shard of shardNames) {
    await collector.attempt(async () => {
      const path = await confinedPath(realDir, shard, dir);
      if (path === null) {
        throw new FgsnError('CHECKPOINT_INDEX_INVALID', `${indexPath}: shard "${shard}" is listed in weight_map but does not exist`, {
          details: { file: indexPath, shard },
        });
      }
      const f = await SafetensorsFile.open(path);
      opened.push(f);
      files.push(path);
      shards.set(shard, f);
    });
  }
  for (const [name, shard] of Object.entries(weightMap)) {
    const f = shards.get(shard);
    if (f === undefined) continue;
    if (!f.tensors.has(name)) {
      collector.report(
        new FgsnError('CHECKPOINT_TENSOR_NOT_FOUND', `${indexPath}: weight_map puts "${name}" in ${shard}, which does not hold it`, {
          details: { file: indexPath, tensor: name, shard },
        }),
      );
      continue;
    }
    byName.set(name, f);
  }
  // Every tensor stored anywhere must be the one the index names: a second copy in another shard is ambiguous.
  for (const [shard, f] of shards) {
    for (const name of f.tensors.keys()) {
      const mapped = weightMap[name];
      if (mapped === shard) continue;
      const duplicate = mapped !== undefined && shards.get(mapped)?.tensors.has(name) === true;
      const where = mapped === undefined ? 'is not listed in weight_map' : duplicate ? `is also stored in ${mapped}` : `but weight_map maps it to ${mapped}`;
      collector.report(
        new FgsnError(duplicate ? 'CHECKPOINT_DUPLICATE_TENSOR' : 'CHECKPOINT_INDEX_INVALID', `${indexPath}: "${name}" stored in ${shard} ${where}`, {
          details: { file: indexPath, tensor: name, shard },
        }),
      );
    }
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function checkTensors(
  dir: string, spec: ModelSpec, byName: Map<string, SafetensorsFile>, collector: ProblemCollector,
): { order: string[]; ignored: string[]; dtype: DType; parameterCount: number } {
  const expected = expectedTensors(spec);
  const expectedNames = new Set(expected.map((t) => t.name));
  let parameterCount = 0;
  const linearDtypes = new Set<DType>();
  for (const { name, shape } of expected) {
    const f = byName.get(name);
    if (f === undefined) {
      collector.report(new FgsnError('CHECKPOINT_TENSOR_NOT_FOUND', `${dir}: missing tensor "${name}" (shape ${JSON.stringify(shape)} per config.json)`, {
        details: { dir, tensor: name, expectedShape: shape },
      }));
      continue;
    }
    const t = f.tensor(name);
    if (!sameShape(t.shape, shape)) {
      collector.report(new FgsnError('CHECKPOINT_TENSOR_SHAPE_MISMATCH', `${t.file}: tensor "${name}" has shape ${JSON.stringify(t.shape)}, config.json implies ${JSON.stringify(shape)}`, {
        details: { file: t.file, tensor: name, shape: t.shape, expectedShape: shape },
      }));
    }
    if (!FLOAT_DTYPES.has(t.dtype)) {
      collector.report(new FgsnError('CHECKPOINT_DTYPE_UNSUPPORTED', `${t.file}: tensor "${name}" is ${t.dtype}; model weights must be F32, F16, BF16 or F64 (quantized checkpoints are not supported)`, {
        details: { file: t.file, tensor: name, dtype: t.dtype },
      }));
    }
    if (linearWeightShape(spec, name) !== null) linearDtypes.add(t.dtype);
    parameterCount += shape.reduce((a, b) => a * b, 1);
  }
  const ignored: string[] = [];
  for (const [name, f] of byName) {
    if (expectedNames.has(name)) continue;
    if (IGNORED_BUFFER.test(name)) {
      ignored.push(name);
      continue;
    }
    const why = name === 'lm_head.weight' && spec.tieWordEmbeddings ? ' (config.json says tie_word_embeddings: true)' : '';
    collector.report(new FgsnError('CHECKPOINT_TENSOR_UNEXPECTED', `${f.path}: tensor "${name}" is not a parameter of this ${spec.family} model${why}`, {
      details: { file: f.path, tensor: name },
    }));
  }
  if (linearDtypes.size > 1) {
    collector.report(new FgsnError('CHECKPOINT_DTYPE_UNSUPPORTED', `${dir}: linear weights mix dtypes ${[...linearDtypes].join(', ')}; one dtype is required`, {
      details: { dir, dtypes: [...linearDtypes] },
    }));
  }
  for (const name of ignored) byName.delete(name);
  const dtype = linearDtypes.values().next().value ?? spec.torchDtype;
  return { order: expected.map((t) => t.name).filter((n) => byName.has(n)), ignored, dtype, parameterCount };
}
