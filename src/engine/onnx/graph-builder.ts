/**
 * A small typed layer over onnx-proto's ModelProto encoder. Every graph of the engine (forward, KV-cache
 * decode, attribution) is assembled here, so the opset and IR version are fixed in one place.
 *
 * Opset 17 / IR 8 (ONNX 1.12): the last opset whose Reduce* ops (other than ReduceSum) take `axes` as an
 * attribute, supported by every onnxruntime >= 1.12, so the graphs stay valid for all EPs we target.
 */
import onnxProto from 'onnx-proto';
import type { DType } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';

const { onnx } = onnxProto;

export const OPSET = 17;
export const IR_VERSION = 8;

export type ElemType = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

const ELEM_CODE: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  bfloat16: onnx.TensorProto.DataType.BFLOAT16,
  float64: onnx.TensorProto.DataType.DOUBLE,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  int16: onnx.TensorProto.DataType.INT16,
  int8: onnx.TensorProto.DataType.INT8,
  uint8: onnx.TensorProto.DataType.UINT8,
  bool: onnx.TensorProto.DataType.BOOL,
};

/** The ONNX element type code (TensorProto.DataType) of an element type, e.g. for Cast's `to`. */
export function elemCode(t: ElemType): number {
  return ELEM_CODE[t];
}

/** safetensors dtype -> ONNX element type (safetensors bytes are little-endian and dense: ONNX raw layout). */
export function elemTypeOfDType(d: DType): ElemType {
  switch (d) {
    case 'F32': return 'float32';
    case 'F16': return 'float16';
    case 'BF16': return 'bfloat16';
    case 'F64': return 'float64';
    case 'I64': return 'int64';
    case 'I32': return 'int32';
    case 'I16': return 'int16';
    case 'I8': return 'int8';
    case 'U8': return 'uint8';
    case 'BOOL': return 'bool';
  }
}

/** Marks an attribute value as FLOAT even when it is a whole number (1.0 would otherwise encode as INT). */
export class FloatAttr {
  constructor(readonly value: number) {}
}
export const f = (v: number): FloatAttr => new FloatAttr(v);

export type AttrValue = number | FloatAttr | number[] | FloatAttr[] | string;
export type Attrs = Record<string, AttrValue>;

/** A dimension: a fixed size or a symbolic name (batch, sequence, ...). */
export type Dim = number | string;

export interface ExternalRef {
  /** File name relative to the .onnx file's folder (no '..', no absolute path). */
  location: string;
  offset: number;
  length: number;
}

function encodeAttr(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (v instanceof FloatAttr) return { name, type: T.FLOAT, f: v.value };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === 'number') {
    return Number.isInteger(v) ? { name, type: T.INT, i: v } : { name, type: T.FLOAT, f: v };
  }
  if (v.length > 0 && v[0] instanceof FloatAttr) {
    return { name, type: T.FLOATS, floats: (v as FloatAttr[]).map((x) => x.value) };
  }
  return { name, type: T.INTS, ints: v as number[] };
}

