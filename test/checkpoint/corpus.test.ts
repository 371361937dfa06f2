/**
 * A generated corpus of malformed checkpoints: every header rule, truncations, bad configs, shape and
 * tensor problems, unsafe paths, pickle files and bad adapters. Each must be refused with its catalogue
 * code (not a crash, not INTERNAL), and claims of huge sizes must be refused before any allocation.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, validateCheckpointFolder } from '../../src/checkpoint/detect.js';
import { LoraAdapter } from '../../src/checkpoint/lora.js';
import { parseModelConfig } from '../../src/checkpoint/model-config.js';
import { SafetensorsFile } from '../../src/checkpoint/safetensors-reader.js';
import { writeSafetensors } from '../../src/checkpoint/safetensors-writer.js';
import { FgsnError, type ErrorCode } from '../../src/errors.js';
import { adapterConfig, f32Bytes, rawSafetensors, tempDir, tinyConfig, writeAdapterFolder, writeModelFolder } from './fixtures.js';

type Build = (dir: string) => Promise<string>;
interface Case {
  name: string;
  code: ErrorCode;
  build: Build;
  /** How to open it: openCheckpoint (default), or an adapter against the tiny base spec. */
  open?: 'checkpoint' | 'adapter-with-base';
  /** Folder cases are also run through validateCheckpointFolder. */
  folder?: boolean;
}

const entry = (dtype: string, shape: unknown, offsets: unknown): Record<string, unknown> => ({ dtype, shape, data_offsets: offsets });

function fileCase(name: string, code: ErrorCode, bytes: () => Uint8Array): Case {
  return {
    name, code,
    build: async (dir) => {
      await mkdir(dir);
      const p = join(dir, name === 'a pickle file given directly' ? 'pytorch_model.bin' : 'x.safetensors');
      await writeFile(p, bytes());
      return p;
    },
  };
}

/** A file whose header is `header` (object -> JSON) and data section `data`. */
function headerCase(name: string, code: ErrorCode, header: Record<string, unknown> | string, data: Uint8Array = new Uint8Array(0)): Case {
  return fileCase(name, code, () => rawSafetensors(typeof header === 'string' ? header : JSON.stringify(header), data));
}

function folderCase(name: string, code: ErrorCode, build: Build): Case {
  return { name, code, build, folder: true };
}

const L0 = 'model.layers.0';

