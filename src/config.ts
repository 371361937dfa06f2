/**
 * Service configuration from the environment, validated once at start. Every variable the service reads is
 * listed in CONFIG_ENV_VARS (docker compose / helm are checked against it), and a bad variable is reported
 * by name with what was expected, all of them at once.
 */
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { FgsnError } from './errors.js';
import { sha256Text } from './util/index.js';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const positiveInt = z.coerce.number().int().positive();
const nonNegativeInt = z.coerce.number().int().nonnegative();

const list = (v: string): string[] =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);

/** Plaintext keys shorter than this are refused at start: a short key is a guessable key. */
export const MIN_API_KEY_LENGTH = 16;
const TENANT = /^[A-Za-z0-9_.-]{1,64}$/;

function keyProblem(key: string): string | undefined {
  if (/^sha256=[0-9a-fA-F]{64}$/.test(key)) return undefined;
  if (key.startsWith('sha256=')) return 'a sha256= key must be 64 hex digits';
  if (key.length < MIN_API_KEY_LENGTH) return `keys must be at least ${MIN_API_KEY_LENGTH} characters`;
  return undefined;
}

/** `key:tenant` or `sha256=<hex>:tenant`, so operators can keep plaintext keys out of the environment. */
const apiKeyList = z.string().transform((v, ctx) => {
  const out: { keyHash: string; tenant: string }[] = [];
  const tenantOf = new Map<string, string>();
  for (const entry of list(v)) {
    const sep = entry.lastIndexOf(':');
    const key = sep > 0 ? entry.slice(0, sep) : '';
    const tenant = sep > 0 ? entry.slice(sep + 1) : '';
    if (key.length === 0 || !TENANT.test(tenant)) {
      ctx.addIssue({ code: 'custom', message: `entry "${redact(entry)}" must be key:tenant (tenant: letters, digits, _ . -)` });
      continue;
    }
    const problem = keyProblem(key);
    if (problem !== undefined) {
      ctx.addIssue({ code: 'custom', message: `entry "${redact(entry)}": ${problem}` });
      continue;
    }
    const keyHash = hashKeySpec(key);
    const other = tenantOf.get(keyHash);
    if (other !== undefined && other !== tenant) {
      ctx.addIssue({ code: 'custom', message: `one key is listed for two tenants (${other} and ${tenant}); a key belongs to one tenant` });
      continue;
    }
    tenantOf.set(keyHash, tenant);
    out.push({ keyHash, tenant });
  }
  return out;
});

/** Admin keys: `key` (a key already in FGSN_API_KEYS gets the admin scope) or `key:tenant`. */
const adminKeyList = z.string().transform((v, ctx) =>
  list(v).flatMap((entry) => {
    const sep = entry.lastIndexOf(':');
    const key = sep > 0 ? entry.slice(0, sep) : entry;
    const tenant = sep > 0 ? entry.slice(sep + 1) : undefined;
    // '*' is how built-in resources are owned: no key may act as that tenant.
    if (tenant !== undefined && !TENANT.test(tenant)) {
      ctx.addIssue({ code: 'custom', message: `entry "${redact(entry)}": the tenant must be letters, digits, _ . - (not "*")` });
      return [];
    }
    const problem = keyProblem(key);
    if (problem !== undefined) {
      ctx.addIssue({ code: 'custom', message: `entry "${redact(entry)}": ${problem}` });
      return [];
    }
    return [{ keyHash: hashKeySpec(key), tenant }];
  }),
);

const absoluteDirList = z.string().transform((v, ctx) => {
  const dirs = list(v);
  for (const d of dirs) {
    if (!isAbsolute(d)) ctx.addIssue({ code: 'custom', message: `"${d}" must be an absolute path` });
  }
  return dirs.map((d) => resolve(d));
});

export function hashApiKey(key: string): string {
  return sha256Text(key);
}

function hashKeySpec(key: string): string {
  const m = /^sha256=([0-9a-fA-F]{64})$/.exec(key);
  return m ? m[1].toLowerCase() : hashApiKey(key);
}

function redact(entry: string): string {
  const sep = entry.lastIndexOf(':');
  return sep > 0 ? `***${entry.slice(sep)}` : '***';
}

