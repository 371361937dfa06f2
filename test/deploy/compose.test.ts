import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_ENV_VARS, loadConfig } from '../../src/config.js';
import { REPO_ROOT } from '../support/testbed.js';
import { readYaml } from './helm-render.js';
import { DOCKER_DIR } from './scenarios.js';

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  env_file?: { path: string; required: boolean }[];
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { disable?: boolean; test?: string[] };
  ports?: string[];
  profiles?: string[];
  read_only?: boolean;
  tmpfs?: string[];
}

const compose = readYaml(join(DOCKER_DIR, 'compose.yaml')) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const envExample = readFileSync(join(DOCKER_DIR, '.env.example'), 'utf8');

/** NAME=value lines of an env file; `# NAME=default` lines too when withComments (documented defaults). */
export function envFileEntries(text: string, withComments: boolean): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = (withComments ? /^#?\s*([A-Z][A-Z0-9_]*)=(.*)$/ : /^([A-Z][A-Z0-9_]*)=(.*)$/).exec(line.trim());
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

const fgsnServices = Object.entries(compose.services).filter(([name]) => name !== 'redis');

describe('docker/compose.yaml', () => {
  it('runs redis with append-only persistence and noeviction on a named volume', () => {
    const redis = compose.services.redis;
    const cmd = (redis.command ?? []).join(' ');
    expect(cmd).toContain('--appendonly yes');
    expect(cmd).toContain('--maxmemory-policy noeviction');
    expect(redis.volumes).toEqual(['redis-data:/data']);
    expect(compose.volumes).toHaveProperty('redis-data');
    expect(redis.healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
  });

  it('has an API (serve) and a worker (worker), plus an opt-in GPU worker', () => {
    expect(compose.services.api.command).toEqual(['serve']);
    expect(compose.services.api.ports).toEqual(['127.0.0.1:8080:8080']);
    expect(compose.services.worker.command).toEqual(['worker']);
    expect(compose.services['worker-gpu'].command).toEqual(['worker']);
    expect(compose.services['worker-gpu'].profiles).toEqual(['gpu']);
    expect(compose.services['worker-gpu'].build?.dockerfile).toBe('docker/Dockerfile.cuda');
    expect(compose.services['worker-gpu'].environment?.FGSN_EXECUTION_PROVIDER).toBe('cuda');
  });

  it.each(fgsnServices)('%s shares the artifacts volume at FGSN_DATA_DIR and waits for a healthy Redis', (_name, svc) => {
    expect(svc.volumes).toEqual(['artifacts:/data']);
    expect(svc.environment?.FGSN_DATA_DIR).toBe('/data');
    expect(compose.volumes).toHaveProperty('artifacts');
    expect(svc.depends_on).toEqual({ redis: { condition: 'service_healthy' } });
    expect(new URL(svc.environment?.REDIS_URL ?? '').hostname).toBe('redis');
    expect(svc.read_only).toBe(true);
    expect(svc.tmpfs).toEqual(['/tmp']);
  });

  it.each(fgsnServices)('%s builds from files that exist', (_name, svc) => {
    const context = join(DOCKER_DIR, svc.build?.context ?? '');
    expect(context).toBe(REPO_ROOT);
    expect(existsSync(join(context, svc.build?.dockerfile ?? 'missing'))).toBe(true);
    for (const f of svc.env_file ?? []) if (f.required) expect(existsSync(join(DOCKER_DIR, f.path))).toBe(true);
  });

  it('the API keeps the image health check; workers probe their own /healthz in the worker role', () => {
    expect(compose.services.api.healthcheck).toBeUndefined();
    for (const name of ['worker', 'worker-gpu']) {
      const svc = compose.services[name];
      // The image's HEALTHCHECK probes FGSN_PORT, where a worker listens to nothing: workers pass the role.
      expect(svc.healthcheck, name).toEqual({ test: ['CMD', 'node', '/app/docker/healthcheck.mjs', 'worker'] });
      expect(Number(svc.environment?.FGSN_WORKER_METRICS_PORT), `${name} FGSN_WORKER_METRICS_PORT`).toBe(9091);
    }
    expect(readFileSync(join(DOCKER_DIR, 'healthcheck.mjs'), 'utf8')).toContain('FGSN_WORKER_METRICS_PORT');
  });
});

describe('compose settings = the service configuration (src/config.ts)', () => {
  it('finds the variables of an env file, and would flag an unknown one', () => {
    const entries = envFileEntries('A_B=1\n# C=2\n#   not a var\nFGSN_TYPO=3\n', true);
    expect([...entries.keys()]).toEqual(['A_B', 'C', 'FGSN_TYPO']);
    expect([...entries.keys()].filter((k) => !CONFIG_ENV_VARS.includes(k))).toEqual(['A_B', 'C', 'FGSN_TYPO']);
  });

  it.each(fgsnServices)('%s sets only variables the service reads', (_name, svc) => {
    const unknown = Object.keys(svc.environment ?? {}).filter((k) => !CONFIG_ENV_VARS.includes(k));
    expect(unknown, 'compose.yaml sets variables that src/config.ts does not read').toEqual([]);
  });

  it('.env.example lists only variables the service reads, and every one of them', () => {
    const names = [...envFileEntries(envExample, true).keys()];
    expect(names.filter((k) => !CONFIG_ENV_VARS.includes(k)), 'unknown to src/config.ts').toEqual([]);
    expect(CONFIG_ENV_VARS.filter((k) => !names.includes(k)), 'missing from docker/.env.example').toEqual([]);
  });

  it('the documented defaults in .env.example are the service defaults', () => {
    const documented = envFileEntries(envExample, true);
    const active = envFileEntries(envExample, false);
    // Only the commented (default) lines with a value; a line like "# FGSN_S3_BUCKET=name" is an example.
    const examples = new Set(['FGSN_S3_ENDPOINT', 'FGSN_S3_BUCKET']);
    const env: Record<string, string> = {};
    for (const [k, v] of documented) if (!active.has(k) && v !== '' && !examples.has(k)) env[k] = v;
    const withDefaults = loadConfig(env);
    const builtIn = loadConfig({});
    expect({ ...withDefaults, apiKeys: null }).toEqual({ ...builtIn, apiKeys: null });
  });

  it.each(fgsnServices)('%s: the service configuration accepts the compose environment', (name, svc) => {
    const env = { ...Object.fromEntries(envFileEntries(envExample, false)), ...svc.environment };
    const cfg = loadConfig(env);
    expect(cfg.dataDir).toBe('/data');
    expect(cfg.redisUrl).toBe('redis://redis:6379');
    expect(cfg.storage.kind).toBe('fs');
    expect(cfg.apiKeys.size).toBeGreaterThan(0);
    if (name === 'api') expect([cfg.host, cfg.port]).toEqual(['0.0.0.0', 8080]);
    // Workers serve /healthz and /metrics where their health check looks; the API serves its own port only.
    expect(cfg.worker.metricsPort).toBe(name === 'api' ? undefined : 9091);
    expect(cfg.webhook.allowPrivate).toBe(false);
  });
});
