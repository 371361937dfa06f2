/**
 * Child process of upload validation (see upload-validation.ts): validates the folder given as argv[2] and
 * sends one verdict over IPC. Runs with a heap limit; the parent kills it at its time limit.
 */
import { validateCheckpointFolder } from '../checkpoint/index.js';
import { compactSummary, MAX_PROBLEMS_LISTED, scrubPaths, type UploadVerdict } from './upload-validation.js';

process.on('disconnect', () => process.exit(1));

async function main(): Promise<void> {
  const dir = process.argv[2];
  const v = await validateCheckpointFolder(dir);
  const verdict: UploadVerdict = v.ok
    ? { ok: true, kind: v.kind, summary: compactSummary(v.summary) }
    : {
        ok: false,
        problemCount: v.problems.length,
        problems: v.problems.slice(0, MAX_PROBLEMS_LISTED).map((p) => scrubPaths({ code: p.code, message: p.message, details: p.details }, dir)),
      };
  await new Promise<void>((res, rej) => process.send?.(verdict, undefined, undefined, (e) => (e ? rej(e) : res())));
  process.exit(0);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(2);
});
