/**
 * The checkpoint layer's malformed-checkpoint corpus, sent through the API: every case that can exist as an
 * upload (flat regular files; symlinks, FIFOs and folders cannot be uploaded) is stored, then refused at
 * complete with 422 UPLOAD_INVALID naming its code, no server path leaked; pickle names are refused at PUT.
 * A well-formed upload completed in between shows the failures leave other uploads alone.
 */
import { mkdir, readFile, readdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ERROR_CATALOGUE } from '../../src/errors.js';
import { adapterConfig, f32Bytes, rawSafetensors, tempDir, tinyConfig, writeAdapterFolder, writeModelFolder } from '../checkpoint/fixtures.js';
import { startHarness, uploadFolder, type Harness } from './harness.js';

let h: Harness;
let work: { dir: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  h = await startHarness();
  work = await tempDir('fgsn-malformed-');
});
afterAll(async () => {
  await h?.close();
  await work?.cleanup();
});

const entry = (dtype: string, shape: unknown, offsets: unknown): Record<string, unknown> => ({ dtype, shape, data_offsets: offsets });
const L0 = 'model.layers.0';

/** A model folder (valid config.json) whose model.safetensors is exactly `bytes`. */
const weights = (bytes: () => Uint8Array) => async (dir: string) => {
  await mkdir(dir);
  await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig()));
  await writeFile(join(dir, 'model.safetensors'), bytes());
};
const header = (h: Record<string, unknown> | string, data: Uint8Array = new Uint8Array(0)) =>
  weights(() => rawSafetensors(typeof h === 'string' ? h : JSON.stringify(h), data));
