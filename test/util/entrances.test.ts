/**
 * The folder rules of docs/architecture.md as eslint.config.js enforces them: a folder is entered through
 * its index.ts, no folder imports one above it, onnxruntime stays inside src/engine. Checked on sample code
 * linted as if it were a file of src/, so a weakened rule fails here rather than silently passing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const eslint = new ESLint({ cwd: process.cwd() });

async function restricted(filePath: string, code: string): Promise<string[]> {
  const [r] = await eslint.lintText(code, { filePath });
  return r.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('folder entrances and layering (eslint no-restricted-imports)', () => {
  it('allows a lower folder through its index.ts, util, and root modules', async () => {
    expect(await restricted('src/defense/x.ts', [
      "import { ModelCheckpoint } from '../checkpoint/index.js';",
      "import { loadEngine } from '../engine/index.js';",
      "import { sha256File } from '../util/index.js';",
      "import { FgsnError } from '../errors.js';",
      "import type { ProbeRecord } from '../probes.js';",
      'export { ModelCheckpoint, loadEngine, sha256File, FgsnError };',
      'export type { ProbeRecord };',
    ].join('\n'))).toEqual([]);
  });

  it('refuses a deep import into another folder, also from a subfolder and as a re-export', async () => {
    expect(await restricted('src/defense/x.ts', "export { ModelCheckpoint } from '../checkpoint/model-folder.js';")).toHaveLength(1);
    expect(await restricted('src/engine/model/x.ts', "export type { ModelSpec } from '../../checkpoint/types.js';")).toHaveLength(1);
    expect(await restricted('src/pipeline/x.ts', "export { Engine } from '../engine/engine.js';")).toHaveLength(1);
  });

  it('refuses upward imports, even through the index', async () => {
    const [m] = await restricted('src/defense/x.ts', "export type { HardenRequest } from '../pipeline/index.js';");
    expect(m).toMatch(/src\/defense may not import src\/pipeline/u);
    expect(await restricted('src/engine/x.ts', "export { evaluateModel } from '../eval/index.js';")).toHaveLength(1);
    expect(await restricted('src/storage/x.ts', "export { runHarden } from '../pipeline/index.js';")).toHaveLength(1);
    expect(await restricted('src/config.ts', "export { ModelCheckpoint } from './checkpoint/index.js';")).toHaveLength(1);
  });

  it('keeps onnxruntime inside src/engine', async () => {
    expect(await restricted('src/defense/x.ts', "import * as ort from 'onnxruntime-node';\nexport { ort };")).toHaveLength(1);
    expect(await restricted('src/engine/session/x.ts', "import * as ort from 'onnxruntime-node';\nexport { ort };")).toEqual([]);
  });

  it('leaves tests and benchmarks free to import internals', async () => {
    expect(await restricted('test/engine/x.test.ts', "export { Engine } from '../../src/engine/engine.js';")).toEqual([]);
    expect(await restricted('bench/engine/x.ts', "export { ort } from '../../src/engine/session/session.js';")).toEqual([]);
  });
});

describe('docs/architecture.md', () => {
  it('lists, for each folder, exactly the folders eslint.config.js lets it import', async () => {
    // Imported by URL: the config is plain JavaScript without type declarations.
    const config = pathToFileURL(join(process.cwd(), 'eslint.config.js')).href;
    const { LAYERS } = (await import(config)) as { LAYERS: Record<string, string[]> };
    const doc = readFileSync(join(process.cwd(), 'docs', 'architecture.md'), 'utf8');
    const documented: Record<string, string[]> = {};
    for (const line of doc.split('\n')) {
      const m = /^\| `src\/(\w+)\/` \| [^|]+ \| ([^|]+) \|/u.exec(line);
      if (!m) continue;
      const cell = m[2].trim();
      documented[m[1]] = cell === 'every folder' ? Object.keys(LAYERS).filter((f) => f !== m[1])
        : [...cell.matchAll(/`(\w+)`/gu)].map((x) => x[1]);
    }
    const sorted = (r: Record<string, string[]>) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, [...v].sort()]).sort());
    expect(sorted(documented)).toEqual(sorted(LAYERS));
  });
});
