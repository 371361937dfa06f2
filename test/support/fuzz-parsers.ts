/**
 * Property-based fuzzing of the parsers a tenant's bytes reach first: the safetensors header, config.json and
 * adapter_config.json (issue 15). Shared by test/security/fuzz.test.ts (a few thousand cases in CI) and
 * bench/fuzz (a longer run reporting cases/s).
 *
 * The property: whatever the input, a parser returns or throws a coded FgsnError with a 4xx status and a
 * bounded message. Anything else (a TypeError, a RangeError from a huge allocation, a stack overflow) is a
 * crash the API would answer with 500. Inputs mix raw bytes, arbitrary JSON, and near-valid documents with
 * one field replaced, so most cases get past the first checks.
 */
import fc from 'fast-check';
import { parseAdapterConfig, targetMatcher } from '../../src/checkpoint/lora.js';
import { expectedTensorCount, parseJsonText, parseModelConfig } from '../../src/checkpoint/model-config.js';
import { parseSafetensorsHeader } from '../../src/checkpoint/safetensors-header.js';
import { FgsnError } from '../../src/errors.js';

/** No message a tenant gets back is longer than this (names are fuzzed short; previews are cut). */
export const MAX_MESSAGE_CHARS = 16_384;

export type Outcome = 'accepted' | 'refused';

/** Runs one case: 'accepted', 'refused' (a coded 4xx), or throws what the property should report. */
function coded(fn: () => void): Outcome {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    if (!(e instanceof FgsnError)) throw e;
    if (e.status < 400 || e.status >= 500) throw new Error(`${e.code} has status ${e.status}, not 4xx: ${e.message.slice(0, 200)}`);
    if (e.message.length > MAX_MESSAGE_CHARS) throw new Error(`${e.code}: message of ${e.message.length} characters`);
    return 'refused';
  }
}

const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'];
const SIZE: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Numbers that break naive code: huge, negative, fractional, unsafe. */
const nastyNumber = fc.oneof(
  fc.nat(64),
  fc.integer(),
  fc.double(),
  fc.constantFrom(-1, 0, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 62, 1e308, -0, 0.5),
);
const anyJson = fc.jsonValue({ maxDepth: 4 });
/** Nested arrays/objects `d` deep around a value: the shape of the 14 MB config of issue 15, smaller. */
const deepJsonText = fc.tuple(fc.integer({ min: 1, max: 5000 }), fc.boolean()).map(([d, obj]) => (obj ? `${'{"a":'.repeat(d)}1${'}'.repeat(d)}` : `${'['.repeat(d)}${']'.repeat(d)}`));

interface FuzzTensor {
  name: string;
  dtype: unknown;
  shape: unknown;
  data_offsets: unknown;
  [extra: string]: unknown;
}

/** A consistent header (tensors tiling the data section), then one mutation: most cases pass JSON and layout checks. */
const layoutHeader = fc
  .array(fc.record({ name: fc.string({ minLength: 0, maxLength: 12 }), dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.nat(6), { maxLength: 3 }) }), { maxLength: 6 })
  .chain((ts) => {
    let cursor = 0;
    const tensors: FuzzTensor[] = ts.map((t) => {
      const bytes = t.shape.reduce((a, b) => a * b, 1) * SIZE[t.dtype];
      const e = { name: t.name, dtype: t.dtype, shape: t.shape, data_offsets: [cursor, cursor + bytes] };
      cursor += bytes;
      return e;
    });
    const mutation = fc.oneof(
      fc.constant((x: FuzzTensor[]) => x),
      fc.record({ i: fc.nat(8), field: fc.constantFrom('dtype', 'shape', 'data_offsets', 'name', 'extra'), v: fc.oneof(anyJson, nastyNumber, fc.array(nastyNumber, { maxLength: 4 })) }).map(
        ({ i, field, v }) => (x: FuzzTensor[]) => {
          if (x.length === 0) return x;
          const t = { ...x[i % x.length] };
          if (field === 'name') t.name = typeof v === 'string' ? v : JSON.stringify(v) ?? '';
          else t[field] = v;
          return x.map((o, k) => (k === i % x.length ? t : o));
        },
      ),
    );
    return fc.tuple(fc.constant(tensors), mutation, fc.constant(cursor), fc.option(fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 8 }), anyJson), { maxKeys: 3 })));
  })
  .map(([tensors, mutate, dataSize, metadata]) => {
    const parts: string[] = [];
    if (metadata !== null) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
    // Built by hand so duplicate names stay duplicates (an object would merge them).
    for (const t of mutate(tensors)) {
      const { name, ...rest } = t;
      parts.push(`${JSON.stringify(name)}:${JSON.stringify(rest)}`);
    }
    return { text: `{${parts.join(',')}}`, dataSize };
  });

