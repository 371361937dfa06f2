/**
 * `fgsn remote harden` (a real child process) against the real API and worker: the files it downloads equal,
 * byte for byte, what `fgsn harden` writes in process on the same inputs; a tampered stored artifact is caught
 * by the client's sha256 check and leaves no file behind; a wrong key is a coded failure naming the server's code.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FgsnApiError, FgsnClient } from '../../src/client/index.js';
import { writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { KEYS, startHarness, type Harness } from '../api/harness.js';
import { tempDir } from '../checkpoint/fixtures.js';
import { REPO_ROOT } from '../support/testbed.js';

function fgsn(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'fgsn.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('exit', (code) => resolve({ code, out, err }));
  });
}

const sha = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');

describe('fgsn remote harden', () => {
  let h: Harness;
  let work: { dir: string; cleanup: () => Promise<void> };
  let tb: DemoTestbed;
  let reference: string;
  const inputs = (): string[] => [
    '--finetuned', tb.finetuned,
    '--harmful', tb.files.harmfulProbes, '--benign', tb.files.benignProbes, '--task', tb.files.taskProbes,
    '--format', 'model', '--format', 'diff', '--quiet',
  ];

  beforeAll(async () => {
    h = await startHarness({ worker: true });
    work = await tempDir('fgsn-remote-');
    tb = await writeDemoTestbed(join(work.dir, 'trio'));
    // The operator registers the reference once (admin key); tenants name it.
    const admin = new FgsnClient(h.base, KEYS.admin);
    reference = (await admin.createReference((await admin.uploadCheckpoint(tb.aligned)).id, (await admin.uploadCheckpoint(tb.base)).id, 'demo')).id;
  }, 120_000);
  afterAll(async () => {
    await h?.close();
    await work?.cleanup();
  });

  it('downloads, sha256-verified, the same model and diff bytes that fgsn harden writes in process', async () => {
    const remoteOut = join(work.dir, 'remote');
    const remote = await fgsn(['remote', 'harden', '--server', h.base, '--reference', reference, ...inputs(), '--out', remoteOut], { FGSN_API_KEY: KEYS.a });
    expect(remote.code, remote.err).toBe(0);
    expect(remote.out.trim().split('\n').at(-1)).toMatch(/^target: (reached|not reached)/);
    const local = await fgsn(['harden', '--base', tb.base, '--aligned', tb.aligned, ...inputs(), '--out', join(work.dir, 'local'), '--cache-dir', join(work.dir, 'cache')]);
    expect(local.code, local.err).toBe(0);

    // Everything but the report and the model card (they carry timestamps and input labels) is identical.
    const same = ['diff.safetensors', ...(await readdir(join(work.dir, 'local', 'model'))).filter((f) => f !== 'fgsn-report.json' && f !== 'README.md').map((f) => `model/${f}`)];
    expect(same).toContain('model/model.safetensors');
    for (const f of same) expect(await sha(join(remoteOut, f)), f).toBe(await sha(join(work.dir, 'local', f)));
    // The remote report says the same about the edit.
    const [r, l] = await Promise.all([join(remoteOut, 'report.json'), join(work.dir, 'local', 'report.json')].map(async (p) => JSON.parse(await readFile(p, 'utf8')) as { rows: unknown }));
    expect(r.rows).toEqual(l.rows);
  }, 600_000);

  it('refuses an artifact whose bytes do not match the job\'s sha256, keeping no file', async () => {
    const client = new FgsnClient(h.base, KEYS.a);
    const jobs = (await (await h.req('GET', '/v1/jobs', { key: KEYS.a })).json()) as { items: { id: string; state: string }[] };
    const done = jobs.items.find((j) => j.state === 'completed');
    expect(done).toBeDefined();
    // Flip one byte of the stored diff (as a disk or storage fault would).
    const stored = join(h.dataDir, 'artifacts', 'jobs', done!.id);
    const files = await readdir(stored, { recursive: true });
    const diff = files.find((f) => String(f).endsWith('diff.safetensors'));
    expect(diff).toBeDefined();
    const path = join(stored, String(diff));
    const bytes = await readFile(path);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(path, bytes);
    const out = join(work.dir, 'tampered');
    const err = await client.downloadArtifacts(done!.id, out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FgsnApiError);
    expect((err as FgsnApiError).code).toBe('REMOTE_ARTIFACT_INVALID');
    expect((err as FgsnApiError).message).toMatch(/diff\.safetensors/);
    expect(existsSync(join(out, 'diff.safetensors'))).toBe(false);
    expect(existsSync(join(out, 'diff.safetensors.partial'))).toBe(false);
  }, 120_000);

  it('a wrong key fails with the server\'s code, before anything is uploaded', async () => {
    const r = await fgsn(['remote', 'harden', '--server', h.base, '--key', 'not-a-valid-key-0000', '--reference', reference, ...inputs(), '--out', join(work.dir, 'nokey')]);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/REMOTE_REQUEST_FAILED/);
    expect(r.err).toMatch(/401|UNAUTHORIZED|AUTH/i);
    expect(existsSync(join(work.dir, 'nokey'))).toBe(false);
  }, 60_000);
});
