/**
 * Bounds on the JSON files a tenant controls (config.json, adapter_config.json, index, safetensors header).
 * Sizes are checked before reading; nesting depth by one linear scan before JSON.parse, because code that
 * walks a parsed value (JSON.stringify in error messages, schema validation, the API's response writer)
 * recurses and would overflow the stack on a value nested a million levels deep.
 */

/** config.json, adapter_config.json, generation_config.json: real ones are a few KB. */
export const MAX_CONFIG_JSON_BYTES = 1 << 20;
/** model.safetensors.index.json: about 100 bytes per tensor; 16 MiB covers >100k tensors. */
export const MAX_INDEX_JSON_BYTES = 16 << 20;
/** Real configs nest 3-4 levels (rope_scaling, quantization_config); 64 leaves room and no stack risk. */
export const MAX_JSON_DEPTH = 64;

/**
 * The deepest nesting of arrays/objects in `text`, stopping as soon as it passes `limit` (so the scan is
 * O(length) and allocates nothing). Strings are skipped, escapes included; `text` need not be valid JSON.
 */
export function jsonDepthExceeds(text: string, limit: number): boolean {
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i += 2;
        else if (d === 0x22) break;
        else i++;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > limit) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
  }
  return false;
}

/** JSON.stringify of a tenant's value for an error message, cut to `max` characters. */
export function preview(value: unknown, max = 200): string {
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    // Only reachable for values no parser here produces (cycles, BigInt): say so instead of recursing again.
    s = `(${typeof value})`;
  }
  return s.length <= max ? s : `${s.slice(0, max)}... (${s.length} characters)`;
}
