/** Shared setup of the security suites: a harness with one ready fine-tune of tenant a and a global reference. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { tempDir, writeModelFolder } from '../checkpoint/fixtures.js';
import { KEYS, startHarness, uploadFolder, type Harness } from '../api/harness.js';

export interface SecuritySetup {
  h: Harness;
  modelDir: string;
  finetuned: string;
  reference: string;
  work: { dir: string; cleanup: () => Promise<void> };
  close(): Promise<void>;
}

export async function readyCheckpoint(h: Harness, modelDir: string, key: string): Promise<string> {
  const id = await uploadFolder(h, modelDir, await readdir(modelDir), key);
  const r = await h.json('POST', `/v1/checkpoints/${id}/complete`, { key });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return id;
}

export async function securitySetup(opts: Parameters<typeof startHarness>[0] = {}): Promise<SecuritySetup> {
  const work = await tempDir('fgsn-sec-');
  const modelDir = await writeModelFolder(join(work.dir, 'tiny'));
  const h = await startHarness(opts);
  const finetuned = await readyCheckpoint(h, modelDir, KEYS.a);
  const aligned = await readyCheckpoint(h, modelDir, KEYS.admin);
  const base = await readyCheckpoint(h, modelDir, KEYS.admin);
  const ref = await h.json<{ id: string }>('POST', '/v1/references', { key: KEYS.admin, json: { aligned, base, name: 'tiny' } });
  expect(ref.status).toBe(201);
  return {
    h,
    modelDir,
    finetuned,
    reference: ref.body.id,
    work,
    async close() {
      await h.close();
      await work.cleanup();
    },
  };
}
