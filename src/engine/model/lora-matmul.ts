import type { TensorInfo } from '../../checkpoint/index.js';

/** A LoRA adapter applied as extra MatMuls: its A/B tensors as graph weights and one edge per target. */
export interface LoraMatmul {
  /** `<weight>::lora_A` / `<weight>::lora_B` -> the adapter tensor. */
  tensors: Map<string, TensorInfo>;
  /** Target weight -> the names of its A and B tensors and the scaling. */
  edges: Map<string, { a: string; b: string; scaling: number }>;
  /** The adapter's files, to be linked into the graph's cache folder. */
  files: string[];
}

/** What loraMatmul reads of an adapter (a LoraAdapter, or a stand-in with the same pairs). */
export interface LoraPairs {
  readonly config: { scaling: number };
  targets(): string[];
  pair(name: string): { a: TensorInfo; b: TensorInfo };
}

export function loraMatmul(lora: LoraPairs): LoraMatmul {
  const tensors = new Map<string, TensorInfo>();
  const edges = new Map<string, { a: string; b: string; scaling: number }>();
  const files: string[] = [];
  for (const name of lora.targets()) {
    const p = lora.pair(name);
    tensors.set(`${name}::lora_A`, p.a);
    tensors.set(`${name}::lora_B`, p.b);
    edges.set(name, { a: `${name}::lora_A`, b: `${name}::lora_B`, scaling: lora.config.scaling });
    for (const f of [p.a.file, p.b.file]) if (!files.includes(f)) files.push(f);
  }
  return { tensors, edges, files };
}
