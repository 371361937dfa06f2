/**
 * Row diffs: one safetensors file holding, per changed weight, `<tensor>.rows` (I64 row indices, sorted) and
 * `<tensor>.values` ([rows, dIn] in the model's dtype). The hardened model is the source model with those rows
 * overwritten, so a diff plus its source rebuild the model bit for bit (`fgsn apply-diff`).
 */
import {
  type DType, DTYPE_SIZE, encodeFromF32, SafetensorsFile, type TensorSource, type WriteResult,
  writeSafetensors,
} from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import type { Selection } from '../math/select.js';

export const DIFF_FORMAT = 'fgsn-row-diff-v1';

export interface DiffTensorPlan {
  name: string;
  rows: Uint32Array;
  dIn: number;
  dtype: DType;
  /** fp32 values of `rows`, [rows.length * dIn]; called once, in write order. */
  values: () => Promise<Float32Array>;
}

export async function writeRowDiff(path: string, plans: DiffTensorPlan[], metadata: Record<string, string>): Promise<WriteResult> {
  const tensors: TensorSource[] = [];
  for (const p of plans) {
    if (p.rows.length === 0) continue;
    tensors.push({
      name: `${p.name}.rows`, dtype: 'I64', shape: [p.rows.length],
      data: () => new Uint8Array(BigInt64Array.from(p.rows, (r) => BigInt(r)).buffer),
    });
    tensors.push({
      name: `${p.name}.values`, dtype: p.dtype, shape: [p.rows.length, p.dIn],
      data: async () => {
        const v = await p.values();
        if (v.length !== p.rows.length * p.dIn) throw new RangeError(`${p.name}: ${v.length} values for ${p.rows.length} rows x ${p.dIn}`);
        return encodeFromF32(p.dtype, v);
      },
    });
  }
  return writeSafetensors(path, tensors, { ...metadata, 'fgsn.format': DIFF_FORMAT });
}

export interface RowDiffEntry {
  rows: Uint32Array;
  valuesName: string;
  dtype: DType;
  dIn: number;
}

/** An opened, validated row diff. */
export class RowDiff {
  private constructor(
    readonly file: SafetensorsFile,
    readonly entries: Map<string, RowDiffEntry>,
  ) {}

  get metadata(): Record<string, string> {
    return this.file.metadata;
  }

  static async open(path: string): Promise<RowDiff> {
    const file = await SafetensorsFile.open(path);
    try {
      const bad = (msg: string): FgsnError => new FgsnError('DIFF_INVALID', `${path}: ${msg}`, { details: { file: path } });
      if (file.metadata['fgsn.format'] !== DIFF_FORMAT) throw bad(`metadata fgsn.format is ${JSON.stringify(file.metadata['fgsn.format'])}, expected "${DIFF_FORMAT}"`);
      const entries = new Map<string, RowDiffEntry>();
      const names = file.names();
      for (const n of names) {
        if (n.endsWith('.rows')) {
          const w = n.slice(0, -'.rows'.length);
          if (!names.includes(`${w}.values`)) throw bad(`"${n}" has no matching "${w}.values"`);
        } else if (!n.endsWith('.values') || !names.includes(`${n.slice(0, -'.values'.length)}.rows`)) {
          throw bad(`unexpected tensor "${n}" (only <tensor>.rows / <tensor>.values pairs)`);
        }
      }
      for (const n of names.filter((x) => x.endsWith('.rows'))) {
        const w = n.slice(0, -'.rows'.length);
        const ri = file.tensor(n);
        const vi = file.tensor(`${w}.values`);
        if (ri.dtype !== 'I64' || ri.shape.length !== 1) throw bad(`"${n}" must be a 1-D I64 tensor`);
        if (vi.shape.length !== 2 || vi.shape[0] !== ri.shape[0]) throw bad(`"${w}.values" must be [${ri.shape[0]}, dIn]`);
        const bytes = await file.readBytes(n);
        const raw = new BigInt64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
        const rows = new Uint32Array(raw.length);
        for (let k = 0; k < raw.length; k++) {
          if (raw[k] < 0n || raw[k] > 0xffffffffn || (k > 0 && raw[k] <= raw[k - 1])) throw bad(`"${n}" must hold strictly increasing non-negative row indices`);
          rows[k] = Number(raw[k]);
        }
        entries.set(w, { rows, valuesName: `${w}.values`, dtype: vi.dtype, dIn: vi.shape[1] });
      }
      return new RowDiff(file, entries);
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  selection(): Selection {
    const out: Selection = new Map();
    for (const [n, e] of this.entries) out.set(n, e.rows);
    return out;
  }

  /** Overwrites the diff's rows in `bytes` (the raw source tensor, [dOut, dIn] of `dtype`), in place. */
  async splice(name: string, bytes: Uint8Array, shape: number[], dtype: DType): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) return bytes;
    if (shape.length !== 2 || shape[1] !== e.dIn || e.dtype !== dtype) {
      throw new FgsnError('DIFF_INVALID', `${this.file.path}: "${name}" is ${e.dtype} [*, ${e.dIn}], the model has ${dtype} ${JSON.stringify(shape)}`, {
        details: { tensor: name },
      });
    }
    const rowBytes = e.dIn * DTYPE_SIZE[dtype];
    const values = await this.file.readBytes(e.valuesName);
    for (let k = 0; k < e.rows.length; k++) {
      const r = e.rows[k];
      if (r >= shape[0]) throw new FgsnError('DIFF_INVALID', `${this.file.path}: "${name}" row ${r} >= ${shape[0]} rows`, { details: { tensor: name } });
      bytes.set(values.subarray(k * rowBytes, (k + 1) * rowBytes), r * rowBytes);
    }
    return bytes;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