/** The raw environment schema: one field per variable, each optional with a documented default. */
export const ConfigEnvSchema = z.object({
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  FGSN_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  PORT: z.coerce.number().int().min(0).max(65535).optional(),
  FGSN_HOST: z.string().min(1).default('0.0.0.0'),
  FGSN_DATA_DIR: z.string().min(1).default('.fgsn/data'),
  FGSN_API_KEYS: apiKeyList.default([]),
  FGSN_ADMIN_KEYS: adminKeyList.default([]),
  FGSN_ALLOWED_MODEL_DIRS: absoluteDirList.default([]),
  FGSN_EXECUTION_PROVIDER: z.enum(['cpu', 'cuda']).default('cpu'),
  FGSN_COMPUTE_DTYPE: z.enum(['float32', 'float16']).default('float32'),
  FGSN_STORAGE: z.enum(['fs', 's3']).default('fs'),
  FGSN_S3_ENDPOINT: z.string().url().optional(),
  FGSN_S3_BUCKET: z.string().min(3).optional(),
  FGSN_S3_REGION: z.string().min(1).default('us-east-1'),
  FGSN_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  FGSN_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  FGSN_S3_FORCE_PATH_STYLE: bool.default(false),
  FGSN_S3_PREFIX: z.string().default(''),
  FGSN_QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9_.:-]+$/).default('fgsn'),
  FGSN_WORKER_CONCURRENCY: positiveInt.default(1),
  FGSN_WORKER_MAX_MEMORY_MB: positiveInt.optional(),
  FGSN_WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  FGSN_WORKER_LOCK_DURATION_MS: positiveInt.default(30_000),
  FGSN_WORKER_STALLED_INTERVAL_MS: positiveInt.default(30_000),
  FGSN_JOB_ATTEMPTS: positiveInt.default(3),
  FGSN_JOB_BACKOFF_MS: positiveInt.default(5_000),
  FGSN_UPLOAD_MAX_BYTES: positiveInt.default(64 * 1024 ** 3),
  FGSN_PROBE_SET_MAX_BYTES: positiveInt.default(16 * 1024 ** 2),
  FGSN_RATE_LIMIT: nonNegativeInt.default(600),
  FGSN_RATE_LIMIT_WINDOW_S: positiveInt.default(60),
  FGSN_MIN_FREE_DISK_MB: nonNegativeInt.default(1024),
  FGSN_WEBHOOK_ATTEMPTS: positiveInt.default(5),
  FGSN_WEBHOOK_BACKOFF_MS: positiveInt.default(2_000),
  FGSN_WEBHOOK_TIMEOUT_MS: positiveInt.default(10_000),
  FGSN_WEBHOOK_ALLOW_PRIVATE: bool.default(false),
  FGSN_SHUTDOWN_TIMEOUT_S: positiveInt.default(30),
  FGSN_VALIDATION_TIMEOUT_S: positiveInt.default(600),
  FGSN_VALIDATION_MAX_MEMORY_MB: positiveInt.default(2048),
  FGSN_JOB_RETENTION_S: positiveInt.default(7 * 24 * 3600),
  FGSN_UPLOAD_TTL_S: positiveInt.default(24 * 3600),
  FGSN_QUOTA_BYTES: nonNegativeInt.default(0),
  FGSN_QUOTA_CHECKPOINTS: nonNegativeInt.default(0),
  FGSN_QUOTA_CONCURRENT_JOBS: nonNegativeInt.default(0),
  FGSN_QUOTA_PROBE_SETS: nonNegativeInt.default(0),
  FGSN_AUTH_FAILURE_LIMIT: nonNegativeInt.default(30),
  FGSN_REDIS_COMMAND_TIMEOUT_MS: positiveInt.default(1000),
  FGSN_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // Bound of the engine + atlas cache (<data dir>/cache), least recently used entries evicted. Unset: 20 GiB
  // or a quarter of the cache's filesystem, whichever is smaller (src/engine/session/cache-lifecycle.ts).
  FGSN_CACHE_MAX_BYTES: positiveInt.optional(),
});

/** Every environment variable the service reads; deployment manifests may set only these. */
export const CONFIG_ENV_VARS: string[] = Object.keys(ConfigEnvSchema.shape);

export interface ApiKey {
  keyHash: string;
  tenant: string;
  admin: boolean;
}

export interface S3Config {
  endpoint?: string;
  bucket: string;
  region: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  forcePathStyle: boolean;
  prefix: string;
}