/** Header bytes and the file size it claims to live in. */
export const headerCase = fc
  .oneof(
    { weight: 4, arbitrary: layoutHeader.chain(({ text, dataSize }) => fc.tuple(fc.constant(text), fc.oneof(fc.constant(dataSize), nastyNumber.map(Math.abs)))) },
    { weight: 2, arbitrary: fc.tuple(fc.json({ maxDepth: 4 }), fc.nat(1 << 20)) },
    { weight: 1, arbitrary: fc.tuple(deepJsonText.map((d) => `{"t":{"dtype":"F32","shape":${d},"data_offsets":[0,0]}}`), fc.nat(64)) },
    { weight: 1, arbitrary: fc.tuple(fc.string({ unit: 'binary', maxLength: 64 }).map((s) => `{${s}`), fc.nat(1024)) },
  )
  .chain(([text, dataSize]) =>
    fc.oneof(
      { weight: 5, arbitrary: fc.constant(new TextEncoder().encode(text)) },
      // Byte-level damage: invalid UTF-8, truncation.
      { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([at, b]) => {
        const bytes = new TextEncoder().encode(text);
        if (bytes.length > 0) bytes[at % bytes.length] = b;
        return bytes;
      }) },
      { weight: 1, arbitrary: fc.nat().map((cut) => new TextEncoder().encode(text).subarray(0, cut % (text.length + 1))) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 128 }) },
    ).map((bytes) => ({ bytes, fileSize: 8 + bytes.byteLength + (Number.isSafeInteger(dataSize) ? dataSize : 0) })),
  );

export function headerProperty(c: { bytes: Uint8Array; fileSize: number }): Outcome {
  return coded(() => {
    const h = parseSafetensorsHeader(c.bytes, c.fileSize, 'fuzz.safetensors');
    // Accepted headers describe exactly the data section: nothing was sized by a claim alone.
    let end = 0;
    for (const t of h.tensors.values()) end = Math.max(end, t.byteOffset + t.byteLength);
    if (h.tensors.size > 0 && end !== c.fileSize) throw new Error(`accepted header ends at ${end}, file has ${c.fileSize} bytes`);
  });
}

const TINY_CONFIG = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2,
  num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, vocab_size: 10, rms_norm_eps: 1e-5, rope_theta: 10000,
  max_position_embeddings: 64, tie_word_embeddings: false, torch_dtype: 'float32', bos_token_id: 1, eos_token_id: [2, 3], hidden_act: 'silu',
};
const CONFIG_KEYS = [...Object.keys(TINY_CONFIG), 'rope_scaling', 'attention_bias', 'mlp_bias', 'use_sliding_window', 'dtype', 'pad_token_id'];

/** config.json text: valid with fields replaced, arbitrary JSON, deep nesting, or damaged text. */
export const configCase = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(
        fc.dictionary(fc.constantFrom(...CONFIG_KEYS), fc.oneof(nastyNumber, anyJson, fc.constantFrom('qwen2', 'mistral', 'llama', 'float16', 'bfloat16')), { maxKeys: 4 }),
        fc.option(fc.constantFrom(...CONFIG_KEYS)),
      )
      .map(([over, drop]) => {
        const c: Record<string, unknown> = { ...TINY_CONFIG, ...over };
        if (drop !== null) delete c[drop];
        return JSON.stringify(c);
      }),
  },
  { weight: 2, arbitrary: fc.json({ maxDepth: 4 }) },
  { weight: 1, arbitrary: deepJsonText.map((d) => JSON.stringify(TINY_CONFIG).replace(/}$/, `,"rope_scaling":{"x":${d}}}`)) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.string({ unit: 'binary', maxLength: 8 })).map(([at, s]) => { const t = JSON.stringify(TINY_CONFIG); const i = at % t.length; return t.slice(0, i) + s + t.slice(i + 1); }) },
);

