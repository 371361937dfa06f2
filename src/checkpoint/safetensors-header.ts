/**
 * Strict validation of a safetensors header (https://github.com/huggingface/safetensors, "Format").
 *
 * Pure: takes the header bytes and the file size, returns the tensor table or throws a coded FgsnError.
 * Nothing here allocates in proportion to what the header *claims* (shapes, offsets): only in proportion
 * to the header bytes themselves, which the caller has already bounded.
 */
import { FgsnError } from '../errors.js';
import { MAX_JSON_DEPTH, jsonDepthExceeds, preview } from './json-limits.js';
import { DTYPE_SIZE, type DType, type TensorInfo } from './types.js';

/** Default bound on the JSON header (the HF library uses the same 100 MB limit). */
export const DEFAULT_MAX_HEADER_BYTES = 100_000_000;

export interface ParsedHeader {
  metadata: Record<string, string>;
  /** In data-layout order (ascending offsets). */
  tensors: Map<string, TensorInfo>;
  /** Absolute offset of the data section: 8 + header length. */
  dataStart: number;
}

const TENSOR_KEYS = ['dtype', 'shape', 'data_offsets'] as const;

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

/**
 * Element count of a shape, refusing anything that is not a list of non-negative safe integers or whose
 * product times `itemSize` would not be a safe integer (so byte sizes computed from it are exact).
 * Returns null when invalid; callers turn that into their own coded error.
 */
export function checkedElementCount(shape: unknown, itemSize: number): number | null {
  if (!Array.isArray(shape)) return null;
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) return null;
    n *= d;
    if (n * itemSize > Number.MAX_SAFE_INTEGER) return null;
  }
  // A zero dimension makes the product 0 regardless of later (still validated) dimensions.
  return n;
}

function fail(code: ConstructorParameters<typeof FgsnError>[0], source: string, problem: string, tensor?: string): never {
  const where = tensor === undefined ? source : `${source}: tensor "${tensor}"`;
  throw new FgsnError(code, `${where}: ${problem}`, { details: tensor === undefined ? { file: source } : { file: source, tensor } });
}

/**
 * Finds duplicate keys in any JSON object of `text`, which must already be valid JSON. JSON.parse keeps the
 * last duplicate silently; a header naming a tensor twice is ambiguous and the format forbids it.
 */
function findDuplicateKey(text: string): { key: string; topLevel: boolean } | null {
  // One frame per open container: a key set for objects, null for arrays.
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const frame = stack[stack.length - 1];
      if (expectKey && frame) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (frame.has(key)) return { key, topLevel: stack.length === 1 };
        frame.add(key);
      }
      expectKey = false;
      i = j;
    } else if (c === 0x7b /* { */) {
      stack.push(new Set());
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      stack.push(null);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      expectKey = stack[stack.length - 1] instanceof Set;
    }
  }
  return null;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Validates header bytes (the JSON after the 8-byte length) against the format and a file of `fileSize`
 * bytes. `source` names the file in errors and becomes TensorInfo.file.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, fileSize: number, source: string): ParsedHeader {
  const dataStart = 8 + headerBytes.byteLength;
  if (dataStart > fileSize) {
    fail('CHECKPOINT_HEADER_TRUNCATED', source, `header of ${headerBytes.byteLength} bytes does not fit in a file of ${fileSize} bytes`);
  }
  const dataSize = fileSize - dataStart;

  let text: string;
  try {
    text = utf8.decode(headerBytes);
  } catch {
    fail('CHECKPOINT_HEADER_NOT_UTF8', source, 'header is not valid UTF-8');
  }
  // The format starts the header with '{' (a BOM or leading blanks are not safetensors as HF writes it).
  if (text.charCodeAt(0) !== 0x7b) fail('CHECKPOINT_HEADER_NOT_JSON', source, 'header does not start with "{"');
  // A valid header nests 3 levels; deeper values would only overflow the stack of whatever walks them
  // (JSON.stringify in a message). Checked by a linear scan before parsing.
  if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) fail('CHECKPOINT_HEADER_NOT_JSON', source, `header JSON nests deeper than ${MAX_JSON_DEPTH} levels`);
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    fail('CHECKPOINT_HEADER_NOT_JSON', source, `header is not valid JSON (${e instanceof Error ? e.message.slice(0, 200) : String(e)})`);
  }
  if (typeof root !== 'object' || root === null || Array.isArray(root)) {
    fail('CHECKPOINT_HEADER_NOT_JSON', source, 'header is not a JSON object');
  }
  const dup = findDuplicateKey(text);
  if (dup) {
    if (dup.topLevel) fail('CHECKPOINT_DUPLICATE_TENSOR', source, 'the name appears more than once in the header', dup.key);
    fail('CHECKPOINT_TENSOR_ENTRY_INVALID', source, `key "${dup.key}" appears twice inside one header entry`);
  }

  let metadata: Record<string, string> = {};
  const entries: { info: TensorInfo; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(root as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        fail('CHECKPOINT_METADATA_INVALID', source, '__metadata__ is not an object');
      }
      const pairs = Object.entries(value as Record<string, unknown>);
      for (const [k, v] of pairs) {
        if (typeof v !== 'string') fail('CHECKPOINT_METADATA_INVALID', source, `__metadata__["${k}"] is a ${typeof v}, not a string`);
      }
      // fromEntries defines own properties, so even a "__proto__" key is kept as data, not a prototype.
      metadata = Object.fromEntries(pairs) as Record<string, string>;
      continue;
    }
    entries.push(parseEntry(name, value, dataStart, dataSize, source));
  }

  // Layout order is by offset; equal begins only happen with empty tensors, ordered by end so they precede.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of entries) {
    if (e.begin < cursor) {
      fail('CHECKPOINT_OFFSETS_OVERLAP', source, `data_offsets [${e.begin}, ${e.end}] overlap the previous tensor, which ends at ${cursor}`, e.info.name);
    }
    if (e.begin > cursor) {
      fail('CHECKPOINT_DATA_HOLE', source, `${e.begin - cursor} unused bytes before it (data section offset ${cursor})`, e.info.name);
    }
    cursor = e.end;
  }
  if (cursor !== dataSize) {
    fail('CHECKPOINT_DATA_HOLE', source, `tensors cover ${cursor} of the ${dataSize} bytes of the data section: ${dataSize - cursor} trailing bytes`);
  }

  const tensors = new Map<string, TensorInfo>();
  for (const e of entries) tensors.set(e.info.name, e.info);
  return { metadata, tensors, dataStart };
}