export interface Config {
  redisUrl: string;
  port: number;
  host: string;
  dataDir: string;
  /** Keys by sha256 of the key: plaintext keys are never kept. */
  apiKeys: Map<string, ApiKey>;
  allowedModelDirs: string[];
  executionProvider: 'cpu' | 'cuda';
  /** Forward-pass compute type of the engine (processors read FGSN_COMPUTE_DTYPE from the inherited environment). */
  computeDtype: 'float32' | 'float16';
  storage: { kind: 'fs' } | { kind: 's3'; s3: S3Config };
  queuePrefix: string;
  worker: {
    concurrency: number;
    maxMemoryMb?: number;
    /** `fgsn worker` serves /metrics and /healthz here when set (stage durations of its jobs). */
    metricsPort?: number;
    lockDurationMs: number;
    stalledIntervalMs: number;
    attempts: number;
    backoffMs: number;
  };
  uploadMaxBytes: number;
  probeSetMaxBytes: number;
  rateLimit: { max: number; windowS: number };
  minFreeDiskMb: number;
  /** Engine + atlas cache bound in bytes; undefined: the default of cache-lifecycle.ts (20 GiB or 1/4 of the disk). */
  cacheMaxBytes?: number;
  /** allowPrivate: webhooks may go to loopback/private addresses (off by default: tenants pick the URLs). */
  webhook: { attempts: number; backoffMs: number; timeoutMs: number; allowPrivate: boolean };
  shutdownTimeoutS: number;
  /** Upload validation runs in a child process with these limits (the checkpoint lease outlives the time limit). */
  validation: { timeoutS: number; maxMemoryMb: number };
  /** Finished jobs (queue entries and job records) are kept this long; artifacts in the store are not removed with them. */
  jobRetentionS: number;
  /** Uploads not completed within this time are removed by the sweeper. */
  uploadTtlS: number;
  /** Per-tenant quotas; 0 = unlimited. */
  quotas: { bytes: number; checkpoints: number; concurrentJobs: number; probeSets: number };
  /** Failed authentications per client address and rate-limit window before 429 (0 = no limit). */
  authFailureLimit: number;
  /** The API's Redis commands fail (503) after this long instead of waiting for a reconnect. */
  redisCommandTimeoutMs: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

/** Reads and validates the environment; throws CONFIG_INVALID naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, string> = {};
  for (const name of CONFIG_ENV_VARS) {
    const v = env[name];
    if (v !== undefined && v !== '') raw[name] = v;
  }
  const parsed = ConfigEnvSchema.safeParse(raw);
  const problems: { variable: string; message: string }[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      problems.push({ variable: String(issue.path[0] ?? '?'), message: issue.message });
    }
  }
  if (raw.FGSN_STORAGE === 's3' && raw.FGSN_S3_BUCKET === undefined) {
    problems.push({ variable: 'FGSN_S3_BUCKET', message: 'required when FGSN_STORAGE=s3' });
  }
  if (raw.FGSN_COMPUTE_DTYPE === 'float16' && (raw.FGSN_EXECUTION_PROVIDER ?? 'cpu') === 'cpu') {
    // Measured (bench/engine/throughput.ts --compute-dtype both, 350M bf16): the CPU provider has few half
    // kernels and casts around the rest, so it ran no faster (prefill 0.96x, decode 0.93x) and peaked at 2.9x
    // the checkpoint instead of 2.1x.
    problems.push({ variable: 'FGSN_COMPUTE_DTYPE', message: 'float16 is for FGSN_EXECUTION_PROVIDER=cuda; on cpu it is no faster than float32 and takes more memory' });
  }
  if ((raw.FGSN_S3_ACCESS_KEY_ID === undefined) !== (raw.FGSN_S3_SECRET_ACCESS_KEY === undefined)) {
    problems.push({ variable: 'FGSN_S3_SECRET_ACCESS_KEY', message: 'FGSN_S3_ACCESS_KEY_ID and FGSN_S3_SECRET_ACCESS_KEY go together' });
  }
  if (problems.length > 0 || !parsed.success) {
    const text = problems.map((p) => `${p.variable}: ${p.message}`).join('; ');
    throw new FgsnError('CONFIG_INVALID', `invalid configuration: ${text}`, { details: { problems } });
  }
  const d = parsed.data;
  const apiKeys = new Map<string, ApiKey>();
  for (const k of d.FGSN_API_KEYS) apiKeys.set(k.keyHash, { keyHash: k.keyHash, tenant: k.tenant, admin: false });
  const adminProblems: string[] = [];
  for (const k of d.FGSN_ADMIN_KEYS) {
    const known = apiKeys.get(k.keyHash);
    if (known && k.tenant !== undefined && k.tenant !== known.tenant) adminProblems.push(`one key is listed for two tenants (${known.tenant} and ${k.tenant})`);
    else if (known) known.admin = true;
    else if (k.tenant !== undefined) apiKeys.set(k.keyHash, { keyHash: k.keyHash, tenant: k.tenant, admin: true });
    else adminProblems.push('an admin key without ":tenant" must also be listed in FGSN_API_KEYS');
  }
  if (adminProblems.length > 0) {
    throw new FgsnError('CONFIG_INVALID', `invalid configuration: FGSN_ADMIN_KEYS: ${adminProblems[0]}`, {
      details: { problems: adminProblems.map((message) => ({ variable: 'FGSN_ADMIN_KEYS', message })) },
    });
  }
  return {
    redisUrl: d.REDIS_URL,
    port: d.FGSN_PORT ?? d.PORT ?? 8080,
    host: d.FGSN_HOST,
    dataDir: resolve(d.FGSN_DATA_DIR),
    apiKeys,
    allowedModelDirs: d.FGSN_ALLOWED_MODEL_DIRS,
    executionProvider: d.FGSN_EXECUTION_PROVIDER,
    computeDtype: d.FGSN_COMPUTE_DTYPE,
    storage:
      d.FGSN_STORAGE === 's3'
        ? {
            kind: 's3',
            s3: {
              endpoint: d.FGSN_S3_ENDPOINT,
              bucket: d.FGSN_S3_BUCKET as string,
              region: d.FGSN_S3_REGION,
              accessKeyId: d.FGSN_S3_ACCESS_KEY_ID,
              secretAccessKey: d.FGSN_S3_SECRET_ACCESS_KEY,
              forcePathStyle: d.FGSN_S3_FORCE_PATH_STYLE,
              prefix: d.FGSN_S3_PREFIX,
            },
          }
        : { kind: 'fs' },
    queuePrefix: d.FGSN_QUEUE_PREFIX,
    worker: {
      concurrency: d.FGSN_WORKER_CONCURRENCY,
      maxMemoryMb: d.FGSN_WORKER_MAX_MEMORY_MB,
      metricsPort: d.FGSN_WORKER_METRICS_PORT,
      lockDurationMs: d.FGSN_WORKER_LOCK_DURATION_MS,
      stalledIntervalMs: d.FGSN_WORKER_STALLED_INTERVAL_MS,
      attempts: d.FGSN_JOB_ATTEMPTS,
      backoffMs: d.FGSN_JOB_BACKOFF_MS,
    },
    uploadMaxBytes: d.FGSN_UPLOAD_MAX_BYTES,
    probeSetMaxBytes: d.FGSN_PROBE_SET_MAX_BYTES,
    rateLimit: { max: d.FGSN_RATE_LIMIT, windowS: d.FGSN_RATE_LIMIT_WINDOW_S },
    minFreeDiskMb: d.FGSN_MIN_FREE_DISK_MB,
    cacheMaxBytes: d.FGSN_CACHE_MAX_BYTES,
    webhook: {
      attempts: d.FGSN_WEBHOOK_ATTEMPTS,
      backoffMs: d.FGSN_WEBHOOK_BACKOFF_MS,
      timeoutMs: d.FGSN_WEBHOOK_TIMEOUT_MS,
      allowPrivate: d.FGSN_WEBHOOK_ALLOW_PRIVATE,
    },
    shutdownTimeoutS: d.FGSN_SHUTDOWN_TIMEOUT_S,
    validation: { timeoutS: d.FGSN_VALIDATION_TIMEOUT_S, maxMemoryMb: d.FGSN_VALIDATION_MAX_MEMORY_MB },
    jobRetentionS: d.FGSN_JOB_RETENTION_S,
    uploadTtlS: d.FGSN_UPLOAD_TTL_S,
    quotas: { bytes: d.FGSN_QUOTA_BYTES, checkpoints: d.FGSN_QUOTA_CHECKPOINTS, concurrentJobs: d.FGSN_QUOTA_CONCURRENT_JOBS, probeSets: d.FGSN_QUOTA_PROBE_SETS },
    authFailureLimit: d.FGSN_AUTH_FAILURE_LIMIT,
    redisCommandTimeoutMs: d.FGSN_REDIS_COMMAND_TIMEOUT_MS,
    logLevel: d.FGSN_LOG_LEVEL,
  };
}

/**
 * FGSN_CACHE_MAX_BYTES alone, parsed by the same schema field: the engine reads it in every process that
 * builds cache entries (CLI, sandboxed job processors), where the rest of the service config may be absent.
 */
export function cacheMaxBytesFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env.FGSN_CACHE_MAX_BYTES;
  if (raw === undefined || raw === '') return undefined;
  const r = ConfigEnvSchema.shape.FGSN_CACHE_MAX_BYTES.safeParse(raw);
  if (!r.success) {
    throw new FgsnError('CONFIG_INVALID', `invalid configuration: FGSN_CACHE_MAX_BYTES: must be a positive integer (bytes), got "${raw}"`, {
      details: { problems: [{ variable: 'FGSN_CACHE_MAX_BYTES', message: 'must be a positive integer (bytes)' }] },
    });
  }
  return r.data;
}