export function configProperty(text: string): Outcome {
  return coded(() => {
    const spec = parseModelConfig(parseJsonText(text, 'config.json', 'CHECKPOINT_CONFIG_INVALID'), 'config.json');
    // Only arithmetic on what a config claims; enumeration waits for the check against real tensors.
    const n = expectedTensorCount(spec);
    if (!Number.isFinite(n) || n < 3) throw new Error(`expectedTensorCount ${n}`);
  });
}

const TINY_ADAPTER = {
  peft_type: 'LORA', r: 2, lora_alpha: 4, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'], bias: 'none', fan_in_fan_out: false,
  use_rslora: false, base_model_name_or_path: '../base', task_type: 'CAUSAL_LM',
};
const ADAPTER_KEYS = [...Object.keys(TINY_ADAPTER), 'use_dora', 'rank_pattern', 'alpha_pattern', 'modules_to_save'];
/** Regex-ish strings over the characters that make patterns interesting (and backtracking engines slow). */
const patternText = fc.string({ unit: fc.constantFrom('(', ')', '|', '*', '+', '?', '.', '[', ']', '{', '}', '\\', '^', '$', 'a', 'b', 'q', '_', '1', ',', '='), maxLength: 40 });
const MODULE_PATHS = ['model.layers.0.self_attn.q_proj', 'lm_head', 'a'.repeat(64), `${'a'.repeat(64)}b`, 'model.layers.1.mlp.down_proj'];

/** adapter_config.json text: valid with fields replaced (target_modules often a hostile pattern), or arbitrary. */
export const adapterCase = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(
        fc.dictionary(fc.constantFrom(...ADAPTER_KEYS), fc.oneof(nastyNumber, anyJson, patternText), { maxKeys: 3 }),
        fc.oneof(patternText, fc.array(fc.oneof(patternText, fc.string({ maxLength: 12 })), { maxLength: 5 }), fc.constantFrom('(a|a)*b', '(a*)*b', 'all-linear', '.*', '(?=a)', '(a)\\1')),
      )
      .map(([over, targets]) => JSON.stringify({ ...TINY_ADAPTER, target_modules: targets, ...over })),
  },
  { weight: 2, arbitrary: fc.json({ maxDepth: 4 }) },
  { weight: 1, arbitrary: deepJsonText.map((d) => JSON.stringify(TINY_ADAPTER).replace(/}$/, `,"x":${d}}`)) },
);

export function adapterProperty(text: string): Outcome {
  return coded(() => {
    const config = parseAdapterConfig(parseJsonText(text, 'adapter_config.json', 'ADAPTER_CONFIG_INVALID'), 'adapter_config.json');
    const m = targetMatcher(config);
    // Matching must never throw, whatever was accepted (and runs on RE2's linear engine for patterns).
    for (const p of MODULE_PATHS) m.matches(p);
  });
}

export const FUZZ_TARGETS = [
  { name: 'safetensors header', arbitrary: headerCase, property: headerProperty },
  { name: 'config.json', arbitrary: configCase, property: configProperty },
  { name: 'adapter_config.json', arbitrary: adapterCase, property: adapterProperty },
] as const;

/** One case of target `i`: its outcome, or a throw for a property violation. */
export function runCase(i: number, x: unknown): Outcome {
  return (FUZZ_TARGETS[i].property as (v: unknown) => Outcome)(x);
}

/** fc.property over target `i` (a violation throws, which fast-check reports with the shrunk input). */
export function fuzzProperty(i: number): fc.IProperty<[unknown]> {
  return fc.property(FUZZ_TARGETS[i].arbitrary as fc.Arbitrary<unknown>, (x) => {
    runCase(i, x);
  });
}
