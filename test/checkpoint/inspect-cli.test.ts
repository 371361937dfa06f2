import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/testbed.js';
import { tempDir, writeModelFolder } from './fixtures.js';

function fgsn(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'fgsn.js'), ...args], { cwd: REPO_ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('fgsn inspect', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ dir, cleanup } = await tempDir('fgsn-inspect-')));
  afterAll(async () => cleanup());

  it('prints the model as JSON for a good folder', async () => {
    const model = await writeModelFolder(join(dir, 'good'), { sharded: true, dtype: 'BF16' });
    const r = await fgsn(['inspect', model]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown> & { files: { name: string; sha256: string }[]; tensors: unknown[] };
    expect(out).toMatchObject({ kind: 'model', family: 'llama', modelType: 'llama', architectures: ['LlamaForCausalLM'], dtype: 'BF16', sharded: true, parameterCount: 1160 });
    expect(out.tensors).toHaveLength(21);
    expect(out.files.map((f) => f.name)).toEqual(['config.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    for (const f of out.files) expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('exits 2 with a coded error on stderr for bad input', async () => {
    const bad = join(dir, 'bad.safetensors');
    await writeFile(bad, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0x10, 0x7b]));
    const r = await fgsn(['inspect', bad]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const err = JSON.parse(r.stderr) as { error: { code: string; message: string } };
    expect(err.error.code).toBe('CHECKPOINT_HEADER_TOO_LARGE');
    expect(err.error.message).toContain(bad);
  });
});
