/**
 * One loaded model (checkpoint + optional LoRA adapter) and its onnxruntime sessions, one per graph variant
 * (capture selection, KV cache, LoRA mode). Graph files are cached on disk by model content + options.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelCheckpoint, TensorInfo } from '../../checkpoint/index.js';
import { encodeFromF32, SafetensorsFile, type TensorSource, writeSafetensors } from '../../checkpoint/index.js';
import { FgsnError } from '../../errors.js';
import type { ComputeDtype, WeightRef } from '../onnx/blocks.js';
import { cacheKey, ensureEntry, fileFingerprint, linkOrCopy, locationFor, type CacheEntry } from '../session/model-cache.js';
import { withDeviceKvOutputs } from '../runtime/device-kv.js';
import { createSession, fileBytes, ort, type SessionConfig } from '../session/session.js';
import { buildDecoderGraph, type DecoderGraphOptions } from './decoder-graph.js';
import { loraMatmul } from './lora-matmul.js';

/** Bump when the graph construction changes, so stale cache entries are not reused. */
export const GRAPH_VERSION = 3;

export type LoraMode = 'merged' | 'matmul';

/** What the engine needs of a PEFT LoRA adapter (src/checkpoint/lora.ts). */
export interface LoraSource {
  readonly dir: string;
  readonly config: { scaling: number };
  targets(): string[];
  pair(name: string): { a: TensorInfo; b: TensorInfo; rank: number; dOut: number; dIn: number };
  deltaRowsF32(name: string, r0: number, r1: number): Promise<Float32Array>;
}

export interface GraphSessionsOptions extends SessionConfig {
  cacheRoot: string;
  loraMode?: LoraMode;
  /** Sessions kept alive at once (each holds a float32 copy of the weights); default 2. */
  maxSessions?: number;
  /** Compute type of every graph these sessions build (default float32). */
  compute?: ComputeDtype;
}

const MERGED_FILE = 'lora_merged.safetensors';

function refOf(t: TensorInfo, location: string): WeightRef {
  return { dtype: t.dtype, shape: t.shape, location, offset: t.byteOffset, length: t.byteLength };
}

/**
 * Writes W + scaling * B @ A of every target as a safetensors file in the base dtype (inspectable, and read
 * back with the strict reader); returns where each tensor landed. Holds one merged tensor at a time.
 */
async function writeMergedWeights(ckpt: ModelCheckpoint, lora: LoraSource, path: string): Promise<Map<string, TensorInfo>> {
  const sources: TensorSource[] = lora.targets().map((name) => {
    const t = ckpt.tensor(name);
    return {
      name,
      dtype: t.dtype,
      shape: t.shape,
      data: async () => {
        const w = await ckpt.readF32(name);
        const dlt = await lora.deltaRowsF32(name, 0, t.shape[0]);
        for (let i = 0; i < w.length; i++) w[i] += dlt[i];
        return encodeFromF32(t.dtype, w);
      },
    };
  });
  await writeSafetensors(path, sources, { format: 'pt', fgsn: 'lora-merged' });
  const f = await SafetensorsFile.open(path);
  try {
    return new Map(lora.targets().map((n) => [n, f.tensor(n)]));
  } finally {
    await f.close();
  }
}

export class GraphSessions {
  private readonly sessions = new Map<string, { session: Promise<ort.InferenceSession>; users: number; lastUsed: number }>();
  private clock = 0;
  private created = 0;
  private readonly entries = new Map<string, CacheEntry>();
  private modelIdentity: Promise<unknown> | null = null;
  private mergedFile: { path: string; layout: Map<string, TensorInfo> } | null = null;

  constructor(
    readonly checkpoint: ModelCheckpoint,
    readonly lora: LoraSource | null,
    private readonly opts: GraphSessionsOptions,
  ) {}

  private bytes: number | null = null;

  private checkpointBytes(): number {
    return (this.bytes ??= fileBytes(this.checkpoint.files));
  }

  /** The session config its sessions are made with (generation reads `deviceKv`). */
  get sessionConfig(): SessionConfig {
    return this.opts;
  }

  get loraMode(): LoraMode {
    return this.opts.loraMode ?? 'merged';
  }

  private identity(): Promise<unknown> {
    this.modelIdentity ??= (async () => ({
      v: GRAPH_VERSION,
      config: await readFile(join(this.checkpoint.dir, 'config.json'), 'utf8'),
      files: this.checkpoint.files.map(fileFingerprint),
      lora: this.lora === null ? null : {
        mode: this.loraMode,
        scaling: this.lora.config.scaling,
        files: [...new Set(this.lora.targets().map((n) => this.lora!.pair(n).a.file))].map(fileFingerprint),
      },
    }))();
    return this.modelIdentity;
  }