const withConfig = (config: Record<string, unknown> | string) => async (dir: string) => {
  await writeModelFolder(dir);
  await writeFile(join(dir, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
};
async function editIndex(dir: string, edit: (wm: Record<string, string>) => Record<string, string>): Promise<void> {
  const p = join(dir, 'model.safetensors.index.json');
  const index = JSON.parse(await readFile(p, 'utf8')) as { weight_map: Record<string, string> };
  await writeFile(p, JSON.stringify({ ...index, weight_map: edit(index.weight_map) }));
}
const shardNamed = (name: string) => async (dir: string) => {
  await writeModelFolder(dir, { sharded: true });
  await editIndex(dir, (wm) => ({ ...wm, 'model.norm.weight': name }));
};

const CASES: [string, string, (dir: string) => Promise<unknown>][] = [
  // safetensors envelope and header
  ['empty weights file', 'CHECKPOINT_FILE_TOO_SMALL', weights(() => new Uint8Array(0))],
  ['7-byte weights file', 'CHECKPOINT_FILE_TOO_SMALL', weights(() => new Uint8Array(7))],
  ['header length 2^60', 'CHECKPOINT_HEADER_TOO_LARGE', weights(() => rawSafetensors('{}', new Uint8Array(0), 2n ** 60n))],
  ['header length past the end', 'CHECKPOINT_HEADER_TRUNCATED', weights(() => rawSafetensors('{}', new Uint8Array(0), 1000n))],
  ['truncated inside the header', 'CHECKPOINT_HEADER_TRUNCATED', weights(() => rawSafetensors(JSON.stringify({ a: entry('F32', [1], [0, 4]) }), f32Bytes([1])).subarray(0, 20))],
  ['header not UTF-8', 'CHECKPOINT_HEADER_NOT_UTF8', weights(() => rawSafetensors(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])))],
  ['header not JSON', 'CHECKPOINT_HEADER_NOT_JSON', header('{"a": ')],
  ['header a JSON array', 'CHECKPOINT_HEADER_NOT_JSON', header('[1, 2]')],
  ['__metadata__ value not a string', 'CHECKPOINT_METADATA_INVALID', header({ __metadata__: { format: 1 } })],
  ['duplicate tensor name', 'CHECKPOINT_DUPLICATE_TENSOR', header('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', new Uint8Array(2))],
  ['entry not an object', 'CHECKPOINT_TENSOR_ENTRY_INVALID', header({ a: 5 })],
  ['entry with an unknown key', 'CHECKPOINT_TENSOR_ENTRY_INVALID', header({ a: { ...entry('U8', [1], [0, 1]), extra: 1 } }, new Uint8Array(1))],
  ['unsupported dtype F8_E4M3', 'CHECKPOINT_DTYPE_UNSUPPORTED', header({ a: entry('F8_E4M3', [1], [0, 1]) }, new Uint8Array(1))],
  ['negative dimension', 'CHECKPOINT_SHAPE_INVALID', header({ a: entry('U8', [-1], [0, 0]) })],
  ['shape product overflows', 'CHECKPOINT_SHAPE_INVALID', header({ a: entry('F32', [2 ** 40, 2 ** 40], [0, 4]) }, new Uint8Array(4))],
  ['offsets past the data section', 'CHECKPOINT_OFFSETS_INVALID', header({ a: entry('U8', [8], [0, 8]) }, new Uint8Array(4))],
  ['size != prod(shape) * itemsize', 'CHECKPOINT_SIZE_MISMATCH', header({ a: entry('F32', [2], [0, 12]) }, new Uint8Array(12))],
  ['overlapping tensors', 'CHECKPOINT_OFFSETS_OVERLAP', header({ a: entry('U8', [4], [0, 4]), b: entry('U8', [4], [2, 6]) }, new Uint8Array(6))],
  ['hole between tensors', 'CHECKPOINT_DATA_HOLE', header({ a: entry('U8', [2], [0, 2]), b: entry('U8', [2], [4, 6]) }, new Uint8Array(6))],
  ['trailing bytes', 'CHECKPOINT_DATA_HOLE', header({ a: entry('U8', [2], [0, 2]) }, new Uint8Array(5))],
  ['truncated inside the data', 'CHECKPOINT_OFFSETS_INVALID', weights(() => {
    const full = rawSafetensors(JSON.stringify({ a: entry('F32', [4], [0, 16]) }), f32Bytes([1, 2, 3, 4]));
    return full.subarray(0, full.length - 3);
  })],
  // model folders
  ['config.json missing', 'CHECKPOINT_CONFIG_MISSING', async (dir) => {
    await writeModelFolder(dir);
    await unlink(join(dir, 'config.json'));
  }],
  ['config.json not JSON', 'CHECKPOINT_CONFIG_INVALID', withConfig('{"model_type": "llama",')],
  ['config hidden_size a string', 'CHECKPOINT_CONFIG_INVALID', withConfig(tinyConfig({ hidden_size: '8' }))],
  ['config heads not a multiple of KV heads', 'CHECKPOINT_CONFIG_INVALID', withConfig(tinyConfig({ num_key_value_heads: 3 }))],
  ['model_type gpt2', 'CHECKPOINT_ARCH_UNSUPPORTED', withConfig({ ...tinyConfig(), model_type: 'gpt2' })],
  ['rope_scaling of an unsupported type (mrope)', 'CHECKPOINT_ARCH_UNSUPPORTED', withConfig(tinyConfig({ rope_scaling: { type: 'mrope', mrope_section: [1, 1] } }))],
  ['missing tensor', 'CHECKPOINT_TENSOR_NOT_FOUND', (dir) => writeModelFolder(dir, { skip: (n) => n === `${L0}.mlp.up_proj.weight` })],
  ['tensor shape mismatch', 'CHECKPOINT_TENSOR_SHAPE_MISMATCH', (dir) =>
    writeModelFolder(dir, { extra: [{ name: `${L0}.self_attn.k_proj.weight`, dtype: 'F32', shape: [8, 8], data: () => new Uint8Array(256) }] })],
  ['unexpected tensor', 'CHECKPOINT_TENSOR_UNEXPECTED', (dir) =>
    writeModelFolder(dir, { extra: [{ name: 'model.layers.0.mlp.extra_proj.weight', dtype: 'F32', shape: [1], data: () => f32Bytes([1]) }] })],
  ['integer weights', 'CHECKPOINT_DTYPE_UNSUPPORTED', (dir) =>
    writeModelFolder(dir, { extra: [{ name: `${L0}.mlp.gate_proj.weight`, dtype: 'I32', shape: [12, 8], data: () => new Uint8Array(384) }] })],
  ['no weights at all', 'CHECKPOINT_NO_WEIGHTS', async (dir) => {
    await mkdir(dir);
    await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfig()));
  }],
  ['index with a ".." shard name', 'CHECKPOINT_PATH_UNSAFE', shardNamed('../outside.safetensors')],
  ['index with an absolute shard path', 'CHECKPOINT_PATH_UNSAFE', shardNamed('/etc/passwd')],
  ['index with a nested ".." shard name', 'CHECKPOINT_PATH_UNSAFE', shardNamed('sub/../../x.safetensors')],
  ['index names a missing shard', 'CHECKPOINT_INDEX_INVALID', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await unlink(join(dir, 'model-00002-of-00002.safetensors'));
  }],
  ['index maps a tensor to a shard that lacks it', 'CHECKPOINT_TENSOR_NOT_FOUND', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await editIndex(dir, (wm) => ({ ...wm, 'model.norm.weight': wm['model.norm.weight'] === 'model-00001-of-00002.safetensors' ? 'model-00002-of-00002.safetensors' : 'model-00001-of-00002.safetensors' }));
  }],
  ['index without weight_map', 'CHECKPOINT_INDEX_INVALID', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {} }));
  }],
  ['index not JSON', 'CHECKPOINT_INDEX_INVALID', async (dir) => {
    await writeModelFolder(dir, { sharded: true });
    await writeFile(join(dir, 'model.safetensors.index.json'), 'weight_map:');
  }],
  // adapters
  ['adapter peft_type IA3', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ peft_type: 'IA3' }) })],
  ['adapter config without r', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ r: undefined }) })],
  ['adapter r is zero', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ r: 0 }) })],
  ['adapter fan_in_fan_out', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ fan_in_fan_out: true }) })],
  ['adapter DoRA', 'ADAPTER_CONFIG_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ use_dora: true }) })],
  ['adapter config not JSON', 'ADAPTER_CONFIG_INVALID', async (dir) => {
    await writeAdapterFolder(dir);
    await writeFile(join(dir, 'adapter_config.json'), '{');
  }],
  ['adapter rank differs from r', 'ADAPTER_TENSOR_INVALID', (dir) => writeAdapterFolder(dir, { rank: 3 })],
  ['adapter A/B rank mismatch', 'ADAPTER_TENSOR_INVALID', (dir) =>
    writeAdapterFolder(dir, { mutate: (ts) => ts.map((t) => (t.name.endsWith('q_proj.lora_B.weight') ? { ...t, shape: [8, 3], data: () => new Uint8Array(96) } : t)) })],
  ['adapter lora_B missing', 'ADAPTER_TENSOR_INVALID', (dir) => writeAdapterFolder(dir, { mutate: (ts) => ts.filter((t) => !t.name.endsWith('v_proj.lora_B.weight')) })],
  ['adapter key that is not LoRA', 'ADAPTER_TENSOR_INVALID', (dir) =>
    writeAdapterFolder(dir, { mutate: (ts) => [...ts, { name: 'base_model.model.lm_head.weight', dtype: 'F32', shape: [1], data: () => f32Bytes([0]) }] })],
  ['adapter module outside target_modules', 'ADAPTER_TENSOR_INVALID', (dir) => writeAdapterFolder(dir, { config: adapterConfig({ target_modules: ['q_proj', 'v_proj'] }) })],
];

