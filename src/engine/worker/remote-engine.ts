/**
 * The engine in a worker thread, with the same calls as Engine (capture, generate, tokenizer helpers).
 * Use it from the API / queue processes: the caller's event loop never runs onnxruntime or the JS around it.
 *
 *   const engine = await runInWorker(modelDir, { adapter });
 *   const gens = await engine.generate(prompts, { maxNewTokens: 40 });
 *   await engine.close();
 */
import { Worker } from 'node:worker_threads';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModelSpec } from '../../checkpoint/types.js';
import type { ChatEncoding } from '../tokenizer/chat-tokenizer.js';
import type { CaptureInput, CaptureOptions, CaptureRequest, CaptureResult, EngineOptions, GenerateOptions, Generation } from '../engine.js';
import { FgsnError } from '../../errors.js';
import { deserializeError, type Method, type Request, type Response } from './protocol.js';

interface Info {
  spec: ModelSpec;
  eosTokenIds: number[];
  padTokenId: number;
  defaultMaxNewTokens: number;
}

export class RemoteEngine {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private exited: Error | null = null;
  private info!: Info;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: Response) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(deserializeError(m.error));
    });
    const fail = (e: Error): void => {
      this.exited = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', (e) => fail(new FgsnError('ENGINE_RUN_FAILED', `engine worker crashed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => fail(new FgsnError('ENGINE_RUN_FAILED', `engine worker exited (code ${code})`)));
  }

  static async start(modelDir: string, options: EngineOptions = {}): Promise<RemoteEngine> {
    const self = fileURLToPath(import.meta.url);
    const ext = extname(self);
    const entry = new URL(`./engine-worker${ext}`, import.meta.url);
    // From the TypeScript sources (tsx, vitest) the worker registers tsx's loader before importing the entry
    // (`--import tsx` in execArgv is not applied to workers by Node 20); compiled code loads directly.
    const worker = ext === '.ts'
      ? new Worker(`import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(entry.href)}); });`, { eval: true, workerData: { modelDir, options } })
      : new Worker(entry, { workerData: { modelDir, options } });
    const remote = new RemoteEngine(worker);
    try {
      remote.info = (await remote.call('info', [])) as Info;
    } catch (e) {
      await worker.terminate();
      throw e;
    }
    return remote;
  }

  private call(method: Method | 'close', args: unknown[]): Promise<unknown> {
    if (this.exited !== null) return Promise.reject(this.exited);
    const id = this.nextId++;
    const req: Request = { id, method, args };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(req);
    });
  }

  get spec(): ModelSpec {
    return this.info.spec;
  }
  get eosTokenIds(): number[] {
    return this.info.eosTokenIds;
  }
  get defaultMaxNewTokens(): number {
    return this.info.defaultMaxNewTokens;
  }

  readonly tokenizer = {
    encodeChat: (prompt: string, response?: string): Promise<ChatEncoding> => this.call('encodeChat', [prompt, response]) as Promise<ChatEncoding>,
    decode: (ids: number[], skipSpecialTokens = true): Promise<string> => this.call('decode', [ids, skipSpecialTokens]) as Promise<string>,
  };

  capture(inputs: readonly CaptureInput[], what: CaptureRequest, opts: CaptureOptions = {}): Promise<CaptureResult> {
    return this.call('capture', [inputs, what, opts]) as Promise<CaptureResult>;
  }

  generate(prompts: readonly CaptureInput[], opts: GenerateOptions = {}): Promise<Generation[]> {
    return this.call('generate', [prompts, opts]) as Promise<Generation[]>;
  }

  async close(): Promise<void> {
    if (this.exited === null) {
      try {
        await this.call('close', []);
      } catch {
        // Already gone: nothing to release.
      }
    }
    await this.worker.terminate();
  }
}

export function runInWorker(modelDir: string, options: EngineOptions = {}): Promise<RemoteEngine> {
  return RemoteEngine.start(modelDir, options);
}
