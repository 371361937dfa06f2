import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { validate, ValidationSeverity, type ValidatorSettings } from 'dockerfile-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/commands.js';
import { CONFIG_ENV_VARS } from '../../src/config.js';
import { REPO_ROOT } from '../support/testbed.js';
import { DOCKER_DIR } from './scenarios.js';

const STRICT: ValidatorSettings = {
  deprecatedMaintainer: ValidationSeverity.ERROR,
  directiveCasing: ValidationSeverity.ERROR,
  emptyContinuationLine: ValidationSeverity.ERROR,
  instructionCasing: ValidationSeverity.ERROR,
  instructionCmdMultiple: ValidationSeverity.ERROR,
  instructionEntrypointMultiple: ValidationSeverity.ERROR,
  instructionHealthcheckMultiple: ValidationSeverity.ERROR,
  instructionJSONInSingleQuotes: ValidationSeverity.ERROR,
  instructionWorkdirRelative: ValidationSeverity.ERROR,
};

interface Stage {
  image: string;
  name: string | null;
  instructions: Instruction[];
}

function stages(text: string): { initialArgs: Map<string, string>; stages: Stage[] } {
  const df = DockerfileParser.parse(text);
  const initialArgs = new Map<string, string>();
  for (const a of df.getInitialARGs()) {
    const p = a.getProperty();
    if (p) initialArgs.set(p.getName(), p.getValue() ?? '');
  }
  const out: Stage[] = [];
  for (const ins of df.getInstructions()) {
    if (ins.getKeyword() === 'FROM') {
      const from = df.getFROMs().find((f) => f.getRange().start.line === ins.getRange().start.line);
      out.push({ image: from?.getImage() ?? '', name: from?.getBuildStage() ?? null, instructions: [] });
    } else if (out.length > 0) {
      out[out.length - 1].instructions.push(ins);
    }
  }
  return { initialArgs, stages: out };
}

const args = (i: Instruction): string => i.getArgumentsContent() ?? '';
/** The flags of an instruction (COPY --from=..., HEALTHCHECK --interval=...). */
const flags = (i: Instruction): Map<string, string> =>
  new Map(
    (i as unknown as { getFlags(): { getName(): string; getValue(): string | null }[] })
      .getFlags()
      .map((f) => [f.getName(), f.getValue() ?? ''] as [string, string]),
  );
const of = (s: Stage, kw: string): Instruction[] => s.instructions.filter((i) => i.getKeyword() === kw);

/** ENV name=value pairs of a stage, in order. */
function envOf(s: Stage): Map<string, string> {
  const env = new Map<string, string>();
  for (const i of of(s, 'ENV')) {
    for (const p of (i as unknown as { getProperties(): { getName(): string; getValue(): string | null }[] }).getProperties()) {
      env.set(p.getName(), p.getValue() ?? '');
    }
  }
  return env;
}

/** Sources COPY'd from the build stage into a stage. */
function runtimeCopies(s: Stage): string[] {
  return of(s, 'COPY')
    .filter((i) => flags(i).get('from') === 'build')
    .map((i) => args(i).split(/\s+/)[0]);
}

function jsonArgs(i: Instruction): string[] {
  return JSON.parse(args(i)) as string[];
}

const files = {
  cpu: readFileSync(join(DOCKER_DIR, 'Dockerfile'), 'utf8'),
  cuda: readFileSync(join(DOCKER_DIR, 'Dockerfile.cuda'), 'utf8'),
};

describe('Dockerfile lint (dockerfile-utils, every rule as an error)', () => {
  it.each(Object.entries(files))('%s: no diagnostics', (_name, text) => {
    const problems = validate(text, STRICT).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
    expect(problems).toEqual([]);
  });

  it('flags a broken Dockerfile (the lint can fail)', () => {
    const problems = validate('from node:20\nHEALTHCHECK CMD\nUSER\nCMD ["a"]\nCMD ["b"]\nWORKDIR app\n', STRICT);
    expect(problems.length).toBeGreaterThanOrEqual(4);
  });
});

