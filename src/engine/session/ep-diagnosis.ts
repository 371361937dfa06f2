/**
 * Why the CUDA execution provider did not start, in onnxruntime's own words. onnxruntime-node's exception
 * only says "OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library"; the loader's
 * error (which library is missing) goes to onnxruntime's logger on the native stderr, out of reach of JS.
 * So on that failure a child process repeats the provider load and its stderr is parsed. Error path only.
 */
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export const GPU_SETUP_COMMAND = 'npm run gpu:setup';

/** The folder of the onnxruntime-node package this module loads; its binding folder holds the providers. */
export function onnxruntimeNodeDir(): string {
  return dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
}

export function providerBindingDir(ortDir = onnxruntimeNodeDir()): string {
  return join(ortDir, 'bin', 'napi-v6', process.platform, process.arch);
}

/**
 * The library the dynamic loader could not open, from onnxruntime's provider-load error, e.g. "Failed to load
 * library .../libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object
 * file: No such file or directory" -> "libcublasLt.so.13". Undefined when the text names none.
 */
export function missingLibrary(text: string): string | undefined {
  const m = /([\w.+-]+\.so(?:\.[\w]+)*): cannot open shared object file/.exec(stripAnsi(text));
  return m?.[1];
}

function stripAnsi(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*m/g, '');
}

/** onnxruntime's "Failed to load library ... with error: ..." line, if the text has one. */
export function providerLoadError(text: string): string | undefined {
  const m = /Failed to load library [^\n]*/.exec(stripAnsi(text));
  return m?.[0].trim();
}

/** The fix for a CUDA provider that is installed but cannot load `lib` (undefined: cause unknown). */
export function cudaLoadHint(lib: string | undefined): string {
  const setup = `The provider itself comes from \`${GPU_SETUP_COMMAND}\`.`;
  if (lib === undefined) {
    return `onnxruntime's CUDA provider did not start (see the message). It needs an NVIDIA driver for CUDA 13, the CUDA 13 libraries and cuDNN 9 on the library path (docker/Dockerfile.cuda has them). ${setup} Or set FGSN_EXECUTION_PROVIDER=cpu.`;
  }
  if (lib.startsWith('libcuda.so')) {
    return `${lib} is the NVIDIA driver's library: run on a GPU host with a driver for CUDA 13 (in a container: the NVIDIA container toolkit, \`docker run --gpus all\`). ${setup}`;
  }
  const what = lib.startsWith('libcudnn') ? 'cuDNN 9 (for CUDA 13)' : 'the CUDA 13 runtime libraries (cuBLAS/cuBLASLt, cudart, cuRAND)';
  return `onnxruntime's CUDA provider needs ${lib}: install ${what} and put their folder on LD_LIBRARY_PATH, or use the CUDA image (docker/Dockerfile.cuda, CUDA 13 + cuDNN 9). ${setup} Or set FGSN_EXECUTION_PROVIDER=cpu.`;
}

export interface ProviderLoadDiagnosis {
  /** onnxruntime's own error line, when it printed one. */
  ortError?: string;
  missingLibrary?: string;
}

/**
 * Creates a session on `onnxPath` with the CUDA provider in a child process and reads onnxruntime's error
 * from its stderr. The provider is appended while the session options are parsed, before the model is
 * read, so any model path will do. Never throws: an empty diagnosis when nothing could be learned.
 */
export async function diagnoseCudaLoad(onnxPath: string, ortDir = onnxruntimeNodeDir()): Promise<ProviderLoadDiagnosis> {
  const script = `const ort = require(${JSON.stringify(ortDir)});
ort.InferenceSession.create(${JSON.stringify(onnxPath)}, { executionProviders: ['cuda'] }).then(() => process.exit(0), () => process.exit(3));`;
  const stderr = await new Promise<string>((resolve) => {
    execFile(process.execPath, ['-e', script], { timeout: 60_000, maxBuffer: 1 << 20, encoding: 'utf8' }, (_err, _out, err) => resolve(err ?? ''));
  });
  return { ortError: providerLoadError(stderr), missingLibrary: missingLibrary(stderr) };
}
