/**
 * Asking for `cuda` where it cannot run gives a coded ENGINE_EP_UNAVAILABLE whose hint says what to do:
 * the setup command when the provider library is absent, the missing library (as onnxruntime's loader
 * names it) when the provider is installed but CUDA 13 is not on this machine. The second case uses the
 * real provider package from npm's cache (`npm run gpu:setup` puts it there); it is skipped, with the reason
 * in its title, when the cache does not hold it (tests never download it) or when CUDA 13 is present.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFgsnError } from '../../src/errors.js';
import { GraphBuilder } from '../../src/engine/onnx/graph-builder.js';
import { cudaLoadHint, GPU_SETUP_COMMAND, missingLibrary, providerBindingDir, providerLoadError } from '../../src/engine/session/ep-diagnosis.js';
import { createSession } from '../../src/engine/session/session.js';
import { tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SETUP = join(ROOT, 'scripts/gpu-setup.mjs');
const PROVIDER = join(providerBindingDir(), 'libonnxruntime_providers_cuda.so');
/** onnxruntime 1.29's log line on a CPU-only machine, as printed (colour codes included). */
const ORT_LINE = '\x1b[1;31m2026-12-02 20:47:59.163 [E:onnxruntime:onnxruntime-node, provider_bridge_ort.cc:2146 Create] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory\n\x1b[m';

function realProviderSkipReason(): string {
  if (existsSync(PROVIDER)) return 'a provider library is already installed here';
  const cached = spawnSync('npm', ['cache', 'ls', 'com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9'], { encoding: 'utf8' }).stdout ?? '';
  if (!cached.includes('.tgz')) return "the provider package is not in npm's cache (run npm run gpu:setup once)";
  const ld = spawnSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8' }).stdout ?? '';
  if (ld.includes('libcublasLt.so.13')) return 'CUDA 13 is installed here, so the provider would load';
  return '';
}

let work: ReturnType<typeof tempDir>;
let model: string;

beforeAll(() => {
  work = tempDir('fgsn-ep-');
  const g = new GraphBuilder('mm');
  const a = g.input('a', 'float32', [2, 2]);
  g.output('c', g.op('MatMul', [a, a]), 'float32', [2, 2]);
  model = join(work.path, 'mm.onnx');
  writeFileSync(model, g.toModelBytes());
});
afterAll(() => work.remove());

describe('reading onnxruntime provider-load errors', () => {
  it('finds the library the loader could not open, and onnxruntime line', () => {
    expect(missingLibrary(ORT_LINE)).toBe('libcublasLt.so.13');
    expect(providerLoadError(ORT_LINE)).toMatch(/^Failed to load library \/x\/.*libonnxruntime_providers_cuda\.so with error: libcublasLt\.so\.13: cannot open/);
    expect(missingLibrary('libcudnn.so.9: cannot open shared object file: No such file or directory')).toBe('libcudnn.so.9');
    expect(missingLibrary('CUDA failure 100: no CUDA-capable device is detected')).toBeUndefined();
  });

  it('hints name the library and the setup command', () => {
    expect(cudaLoadHint('libcublasLt.so.13')).toContain('libcublasLt.so.13');
    expect(cudaLoadHint('libcublasLt.so.13')).toContain('CUDA 13');
    expect(cudaLoadHint('libcudnn.so.9')).toContain('cuDNN 9');
    expect(cudaLoadHint('libcuda.so.1')).toContain('NVIDIA driver');
    for (const lib of ['libcublasLt.so.13', 'libcuda.so.1', undefined]) expect(cudaLoadHint(lib)).toContain(GPU_SETUP_COMMAND);
  });
});

describe.sequential('cuda on this machine', () => {
  it.skipIf(existsSync(PROVIDER))('without the provider library: ENGINE_EP_UNAVAILABLE naming the setup command', async () => {
    const err = await createSession(model, { executionProvider: 'cuda' }).then(() => undefined, (e: unknown) => e);
    expect(isFgsnError(err) && err.code).toBe('ENGINE_EP_UNAVAILABLE');
    if (!isFgsnError(err)) return;
    expect(err.hint).toContain(GPU_SETUP_COMMAND);
    expect(err.message).toContain('libonnxruntime_providers_cuda.so');
  });

  const skip = realProviderSkipReason();
  it.skipIf(skip !== '')(`with the real provider installed and no CUDA 13: ENGINE_EP_UNAVAILABLE naming libcublasLt.so.13${skip ? ` (skipped: ${skip})` : ''}`, () => {
    execFileSync(process.execPath, [SETUP, '--offline'], { cwd: ROOT, stdio: 'ignore' });
    try {
      // A child process: the failed provider load leaves onnxruntime's provider bridge loaded.
      const probe = join(work.path, 'probe.mts');
      writeFileSync(probe, `import { createSession } from ${JSON.stringify(join(ROOT, 'src/engine/session/session.ts'))};
createSession(${JSON.stringify(model)}, { executionProvider: 'cuda' }).then(() => console.log('{}'), (e) => console.log(JSON.stringify({ ...e.toJSON() })));`);
      const out = execFileSync(process.execPath, ['--import', 'tsx', probe], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const err = JSON.parse(out.trim().split('\n').at(-1) as string) as { code?: string; message?: string; hint?: string; details?: { missingLibrary?: string } };
      expect(err.code).toBe('ENGINE_EP_UNAVAILABLE');
      expect(err.details?.missingLibrary).toBe('libcublasLt.so.13');
      expect(err.message).toContain('with error: libcublasLt.so.13: cannot open shared object file');
      expect(err.hint).toContain('libcublasLt.so.13');
      expect(err.hint).toContain(GPU_SETUP_COMMAND);
    } finally {
      execFileSync(process.execPath, [SETUP, '--remove'], { cwd: ROOT, stdio: 'ignore' });
    }
  });
});
