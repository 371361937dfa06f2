/** The one sha256 helper: files (streamed) and strings, as lowercase hex. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Worker } from 'node:worker_threads';

/** sha256 of a file, streamed in 1 MiB chunks: constant memory for checkpoints and artifacts of tens of GB. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * The sha256 of a file of `bytes` bytes: `known`'s when it describes the same size (a digest taken by whoever
 * wrote the file, e.g. writeSafetensors), else read from disk. Spares reading gigabytes back after writing them.
 */
export async function sha256FileUnlessKnown(path: string, bytes: number, known: { bytes: number; sha256: string } | undefined): Promise<string> {
  return known !== undefined && known.bytes === bytes ? known.sha256 : sha256File(path);
}

// Plain CommonJS run with eval: nothing to resolve or compile, under tsx as in the built package.
const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
try {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(4 << 20);
  const fd = openSync(workerData, 'r');
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  parentPort.postMessage({ hex: h.digest('hex') });
} catch (e) {
  parentPort.postMessage({ error: { message: String(e && e.message), code: e && e.code } });
}
`;

/**
 * sha256File on a worker thread: the hashing (~1 GB/s, seconds per checkpoint) runs beside the main thread's
 * work instead of between it, e.g. while a job writes its output (defense/apply.ts). Read errors keep their
 * `code` (ENOENT, EACCES).
 */
export function sha256FileOffThread(path: string): Promise<string> {
  return new Promise((resolveHash, reject) => {
    // No execArgv: the parent's loader hooks (tsx in development) have nothing to do in this plain script.
    const w = new Worker(HASH_WORKER, { eval: true, workerData: path, execArgv: [] });
    w.once('message', (m: { hex?: string; error?: { message: string; code?: string } }) => {
      if (m.hex !== undefined) resolveHash(m.hex);
      else reject(Object.assign(new Error(m.error?.message ?? 'hash worker failed'), { code: m.error?.code }));
    });
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`hash worker exited with code ${code} before answering`)));
  });
}

/** sha256 of a string's UTF-8 bytes. */
export function sha256Text(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
