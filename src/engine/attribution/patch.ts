/**
 * A static row patch for attribution: the loss is evaluated under the checkpoint with some rows of its
 * linear weights replaced (absolute new values, as a written model would hold them), without writing that
 * model. The new rows go to one small float32 file beside the graph; the graph reads each patched weight as
 * ScatterND(W, rows, values) (onnx/blocks.ts WeightTable), which onnxruntime folds into the weight at session
 * load, so the forward and the hand-built backward both run on the patched weight. The file's name and every
 * graph built on it carry the patch's digest, so a cached graph is never reused for another patch.
 */
import { createHash } from 'node:crypto';
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { linearWeightNames, type LoraAdapter, type ModelCheckpoint } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import type { PatchResolver } from '../onnx/blocks.js';

/** New values of some rows of linear weights: weight name -> sorted unique row indices and [rows * d_in] float32 rows. */
export type RowPatch = ReadonlyMap<string, { rows: Uint32Array; values: Float32Array }>;

/**
 * Throws unless every patched name is a linear weight of `ckpt`, its rows are sorted, unique and in range,
 * and its values are finite, rows x d_in of them.
 */
export function checkRowPatch(ckpt: ModelCheckpoint, patch: RowPatch): void {
  const known = new Set(linearWeightNames(ckpt.spec));
  for (const [name, p] of patch) {
    if (!known.has(name)) throw new FgsnError('DEFENSE_OPTION_INVALID', `row patch on "${name}", which is not a linear weight of this model`);
    const [dOut, dIn] = ckpt.tensor(name).shape;
    if (p.values.length !== p.rows.length * dIn) {
      throw new FgsnError('DEFENSE_OPTION_INVALID', `row patch on ${name}: ${p.values.length} values for ${p.rows.length} rows x ${dIn}`);
    }
    for (let k = 0; k < p.rows.length; k++) {
      // Strictly increasing: a repeated index would make the in-graph scatter's result undefined.
      if (p.rows[k] >= dOut || (k > 0 && p.rows[k] <= p.rows[k - 1])) {
        throw new FgsnError('DEFENSE_OPTION_INVALID', `row patch on ${name}: rows must be sorted, unique and < ${dOut}`);
      }
    }
    for (const v of p.values) if (!Number.isFinite(v)) throw new FgsnError('DEFENSE_OPTION_INVALID', `row patch on ${name}: non-finite value`);
  }
}

/** A checked, non-empty patch with its digest (sha256 over names, rows and value bytes, in name order). */
export interface PreparedPatch {
  digest: string;
  /** Patched weights in name order (weights with no rows left out). */
  entries: [string, { rows: Uint32Array; values: Float32Array }][];
}

/** Checks `patch` and digests it; undefined for an empty patch (attribution on the checkpoint as is). */
export function preparePatch(ckpt: ModelCheckpoint, patch: RowPatch | undefined): PreparedPatch | undefined {
  if (patch === undefined) return undefined;
  checkRowPatch(ckpt, patch);
  const entries = [...patch].filter(([, p]) => p.rows.length > 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length === 0) return undefined;
  const h = createHash('sha256');
  for (const [name, p] of entries) {
    h.update(`${name}\u0000${p.rows.length}\u0000`);
    h.update(new Uint8Array(p.rows.buffer, p.rows.byteOffset, p.rows.byteLength));
    h.update(new Uint8Array(p.values.buffer, p.values.byteOffset, p.values.byteLength));
  }
  return { digest: h.digest('hex').slice(0, 32), entries };
}

/**
 * Writes the patch's values file into a graph cache folder (once per digest) and returns the resolver the
 * graph builder reads it through. Under a LoRA adapter applied as extra MatMuls, the graph adds
 * scaling * (B A)[r] to each row of W: the base rows stored are the patch's merged values minus that, so the
 * weight the loss sees is exactly the patch.
 */
export async function patchFile(dir: string, patch: PreparedPatch, lora: LoraAdapter | null, loraTargets: ReadonlySet<string>): Promise<{ file: string; resolve: PatchResolver }> {
  const file = `patch-${patch.digest}.f32`;
  const path = join(dir, file);
  const layout = new Map<string, { rows: Uint32Array; dIn: number; offset: number; length: number }>();
  let offset = 0;
  for (const [name, p] of patch.entries) {
    const length = p.values.byteLength;
    layout.set(name, { rows: p.rows, dIn: p.values.length / p.rows.length, offset, length });
    offset += length;
  }
  if (!existsSync(path)) {
    const bytes = new Uint8Array(offset);
    for (const [name, p] of patch.entries) {
      const at = layout.get(name)!;
      const out = new Float32Array(bytes.buffer, at.offset, p.values.length);
      out.set(p.values);
      if (lora !== null && loraTargets.has(name)) {
        for (let k = 0; k < p.rows.length; k++) {
          const delta = await lora.deltaRowsF32(name, p.rows[k], p.rows[k] + 1);
          for (let j = 0; j < at.dIn; j++) out[k * at.dIn + j] -= delta[j];
        }
      }
    }
    const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
    try {
      writeFileSync(tmp, bytes);
      renameSync(tmp, path);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw new FgsnError('STORAGE_ERROR', `cannot write the attribution row patch ${path}: ${(e as Error).message}`, { cause: e });
    }
  }
  return {
    file,
    resolve: (name) => {
      const at = layout.get(name);
      if (at === undefined) return undefined;
      return { rows: at.rows, values: { dtype: 'F32', shape: [at.rows.length, at.dIn], location: file, offset: at.offset, length: at.length } };
    },
  };
}
