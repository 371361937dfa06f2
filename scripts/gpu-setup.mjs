#!/usr/bin/env node
/**
 * `npm run gpu:setup`: installs onnxruntime's CUDA execution provider for onnxruntime-node from the npm
 * registry alone. onnxruntime-node's own installer downloads its CUDA 12 provider from nuget, which an
 * offline GPU machine (or a build that may only reach the npm registry) cannot do. The npm package
 * com.github.asus4.onnxruntime.linux-x64-gpu (ONNX Runtime for Unity, MIT) ships the provider built for one
 * ONNX Runtime release against CUDA 13 (NEEDED: libcublasLt.so.13, libcublas.so.13, libcudart.so.13,
 * libcurand.so.10; cuDNN 9 at run time). This script:
 *   1. fetches that package with `npm pack` (npm's configured registry and cache only; it is not a
 *      dependency of fgsn, so CPU installs stay small: the tarball is ~180 MB), or takes --from;
 *   2. reads the ONNX Runtime version the provider library was built for and refuses unless it equals the
 *      installed onnxruntime-node's version (a provider from another release is not ABI compatible);
 *   3. places libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so next to
 *      onnxruntime-node's binding (bin/napi-v6/linux/x64/), where onnxruntime loads providers from.
 *
 *   npm run gpu:setup [-- --from <tarball|dir> | --offline] [--ort-dir <onnxruntime-node dir>] [--remove]
 * --offline: npm pack from npm's cache only (a machine that ran gpu:setup once, or got the cache carried).
 * Exit codes: 0 placed (or removed), 1 usage or I/O error, 2 refused (version mismatch, wrong package,
 * unsupported platform).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

/**
 * The provider package for each onnxruntime-node version (one source of truth: add a row when pinning
 * another onnxruntime-node). `integrity` is the registry's sha512 of the tarball, checked on what npm pack
 * returns so a republished tarball cannot slip in.
 */
export const PROVIDER_PACKAGES = {
  '1.29.0': {
    name: 'com.github.asus4.onnxruntime.linux-x64-gpu',
    version: '0.4.9',
    integrity: 'sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w==',
  },
};
/** Where the provider package keeps the two libraries. */
export const PACKAGE_LIB_DIR = 'Plugins/Linux/x64';
export const PROVIDER_LIBS = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'];
/** onnxruntime-node loads its binding, and onnxruntime its providers, from this folder of the package. */
export const BINDING_SUBDIR = 'bin/napi-v6/linux/x64';

export class Refusal extends Error {}

/**
 * ONNX Runtime release strings embedded in a provider library: NUL-delimited "1.NN.P" (the provider
 * compiles in ORT_VERSION). The minor must have two digits (ORT 1.10 and later): the CUDA provider of
 * 1.29.0 also holds an unrelated "1.3.9".
 */
export async function embeddedOrtVersions(file) {
  const re = /\0(1\.[1-9]\d\.\d{1,3})\0/g;
  const found = new Set();
  let tail = '';
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 })) {
    // latin1 maps bytes 1:1, so a match spanning two chunks is found in the carried-over tail.
    const text = tail + chunk.toString('latin1');
    for (const m of text.matchAll(re)) found.add(m[1]);
    tail = text.slice(-16);
  }
  return [...found];
}

async function sha512(file) {
  const h = createHash('sha512');
  for await (const chunk of createReadStream(file)) h.update(chunk);
  return `sha512-${h.digest('base64')}`;
}

function onnxruntimeNodeDir(explicit) {
  if (explicit !== undefined) return resolve(explicit);
  return dirname(createRequire(join(process.cwd(), 'noop.js')).resolve('onnxruntime-node/package.json'));
}

/** An unpacked package root: `dir` itself or its `package/` (npm tarballs unpack there). */
function packageRoot(dir) {
  return existsSync(join(dir, 'package', 'package.json')) ? join(dir, 'package') : dir;
}

function unpack(tarball, work) {
  const out = join(work, 'unpacked');
  mkdirSync(out, { recursive: true });
  execFileSync('tar', ['-xzf', tarball, '-C', out], { stdio: ['ignore', 'ignore', 'inherit'] });
  return packageRoot(out);
}

/** `npm pack` of the pinned provider package into `work`: the npm registry (or npm's cache), nothing else. */
function packFromRegistry(spec, work, offline, log) {
  log(`fetching ${spec.name}@${spec.version} from ${offline ? "npm's cache" : 'the npm registry (about 180 MB; npm caches it)'}`);
  const args = ['pack', `${spec.name}@${spec.version}`, '--pack-destination', work, '--json', '--silent', ...(offline ? ['--offline'] : [])];
  const out = execFileSync('npm', args, {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24,
  });
  const [meta] = JSON.parse(out);
  return join(work, meta.filename);
}

/**
 * Installs the provider libraries for the onnxruntime-node at `ortDir` (default: the one this project
 * resolves). Throws Refusal when it must not install; returns what it placed.
 */
