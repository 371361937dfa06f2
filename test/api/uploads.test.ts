/**
 * Uploads against the real app and Redis: testbed fine-tunes and LoRA adapters streamed from disk (raw PUT,
 * curl -T, multipart), the size limit, checksums, confinement of names, immutability after complete, and
 * malformed checkpoints refused at complete with every problem's code.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, writeModelFolder } from '../checkpoint/fixtures.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';
import { KEYS, fileBody, startHarness, uploadFolder, type Harness } from './harness.js';
import { rawRequest } from './raw-http.js';

const run = promisify(execFile);
let h: Harness;
let work: { dir: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  h = await startHarness({ env: { FGSN_UPLOAD_MAX_BYTES: String(32 * 1024 * 1024) } });
  work = await tempDir('fgsn-upl-');
});
afterAll(async () => {
  await h?.close();
  await work?.cleanup();
});

type Problem = { code: string; message: string };

async function uploadAndComplete(dir: string): Promise<{ id: string; status: number; body: Record<string, unknown> }> {
  const files = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  const id = await uploadFolder(h, dir, files);
  const r = await h.json('POST', `/v1/checkpoints/${id}/complete`);
  return { id, status: r.status, body: r.body };
}

describeTestbed('uploads of testbed checkpoints', () => {
  it('a full fine-tune streamed from disk is validated, described and made immutable', async () => {
    const dir = testbedPath('ft_sst_p10');
    const files = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];
    const id = await uploadFolder(h, dir, files);
    const before = await h.json<{ state: string; files: { name: string; sha256: string; bytes: number }[] }>('GET', `/v1/checkpoints/${id}`);
    expect(before.body.state).toBe('uploading');
    const weights = before.body.files.find((f) => f.name === 'model.safetensors');
    expect(weights?.sha256).toBe(createHash('sha256').update(await readFile(join(dir, 'model.safetensors'))).digest('hex'));

    const done = await h.json<{ state: string; kind: string; detected: Record<string, unknown> }>('POST', `/v1/checkpoints/${id}/complete`);
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ state: 'ready', kind: 'model' });
    expect(done.body.detected).toMatchObject({ family: 'llama', dtype: 'F32', layers: 4, hiddenSize: 256, sharded: false });

    const again = await h.req('PUT', `/v1/checkpoints/${id}/files/extra.json`, { body: '{}', headers: { 'content-type': 'application/octet-stream' } });
    expect(again.status).toBe(409);
    expect(((await again.json()) as { code: string }).code).toBe('CONFLICT');
    expect((await h.json('DELETE', `/v1/checkpoints/${id}/files/model.safetensors`)).status).toBe(409);
    // complete is idempotent once ready
    expect((await h.json('POST', `/v1/checkpoints/${id}/complete`)).status).toBe(200);
  });

  it('a sharded fine-tune and a LoRA adapter are detected as such', async () => {
    const sharded = testbedPath('ft_agnews_p10');
    const shardFiles = (await readdir(sharded)).filter((f) => f.endsWith('.safetensors') || f === 'config.json' || f.endsWith('index.json'));
    const s = await h.json<{ kind: string; detected: { sharded: boolean } }>('POST', `/v1/checkpoints/${await uploadFolder(h, sharded, shardFiles)}/complete`);
    expect(s.status).toBe(200);
    expect(s.body.detected.sharded).toBe(true);

    const lora = await uploadAndComplete(testbedPath('lora_sst_p10'));
    expect(lora.status).toBe(200);
    expect(lora.body).toMatchObject({ kind: 'adapter', detected: { kind: 'adapter', adapter: { r: 8 } } });
  });

  it('accepts curl -T and multipart/form-data', async () => {
    const c = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const file = testbedPath('lora_sst_p10', 'adapter_model.safetensors');
    const hasCurl = await run('curl', ['--version']).then(() => true, () => false);
    if (hasCurl) {
      const { stdout } = await run('curl', ['-sS', '-T', file, '-H', `Authorization: Bearer ${KEYS.a}`, `${h.base}/v1/checkpoints/${c.body.id}/files/adapter_model.safetensors`]);
      expect(JSON.parse(stdout)).toMatchObject({ name: 'adapter_model.safetensors', bytes: 605120 });
    }
    const form = new FormData();
    form.append('file', new Blob([await readFile(testbedPath('lora_sst_p10', 'adapter_config.json'))]), 'adapter_config.json');
    const m = await h.json('PUT', `/v1/checkpoints/${c.body.id}/files/adapter_config.json`, { body: form });
    expect(m.status).toBe(201);
    expect(m.body.sha256).toBe(createHash('sha256').update(await readFile(testbedPath('lora_sst_p10', 'adapter_config.json'))).digest('hex'));
    if (!hasCurl) {
      const { body, length } = await fileBody(file);
      await h.req('PUT', `/v1/checkpoints/${c.body.id}/files/adapter_model.safetensors`, { body, headers: { 'content-length': String(length) } });
    }
    expect((await h.json('POST', `/v1/checkpoints/${c.body.id}/complete`)).body).toMatchObject({ state: 'ready', kind: 'adapter' });
  });

  it('a truncated weights file is refused at complete with its code, and the upload can be fixed', async () => {
    const dir = join(work.dir, 'truncated');
    await mkdir(dir);
    await writeFile(join(dir, 'config.json'), await readFile(testbedPath('ft_sst_p10', 'config.json')));
    const full = await readFile(testbedPath('ft_sst_p10', 'model.safetensors'));
    await writeFile(join(dir, 'model.safetensors'), full.subarray(0, 1_000_000));
    const r = await uploadAndComplete(dir);
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('UPLOAD_INVALID');
    const problems = (r.body.details as { problems: Problem[] }).problems;
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.map((p) => p.code)).toContain('CHECKPOINT_OFFSETS_INVALID');
    // back to uploading: the right bytes replace the bad file and complete succeeds
    const { body, length } = await fileBody(testbedPath('ft_sst_p10', 'model.safetensors'));
    expect((await h.req('PUT', `/v1/checkpoints/${r.id}/files/model.safetensors`, { body, headers: { 'content-length': String(length) } })).status).toBe(201);
    expect((await h.json('POST', `/v1/checkpoints/${r.id}/complete`)).status).toBe(200);
  });
});

describe('malformed uploads', () => {
  it('refuses pickle files by name before storing a byte', async () => {
    const c = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    for (const name of ['pytorch_model.bin', 'model.pt', 'weights.pkl', 'x.pth']) {
      const r = await h.json('PUT', `/v1/checkpoints/${c.body.id}/files/${name}`, { body: 'not read', headers: { 'content-type': 'application/octet-stream' } });
      expect(r.status).toBe(422);
      expect(r.body.code).toBe('CHECKPOINT_PICKLE_REFUSED');
    }
    expect(await readdir(join(h.dataDir, 'uploads', c.body.id, 'files'))).toEqual([]);
  });

  it('confines file names to the upload', async () => {
    const c = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const headers = { authorization: `Bearer ${KEYS.a}`, 'content-type': 'application/octet-stream' };
    for (const name of ['..', '..%2F..%2Fescape.json', '%2Fetc%2Fpasswd', 'a%5Cb.json', '.hidden', 'nul%00.json', 'C%3Aevil']) {
      const r = await rawRequest(h.base, 'PUT', `/v1/checkpoints/${c.body.id}/files/${name}`, headers, Buffer.from('{}'));
      expect([400, 404, 422], `${name}: ${r.body}`).toContain(r.status);
      if (r.status === 422) expect(JSON.parse(r.body).code).toBe('CHECKPOINT_PATH_UNSAFE');
    }
    expect(existsSync(join(h.dataDir, 'uploads', 'escape.json'))).toBe(false);
    expect(existsSync(join(h.dataDir, 'escape.json'))).toBe(false);
    expect(await readdir(join(h.dataDir, 'uploads', c.body.id, 'files'))).toEqual([]);
  });

  it('enforces the size limit (declared and streamed) and checks X-Content-SHA256', async () => {
    const c = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const declared = await h.json('PUT', `/v1/checkpoints/${c.body.id}/files/big.safetensors`, {
      body: Buffer.alloc(1),
      headers: { 'content-type': 'application/octet-stream', 'content-length': '1' },
    });
    expect(declared.status).toBe(201);
    // chunked: no Content-Length, the limit trips while streaming
    const big = new ReadableStream({
      start(ctrl) {
        for (let i = 0; i < 33; i++) ctrl.enqueue(new Uint8Array(1024 * 1024));
        ctrl.close();
      },
    });
    const streamed = await h.req('PUT', `/v1/checkpoints/${c.body.id}/files/big2.safetensors`, { body: big, headers: { 'content-type': 'application/octet-stream' } }).catch((e: Error) => e);
    if (streamed instanceof Response) {
      expect(streamed.status).toBe(413);
      expect(((await streamed.json()) as { code: string }).code).toBe('PAYLOAD_TOO_LARGE');
    }
    const tooBig = await rawRequest(h.base, 'PUT', `/v1/checkpoints/${c.body.id}/files/big3.safetensors`, { authorization: `Bearer ${KEYS.a}`, 'content-type': 'application/octet-stream', 'content-length': String(64 * 1024 * 1024) });
    expect(tooBig.status).toBe(413);
    expect(JSON.parse(tooBig.body).code).toBe('PAYLOAD_TOO_LARGE');

    const bad = await h.json('PUT', `/v1/checkpoints/${c.body.id}/files/x.json`, { body: '{}', headers: { 'content-type': 'application/octet-stream', 'x-content-sha256': '0'.repeat(64) } });
    expect(bad.status).toBe(422);
    expect(bad.body.code).toBe('UPLOAD_CHECKSUM_MISMATCH');
    const good = await h.json('PUT', `/v1/checkpoints/${c.body.id}/files/x.json`, {
      body: '{}',
      headers: { 'content-type': 'application/octet-stream', 'x-content-sha256': createHash('sha256').update('{}').digest('hex') },
    });
    expect(good.status).toBe(201);
    // any Content-Type is stored byte for byte (JSON and text are not parsed)
    for (const type of ['application/json', 'text/plain', 'application/x-www-form-urlencoded']) {
      const body = '{"model_type": "llama"}\n';
      const r = await h.json('PUT', `/v1/checkpoints/${c.body.id}/files/typed.json`, { body, headers: { 'content-type': type } });
      expect(r.status, type).toBe(201);
      expect(r.body).toMatchObject({ bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') });
    }
    await h.req('DELETE', `/v1/checkpoints/${c.body.id}/files/typed.json`);
    const files = (await h.json<{ files: { name: string }[] }>('GET', `/v1/checkpoints/${c.body.id}`)).body.files.map((f) => f.name);
    expect(files).toEqual(['big.safetensors', 'x.json']);
    // a stray file can be removed before completing
    expect((await h.req('DELETE', `/v1/checkpoints/${c.body.id}/files/big.safetensors`)).status).toBe(204);
    expect((await h.json('DELETE', `/v1/checkpoints/${c.body.id}/files/big.safetensors`)).status).toBe(404);
    expect((await h.json('DELETE', `/v1/checkpoints/${c.body.id}/files/x.json`, { key: KEYS.b })).status).toBe(404);
    expect(await readdir(join(h.dataDir, 'uploads', c.body.id, 'files'))).toEqual(['x.json']);
    expect(await readdir(join(h.dataDir, 'uploads', c.body.id, 'partial'))).toEqual([]);
  });

  it('concurrent completes validate once', async () => {
    const dir = await writeModelFolder(join(work.dir, 'concurrent'));
    const id = await uploadFolder(h, dir, await readdir(dir));
    const results = await Promise.all([1, 2, 3].map(() => h.json('POST', `/v1/checkpoints/${id}/complete`)));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses[0]).toBe(200);
    for (const s of statuses) expect([200, 409]).toContain(s);
    expect((await h.json('GET', `/v1/checkpoints/${id}`)).body).toMatchObject({ state: 'ready', kind: 'model' });
  });

  it('an upload with no files cannot be completed', async () => {
    const c = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const r = await h.json('POST', `/v1/checkpoints/${c.body.id}/complete`);
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('UPLOAD_INVALID');
  });
});

describe('tenancy of uploads', () => {
  it("another tenant's checkpoint is a 404, no key is a 401", async () => {
    const c = await h.json<{ id: string }>('POST', '/v1/checkpoints', { json: { name: 'mine' } });
    for (const [method, path] of [
      ['GET', `/v1/checkpoints/${c.body.id}`],
      ['POST', `/v1/checkpoints/${c.body.id}/complete`],
    ] as const) {
      const other = await h.json(method, path, { key: KEYS.b });
      expect(other.status).toBe(404);
      expect(other.body.code).toBe('NOT_FOUND');
    }
    const listA = await h.json<{ items: { id: string }[] }>('GET', '/v1/checkpoints?limit=500');
    expect(listA.body.items[0].id).toBe(c.body.id);
    const listB = await h.json<{ items: { id: string }[] }>('GET', '/v1/checkpoints', { key: KEYS.b });
    expect(listB.body.items.map((i) => i.id)).not.toContain(c.body.id);
    const put = await h.json('PUT', `/v1/checkpoints/${c.body.id}/files/a.json`, { key: KEYS.b, body: '{}', headers: { 'content-type': 'application/octet-stream' } });
    expect(put.status).toBe(404);
    expect((await h.json('GET', `/v1/checkpoints/${c.body.id}`, { key: null })).body.code).toBe('UNAUTHORIZED');
    expect((await h.json('GET', `/v1/checkpoints/${c.body.id}`, { key: 'wrong-key' })).status).toBe(401);
    expect((await h.json('GET', `/v1/checkpoints/${c.body.id}`)).status).toBe(200);
  });
});
