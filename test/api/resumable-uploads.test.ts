/**
 * Resumable (Content-Range) uploads against the real app and Redis over real HTTP: chunks give the same file
 * and sha256 as a whole-file PUT, a wrong offset is refused naming the one the server holds, a connection cut
 * mid-chunk keeps what arrived and is resumed from the server's offset, tenant bounds hold, and the
 * TypeScript client resumes a file through a proxy that drops one chunk's connection half-way.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sweepAbandonedUploads } from '../../src/api/routes/checkpoints.js';
import { MAX_PARTIAL_FILES } from '../../src/api/upload-partials.js';
import { FgsnClient } from '../../src/client/index.js';
import { tempDir, writeModelFolder } from '../checkpoint/fixtures.js';
import { KEYS, startHarness, uploadFolder, waitFor, type Harness } from './harness.js';

let h: Harness;
let work: { dir: string; cleanup: () => Promise<void> };
let model: string;
let weights: Buffer;
let weightsSha: string;

beforeAll(async () => {
  h = await startHarness({ env: { FGSN_UPLOAD_MAX_BYTES: String(32 * 1024 * 1024) } });
  work = await tempDir('fgsn-resume-');
  model = await writeModelFolder(join(work.dir, 'model'));
  weights = await readFile(join(model, 'model.safetensors'));
  weightsSha = createHash('sha256').update(weights).digest('hex');
});
afterAll(async () => {
  await h?.close();
  await work?.cleanup();
});

type Status = { name: string; state: string; offset: number; total: number; sha256?: string };

async function create(): Promise<string> {
  return (await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} })).body.id;
}

/** PUTs data[start, start+len) as one Content-Range chunk of a file of `total` bytes. */
function putChunk(id: string, name: string, data: Buffer, start: number, total: number, len = data.length - start, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown>; res: Response }> {
  const end = Math.min(start + len, data.length);
  return h.json<Record<string, unknown>>('PUT', `/v1/checkpoints/${id}/files/${name}`, {
    body: data.subarray(start, end),
    headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${start}-${end - 1}/${total}`, ...headers },
  });
}

describe('Content-Range uploads', () => {
  it('a file sent in chunks equals the whole-file upload (same sha256) and validates', async () => {
    const whole = await uploadFolder(h, model, ['config.json', 'model.safetensors']);
    const wholeFile = (await h.json<{ files: { name: string; sha256: string }[] }>('GET', `/v1/checkpoints/${whole}`)).body.files.find((f) => f.name === 'model.safetensors');
    expect(wholeFile?.sha256).toBe(weightsSha);

    const id = await create();
    expect((await h.json('PUT', `/v1/checkpoints/${id}/files/config.json`, { body: await readFile(join(model, 'config.json')), headers: { 'content-type': 'application/json' } })).status).toBe(201);
    const chunk = Math.ceil(weights.length / 4);
    let offset = 0;
    for (let i = 0; offset < weights.length; i++) {
      const end = Math.min(offset + chunk, weights.length);
      const last = end === weights.length;
      const r = await putChunk(id, 'model.safetensors', weights, offset, weights.length, chunk, last ? { 'x-content-sha256': weightsSha } : {});
      if (!last) {
        expect(r.status, JSON.stringify(r.body)).toBe(202);
        expect(r.body).toMatchObject({ name: 'model.safetensors', state: 'partial', offset: end, total: weights.length });
        expect(r.res.headers.get('upload-offset')).toBe(String(end));
        // GET and HEAD of the partial file answer the offset held
        const g = await h.json<Status>('GET', `/v1/checkpoints/${id}/files/model.safetensors`);
        expect(g.body).toMatchObject({ state: 'partial', offset: end, total: weights.length });
        const head = await h.req('HEAD', `/v1/checkpoints/${id}/files/model.safetensors`);
        expect(head.status).toBe(200);
        expect(head.headers.get('upload-offset')).toBe(String(end));
      } else {
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        expect(r.body).toEqual({ name: 'model.safetensors', bytes: weights.length, sha256: weightsSha });
      }
      offset = end;
    }
    const done = await h.json<{ state: string; kind: string; files: { name: string; sha256: string; bytes: number }[] }>('POST', `/v1/checkpoints/${id}/complete`);
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.body).toMatchObject({ state: 'ready', kind: 'model' });
    expect(done.body.files.find((f) => f.name === 'model.safetensors')).toEqual(wholeFile);
    expect(createHash('sha256').update(await readFile(join(h.dataDir, 'uploads', id, 'files', 'model.safetensors'))).digest('hex')).toBe(weightsSha);
    const status = await h.json<Status>('GET', `/v1/checkpoints/${id}/files/model.safetensors`);
    expect(status.body).toEqual({ name: 'model.safetensors', state: 'complete', offset: weights.length, total: weights.length, sha256: weightsSha });
  });

  it('refuses a chunk that does not start at the offset held, naming it; a bad range or total is a coded 416', async () => {
    const id = await create();
    const total = weights.length;
    // nothing held yet: only 0 is accepted
    const early = await putChunk(id, 'model.safetensors', weights, 1000, total, 1000);
    expect(early.status).toBe(409);
    expect(early.body).toMatchObject({ code: 'UPLOAD_OFFSET_MISMATCH', details: { expectedOffset: 0, start: 1000 } });
    expect(early.res.headers.get('upload-offset')).toBe('0');

    expect((await putChunk(id, 'model.safetensors', weights, 0, total, 1024)).status).toBe(202);
    for (const start of [0, 512, 2048]) {
      const r = await putChunk(id, 'model.safetensors', weights, start, total, 1024);
      expect(r.status).toBe(409);
      expect(r.body).toMatchObject({ code: 'UPLOAD_OFFSET_MISMATCH', details: { expectedOffset: 1024, start } });
      expect(r.res.headers.get('upload-offset')).toBe('1024');
      expect(r.body.hint).toMatch(/Upload-Offset/);
    }
    // another total than the first chunk announced, malformed ranges, a body longer than its range
    const otherTotal = await putChunk(id, 'model.safetensors', weights, 1024, total + 1, 10);
    expect(otherTotal.status).toBe(416);
    expect(otherTotal.body).toMatchObject({ code: 'UPLOAD_RANGE_INVALID', details: { total } });
    for (const cr of ['bytes 10-5/100', 'bytes 0-100/100', 'bytes=0-1/2', 'bytes 0-1/*']) {
      const r = await h.json('PUT', `/v1/checkpoints/${id}/files/x.json`, { body: 'ab', headers: { 'content-type': 'application/octet-stream', 'content-range': cr } });
      expect(r.status, cr).toBe(416);
      expect(r.body.code).toBe('UPLOAD_RANGE_INVALID');
    }
    const tooLarge = await h.json('PUT', `/v1/checkpoints/${id}/files/huge.safetensors`, { body: 'ab', headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes 0-1/${64 * 1024 ** 2}` } });
    expect(tooLarge.status).toBe(413);
    // the refused requests changed nothing: the file still holds 1024 bytes
    expect((await h.json<Status>('GET', `/v1/checkpoints/${id}/files/model.safetensors`)).body.offset).toBe(1024);
    // DELETE drops the partial; a new first chunk starts over
    expect((await h.json('DELETE', `/v1/checkpoints/${id}/files/model.safetensors`)).status).toBe(204);
    expect((await h.json('GET', `/v1/checkpoints/${id}/files/model.safetensors`)).status).toBe(404);
  });

  it('a connection destroyed mid-chunk keeps what arrived; the upload resumes from the server offset with the right sha256', async () => {
    const id = await create();
    const total = weights.length;
    const half = Math.floor(total / 2);
    const u = new URL(h.base);
    const socket = connect(Number(u.port), u.hostname);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    socket.write(
      `PUT /v1/checkpoints/${id}/files/model.safetensors HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${KEYS.a}\r\n` +
        `Content-Type: application/octet-stream\r\nContent-Length: ${total}\r\nContent-Range: bytes 0-${total - 1}/${total}\r\n\r\n`,
    );
    socket.write(weights.subarray(0, half));
    // the server has written the half that arrived (the lease is held: the request is still open)
    await waitFor(async () => ((await h.json<Status>('GET', `/v1/checkpoints/${id}/files/model.safetensors`)).body.offset === half ? true : undefined), 'half the file on the server', 20_000);
    socket.destroy();

    // Until the server notices the dropped connection, the file is busy; then it resumes at `half`.
    const resumed = await waitFor(async () => {
      const status = await h.json<Status>('GET', `/v1/checkpoints/${id}/files/model.safetensors`);
      expect(status.body).toMatchObject({ state: 'partial', offset: half, total });
      const r = await putChunk(id, 'model.safetensors', weights, status.body.offset, total);
      if (r.status === 409 && r.body.code === 'UPLOAD_BUSY') return undefined;
      return r;
    }, 'the file lease to be released', 20_000);
    expect(resumed.status, JSON.stringify(resumed.body)).toBe(201);
    expect(resumed.body).toEqual({ name: 'model.safetensors', bytes: total, sha256: weightsSha });
    expect(existsSync(join(h.dataDir, 'uploads', id, 'resumable', 'model.safetensors'))).toBe(false);
  });

  it('bounds the partial files of a tenant; deleting the checkpoint and the TTL sweeper drop its partials', async () => {
    const ids: string[] = [];
    for (let i = 0; i < MAX_PARTIAL_FILES; i++) {
      const id = await create();
      ids.push(id);
      expect((await putChunk(id, 'a.safetensors', weights, 0, 1000, 10)).status).toBe(202);
    }
    const over = await create();
    const refused = await putChunk(over, 'a.safetensors', weights, 0, 1000, 10);
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { quota: 'partialFiles', limit: MAX_PARTIAL_FILES } });
    // another tenant is not affected
    const b = (await h.json<{ id: string }>('POST', '/v1/checkpoints', { key: KEYS.b, json: {} })).body.id;
    expect((await h.json('PUT', `/v1/checkpoints/${b}/files/a.safetensors`, { key: KEYS.b, body: 'ab', headers: { 'content-type': 'application/octet-stream', 'content-range': 'bytes 0-1/10' } })).status).toBe(202);

    // deleting the checkpoint frees its slot
    expect((await h.json('DELETE', `/v1/checkpoints/${ids[0]}`)).status).toBe(204);
    expect((await putChunk(over, 'a.safetensors', weights, 0, 1000, 10)).status).toBe(202);

    // the TTL sweeper removes abandoned uploads with their partial files, freeing the slots
    const app = h.built.app;
    const ctx = { records: app.records, layout: app.layout, config: { ...app.config, uploadTtlS: 0 } } as unknown as Parameters<typeof sweepAbandonedUploads>[0];
    const swept = await sweepAbandonedUploads(ctx);
    expect(swept).toBeGreaterThanOrEqual(MAX_PARTIAL_FILES);
    for (const id of [...ids.slice(1), over]) expect(existsSync(join(h.dataDir, 'uploads', id))).toBe(false);
    const fresh = await create();
    expect((await putChunk(fresh, 'a.safetensors', weights, 0, 1000, 10)).status).toBe(202);
    await h.json('DELETE', `/v1/checkpoints/${fresh}`);
  });
});