const CASES: Case[] = [
  // --- the 8-byte prefix and the header envelope
  fileCase('empty file', 'CHECKPOINT_FILE_TOO_SMALL', () => new Uint8Array(0)),
  fileCase('7-byte file', 'CHECKPOINT_FILE_TOO_SMALL', () => new Uint8Array(7)),
  fileCase('header length claims 2^60 bytes', 'CHECKPOINT_HEADER_TOO_LARGE', () => rawSafetensors('{}', new Uint8Array(0), 2n ** 60n)),
  fileCase('header length 2^64-1', 'CHECKPOINT_HEADER_TOO_LARGE', () => rawSafetensors('{}', new Uint8Array(0), 2n ** 64n - 1n)),
  fileCase('header length past end of file', 'CHECKPOINT_HEADER_TRUNCATED', () => rawSafetensors('{}', new Uint8Array(0), 1000n)),
  fileCase('file truncated inside the header', 'CHECKPOINT_HEADER_TRUNCATED', () =>
    rawSafetensors(JSON.stringify({ a: entry('F32', [1], [0, 4]) }), f32Bytes([1])).subarray(0, 20)),
  fileCase('header not UTF-8', 'CHECKPOINT_HEADER_NOT_UTF8', () => rawSafetensors(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))),
  headerCase('header not JSON', 'CHECKPOINT_HEADER_NOT_JSON', '{"a": '),
  headerCase('header is a JSON array', 'CHECKPOINT_HEADER_NOT_JSON', '[1, 2]'),
  headerCase('header with a leading space', 'CHECKPOINT_HEADER_NOT_JSON', ' {}'),
  headerCase('__metadata__ value not a string', 'CHECKPOINT_METADATA_INVALID', { __metadata__: { format: 1 } }),
  headerCase('__metadata__ is an array', 'CHECKPOINT_METADATA_INVALID', { __metadata__: ['pt'] }),
  headerCase('duplicate tensor name', 'CHECKPOINT_DUPLICATE_TENSOR',
    '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', new Uint8Array(2)),
  headerCase('duplicate key inside an entry', 'CHECKPOINT_TENSOR_ENTRY_INVALID',
    '{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', new Uint8Array(1)),
  // --- tensor entries
  headerCase('entry is not an object', 'CHECKPOINT_TENSOR_ENTRY_INVALID', { a: 5 }),
  headerCase('entry without data_offsets', 'CHECKPOINT_TENSOR_ENTRY_INVALID', { a: { dtype: 'U8', shape: [1] } }, new Uint8Array(1)),
  headerCase('entry with an unknown key', 'CHECKPOINT_TENSOR_ENTRY_INVALID', { a: { ...entry('U8', [1], [0, 1]), extra: 1 } }, new Uint8Array(1)),
  headerCase('unsupported dtype F8_E4M3', 'CHECKPOINT_DTYPE_UNSUPPORTED', { a: entry('F8_E4M3', [1], [0, 1]) }, new Uint8Array(1)),
  headerCase('dtype not a string', 'CHECKPOINT_DTYPE_UNSUPPORTED', { a: entry(4 as unknown as string, [1], [0, 1]) }, new Uint8Array(1)),
  headerCase('negative dimension', 'CHECKPOINT_SHAPE_INVALID', { a: entry('U8', [-1], [0, 0]) }),
  headerCase('fractional dimension', 'CHECKPOINT_SHAPE_INVALID', { a: entry('U8', [1.5], [0, 1]) }, new Uint8Array(1)),
  headerCase('shape not a list', 'CHECKPOINT_SHAPE_INVALID', { a: entry('U8', '4', [0, 4]) }, new Uint8Array(4)),
  headerCase('shape product overflows (2^40 x 2^40)', 'CHECKPOINT_SHAPE_INVALID', { a: entry('F32', [2 ** 40, 2 ** 40], [0, 4]) }, new Uint8Array(4)),
  headerCase('shape of 2^40 elements over 4 bytes of data', 'CHECKPOINT_SIZE_MISMATCH', { a: entry('F32', [2 ** 40], [0, 4]) }, new Uint8Array(4)),
  headerCase('offsets not a pair', 'CHECKPOINT_OFFSETS_INVALID', { a: entry('U8', [1], [0]) }, new Uint8Array(1)),
  headerCase('offsets negative', 'CHECKPOINT_OFFSETS_INVALID', { a: entry('U8', [1], [-1, 0]) }, new Uint8Array(1)),
  headerCase('offsets end before begin', 'CHECKPOINT_OFFSETS_INVALID', { a: entry('U8', [0], [1, 0]) }, new Uint8Array(1)),
  headerCase('offsets past the data section', 'CHECKPOINT_OFFSETS_INVALID', { a: entry('U8', [8], [0, 8]) }, new Uint8Array(4)),
  headerCase('offsets of 2^60', 'CHECKPOINT_OFFSETS_INVALID', { a: entry('U8', [1], [2 ** 60, 2 ** 60 + 1]) }, new Uint8Array(1)),
  headerCase('size != prod(shape) * itemsize', 'CHECKPOINT_SIZE_MISMATCH', { a: entry('F32', [2], [0, 12]) }, new Uint8Array(12)),
  headerCase('overlapping tensors', 'CHECKPOINT_OFFSETS_OVERLAP', { a: entry('U8', [4], [0, 4]), b: entry('U8', [4], [2, 6]) }, new Uint8Array(6)),
  headerCase('hole between tensors', 'CHECKPOINT_DATA_HOLE', { a: entry('U8', [2], [0, 2]), b: entry('U8', [2], [4, 6]) }, new Uint8Array(6)),
  headerCase('hole before the first tensor', 'CHECKPOINT_DATA_HOLE', { a: entry('U8', [2], [2, 4]) }, new Uint8Array(4)),
  headerCase('trailing bytes after the last tensor', 'CHECKPOINT_DATA_HOLE', { a: entry('U8', [2], [0, 2]) }, new Uint8Array(5)),
  fileCase('file truncated inside the data', 'CHECKPOINT_OFFSETS_INVALID', () => {
    const full = rawSafetensors(JSON.stringify({ a: entry('F32', [4], [0, 16]) }), f32Bytes([1, 2, 3, 4]));
    return full.subarray(0, full.length - 3);
  }),
  fileCase('a pickle file given directly', 'CHECKPOINT_PICKLE_REFUSED', () => new Uint8Array([0x80, 0x02, 0x7d, 0x71])),

  // --- model folders
  folderCase('config.json missing', 'CHECKPOINT_CONFIG_MISSING', async (dir) => {
    await writeModelFolder(dir);
    await (await import('node:fs/promises')).unlink(join(dir, 'config.json'));
    return dir;
  }),
  folderCase('config.json not JSON', 'CHECKPOINT_CONFIG_INVALID', async (dir) => {
    await writeModelFolder(dir);
    await writeFile(join(dir, 'config.json'), '{"model_type": "llama",');
    return dir;
  }),
  folderCase('config hidden_size is a string', 'CHECKPOINT_CONFIG_INVALID', async (dir) => {
    await writeModelFolder(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig({ hidden_size: '8' })));
    return dir;
  }),
  folderCase('config heads not a multiple of KV heads', 'CHECKPOINT_CONFIG_INVALID', async (dir) => {
    await writeModelFolder(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig({ num_key_value_heads: 3 })));
    return dir;
  }),
  folderCase('unsupported model_type gpt2', 'CHECKPOINT_ARCH_UNSUPPORTED', async (dir) => {
    await writeModelFolder(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...tinyConfig(), model_type: 'gpt2' }));
    return dir;
  }),
  folderCase('rope_scaling of an unsupported type (mrope)', 'CHECKPOINT_ARCH_UNSUPPORTED', async (dir) => {
    await writeModelFolder(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig({ rope_scaling: { type: 'mrope', mrope_section: [1, 1] } })));
    return dir;
  }),
  folderCase('missing tensor', 'CHECKPOINT_TENSOR_NOT_FOUND', (dir) => writeModelFolder(dir, { skip: (n) => n === `${L0}.mlp.up_proj.weight` })),
  folderCase('tensor shape mismatch', 'CHECKPOINT_TENSOR_SHAPE_MISMATCH', (dir) =>
    writeModelFolder(dir, { extra: [{ name: `${L0}.self_attn.k_proj.weight`, dtype: 'F32', shape: [8, 8], data: () => new Uint8Array(256) }] })),
  folderCase('unexpected tensor', 'CHECKPOINT_TENSOR_UNEXPECTED', (dir) =>
    writeModelFolder(dir, { extra: [{ name: 'model.layers.0.mlp.extra_proj.weight', dtype: 'F32', shape: [1], data: () => f32Bytes([1]) }] })),
  folderCase('lm_head stored although embeddings are tied', 'CHECKPOINT_TENSOR_UNEXPECTED', (dir) =>
    writeModelFolder(dir, { config: tinyConfig({ tie_word_embeddings: true }), extra: [{ name: 'lm_head.weight', dtype: 'F32', shape: [10, 8], data: () => new Uint8Array(320) }] })),
  folderCase('integer weights', 'CHECKPOINT_DTYPE_UNSUPPORTED', (dir) =>
    writeModelFolder(dir, { extra: [{ name: `${L0}.mlp.gate_proj.weight`, dtype: 'I32', shape: [12, 8], data: () => new Uint8Array(384) }] })),
  folderCase('linear weights in mixed dtypes', 'CHECKPOINT_DTYPE_UNSUPPORTED', (dir) =>
    writeModelFolder(dir, { extra: [{ name: `${L0}.mlp.gate_proj.weight`, dtype: 'BF16', shape: [12, 8], data: () => new Uint8Array(192) }] })),
  folderCase('only pytorch_model.bin (pickle)', 'CHECKPOINT_PICKLE_REFUSED', async (dir) => {
    await mkdir(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig()));
    // Not even a valid pickle: opening it at all would be the bug.
    await writeFile(join(dir, 'pytorch_model.bin'), Buffer.from('\x80\x04garbage that must never be unpickled'));
    return dir;
  }),
  folderCase('no weights at all', 'CHECKPOINT_NO_WEIGHTS', async (dir) => {
    await mkdir(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig()));
    return dir;
  }),
  folderCase('weights file is corrupt', 'CHECKPOINT_HEADER_NOT_JSON', async (dir) => {
    await writeModelFolder(dir);
    await writeFile(join(dir, 'model.safetensors'), rawSafetensors('{nope}'));
    return dir;
  }),
  folderCase('weights file is a FIFO (must not block)', 'CHECKPOINT_IO', async (dir) => {
    await writeModelFolder(dir);
    await (await import('node:fs/promises')).unlink(join(dir, 'model.safetensors'));
    execFileSync('mkfifo', [join(dir, 'model.safetensors')]);
    return dir;
  }),
  folderCase('config.json is a directory', 'CHECKPOINT_CONFIG_INVALID', async (dir) => {
    await writeModelFolder(dir);
    await (await import('node:fs/promises')).unlink(join(dir, 'config.json'));
    await mkdir(join(dir, 'config.json'));
    return dir;
  }),
  folderCase('index with ".." shard name', 'CHECKPOINT_PATH_UNSAFE', (dir) => shardedWithName(dir, '../outside.safetensors')),
  folderCase('index with an absolute shard path', 'CHECKPOINT_PATH_UNSAFE', (dir) => shardedWithName(dir, '/etc/passwd')),
  folderCase('index with a nested ".." shard name', 'CHECKPOINT_PATH_UNSAFE', (dir) => shardedWithName(dir, 'sub/../../x.safetensors')),
  folderCase('shard is a symlink out of the folder', 'CHECKPOINT_PATH_UNSAFE', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    const outside = join(dir, '..', `${dir.split('/').pop()}-outside.safetensors`);
    await (await import('node:fs/promises')).rename(join(dir, 'model-00002-of-00002.safetensors'), outside);
    await symlink(outside, join(dir, 'model-00002-of-00002.safetensors'));
    return dir;
  }),
  folderCase('model.safetensors is a symlink out of the folder', 'CHECKPOINT_PATH_UNSAFE', async (dir) => {
    const real = await writeModelFolder(`${dir}-real`);
    await mkdir(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig()));
    await symlink(join(real, 'model.safetensors'), join(dir, 'model.safetensors'));
    return dir;
  }),
  folderCase('config.json is a symlink out of the folder', 'CHECKPOINT_PATH_UNSAFE', async (dir) => {
    await writeModelFolder(dir);
    const outside = `${dir}-config.json`;
    await (await import('node:fs/promises')).rename(join(dir, 'config.json'), outside);
    await symlink(outside, join(dir, 'config.json'));
    return dir;
  }),
  folderCase('index names a missing shard', 'CHECKPOINT_INDEX_INVALID', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await (await import('node:fs/promises')).unlink(join(dir, 'model-00002-of-00002.safetensors'));
    return dir;
  }),
  folderCase('index maps a tensor to a shard that lacks it', 'CHECKPOINT_TENSOR_NOT_FOUND', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await editIndex(dir, (wm) => ({ ...wm, 'model.norm.weight': wm['model.norm.weight'] === 'model-00001-of-00002.safetensors' ? 'model-00002-of-00002.safetensors' : 'model-00001-of-00002.safetensors' }));
    return dir;
  }),
  folderCase('a tensor stored in two shards', 'CHECKPOINT_DUPLICATE_TENSOR', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    const shard2 = join(dir, 'model-00002-of-00002.safetensors');
    const f = await SafetensorsFile.open(shard2);
    const first = await SafetensorsFile.open(join(dir, 'model-00001-of-00002.safetensors'));
    const copied = first.names()[0];
    const tensors = [...f.tensors.values(), first.tensor(copied)].map((t) => ({
      name: t.name, dtype: t.dtype, shape: t.shape, data: () => (t.file === f.path ? f : first).readBytes(t.name),
    }));
    await writeSafetensors(join(dir, 'tmp.safetensors'), tensors);
    await Promise.all([f.close(), first.close()]);
    await (await import('node:fs/promises')).rename(join(dir, 'tmp.safetensors'), shard2);
    return dir;
  }),
  folderCase('index without weight_map', 'CHECKPOINT_INDEX_INVALID', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {} }));
    return dir;
  }),
  folderCase('index is not JSON', 'CHECKPOINT_INDEX_INVALID', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await writeFile(join(dir, 'model.safetensors.index.json'), 'weight_map:');
    return dir;
  }),

  // --- adapters
  folderCase('adapter peft_type IA3', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ peft_type: 'IA3' }) })),
  folderCase('adapter config without r', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ r: undefined }) })),
  folderCase('adapter r is zero', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ r: 0 }) })),
  folderCase('adapter fan_in_fan_out', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ fan_in_fan_out: true }) })),
  folderCase('adapter DoRA', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ use_dora: true }) })),
  folderCase('adapter config not JSON', 'ADAPTER_CONFIG_INVALID', async (dir) => {
    await writeAdapterFolder(dir);
    await writeFile(join(dir, 'adapter_config.json'), '{');
    return dir;
  }),
  folderCase('adapter weights only as pickle', 'CHECKPOINT_PICKLE_REFUSED', async (dir) => {
    await mkdir(dir);
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(adapterConfig()));
    await writeFile(join(dir, 'adapter_model.bin'), Buffer.from('\x80\x04never unpickled'));
    return dir;
  }),
  folderCase('adapter rank differs from config r', 'ADAPTER_TENSOR_INVALID', (dir) => writeAdapterFolder(dir, { rank: 3 })),
  folderCase('adapter A/B rank mismatch', 'ADAPTER_TENSOR_INVALID', (dir) =>
    writeAdapterFolder(dir, { mutate: (ts) => ts.map((t) => (t.name.endsWith('q_proj.lora_B.weight') ? { ...t, shape: [8, 3], data: () => new Uint8Array(96) } : t)) })),
  folderCase('adapter lora_B missing', 'ADAPTER_TENSOR_INVALID', (dir) => writeAdapterFolder(dir, { mutate: (ts) => ts.filter((t) => !t.name.endsWith('v_proj.lora_B.weight')) })),
  folderCase('adapter key that is not LoRA', 'ADAPTER_TENSOR_INVALID', (dir) =>
    writeAdapterFolder(dir, { mutate: (ts) => [...ts, { name: 'base_model.model.lm_head.weight', dtype: 'F32', shape: [1], data: () => f32Bytes([0]) }] })),
  folderCase('adapter module outside target_modules', 'ADAPTER_TENSOR_INVALID', (dir) =>
    writeAdapterFolder(dir, { config: adapterConfig({ target_modules: ['q_proj', 'v_proj'] }) })),
  {
    name: 'adapter shapes do not fit the base', code: 'ADAPTER_BASE_MISMATCH', open: 'adapter-with-base',
    build: (dir) => writeAdapterFolder(dir, { mutate: (ts) => ts.map((t) => (t.name.endsWith('down_proj.lora_A.weight') ? { ...t, shape: [2, 11], data: () => new Uint8Array(88) } : t)) }),
  },
  {
    name: 'adapter targets a layer the base lacks', code: 'ADAPTER_BASE_MISMATCH', open: 'adapter-with-base',
    build: (dir) => writeAdapterFolder(dir, { mutate: (ts) => ts.map((t) => ({ ...t, name: t.name.replace('layers.0.', 'layers.7.') })) }),
  },
];

