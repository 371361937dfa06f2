/** Rebuilds a hardened model from its source checkpoint and a row diff (the inverse of `--format diff`). */
import { ModelCheckpoint } from '../checkpoint/index.js';
import { FgsnError } from '../errors.js';
import { RowDiff } from './io/row-diff.js';
import { writeModelFolder } from './io/model-writer.js';
import { checkpointHashes } from './io/sources.js';

export interface ApplyDiffResult {
  files: string[];
  tensorsChanged: number;
  rowsChanged: number;
  verified: boolean;
}

export async function applyRowDiff(modelDir: string, diffPath: string, outDir: string, opts: { verify?: boolean } = {}): Promise<ApplyDiffResult> {
  const model = await ModelCheckpoint.open(modelDir);
  let diff: RowDiff | null = null;
  try {
    diff = await RowDiff.open(diffPath);
    for (const name of diff.entries.keys()) {
      if (!model.has(name)) throw new FgsnError('DIFF_INVALID', `${diffPath}: tensor "${name}" is not in ${modelDir}`, { details: { tensor: name } });
    }
    const verify = opts.verify ?? true;
    const recorded = diff.metadata['fgsn.source_sha256'];
    if (verify && recorded !== undefined) {
      const expected = JSON.parse(recorded) as Record<string, string>;
      const actual = await checkpointHashes(model);
      for (const [file, sha] of Object.entries(expected)) {
        if (actual[file] !== sha) {
          throw new FgsnError('DIFF_SOURCE_MISMATCH', `${diffPath} was made from ${file} with sha256 ${sha}; ${modelDir} has ${actual[file] ?? 'no such file'}`, {
            details: { file, expected: sha, actual: actual[file] ?? null },
          });
        }
      }
    }
    const files = await writeModelFolder(model, model.dir, diff, outDir);
    let rows = 0;
    for (const e of diff.entries.values()) rows += e.rows.length;
    return { files, tensorsChanged: diff.entries.size, rowsChanged: rows, verified: verify && recorded !== undefined };
  } finally {
    await diff?.close();
    await model.close();
  }
}