describe('the TypeScript client resumes', () => {
  let proxy: Server;
  let proxyBase: string;
  const seen: string[] = [];
  let cut = 0;

  beforeAll(async () => {
    const target = new URL(h.base);
    // A real HTTP hop that drops the connection of the weights' second chunk half-way through its body, once
    // (the first Content-Range request is config.json, the second the weights' first chunk).
    proxy = createServer((req, res) => {
      const range = req.headers['content-range'];
      if (typeof range === 'string') seen.push(range);
      const dropThis = typeof range === 'string' && seen.length === 3 && cut === 0;
      const up = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      if (!dropThis) {
        req.pipe(up);
        return;
      }
      const length = Number(req.headers['content-length']);
      let sent = 0;
      const half = Math.floor(length / 2);
      req.on('data', (b: Buffer) => {
        if (sent >= half) return;
        const part = b.subarray(0, half - sent);
        up.write(part);
        sent += part.length;
        if (sent >= half) {
          cut = sent;
          // Once the server has written the half it got, both sides see the connection die mid-body.
          const start = Number(/^bytes (\d+)-/.exec(range)?.[1]);
          void waitFor(async () => ((await h.json<Status>('GET', req.url ?? '')).body.offset === start + half ? true : undefined), 'the half chunk on the server', 20_000).finally(() => {
            up.destroy();
            req.socket.destroy();
          });
        }
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const a = proxy.address();
    proxyBase = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  });
  afterAll(async () => {
    proxy.closeAllConnections();
    await new Promise<void>((r) => proxy.close(() => r()));
  });

  it('uploadCheckpoint sends files in chunks, survives a dropped chunk and continues from the offset the server holds', async () => {
    const chunkBytes = 1024;
    expect(weights.length).toBeGreaterThan(3 * chunkBytes);
    const client = new FgsnClient(proxyBase, KEYS.a, { chunkBytes, backoffMs: 100, retries: 6 });
    const ckpt = await client.uploadCheckpoint(model);
    expect(ckpt.state).toBe('ready');
    expect(ckpt.files.find((f) => f.name === 'model.safetensors')).toEqual({ name: 'model.safetensors', bytes: weights.length, sha256: weightsSha });
    expect(cut).toBeGreaterThan(0);
    // the chunk after the cut starts where the server's copy ended: inside the second chunk, not at a chunk boundary
    const starts = seen.filter((r) => r.endsWith(`/${weights.length}`)).map((r) => Number(/^bytes (\d+)-/.exec(r)?.[1]));
    const resumedAt = starts.find((s) => s % chunkBytes !== 0);
    expect(resumedAt, `starts: ${starts.join(',')}`).toBeDefined();
    // exactly where the server's copy ended: the second chunk's start plus the half that got through
    expect(resumedAt).toBe(chunkBytes + cut);
    expect((await stat(join(h.dataDir, 'uploads', ckpt.id, 'files', 'model.safetensors'))).size).toBe(weights.length);
  });
});

describe('the byte quota counts a partial file at its announced total', () => {
  let q: Harness;
  beforeAll(async () => {
    q = await startHarness({ env: { FGSN_QUOTA_BYTES: '10000' } });
  });
  afterAll(async () => {
    await q?.close();
  });

  it('refuses a first chunk whose total would pass the quota, and counts reservations against whole-file PUTs', async () => {
    const id = (await q.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} })).body.id;
    const put = (name: string, body: Buffer, range?: string) =>
      q.json<Record<string, unknown>>('PUT', `/v1/checkpoints/${id}/files/${name}`, { body, headers: { 'content-type': 'application/octet-stream', ...(range ? { 'content-range': range } : {}) } });
    const big = await put('big.safetensors', Buffer.alloc(10), 'bytes 0-9/20000');
    expect(big.status).toBe(429);
    expect(big.body).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { quota: 'bytes', limit: 10000 } });
    expect(existsSync(join(q.dataDir, 'uploads', id, 'resumable', 'big.safetensors'))).toBe(false);

    expect((await put('a.safetensors', Buffer.alloc(10), 'bytes 0-9/8000')).status).toBe(202);
    // 8000 reserved: a 3000-byte whole file no longer fits, a 2000-byte one does
    expect((await put('b.json', Buffer.alloc(3000))).body).toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect((await put('c.json', Buffer.alloc(2000))).status).toBe(201);
    // finishing the chunked file turns the reservation into stored bytes (10000 in all: at the limit, not over)
    const last = await put('a.safetensors', Buffer.alloc(7990), 'bytes 10-7999/8000');
    expect(last.status, JSON.stringify(last.body)).toBe(201);
    expect(last.body).toMatchObject({ bytes: 8000, sha256: createHash('sha256').update(Buffer.alloc(8000)).digest('hex') });
    expect((await put('d.json', Buffer.alloc(1))).body).toMatchObject({ code: 'QUOTA_EXCEEDED' });
  });
});