export async function gpuSetup({ from, ortDir, offline = false, log = console.log } = {}) {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Refusal(`the CUDA provider package is built for linux x64 only; this is ${process.platform} ${process.arch}`);
  }
  const ort = onnxruntimeNodeDir(ortDir);
  const ortVersion = JSON.parse(readFileSync(join(ort, 'package.json'), 'utf8')).version;
  const bindingDir = join(ort, BINDING_SUBDIR);
  if (!existsSync(join(bindingDir, 'onnxruntime_binding.node'))) throw new Error(`no onnxruntime-node binding in ${bindingDir}`);
  const spec = PROVIDER_PACKAGES[ortVersion];
  if (spec === undefined && from === undefined) {
    throw new Refusal(`no CUDA provider package is known for onnxruntime-node ${ortVersion} (known: ${Object.keys(PROVIDER_PACKAGES).map((v) => `onnxruntime-node ${v} -> ${PROVIDER_PACKAGES[v].name}@${PROVIDER_PACKAGES[v].version}`).join(', ')}); pin onnxruntime-node to one of those versions, or pass --from a provider package built for ${ortVersion}`);
  }
  const work = mkdtempSync(join(tmpdir(), 'fgsn-gpu-setup-'));
  try {
    let root;
    if (from === undefined) {
      const tarball = packFromRegistry(spec, work, offline, log);
      const got = await sha512(tarball);
      if (got !== spec.integrity) throw new Refusal(`${spec.name}@${spec.version} from the registry has integrity ${got}, expected ${spec.integrity}`);
      root = unpack(tarball, work);
    } else {
      const src = resolve(from);
      root = statSync(src).isDirectory() ? packageRoot(src) : unpack(src, work);
    }
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    const libDir = join(root, PACKAGE_LIB_DIR);
    const missing = PROVIDER_LIBS.filter((l) => !existsSync(join(libDir, l)));
    if (missing.length > 0) throw new Refusal(`${pkg.name}@${pkg.version} has no ${missing.join(', ')} in ${PACKAGE_LIB_DIR}/: not a CUDA provider package`);
    const built = await embeddedOrtVersions(join(libDir, PROVIDER_LIBS[0]));
    if (built.length !== 1) {
      throw new Refusal(`cannot tell which ONNX Runtime release ${pkg.name}@${pkg.version}'s ${PROVIDER_LIBS[0]} was built for (version strings found: ${built.join(', ') || 'none'}); not installing it`);
    }
    if (built[0] !== ortVersion) {
      throw new Refusal(`version mismatch: ${pkg.name}@${pkg.version} holds the CUDA provider of ONNX Runtime ${built[0]}, but the installed onnxruntime-node is ${ortVersion}. A provider library only works with the ONNX Runtime release it was built with; pin onnxruntime-node to ${built[0]} or use a provider package built for ${ortVersion}. Nothing was installed.`);
    }
    for (const lib of PROVIDER_LIBS) {
      // Copy beside, then rename: a process loading the provider never sees a half-written library.
      const dest = join(bindingDir, lib);
      copyFileSync(join(libDir, lib), `${dest}.tmp`);
      chmodSync(`${dest}.tmp`, 0o755);
      renameSync(`${dest}.tmp`, dest);
    }
    log(`placed ${PROVIDER_LIBS.join(', ')} (${pkg.name}@${pkg.version}, ONNX Runtime ${built[0]}) in ${bindingDir}`);
    log('at run time the CUDA provider needs CUDA 13 (libcublasLt.so.13, libcublas.so.13, libcudart.so.13, libcurand.so.10) and cuDNN 9 on the library path, and an NVIDIA driver for CUDA 13');
    return { bindingDir, ortVersion, providerPackage: `${pkg.name}@${pkg.version}`, placed: PROVIDER_LIBS.map((l) => join(bindingDir, l)) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Removes placed provider libraries (CPU-only again). */
export function gpuRemove({ ortDir, log = console.log } = {}) {
  const bindingDir = join(onnxruntimeNodeDir(ortDir), BINDING_SUBDIR);
  const removed = readdirSync(bindingDir).filter((f) => PROVIDER_LIBS.includes(f));
  for (const f of removed) rmSync(join(bindingDir, f));
  log(removed.length > 0 ? `removed ${removed.join(', ')} from ${bindingDir}` : `no provider library in ${bindingDir}`);
  return removed;
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname);
if (isMain) {
  let values;
  try {
    ({ values } = parseArgs({ options: { from: { type: 'string' }, 'ort-dir': { type: 'string' }, offline: { type: 'boolean' }, remove: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    console.error(`gpu:setup: ${e.message}`);
    process.exit(1);
  }
  if (values.help) {
    console.log('usage: npm run gpu:setup [-- --from <provider tarball or unpacked dir> | --offline (npm cache only)] [--ort-dir <onnxruntime-node dir>] [--remove]');
    process.exit(0);
  }
  try {
    if (values.remove) gpuRemove({ ortDir: values['ort-dir'] });
    else await gpuSetup({ from: values.from, ortDir: values['ort-dir'], offline: values.offline });
  } catch (e) {
    console.error(`gpu:setup: ${e instanceof Refusal ? 'refused: ' : ''}${e.message}`);
    process.exit(e instanceof Refusal ? 2 : 1);
  }
}
