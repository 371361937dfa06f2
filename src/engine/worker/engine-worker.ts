/**
 * Worker-thread entry: owns one Engine and serves RemoteEngine's requests one at a time. onnxruntime-node
 * runs inference synchronously on the calling thread, so keeping the Engine here keeps the API's event loop
 * free while a batch runs.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadEngine, type Engine, type EngineOptions } from '../engine.js';
import { serializeError, transferables, type Request, type Response } from './protocol.js';

const port = parentPort;
if (port === null) throw new Error('engine-worker must run in a worker thread');

const { modelDir, options } = workerData as { modelDir: string; options: EngineOptions };
let engine: Engine | null = null;
const ready = loadEngine(modelDir, options).then((e) => (engine = e));
// The queue only orders requests; a failed load surfaces through handle()'s `await ready` as a reply.
let queue: Promise<unknown> = ready.then(() => undefined, () => undefined);

async function handle(req: Request): Promise<unknown> {
  await ready;
  const e = engine as Engine;
  switch (req.method) {
    case 'info':
      return { spec: e.spec, eosTokenIds: e.eosTokenIds, padTokenId: e.tokenizer.padTokenId, defaultMaxNewTokens: e.defaultMaxNewTokens };
    case 'capture':
      return e.capture(...(req.args as Parameters<Engine['capture']>));
    case 'generate':
      return e.generate(...(req.args as Parameters<Engine['generate']>));
    case 'encodeChat':
      return e.tokenizer.encodeChat(...(req.args as [string, string | undefined]));
    case 'decode':
      return e.tokenizer.decode(...(req.args as [number[], boolean | undefined]));
    case 'close':
      await e.close();
      return null;
  }
}

port.on('message', (req: Request) => {
  // Serialised: one onnxruntime run at a time per engine, in arrival order.
  queue = queue.then(
    async () => {
      let msg: Response;
      try {
        const result = await handle(req);
        msg = { id: req.id, ok: true, result };
        port.postMessage(msg, transferables(result));
      } catch (err) {
        msg = { id: req.id, ok: false, error: serializeError(err) };
        port.postMessage(msg);
      }
      if (req.method === 'close') port.close();
    },
  ).catch(() => undefined);
});