it.each(CASES)('%s -> 422 UPLOAD_INVALID naming %s', async (name, code, build) => {
  const dir = join(work.dir, name.replace(/\W+/g, '-'));
  await build(dir);
  const files = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  const id = await uploadFolder(h, dir, files);
  const r = await h.json<{ code: string; details: { problems: { code: string; message: string }[] } }>('POST', `/v1/checkpoints/${id}/complete`);
  expect(r.status).toBe(422);
  expect(r.body.code).toBe('UPLOAD_INVALID');
  const codes = r.body.details.problems.map((p) => p.code);
  expect(codes).toContain(code);
  for (const c of codes) expect(Object.keys(ERROR_CATALOGUE)).toContain(c);
  expect(codes).not.toContain('INTERNAL');
  expect(JSON.stringify(r.body)).not.toContain(h.dataDir);
  // the upload stays open for a fix; nothing about it became "ready"
  expect((await h.json<{ state: string }>('GET', `/v1/checkpoints/${id}`)).body.state).toBe('uploading');
});

it('a valid upload completes while the malformed ones are refused', async () => {
  const dir = await writeModelFolder(join(work.dir, 'valid'));
  const id = await uploadFolder(h, dir, await readdir(dir));
  expect((await h.json('POST', `/v1/checkpoints/${id}/complete`)).body).toMatchObject({ state: 'ready', kind: 'model' });
});