function valueInfo(name: string, t: ElemType, shape: Dim[] | null): onnxProto.onnx.IValueInfoProto {
  const tensorType: onnxProto.onnx.TypeProto.ITensor = { elemType: ELEM_CODE[t] };
  if (shape !== null) {
    tensorType.shape = { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  }
  return { name, type: { tensorType } };
}

function assertSafeLocation(location: string): void {
  if (location.startsWith('/') || location.split(/[\\/]/).includes('..') || location.includes('\\')) {
    throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `external data location "${location}" must be a plain relative path`);
  }
}

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inits: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly names = new Set<string>();
  /** Values outputInPlace renamed, by their old name. */
  private readonly renamed = new Map<string, string>();
  private counter = 0;

  constructor(readonly graphName: string) {}

  /** An unused value name with a readable prefix (claimed when a node or initializer defines it). */
  fresh(prefix: string): string {
    let n: string;
    do n = `${prefix}__${this.counter++}`;
    while (this.names.has(n));
    return n;
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', `graph value "${name}" defined twice`);
    this.names.add(name);
    return name;
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** A graph input; `shape` null leaves its rank and dimensions to the feeds. */
  input(name: string, t: ElemType, shape: Dim[] | null): string {
    this.inputs.push(valueInfo(this.claim(name), t, shape));
    return name;
  }

  /** Declares `value` as a graph output named `name` (an Identity is inserted when the names differ). */
  output(name: string, value: string, t: ElemType, shape: Dim[] | null = null): void {
    if (name !== value) this.node('Identity', [value], { outputs: [name] });
    this.outputs.push(valueInfo(name, t, shape));
  }

  /**
   * Declares `value` as a graph output named `name` without output()'s Identity (a copy of the tensor in
   * every run) where `value` is a node's output: the value is renamed in place, so callers must not use
   * `value` afterwards (emit these last). A graph input or initializer, or a value already output under
   * another name, gets the Identity.
   */
  outputInPlace(name: string, value: string, t: ElemType): void {
    const earlier = this.renamed.get(value);
    const producer = earlier === undefined ? this.nodes.find((n) => n.output?.includes(value)) : undefined;
    if (producer === undefined || this.outputs.some((o) => o.name === value) || this.names.has(name)) {
      this.output(name, earlier ?? value, t);
      return;
    }
    this.claim(name);
    this.renamed.set(value, name);
    this.names.delete(value);
    producer.output = producer.output!.map((o) => (o === value ? name : o));
    for (const n of this.nodes) if (n.input?.includes(value)) n.input = n.input.map((x) => (x === value ? name : x));
    this.outputs.push(valueInfo(name, t, null));
  }

  /** Adds a node; returns its output names. `outputs` is a count (fresh names) or explicit names. */
  node(op: string, inputs: string[], opts: { outputs?: number | string[]; attrs?: Attrs; domain?: string; name?: string } = {}): string[] {
    const outs = Array.isArray(opts.outputs)
      ? opts.outputs.map((o) => this.claim(o))
      : Array.from({ length: opts.outputs ?? 1 }, () => this.claim(this.fresh(op.toLowerCase())));
    const attrs = opts.attrs ?? {};
    this.nodes.push({
      opType: op,
      input: inputs,
      output: outs,
      name: opts.name ?? outs[0],
      domain: opts.domain ?? '',
      attribute: Object.entries(attrs).map(([k, v]) => encodeAttr(k, v)),
    });
    return outs;
  }

  /** Single-output node. */
  op(op: string, inputs: string[], attrs?: Attrs, outName?: string): string {
    return this.node(op, inputs, { attrs, outputs: outName === undefined ? 1 : [outName] })[0];
  }

  private rawInit(name: string, t: ElemType, dims: number[], raw: Uint8Array): string {
    this.inits.push({ name: this.claim(name), dataType: ELEM_CODE[t], dims, rawData: raw });
    return name;
  }

  constF32(values: ArrayLike<number>, dims: number[], prefix = 'c'): string {
    const a = Float32Array.from(values);
    return this.rawInit(this.fresh(prefix), 'float32', dims, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }

  constI64(values: ArrayLike<number>, dims: number[] = [values.length], prefix = 'c'): string {
    const a = BigInt64Array.from(Array.from(values, (v) => BigInt(v)));
    return this.rawInit(this.fresh(prefix), 'int64', dims, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }

  /** A scalar (rank-0) constant. */
  scalarF32(v: number): string {
    return this.constF32([v], [], 's');
  }
  scalarI64(v: number): string {
    return this.constI64([v], [], 's');
  }

  /** Named initializer with inline float32 data (small tensors, tests). */
  initF32(name: string, data: Float32Array, dims: number[]): string {
    return this.rawInit(name, 'float32', dims, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /**
   * Initializer whose bytes stay in a file beside the .onnx: onnxruntime reads (or maps) them at session
   * creation, so weights never pass through the JS heap.
   */
  externalInit(name: string, t: ElemType, dims: number[], ref: ExternalRef): string {
    assertSafeLocation(ref.location);
    this.inits.push({
      name: this.claim(name),
      dataType: ELEM_CODE[t],
      dims,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: ref.location },
        { key: 'offset', value: String(ref.offset) },
        { key: 'length', value: String(ref.length) },
      ],
    });
    return name;
  }

  counts(): { nodes: number; initializers: number; inputs: number; outputs: number } {
    return { nodes: this.nodes.length, initializers: this.inits.length, inputs: this.inputs.length, outputs: this.outputs.length };
  }

  outputNames(): string[] {
    return this.outputs.map((o) => o.name as string);
  }

  toModelBytes(producer = 'fgsn'): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      producerName: producer,
      opsetImport: [{ domain: '', version: OPSET }],
      graph: {
        name: this.graphName,
        node: this.nodes,
        initializer: this.inits,
        input: this.inputs,
        output: this.outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}
