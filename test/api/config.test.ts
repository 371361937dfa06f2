import { describe, expect, it } from 'vitest';
import { CONFIG_ENV_VARS, ConfigEnvSchema, hashApiKey, loadConfig } from '../../src/config.js';

describe('config from the environment', () => {
  it('has defaults for a single-machine start', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 8080, host: '0.0.0.0', executionProvider: 'cpu', storage: { kind: 'fs' }, queuePrefix: 'fgsn' });
    expect(c.worker.concurrency).toBe(1);
    expect(c.apiKeys.size).toBe(0);
  });

  it('lists every variable it reads', () => {
    expect(CONFIG_ENV_VARS).toEqual(Object.keys(ConfigEnvSchema.shape));
    for (const v of ['REDIS_URL', 'FGSN_PORT', 'PORT', 'FGSN_DATA_DIR', 'FGSN_API_KEYS', 'FGSN_ADMIN_KEYS', 'FGSN_ALLOWED_MODEL_DIRS', 'FGSN_EXECUTION_PROVIDER', 'FGSN_STORAGE', 'FGSN_S3_ENDPOINT', 'FGSN_S3_BUCKET', 'FGSN_S3_ACCESS_KEY_ID', 'FGSN_S3_SECRET_ACCESS_KEY', 'FGSN_WORKER_CONCURRENCY']) {
      expect(CONFIG_ENV_VARS).toContain(v);
    }
  });

  it('keeps only hashes of API keys and maps them to tenants and scopes', () => {
    const c = loadConfig({ FGSN_API_KEYS: `alpha-key-0123456:t1,sha256=${hashApiKey('beta')}:t2`, FGSN_ADMIN_KEYS: 'alpha-key-0123456,gamma-key-0123456:ops' });
    expect(c.apiKeys.get(hashApiKey('alpha-key-0123456'))).toMatchObject({ tenant: 't1', admin: true });
    expect(c.apiKeys.get(hashApiKey('beta'))).toMatchObject({ tenant: 't2', admin: false });
    expect(c.apiKeys.get(hashApiKey('gamma-key-0123456'))).toMatchObject({ tenant: 'ops', admin: true });
    expect(JSON.stringify([...c.apiKeys.values()])).not.toMatch(/alpha|beta|gamma/);
  });

  it('FGSN_PORT wins over PORT', () => {
    expect(loadConfig({ PORT: '9000' }).port).toBe(9000);
    expect(loadConfig({ PORT: '9000', FGSN_PORT: '9100' }).port).toBe(9100);
  });

  it('names every bad variable at once', () => {
    let err: unknown;
    try {
      loadConfig({ FGSN_PORT: 'eighty', FGSN_STORAGE: 's3', FGSN_EXECUTION_PROVIDER: 'tpu', FGSN_ALLOWED_MODEL_DIRS: 'relative/dir', FGSN_API_KEYS: 'no-tenant', FGSN_WORKER_CONCURRENCY: '0' });
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'CONFIG_INVALID' });
    const vars = (err as { details: { problems: { variable: string }[] } }).details.problems.map((p) => p.variable);
    expect(vars).toEqual(expect.arrayContaining(['FGSN_PORT', 'FGSN_S3_BUCKET', 'FGSN_EXECUTION_PROVIDER', 'FGSN_ALLOWED_MODEL_DIRS', 'FGSN_API_KEYS', 'FGSN_WORKER_CONCURRENCY']));
    expect((err as Error).message).not.toContain('no-tenant');
  });

  it('takes float16 compute only with the cuda provider', () => {
    expect(loadConfig({}).computeDtype).toBe('float32');
    expect(loadConfig({ FGSN_EXECUTION_PROVIDER: 'cuda', FGSN_COMPUTE_DTYPE: 'float16' }).computeDtype).toBe('float16');
    expect(() => loadConfig({ FGSN_COMPUTE_DTYPE: 'float16' })).toThrow(/FGSN_COMPUTE_DTYPE: float16 is for FGSN_EXECUTION_PROVIDER=cuda; on cpu it is no faster/);
    expect(() => loadConfig({ FGSN_EXECUTION_PROVIDER: 'cuda', FGSN_COMPUTE_DTYPE: 'half' })).toThrow(/FGSN_COMPUTE_DTYPE/);
  });

  it('builds the S3 settings', () => {
    const c = loadConfig({ FGSN_STORAGE: 's3', FGSN_S3_BUCKET: 'bkt', FGSN_S3_ENDPOINT: 'http://127.0.0.1:9000', FGSN_S3_FORCE_PATH_STYLE: 'true', FGSN_S3_ACCESS_KEY_ID: 'a', FGSN_S3_SECRET_ACCESS_KEY: 'b' });
    expect(c.storage).toEqual({ kind: 's3', s3: { bucket: 'bkt', endpoint: 'http://127.0.0.1:9000', forcePathStyle: true, region: 'us-east-1', accessKeyId: 'a', secretAccessKey: 'b', prefix: '' } });
  });
});
