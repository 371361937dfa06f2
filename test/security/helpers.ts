/** Shared by the issue-15 regression tests: tiny folders and in-place byte edits the writer would refuse. */
import { open } from 'node:fs/promises';
import { SafetensorsFile } from '../../src/checkpoint/safetensors-reader.js';

/**
 * Overwrites element `index` of tensor `name` in a safetensors file with raw little-endian `bytes`: the way
 * to plant a NaN/Inf, since writeSafetensors refuses to write one.
 */
export async function pokeElement(file: string, name: string, index: number, bytes: Uint8Array): Promise<void> {
  const f = await SafetensorsFile.open(file);
  const t = f.tensor(name);
  await f.close();
  if (bytes.byteLength * (index + 1) > t.byteLength) throw new RangeError(`${name} has no element ${index}`);
  const fh = await open(file, 'r+');
  try {
    await fh.write(bytes, 0, bytes.byteLength, t.byteOffset + index * bytes.byteLength);
  } finally {
    await fh.close();
  }
}

export const F32_NAN = new Uint8Array(new Float32Array([NaN]).buffer);
export const F32_POS_INF = new Uint8Array(new Float32Array([Infinity]).buffer);
export const F32_NEG_INF = new Uint8Array(new Float32Array([-Infinity]).buffer);
/** BF16/F16 specials as little-endian bytes. */
export const BF16_NAN = Uint8Array.of(0xc0, 0x7f);
export const BF16_POS_INF = Uint8Array.of(0x80, 0x7f);
export const F16_NAN = Uint8Array.of(0x00, 0x7e);
export const F16_NEG_INF = Uint8Array.of(0x00, 0xfc);
