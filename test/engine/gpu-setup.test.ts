/**
 * `npm run gpu:setup` (scripts/gpu-setup.mjs) offline: fake provider packages made here (tarball and
 * unpacked folder) installed into a fake onnxruntime-node folder. The registry path (`npm pack` of the
 * ~180 MB package) is not exercised: tests never download it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/gpu-setup.mjs', import.meta.url));
const LIBS = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'];
const BINDING = 'bin/napi-v6/linux/x64';

/** A provider library whose bytes hold `versions` as NUL-delimited strings, at `offsets` when given. */
function fakeProviderLib(versions: string[], size = 4096, offsets?: number[]): Buffer {
  const b = Buffer.alloc(size, 0x41);
  versions.forEach((v, i) => {
    const at = offsets?.[i] ?? 100 + i * 64;
    b[at] = 0;
    b.write(v, at + 1, 'latin1');
    b[at + 1 + v.length] = 0;
  });
  return b;
}

function fakeProviderPackage(root: string, cudaLib: Buffer | null, name = 'com.github.asus4.onnxruntime.linux-x64-gpu'): string {
  const pkg = join(root, 'package');
  mkdirSync(join(pkg, 'Plugins/Linux/x64'), { recursive: true });
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name, version: '0.4.9' }));
  if (cudaLib !== null) writeFileSync(join(pkg, 'Plugins/Linux/x64', LIBS[0]), cudaLib);
  writeFileSync(join(pkg, 'Plugins/Linux/x64', LIBS[1]), Buffer.from('shared provider bridge'));
  return pkg;
}

function tarball(dir: string, out: string): string {
  execFileSync('tar', ['-czf', out, '-C', dir, 'package']);
  return out;
}

let work: ReturnType<typeof tempDir>;
let ortDir: string;

function setup(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [SCRIPT, '--ort-dir', ortDir, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const placed = (): string[] => LIBS.filter((l) => existsSync(join(ortDir, BINDING, l)));

beforeEach(() => {
  work = tempDir('fgsn-gpu-setup-test-');
  ortDir = join(work.path, 'onnxruntime-node');
  mkdirSync(join(ortDir, BINDING), { recursive: true });
  writeFileSync(join(ortDir, 'package.json'), JSON.stringify({ name: 'onnxruntime-node', version: '1.29.0' }));
  writeFileSync(join(ortDir, BINDING, 'onnxruntime_binding.node'), '');
});
afterEach(() => work.remove());

describe('gpu:setup', () => {
  it('places both provider libraries from a tarball whose provider matches onnxruntime-node, and --remove takes them out', () => {
    const lib = fakeProviderLib(['1.29.0', '1.3.9']); // 1.3.9: the unrelated string the real 1.29.0 provider holds too
    const tgz = tarball(join(fakeProviderPackage(join(work.path, 'src'), lib), '..'), join(work.path, 'provider.tgz'));
    const r = setup('--from', tgz);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('ONNX Runtime 1.29.0');
    expect(placed()).toEqual(LIBS);
    expect(readFileSync(join(ortDir, BINDING, LIBS[0]))).toEqual(lib);
    expect(readFileSync(join(ortDir, BINDING, LIBS[1]), 'utf8')).toBe('shared provider bridge');
    expect(setup('--remove').status).toBe(0);
    expect(placed()).toEqual([]);
  });

  it('accepts an unpacked package folder, and finds a version string that straddles two 4 MiB read chunks', () => {
    const chunk = 1 << 22;
    const lib = fakeProviderLib(['1.29.0'], chunk + 4096, [chunk - 3]);
    const pkg = fakeProviderPackage(join(work.path, 'src'), lib);
    const r = setup('--from', pkg);
    expect(r.status, r.stderr).toBe(0);
    expect(placed()).toEqual(LIBS);
  });

  it('refuses a provider built for another ONNX Runtime release and places nothing', () => {
    const tgz = tarball(join(fakeProviderPackage(join(work.path, 'src'), fakeProviderLib(['1.30.0'])), '..'), join(work.path, 'p.tgz'));
    const r = setup('--from', tgz);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/refused: version mismatch: .*ONNX Runtime 1\.30\.0.*onnxruntime-node is 1\.29\.0/);
    expect(r.stderr).toContain('Nothing was installed');
    expect(placed()).toEqual([]);
  });

  it('refuses when the provider release cannot be told (none, or two) or the package has no provider library', () => {
    for (const versions of [[], ['1.29.0', '1.28.1']]) {
      const src = join(work.path, `src-${versions.length}`);
      const r = setup('--from', fakeProviderPackage(src, fakeProviderLib(versions)));
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('cannot tell which ONNX Runtime release');
    }
    const r = setup('--from', fakeProviderPackage(join(work.path, 'nolib'), null));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`has no ${LIBS[0]}`);
    expect(placed()).toEqual([]);
  });

  it('refuses, before any download, an onnxruntime-node version with no known provider package', () => {
    writeFileSync(join(ortDir, 'package.json'), JSON.stringify({ name: 'onnxruntime-node', version: '1.30.0' }));
    const r = setup();
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('no CUDA provider package is known for onnxruntime-node 1.30.0');
    expect(r.stderr).toContain('onnxruntime-node 1.29.0 -> com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9');
    expect(r.stdout).not.toContain('fetching');
  });

  it('the project pins the onnxruntime-node version the script knows a provider package for', () => {
    const pinned = (JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { dependencies: Record<string, string> }).dependencies['onnxruntime-node'];
    expect(readFileSync(SCRIPT, 'utf8')).toContain(`'${pinned}': {`);
  });
});