  /** Builds (or finds) the graph file for these options (the compute type is this object's). */
  async entry(options: DecoderGraphOptions): Promise<CacheEntry> {
    const graph = this.withCompute(options);
    const ckpt = this.checkpoint;
    const lora = this.lora;
    const sources = [...ckpt.files];
    let loraEdges = new Map<string, { a: string; b: string; scaling: number }>();
    let loraTensors = new Map<string, TensorInfo>();
    let merged: Map<string, TensorInfo> | null = null;
    const generated: { location: string; write(path: string): Promise<void> }[] = [];
    if (lora !== null && this.loraMode === 'matmul') {
      const m = loraMatmul(lora);
      loraTensors = m.tensors;
      loraEdges = m.edges;
      for (const f of m.files) if (!sources.includes(f)) sources.push(f);
    } else if (lora !== null) {
      generated.push({
        location: MERGED_FILE,
        write: async (path) => {
          // One merge per loaded model: later graph variants hard-link (or copy) the first file.
          if (this.mergedFile !== null && existsSync(this.mergedFile.path)) {
            linkOrCopy(this.mergedFile.path, path);
            merged = this.mergedFile.layout;
            return;
          }
          merged = await writeMergedWeights(ckpt, lora, path);
          this.mergedFile = { path: join(this.opts.cacheRoot, key, MERGED_FILE), layout: merged };
        },
      });
    }
    const build = (locationOf: (file: string) => string): Uint8Array => {
      const resolve = (name: string): WeightRef | undefined => {
        const m = (merged as Map<string, TensorInfo> | null)?.get(name);
        if (m !== undefined) return refOf(m, MERGED_FILE);
        const lt = loraTensors.get(name);
        if (lt !== undefined) return refOf(lt, locationOf(lt.file));
        if (!ckpt.has(name)) return undefined;
        const t = ckpt.tensor(name);
        return refOf(t, locationOf(t.file));
      };
      return buildDecoderGraph(ckpt.spec, resolve, { ...graph, lora: loraEdges.size > 0 ? loraEdges : undefined }).toModelBytes();
    };
    // The key covers the graph as this code builds it (cheap: no weights involved), so a changed builder
    // never reuses a stale entry; merged LoRA weights are covered by the adapter's identity.
    const index = new Map(sources.map((f, i) => [f, locationFor(i)]));
    const probe = build((f) => index.get(f) ?? f);
    const key = cacheKey({ model: await this.identity(), graph: createHash('sha256').update(probe).digest('hex') });
    const known = this.entries.get(key);
    if (known !== undefined) return known;
    const entry = await ensureEntry({
      cacheRoot: this.opts.cacheRoot,
      key,
      sources,
      generated,
      graph: async (locationOf) => {
        if (lora !== null && this.loraMode === 'merged' && merged === null) {
          throw new FgsnError('ENGINE_GRAPH_UNSUPPORTED', 'merged LoRA weights missing while building the graph');
        }
        return build(locationOf);
      },
    });
    this.entries.set(key, entry);
    return entry;
  }

  /**
   * A session for these options, held until `release()`. Each session holds its own float32 copy of the
   * weights, so at most `maxSessions` stay alive: idle ones are released least recently used first (one in
   * use is never released; the limit is exceeded instead until it is returned).
   */
  async acquire(options: DecoderGraphOptions): Promise<{ session: ort.InferenceSession; release(): void }> {
    const id = JSON.stringify(options);
    let slot = this.sessions.get(id);
    if (slot === undefined) {
      await this.evictIdle(this.maxSessions - 1);
      this.created++;
      slot = { session: this.entry(options).then((e) => createSession(e.onnxPath, { ...withDeviceKvOutputs(this.opts, options.kvCache === true, this.checkpoint.spec.numLayers), checkpointBytes: this.checkpointBytes() })), users: 0, lastUsed: 0 };
      const created = slot;
      // A failed build must not poison later calls.
      created.session.catch(() => {
        if (this.sessions.get(id) === created) this.sessions.delete(id);
      });
      this.sessions.set(id, slot);
    }
    slot.users++;
    slot.lastUsed = ++this.clock;
    const held = slot;
    try {
      const session = await held.session;
      let released = false;
      return {
        session,
        release: () => {
          if (!released) held.users--;
          released = true;
        },
      };
    } catch (e) {
      held.users--;
      throw e;
    }
  }

  /** A session kept for the life of this object (never evicted): for callers that hold it throughout. */
  async session(graph: DecoderGraphOptions): Promise<ort.InferenceSession> {
    return (await this.acquire(graph)).session;
  }

  private withCompute(graph: DecoderGraphOptions): DecoderGraphOptions {
    return { ...graph, compute: this.opts.compute ?? 'float32' };
  }

  private get maxSessions(): number {
    return Math.max(1, this.opts.maxSessions ?? 2);
  }

  private async evictIdle(keep: number): Promise<void> {
    const idle = [...this.sessions].filter(([, v]) => v.users === 0).sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    let excess = this.sessions.size - keep;
    for (const [id, slot] of idle) {
      if (excess <= 0) break;
      this.sessions.delete(id);
      excess--;
      try {
        await (await slot.session).release();
      } catch {
        // Never built: nothing to release.
      }
    }
  }

  /** Live sessions (for tests and metrics). */
  get liveSessions(): number {
    return this.sessions.size;
  }

  /** Sessions created so far, rebuilds after an eviction included (for tests and metrics). */
  get sessionsCreated(): number {
    return this.created;
  }

  async close(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    // Closed: this model's cache entries may be evicted again (cache-lifecycle.ts).
    for (const e of this.entries.values()) e.release();
    this.entries.clear();
    for (const s of all) {
      try {
        await (await s.session).release();
      } catch {
        // A session that failed to build has nothing to release.
      }
    }
  }
}