describe.each(Object.entries(files))('%s image', (name, text) => {
  const { initialArgs, stages: all } = stages(text);
  const runtime = all[all.length - 1];
  const runs = all.flatMap((s) => of(s, 'RUN').map(args));

  it('is multi-stage, builds on one node:<LTS>-bookworm-slim, and the last stage is the runtime', () => {
    expect(all.length).toBeGreaterThanOrEqual(3);
    expect(runtime.name).toBe('runtime');
    const builders = all.slice(0, -1);
    // Both images are on Node 24 LTS (package.json engines: >=22.12); the CUDA image copies that binary onto
    // its CUDA base, so only its builder stages name a node image.
    const node = 'node:24-bookworm-slim';
    for (const s of builders) expect(s.image).toBe(node);
    if (name === 'cpu') expect(runtime.image).toBe(node);
  });

  it('installs dependencies with npm ci and ONNXRUNTIME_NODE_INSTALL=skip, without install scripts', () => {
    const npmStages = all.filter((s) => of(s, 'RUN').some((i) => /\bnpm ci\b/.test(args(i))));
    expect(npmStages.length).toBeGreaterThanOrEqual(2);
    for (const s of npmStages) {
      expect(envOf(s).get('ONNXRUNTIME_NODE_INSTALL')).toBe('skip');
      for (const i of of(s, 'RUN').filter((r) => /\bnpm ci\b/.test(args(r)))) expect(args(i)).toContain('--ignore-scripts');
    }
    expect(runs.some((r) => /npm ci --omit=dev/.test(r))).toBe(true);
    expect(runs.some((r) => /npm run build/.test(r))).toBe(true);
  });

  it('ships the data files that live beside the sources (tsc emits only .js)', () => {
    const build = all.find((s) => of(s, 'RUN').some((i) => args(i).includes('npm run build')));
    const step = of(build as Stage, 'RUN').map(args).find((r) => r.includes('npm run build')) ?? '';
    expect(step).toContain("(cd src && find . -type f ! -name '*.ts' ! -name '*.md' -exec cp --parents {} ../dist/ \\;)");
    // What that step carries today: at least the default probe sets the API serves.
    const data = readdirSync(join(REPO_ROOT, 'src'), { recursive: true, encoding: 'utf8' }).filter(
      (f) => !f.endsWith('.ts') && !f.endsWith('.md') && statSync(join(REPO_ROOT, 'src', f)).isFile(),
    );
    expect(data.map((f) => f.replaceAll('\\', '/'))).toEqual(expect.arrayContaining(['api/default-probes/harmful.jsonl']));
    expect(runtimeCopies(runtime)).toContain('/app/dist');
  });

  it('prunes onnxruntime binaries of other platforms', () => {
    const prune = runs.find((r) => r.includes('for napi in node_modules/onnxruntime-node/bin/napi-v*')) ?? '';
    expect(prune).toMatch(/rm -rf "\$napi\/darwin" "\$napi\/win32"/);
    expect(prune).toMatch(name === 'cpu' ? /! -name "\$arch"/ : /"\$napi\/linux\/arm64"/);
  });

  it('runs as a fixed non-root uid under tini, with a health check on /healthz', () => {
    const users = of(runtime, 'USER').map(args);
    expect(users).toEqual(['10001:10001']);
    expect(runs.some((r) => /useradd .*--uid 10001/.test(r))).toBe(true);
    expect(runs.some((r) => /apt-get install .*\btini\b/.test(r))).toBe(true);
    const [entrypoint] = of(runtime, 'ENTRYPOINT');
    expect(jsonArgs(entrypoint)).toEqual(['/usr/bin/tini', '--', 'node', '/app/bin/fgsn.js']);
    const [health] = of(runtime, 'HEALTHCHECK');
    // Each image probes its default role: the API for the CPU image, the worker's metrics port for CUDA.
    expect(args(health)).toBe(name === 'cpu' ? 'CMD ["node", "/app/docker/healthcheck.mjs"]' : 'CMD ["node", "/app/docker/healthcheck.mjs", "worker"]');
    if (name === 'cuda') expect(envOf(runtime).get('FGSN_WORKER_METRICS_PORT')).toBe('9091');
    expect(flags(health).get('timeout')).toBe('5s');
    expect(readFileSync(join(DOCKER_DIR, 'healthcheck.mjs'), 'utf8')).toContain('/healthz');
    expect(of(runtime, 'CMD').map(jsonArgs)).toEqual([[name === 'cpu' ? 'serve' : 'worker']]);
  });

  it('sets only service variables that src/config.ts reads, with the right execution provider', () => {
    const env = envOf(runtime);
    const service = [...env.keys()].filter((k) => k.startsWith('FGSN_') || k === 'REDIS_URL' || k === 'PORT');
    expect(service.filter((k) => !CONFIG_ENV_VARS.includes(k))).toEqual([]);
    expect(env.get('FGSN_EXECUTION_PROVIDER')).toBe(name === 'cpu' ? 'cpu' : 'cuda');
    expect(env.get('FGSN_DATA_DIR')).toBe('/data');
    expect(env.get('NODE_ENV')).toBe('production');
  });

  it('copies only files that exist and that .dockerignore lets into the build context', () => {
    const ignore = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const s of all) {
      for (const i of of(s, 'COPY')) {
        if (flags(i).has('from')) continue;
        for (const src of args(i).split(/\s+/).slice(0, -1)) {
          expect(existsSync(join(REPO_ROOT, src)), `${src} is missing from the repository`).toBe(true);
          const allowed = ignore.some((l) => l === `!${src}` || l === `!${src}/**` || (l.endsWith('/**') && src.startsWith(l.slice(1, -2))));
          expect(allowed, `${src} is not allowed by .dockerignore`).toBe(true);
        }
      }
    }
  });

  if (name === 'cuda') {
    it('runs on a CUDA 13 + cuDNN 9 runtime with the CUDA provider placed by gpu:setup from npm (no nuget)', () => {
      expect(runtime.image).toBe('${CUDA_IMAGE}');
      expect(initialArgs.get('CUDA_IMAGE')).toMatch(/^nvidia\/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.04$/);
      expect(text).not.toMatch(/ONNXRUNTIME_NODE_INSTALL=cuda|script\/install\.js/);
      const install = runs.find((r) => r.includes('node scripts/gpu-setup.mjs')) ?? '';
      expect(install).toMatch(/npm ci --omit=dev --ignore-scripts/);
      expect(install).toContain('test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so');
      expect(install).toContain('test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_shared.so');
      const deps = all.find((s) => of(s, 'RUN').some((i) => args(i).includes('gpu-setup')));
      expect(deps && envOf(deps).get('ONNXRUNTIME_NODE_INSTALL')).toBe('skip');
      const node = of(runtime, 'COPY').find((i) => flags(i).get('from') === 'node');
      expect(node && args(node)).toBe('/usr/local/bin/node /usr/local/bin/node');
      expect(all.find((s) => s.name === 'node')?.image).toBe(all[0].image);
    });
  }
});