async function editIndex(dir: string, edit: (wm: Record<string, string>) => Record<string, string>): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  const p = join(dir, 'model.safetensors.index.json');
  const index = JSON.parse(await readFile(p, 'utf8')) as { weight_map: Record<string, string> };
  await writeFile(p, JSON.stringify({ ...index, weight_map: edit(index.weight_map) }));
}

/** A valid sharded folder whose index then points one tensor at `shardName`. */
async function shardedWithName(dir: string, shardName: string): Promise<string> {
  await writeModelFolder(dir, { sharded: true });
  await editIndex(dir, (wm) => ({ ...wm, 'model.norm.weight': shardName }));
  return dir;
}

const TINY_SPEC = parseModelConfig(tinyConfig(), 'tiny');

async function openAs(c: Case, path: string): Promise<void> {
  if (c.open === 'adapter-with-base') {
    const a = await LoraAdapter.open(path, TINY_SPEC);
    await a.close();
    return;
  }
  const o = await openCheckpoint(path);
  if (o.kind === 'model') await o.model.close();
  else if (o.kind === 'adapter') await o.adapter.close();
  else await o.file.close();
}

describe('malformed checkpoint corpus', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ dir: root, cleanup } = await tempDir('fgsn-corpus-')));
  afterAll(async () => cleanup());

  it('has at least 30 distinct cases covering every header code', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(30);
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
    const codes = new Set(CASES.map((c) => c.code));
    for (const code of [
      'CHECKPOINT_FILE_TOO_SMALL', 'CHECKPOINT_HEADER_TOO_LARGE', 'CHECKPOINT_HEADER_TRUNCATED', 'CHECKPOINT_HEADER_NOT_UTF8', 'CHECKPOINT_HEADER_NOT_JSON',
      'CHECKPOINT_METADATA_INVALID', 'CHECKPOINT_DUPLICATE_TENSOR', 'CHECKPOINT_TENSOR_ENTRY_INVALID', 'CHECKPOINT_DTYPE_UNSUPPORTED', 'CHECKPOINT_SHAPE_INVALID',
      'CHECKPOINT_OFFSETS_INVALID', 'CHECKPOINT_SIZE_MISMATCH', 'CHECKPOINT_OFFSETS_OVERLAP', 'CHECKPOINT_DATA_HOLE', 'CHECKPOINT_PICKLE_REFUSED',
      'CHECKPOINT_PATH_UNSAFE', 'CHECKPOINT_TENSOR_NOT_FOUND', 'CHECKPOINT_TENSOR_SHAPE_MISMATCH', 'CHECKPOINT_ARCH_UNSUPPORTED', 'ADAPTER_BASE_MISMATCH',
    ] as const) expect(codes.has(code), code).toBe(true);
  });

  it.each(CASES.map((c, i) => [c.name, c, i] as const))('%s -> refused with its code', async (_name, c, i) => {
    const path = await c.build(join(root, `case-${i}`));
    const before = process.memoryUsage().arrayBuffers;
    let thrown: unknown = null;
    try {
      await openAs(c, path);
    } catch (e) {
      thrown = e;
    }
    expect(thrown, 'must be refused').toBeInstanceOf(FgsnError);
    const err = thrown as FgsnError;
    expect(err.code, err.message).toBe(c.code);
    expect(err.status).toBeGreaterThanOrEqual(400);
    expect(err.status).toBeLessThan(500);
    // Every message names where the problem is.
    expect(err.message).toContain(c.folder ? path : join(root, `case-${i}`));
    // No case may allocate in proportion to what a header claims (2^60 bytes, 2^40 elements): a few MB at most.
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * 1024 * 1024);
    if (c.folder) {
      const v = await validateCheckpointFolder(path);
      expect(v.ok).toBe(false);
      if (!v.ok) expect(v.problems.map((p) => p.code)).toContain(c.code);
    }
  });

  it('refuses a header over a caller-given bound', async () => {
    const p = join(root, 'bound.safetensors');
    await writeFile(p, rawSafetensors(JSON.stringify({ a: entry('U8', [1], [0, 1]) }), new Uint8Array(1)));
    await expect(SafetensorsFile.open(p, { maxHeaderBytes: 16 })).rejects.toMatchObject({ code: 'CHECKPOINT_HEADER_TOO_LARGE' });
    const f = await SafetensorsFile.open(p);
    await f.close();
  });

  it('validateCheckpointFolder names every problem at once', async () => {
    const dir = join(root, 'many-problems');
    await writeModelFolder(dir, {
      skip: (n) => n === `${L0}.mlp.up_proj.weight` || n === 'model.norm.weight',
      extra: [
        { name: `${L0}.self_attn.k_proj.weight`, dtype: 'F32', shape: [8, 8], data: () => new Uint8Array(256) },
        { name: 'stray.weight', dtype: 'F32', shape: [1], data: () => f32Bytes([1]) },
      ],
    });
    const v = await validateCheckpointFolder(dir);
    expect(v.ok).toBe(false);
    if (v.ok) return;
    expect(v.problems.map((p) => p.code).sort()).toEqual([
      'CHECKPOINT_TENSOR_NOT_FOUND', 'CHECKPOINT_TENSOR_NOT_FOUND', 'CHECKPOINT_TENSOR_SHAPE_MISMATCH', 'CHECKPOINT_TENSOR_UNEXPECTED',
    ]);
    expect(v.problems.map((p) => p.message).join('\n')).toContain('model.norm.weight');
  });

  it('validateCheckpointFolder reports a bad config and bad weights together', async () => {
    const dir = join(root, 'config-and-weights');
    await writeModelFolder(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...tinyConfig(), model_type: 'falcon' }));
    await writeFile(join(dir, 'model.safetensors'), new Uint8Array(3));
    const v = await validateCheckpointFolder(dir);
    expect(v.ok ? [] : v.problems.map((p) => p.code).sort()).toEqual(['CHECKPOINT_ARCH_UNSUPPORTED', 'CHECKPOINT_FILE_TOO_SMALL']);
  });

  it('accepts the well-formed fixtures the corpus is built from', async () => {
    const dirs = [
      await writeModelFolder(join(root, 'ok-single')),
      await writeModelFolder(join(root, 'ok-sharded'), { sharded: true }),
      await writeModelFolder(join(root, 'ok-bf16'), { dtype: 'BF16' }),
      await writeModelFolder(join(root, 'ok-qwen2'), { config: tinyConfig({ model_type: 'qwen2', tie_word_embeddings: true, architectures: ['Qwen2ForCausalLM'] }) }),
      await writeModelFolder(join(root, 'ok-inv-freq'), { extra: [{ name: `${L0}.self_attn.rotary_emb.inv_freq`, dtype: 'F32', shape: [2], data: () => f32Bytes([1, 0.01]) }] }),
      await writeAdapterFolder(join(root, 'ok-adapter')),
      await writeAdapterFolder(join(root, 'ok-adapter-suffix-targets'), { config: adapterConfig({ target_modules: ['self_attn.q_proj', 'v_proj', 'mlp.down_proj'] }) }),
      await writeAdapterFolder(join(root, 'ok-adapter-regex-targets'), { config: adapterConfig({ target_modules: '.*\\.(q_proj|v_proj|down_proj)' }) }),
    ];
    for (const d of dirs) {
      const v = await validateCheckpointFolder(d);
      expect(v.ok ? 'ok' : v.problems.map((p) => p.message).join('; '), d).toBe('ok');
    }
    const a = await LoraAdapter.open(join(root, 'ok-adapter'), TINY_SPEC);
    expect(a.targets()).toHaveLength(3);
    await a.close();
    const single = await openCheckpoint(join(root, 'ok-inv-freq'));
    if (single.kind !== 'model') throw new Error('expected a model');
    expect(single.model.ignored).toEqual([`${L0}.self_attn.rotary_emb.inv_freq`]);
    expect(single.model.has(`${L0}.self_attn.rotary_emb.inv_freq`)).toBe(false);
    await single.model.close();
    await writeSafetensors(join(root, 'ok-file.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], data: () => f32Bytes([1]) }]);
    const f = await openCheckpoint(join(root, 'ok-file.safetensors'));
    expect(f.kind).toBe('file');
    if (f.kind === 'file') await f.file.close();
  });
});