function parseEntry(name: string, value: unknown, dataStart: number, dataSize: number, source: string): { info: TensorInfo; begin: number; end: number } {
  if (name.length === 0) fail('CHECKPOINT_TENSOR_ENTRY_INVALID', source, 'empty tensor name');
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('CHECKPOINT_TENSOR_ENTRY_INVALID', source, 'entry is not an object', name);
  }
  const entry = value as Record<string, unknown>;
  const keys = Object.keys(entry);
  const extra = keys.filter((k) => !(TENSOR_KEYS as readonly string[]).includes(k));
  const missing = TENSOR_KEYS.filter((k) => !(k in entry));
  if (extra.length > 0 || missing.length > 0) {
    const parts = [missing.length ? `missing ${missing.join(', ')}` : '', extra.length ? `unknown ${preview(extra.join(', '), 200)}` : ''].filter(Boolean);
    fail('CHECKPOINT_TENSOR_ENTRY_INVALID', source, `entry must have exactly dtype, shape, data_offsets (${parts.join('; ')})`, name);
  }
  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isDType(dtype)) fail('CHECKPOINT_DTYPE_UNSUPPORTED', source, `dtype ${preview(dtype, 100)} is not supported`, name);
  const itemSize = DTYPE_SIZE[dtype];
  const count = checkedElementCount(shape, itemSize);
  if (count === null) {
    fail('CHECKPOINT_SHAPE_INVALID', source, `shape ${preview(shape)} is not a list of non-negative integers with a representable byte size`, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)) {
    fail('CHECKPOINT_OFFSETS_INVALID', source, `data_offsets ${preview(offsets)} is not a pair of non-negative integers`, name);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail('CHECKPOINT_OFFSETS_INVALID', source, `data_offsets [${begin}, ${end}] end before they begin`, name);
  if (end > dataSize) {
    fail('CHECKPOINT_OFFSETS_INVALID', source, `data_offsets [${begin}, ${end}] run past the data section (${dataSize} bytes)`, name);
  }
  const byteLength = count * itemSize;
  if (end - begin !== byteLength) {
    fail('CHECKPOINT_SIZE_MISMATCH', source, `data_offsets span ${end - begin} bytes but shape ${preview(shape)} of ${dtype} needs ${byteLength}`, name);
  }
  const info: TensorInfo = { name, dtype, shape: [...(shape as number[])], byteOffset: dataStart + begin, byteLength, file: source };
  return { info, begin, end };
}