describe('roles', () => {
  it('the roles the images, compose and the chart run are CLI commands', () => {
    // Dockerfile CMD, compose `command:` and the chart's `args:` all name one of these.
    expect(Object.keys(COMMANDS)).toEqual(expect.arrayContaining(['serve', 'worker']));
    expect(readFileSync(join(REPO_ROOT, 'bin', 'fgsn.js'), 'utf8')).toContain("join(root, 'dist', 'cli', 'main.js')");
  });
});

describe('docker/healthcheck.mjs against a real HTTP server', () => {
  let server: Server;
  let port = 0;
  let status = 200;
  beforeAll(async () => {
    server = createServer((req, res) => {
      res.statusCode = req.url === '/healthz' ? status : 404;
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  function probe(env: Record<string, string>, args: string[] = []): Promise<number | null> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [join(DOCKER_DIR, 'healthcheck.mjs'), ...args], {
        env: { PATH: process.env.PATH ?? '', ...env },
        stdio: 'ignore',
      });
      child.on('exit', (code) => resolve(code));
    });
  }

  it('exits 0 when /healthz answers 200 on FGSN_PORT', async () => {
    status = 200;
    expect(await probe({ FGSN_PORT: String(port) })).toBe(0);
  });

  it('falls back to PORT', async () => {
    status = 200;
    expect(await probe({ PORT: String(port) })).toBe(0);
  });

  it('exits 1 when /healthz answers 503', async () => {
    status = 503;
    expect(await probe({ FGSN_PORT: String(port) })).toBe(1);
  });

  it('worker role: exits 0 when /healthz answers 200 on FGSN_WORKER_METRICS_PORT, 1 on 503', async () => {
    status = 200;
    expect(await probe({ FGSN_WORKER_METRICS_PORT: String(port), FGSN_PORT: '1' }, ['worker'])).toBe(0);
    status = 503;
    expect(await probe({ FGSN_WORKER_METRICS_PORT: String(port) }, ['worker'])).toBe(1);
  });

  it('worker role: exits 1 without FGSN_WORKER_METRICS_PORT (or with 0), even if the API port answers', async () => {
    status = 200;
    expect(await probe({ FGSN_PORT: String(port) }, ['worker'])).toBe(1);
    expect(await probe({ FGSN_PORT: String(port), FGSN_WORKER_METRICS_PORT: '0' }, ['worker'])).toBe(1);
  });

  it('the default role ignores FGSN_WORKER_METRICS_PORT; an unknown role exits 1', async () => {
    status = 200;
    expect(await probe({ FGSN_PORT: String(port), FGSN_WORKER_METRICS_PORT: '1' })).toBe(0);
    expect(await probe({ FGSN_PORT: String(port) }, ['serve'])).toBe(0);
    expect(await probe({ FGSN_PORT: String(port), FGSN_WORKER_METRICS_PORT: String(port) }, ['api'])).toBe(1);
  });

  it('exits 1 when nothing listens', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const free = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    expect(await probe({ FGSN_PORT: String(free) })).toBe(1);
  });
});
