/**
 * Checkpoint layer throughput and memory on a synthetic multi-GB safetensors file.
 *
 *   npx tsx bench/checkpoint/rw.ts [--size-gb 2] [--dtype bf16|f32] [--tensor-mb 64] [--dir /tmp]
 *
 * Generates the file (streamed, many ~64 MB tensors), then in the same run measures:
 *   - `cat FILE > /dev/null` and `cp FILE COPY` (+ `sync COPY`, since our writer fsyncs) as baselines,
 *   - reading every tensor through SafetensorsFile.readF32 (bf16 -> f32 conversion included) and raw readBytes,
 *   - rewriting the file with writeSafetensors (each tensor's bytes read on demand),
 * and reports throughput as ratios to the baselines plus the process's peak RSS (must stay < 300 MB).
 * The page cache cannot be dropped here, so every number is warm-cache; the baselines are too.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeFromF32 } from '../../src/checkpoint/dtypes.js';
import { SafetensorsFile } from '../../src/checkpoint/safetensors-reader.js';
import { writeSafetensors, type TensorSource } from '../../src/checkpoint/safetensors-writer.js';
import type { DType } from '../../src/checkpoint/types.js';

const RSS_LIMIT_MB = 300;

const { values } = parseArgs({
  options: {
    'size-gb': { type: 'string', default: '2' },
    dtype: { type: 'string', default: 'bf16' },
    'tensor-mb': { type: 'string', default: '64' },
    dir: { type: 'string', default: tmpdir() },
  },
});
const sizeBytes = Math.round(Number(values['size-gb']) * 2 ** 30);
const dtype: DType = values.dtype === 'f32' ? 'F32' : 'BF16';
const itemSize = dtype === 'F32' ? 4 : 2;
const tensorBytes = Number(values['tensor-mb']) * 2 ** 20;
const cols = 4096;
const rows = Math.floor(tensorBytes / itemSize / cols);
const count = Math.max(1, Math.round(sizeBytes / (rows * cols * itemSize)));

const peakRssMb = (): number => process.resourceUsage().maxRSS / 1024;
const startRssMb = peakRssMb();

function seconds(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function secondsAsync(fn: () => Promise<void>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function sh(cmd: string): void {
  const r = spawnSync('sh', ['-c', cmd], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${cmd} failed (${r.status})`);
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(values.dir, 'fgsn-bench-rw-'));
  const src = join(dir, 'model.safetensors');
  const out = join(dir, 'rewritten.safetensors');
  const copy = join(dir, 'cp.safetensors');
  try {
    // One tensor's worth of realistic values (small normals), encoded once and handed out for every tensor
    // with a per-tensor twist. Reusing it is within the writer's contract: each data() result is written
    // before the next data() call.
    const block = new Float32Array(1 << 20);
    for (let i = 0; i < block.length; i++) block[i] = Math.sin(i * 0.618) * 0.02;
    const pattern = encodeFromF32(dtype, block);
    // One 128 MB arena serves every phase in turn (generation bytes, f32 output, raw bytes): phases never
    // overlap, and fresh 64-128 MB allocations per tensor would measure page faults, not the layer.
    const arena = new ArrayBuffer(rows * cols * 4);
    const tensorBuf = new Uint8Array(arena, 0, rows * cols * itemSize);
    for (let o = 0; o < tensorBuf.length; o += pattern.length) tensorBuf.set(pattern.subarray(0, Math.min(pattern.length, tensorBuf.length - o)), o);
    const tensors: TensorSource[] = Array.from({ length: count }, (_, k) => ({
      name: `model.layers.${k}.mlp.up_proj.weight`, dtype, shape: [rows, cols],
      data: () => {
        tensorBuf[0] = k & 0xff;
        return tensorBuf;
      },
    }));
    const genSeconds = await secondsAsync(async () => {
      await writeSafetensors(src, tensors, { format: 'pt' });
    });
    const fileBytes = (await stat(src)).size;
    const gib = fileBytes / 2 ** 30;

    // Warm the cache for everyone, then baselines.
    sh(`cat '${src}' > /dev/null`);
    const catSeconds = seconds(() => sh(`cat '${src}' > /dev/null`));
    const cpSeconds = seconds(() => sh(`cp '${src}' '${copy}'`));
    await rm(copy);
    const cpSyncSeconds = seconds(() => sh(`cp '${src}' '${copy}' && sync '${copy}'`));
    await rm(copy);

    const f = await SafetensorsFile.open(src);
    let checksum = 0;
    // Consumers that stream matrix by matrix reuse one output buffer; so does the bench (see README note).
    const f32Out = new Float32Array(arena);
    const readF32Seconds = await secondsAsync(async () => {
      for (const name of f.names()) {
        const v = await f.readF32(name, f32Out);
        checksum += v[v.length - 1];
      }
    });
    const bytesOut = tensorBuf;
    const readRawSeconds = await secondsAsync(async () => {
      for (const name of f.names()) checksum += (await f.readBytes(name, bytesOut))[0];
    });
    let written = { bytes: 0, sha256: '' };
    const writeSeconds = await secondsAsync(async () => {
      const sources = [...f.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: () => f.readBytes(t.name, bytesOut) }));
      written = await writeSafetensors(out, sources, f.metadata);
    });
    await f.close();
    const identical = spawnSync('cmp', ['-s', src, out]).status === 0;

    const rss = peakRssMb();
    const rows_ = [
      ['generate (writeSafetensors, fsync)', genSeconds, null],
      ['cat FILE > /dev/null', catSeconds, 1],
      ['readF32 every tensor', readF32Seconds, catSeconds / readF32Seconds],
      ['readBytes every tensor', readRawSeconds, catSeconds / readRawSeconds],
      ['cp FILE COPY', cpSeconds, 1],
      ['cp FILE COPY && sync COPY', cpSyncSeconds, null],
      ['rewrite (read + writeSafetensors, fsync)', writeSeconds, cpSeconds / writeSeconds],
    ] as const;
    console.log(`\ncheckpoint read/write bench: ${count} x ${dtype} [${rows}, ${cols}] tensors, ${gib.toFixed(2)} GiB (warm page cache)\n`);
    console.log('step'.padEnd(44) + 'seconds'.padStart(9) + 'GiB/s'.padStart(9) + '  vs baseline');
    for (const [label, s, ratio] of rows_) {
      console.log(label.padEnd(44) + s.toFixed(2).padStart(9) + (gib / s).toFixed(2).padStart(9) + (ratio === null ? '' : `  ${ratio.toFixed(2)}x`));
    }
    console.log(`rewrite vs cp+sync: ${(cpSyncSeconds / writeSeconds).toFixed(2)}x; rewritten file byte-identical: ${identical}`);
    console.log(`peak RSS: ${rss.toFixed(0)} MB (limit ${RSS_LIMIT_MB} MB; ${startRssMb.toFixed(0)} MB at start, 128 MB arena) -> ${rss < RSS_LIMIT_MB ? 'OK' : 'OVER'}`);
    const json = {
      bench: 'checkpoint/rw', dtype, tensors: count, tensorShape: [rows, cols], fileBytes, warmCache: true,
      seconds: { generate: genSeconds, cat: catSeconds, readF32: readF32Seconds, readBytes: readRawSeconds, cp: cpSeconds, cpSync: cpSyncSeconds, rewrite: writeSeconds },
      ratios: {
        readF32VsCat: catSeconds / readF32Seconds, readBytesVsCat: catSeconds / readRawSeconds,
        rewriteVsCp: cpSeconds / writeSeconds, rewriteVsCpSync: cpSyncSeconds / writeSeconds,
      },
      peakRssMb: Math.round(rss), startRssMb: Math.round(startRssMb), rssLimitMb: RSS_LIMIT_MB, rssOk: rss < RSS_LIMIT_MB, rewriteIdentical: identical, rewriteSha256: written.sha256,
      checksum,
    };
    console.log(JSON.stringify(json));
    if (rss >= RSS_LIMIT_MB || !identical) process.exitCode = 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
