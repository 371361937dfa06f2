/**
 * Validation of a completed upload, run OFF the API's event loop: a child process (with a heap limit and a
 * wall-clock limit) opens the folder with the checkpoint layer and sends back a compact verdict. A hostile
 * folder (huge header, a config that enumerates 40,000 layers, a pathological pattern) can then only use
 * up that child, never stall /healthz or other tenants' requests, and a child that outlives its time or
 * memory is killed and reported as a coded 422.
 */
import { fork } from 'node:child_process';
import { setPriority } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { CheckpointSummary } from '../checkpoint/index.js';
import { FgsnError, type ErrorCode } from '../errors.js';

/** At most this many problems travel back (and are listed in the 422), plus their total count. */
export const MAX_PROBLEMS_LISTED = 100;

export interface UploadProblem {
  code: string;
  message: string;
  details?: unknown;
}

export type UploadVerdict =
  | { ok: true; kind: 'model' | 'adapter'; summary: Record<string, unknown> }
  | { ok: false; problems: UploadProblem[]; problemCount: number };

/** What GET shows of the checkpoint layer's summary: the facts, not the full tensor table. */
export function compactSummary(s: CheckpointSummary): Record<string, unknown> {
  return {
    kind: s.kind,
    family: s.family,
    modelType: s.modelType,
    architectures: s.architectures,
    dtype: s.dtype,
    parameterCount: s.parameterCount,
    linearParameterCount: s.linearParameterCount,
    sharded: s.sharded,
    tensorCount: s.tensors.length,
    layers: s.spec?.numLayers ?? null,
    hiddenSize: s.spec?.hiddenSize ?? null,
    adapter: s.adapter,
  };
}

/** Server paths are no business of the client: the upload folder is shown as ".". */
export function scrubPaths<T>(value: T, dir: string): T {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'string' ? v.split(dir + '/').join('').split(dir).join('.') : v))) as T;
}

function childLocation(): { file: string; execArgv: string[] } {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    // Running from the TypeScript sources (tests, tsx): the child needs the same loader.
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    return { file: join(dirname(here), 'upload-validation-child.ts'), execArgv: ['--import', tsx] };
  }
  return { file: join(dirname(here), 'upload-validation-child.js'), execArgv: [] };
}

export interface ValidationLimits {
  timeoutMs: number;
  maxMemoryMb: number;
}

/** Validates `dir` in a child process; resolves with the verdict or throws a coded error (time, memory, crash). */
export function validateUploadOffThread(dir: string, limits: ValidationLimits): Promise<UploadVerdict> {
  const { file, execArgv } = childLocation();
  return new Promise((resolvePromise, reject) => {
    const child = fork(file, [dir], {
      execArgv: [...execArgv, `--max-old-space-size=${limits.maxMemoryMb}`],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
    });
    // Below the API's priority: on a busy machine the validator yields the CPU to request handling.
    if (child.pid !== undefined) {
      try {
        setPriority(child.pid, 10);
      } catch {
        // not permitted here: run at the same priority
      }
    }
    let verdict: UploadVerdict | undefined;
    let timedOut = false;
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString('utf8');
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limits.timeoutMs);
    child.on('message', (m) => {
      verdict = m as UploadVerdict;
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new FgsnError('INTERNAL', 'the upload validator could not start', { cause: e }));
    });
    // 'close', not 'exit': it comes after the IPC channel delivered its last message.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (verdict !== undefined) return resolvePromise(verdict);
      if (timedOut) {
        return reject(
          new FgsnError('UPLOAD_INVALID', `validation took longer than ${Math.round(limits.timeoutMs / 1000)} s and was stopped`, {
            details: { problems: [{ code: 'VALIDATION_TIMEOUT', message: `limit ${limits.timeoutMs} ms (FGSN_VALIDATION_TIMEOUT_S)` }], problemCount: 1 },
          }),
        );
      }
      const oom = /heap out of memory|Allocation failed/i.test(stderr);
      const why = oom ? `needed more than ${limits.maxMemoryMb} MB (FGSN_VALIDATION_MAX_MEMORY_MB)` : `exited (${signal ?? code})`;
      reject(
        new FgsnError(oom ? 'UPLOAD_INVALID' : 'INTERNAL', `validation of the upload ${why}`, {
          details: { problems: [{ code: oom ? 'VALIDATION_MEMORY' : 'VALIDATION_CRASHED', message: why }], problemCount: 1 },
        }),
      );
    });
  });
}

/** The coded 422 for an invalid upload, listing at most MAX_PROBLEMS_LISTED problems plus the count. */
export function invalidUploadError(id: string, v: Extract<UploadVerdict, { ok: false }>): FgsnError {
  const codes = [...new Set(v.problems.map((p) => p.code))];
  const code: ErrorCode = 'UPLOAD_INVALID';
  return new FgsnError(code, `checkpoint ${id} is not a valid model or adapter folder: ${v.problemCount} problem(s): ${codes.join(', ')}`, {
    details: { problems: v.problems, problemCount: v.problemCount, truncated: v.problemCount > v.problems.length },
  });
}
