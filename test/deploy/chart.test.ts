import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { CONFIG_ENV_VARS, loadConfig } from '../../src/config.js';
import { deepMerge, manifestObjects, readYaml, renderChart, templateFiles } from './helm-render.js';
import { CHART_DIR, SCENARIOS } from './scenarios.js';

type Obj = Record<string, unknown>;
type Container = {
  name: string;
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } } }[];
  envFrom?: { configMapRef?: { name: string } }[];
  resources?: { requests?: Obj; limits?: Obj };
  securityContext?: Obj;
  volumeMounts?: { name: string; mountPath: string }[];
  livenessProbe?: { httpGet?: { path: string; port: string } } & Obj;
  readinessProbe?: { httpGet?: { path: string; port: string } } & Obj;
  ports?: { name: string; containerPort: number; protocol?: string }[];
};
type PodSpec = {
  containers: Container[];
  securityContext: Obj;
  volumes: Obj[];
  nodeSelector?: Obj;
  tolerations?: Obj[];
  terminationGracePeriodSeconds: number;
};

const values = readYaml(join(CHART_DIR, 'values.yaml')) as Obj;
const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as Obj;
const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
const validate = ajv.compile(schema);

function errorsOf(v: unknown): string {
  return validate(v) ? '' : ajv.errorsText(validate.errors);
}

/** `.Values.a.b` paths referenced by a template text ($.Values too). */
export function valuesRefs(text: string): string[][] {
  return [...text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)].map((m) => m[1].slice(1).split('.'));
}

function has(obj: unknown, path: string[]): boolean {
  let v = obj;
  for (const k of path) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !(k in v)) return false;
    v = (v as Obj)[k];
  }
  return true;
}

/** Leaf settings of values.yaml: scalars, lists, and free-form maps (empty in the defaults). */
function leaves(obj: Obj, prefix: string[] = []): string[][] {
  const out: string[][] = [];
  for (const [k, v] of Object.entries(obj)) {
    const p = [...prefix, k];
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length > 0) out.push(...leaves(v as Obj, p));
    else out.push(p);
  }
  return out;
}

const templateTexts = templateFiles(CHART_DIR).map((f) => [f, readFileSync(join(CHART_DIR, 'templates', f), 'utf8')] as const);

function kinds(objs: Obj[]): Map<string, Obj> {
  const m = new Map<string, Obj>();
  for (const o of objs) m.set(`${o.kind}/${(o.metadata as Obj).name}`, o);
  return m;
}

function podSpec(o: Obj | undefined): PodSpec {
  if (!o) throw new Error('deployment not rendered');
  return ((o.spec as Obj).template as Obj).spec as PodSpec;
}

describe('values.yaml and values.schema.json', () => {
  it('values.yaml is valid against the schema', () => {
    expect(errorsOf(values)).toBe('');
  });

  it.each(Object.entries(SCENARIOS))('scenario %s is valid against the schema', (_name, over) => {
    expect(errorsOf(deepMerge(values, over))).toBe('');
  });

  it.each<[string, Obj, string]>([
    ['an unknown key', { api: { replica: 3 } }, 'must NOT have additional properties'],
    ['an unknown storage type', { storage: { type: 'gcs' } }, 'must be equal to one of the allowed values'],
    ['zero worker concurrency', { worker: { concurrency: 0 } }, 'must be >= 1'],
    ['an unknown execution provider', { worker: { executionProvider: 'rocm' } }, 'must be equal to one of the allowed values'],
    ['a number as a string', { config: { uploadMaxBytes: '64G' } }, 'must be integer'],
    ['a writable root filesystem', { securityContext: { readOnlyRootFilesystem: false } }, 'must be equal to constant'],
    ['running as root', { podSecurityContext: { runAsNonRoot: false } }, 'must be equal to constant'],
    ['an API key without tenant', { auth: { apiKeys: [{ key: 'k' }] } }, "must have required property 'tenant'"],
    ['a non-Redis URL', { redis: { url: 'http://redis:6379' } }, 'must match pattern'],
    ['a relative model dir', { config: { allowedModelDirs: ['models'] } }, 'must match pattern'],
    ['a bad quantity', { tmp: { sizeLimit: 'two gigs' } }, 'must match pattern'],
    ['a worker metrics port of 0 (a random port cannot be probed)', { worker: { metricsPort: 0 } }, 'must be >= 1'],
    ['a worker metrics port above 65535', { worker: { metricsPort: 70000 } }, 'must be <= 65535'],
    ['a worker probe without a period', { worker: { readinessProbe: { periodSeconds: 0 } } }, 'must be >= 1'],
    ['webhookAllowPrivate as a string', { config: { webhookAllowPrivate: 'yes' } }, 'must be boolean'],
  ])('rejects %s', (_what, over, message) => {
    expect(errorsOf(deepMerge(values, over))).toContain(message);
  });

  it('every leaf of values.yaml is typed by the schema, or sits in a pass-through Kubernetes object', () => {
    const resolve = (s: Obj): Obj => (s.$ref ? ((schema.definitions as Obj)[(s.$ref as string).split('/').pop() as string] as Obj) : s);
    const untyped: string[] = [];
    for (const path of leaves(values)) {
      let s = resolve(schema);
      let typed = true;
      for (const k of path) {
        const next = ((s.properties ?? {}) as Obj)[k] as Obj | undefined;
        if (!next) {
          // Typed maps (annotations, resource lists) and Kubernetes pass-through objects (securityContext).
          typed = s.additionalProperties !== false && s.type === 'object';
          break;
        }
        s = resolve(next);
      }
      if (!typed || (s.type === undefined && s.const === undefined)) untyped.push(path.join('.'));
    }
    expect(untyped).toEqual([]);
  });
});

describe('templates reference only values that exist', () => {
  it('finds .Values paths and flags a missing one (the check can fail)', () => {
    const refs = valuesRefs('{{ .Values.api.port }} {{ $.Values.worker.nope | quote }}');
    expect(refs).toEqual([
      ['api', 'port'],
      ['worker', 'nope'],
    ]);
    expect(has(values, refs[0])).toBe(true);
    expect(has(values, refs[1])).toBe(false);
  });

  it.each(templateFiles(CHART_DIR))('%s: every .Values.x.y exists in values.yaml', (file) => {
    const text = readFileSync(join(CHART_DIR, 'templates', file), 'utf8');
    const missing = valuesRefs(text).filter((p) => !has(values, p));
    expect(missing.map((p) => p.join('.'))).toEqual([]);
  });

  it('every setting in values.yaml is used by some template (no dead values)', () => {
    const refs = templateTexts.flatMap(([, t]) => valuesRefs(t).map((p) => p.join('.')));
    const unused = leaves(values)
      .map((p) => p.join('.'))
      .filter((leaf) => !refs.some((r) => leaf === r || leaf.startsWith(`${r}.`) || r.startsWith(`${leaf}.`)));
    expect(unused).toEqual([]);
  });
});

describe('rendered chart', () => {
  // Rendered per scenario on first use, so a template error fails the tests that need it, each with its message.
  const cache = new Map<string, { r: ReturnType<typeof renderChart>; objs: Map<string, Obj> }>();
  const rendered = new Proxy({} as Record<string, { r: ReturnType<typeof renderChart>; objs: Map<string, Obj> }>, {
    get(_t, name: string) {
      if (!cache.has(name)) {
        const r = renderChart(CHART_DIR, { values: SCENARIOS[name] });
        cache.set(name, { r, objs: kinds(manifestObjects(r)) });
      }
      return cache.get(name);
    },
  });

  it('renders the expected objects for the default values', () => {
    expect([...rendered.defaults.objs.keys()].sort()).toEqual(
      [
        'ConfigMap/fgsn',
        'Deployment/fgsn-api',
        'Deployment/fgsn-worker',
        'HorizontalPodAutoscaler/fgsn-api',
        'PersistentVolumeClaim/fgsn-data',
        'PodDisruptionBudget/fgsn-api',
        'PodDisruptionBudget/fgsn-worker',
        'Secret/fgsn',
        'Service/fgsn-api',
        'ServiceAccount/fgsn',
      ].sort(),
    );
  });

  it.each(Object.keys(SCENARIOS))('%s: pods are non-root, read-only, with /tmp and /data volumes', (name) => {
    const { objs } = rendered[name];
    for (const id of ['Deployment/fgsn-api', 'Deployment/fgsn-worker']) {
      const spec = podSpec(objs.get(id));
      expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
      const c = spec.containers[0];
      expect(c.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });
      expect(c.volumeMounts).toEqual(
        expect.arrayContaining([
          { name: 'tmp', mountPath: '/tmp' },
          { name: 'data', mountPath: '/data' },
        ]),
      );
      const tmp = spec.volumes.find((v) => v.name === 'tmp') as Obj;
      expect(tmp.emptyDir).toEqual({ sizeLimit: '2Gi' });
      expect(c.resources?.requests).toBeTypeOf('object');
      expect(c.resources?.limits).toBeTypeOf('object');
      // Pods outlive the service's own drain timeout (FGSN_SHUTDOWN_TIMEOUT_S = 30).
      expect(spec.terminationGracePeriodSeconds).toBeGreaterThan(30);
    }
  });

  it('the API has /healthz liveness and /readyz readiness probes on its port', () => {
    const c = podSpec(rendered.defaults.objs.get('Deployment/fgsn-api')).containers[0];
    expect(c.args).toEqual(['serve']);
    expect(c.ports).toEqual([{ name: 'http', containerPort: 8080, protocol: 'TCP' }]);
    expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http' });
  });

  it.each(Object.keys(SCENARIOS))('%s: workers have /healthz liveness and readiness probes on their metrics port', (name) => {
    const c = podSpec(rendered[name].objs.get('Deployment/fgsn-worker')).containers[0];
    const worker = (deepMerge(values, SCENARIOS[name]) as { worker: { livenessProbe: Obj; readinessProbe: Obj } }).worker;
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: 9091, protocol: 'TCP' }]);
    expect(c.livenessProbe).toEqual({ httpGet: { path: '/healthz', port: 'metrics' }, ...worker.livenessProbe });
    expect(c.readinessProbe).toEqual({ httpGet: { path: '/healthz', port: 'metrics' }, ...worker.readinessProbe });
    // The port the worker is told to serve on is the one probed.
    expect(c.env?.find((e) => e.name === 'FGSN_WORKER_METRICS_PORT')?.value).toBe('9091');
  });

  it('worker.metricsPort moves the container port and the served port together', () => {
    const r = renderChart(CHART_DIR, { values: deepMerge(SCENARIOS.defaults, { worker: { metricsPort: 9400 } }) as Obj });
    const c = podSpec(kinds(manifestObjects(r)).get('Deployment/fgsn-worker')).containers[0];
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: 9400, protocol: 'TCP' }]);
    expect(c.env?.find((e) => e.name === 'FGSN_WORKER_METRICS_PORT')?.value).toBe('9400');
    expect(r.notes).toContain('port-forward deploy/fgsn-worker 9400');
  });

  it('the Service and the Ingress reach the API pods', () => {
    const { objs } = rendered.s3Keda;
    const svc = objs.get('Service/fgsn-api') as Obj;
    const podLabels = (((objs.get('Deployment/fgsn-api') as Obj).spec as Obj).template as Obj).metadata as Obj;
    expect(podLabels.labels).toMatchObject((svc.spec as Obj).selector as Obj);
    const ing = objs.get('Ingress/fgsn-api') as Obj;
    const backend = JSON.stringify(ing.spec);
    expect(backend).toContain('"name":"fgsn-api"');
    expect(backend).toContain('"number":80');
  });

  it('GPU workers request and limit nvidia.com/gpu and tolerate GPU taints; CPU workers do not', () => {
    const gpu = podSpec(rendered.defaults.objs.get('Deployment/fgsn-worker'));
    const c = gpu.containers[0];
    expect(c.args).toEqual(['worker']);
    expect(c.resources?.requests?.['nvidia.com/gpu']).toBe(1);
    expect(c.resources?.limits?.['nvidia.com/gpu']).toBe(1);
    expect(c.env?.find((e) => e.name === 'FGSN_EXECUTION_PROVIDER')?.value).toBe('cuda');
    expect(gpu.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    expect(podSpec(rendered.s3Keda.objs.get('Deployment/fgsn-worker')).nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });

    const cpu = podSpec(rendered.cpuOnly.objs.get('Deployment/fgsn-worker')).containers[0];
    expect(JSON.stringify(cpu.resources)).not.toContain('nvidia.com/gpu');
    expect(cpu.env?.find((e) => e.name === 'FGSN_EXECUTION_PROVIDER')?.value).toBe('cpu');
  });

  it('KEDA scales workers on <queuePrefix>:harden:wait and then owns the replica count', () => {
    const so = rendered.s3Keda.objs.get('ScaledObject/fgsn-worker') as Obj;
    const spec = so.spec as { scaleTargetRef: Obj; triggers: { type: string; metadata: Obj; authenticationRef: Obj }[] };
    expect(spec.scaleTargetRef.name).toBe('fgsn-worker');
    expect(spec.triggers[0]).toMatchObject({
      type: 'redis',
      metadata: { address: 'redis.example:6379', listName: 'fgsn:harden:wait', listLength: '1' },
      authenticationRef: { name: 'redis-auth' },
    });
    expect((rendered.s3Keda.objs.get('Deployment/fgsn-worker') as { spec: Obj }).spec.replicas).toBeUndefined();
    expect((rendered.defaults.objs.get('Deployment/fgsn-worker') as { spec: Obj }).spec.replicas).toBe(1);
    const custom = renderChart(CHART_DIR, { values: deepMerge(SCENARIOS.s3Keda, { config: { queuePrefix: 'tenant1' } }) as Obj });
    expect(custom.manifests.get('templates/worker-scaledobject.yaml')).toContain('listName: "tenant1:harden:wait"');
  });

  it('the HPA owns the API replica count when enabled', () => {
    const hpa = rendered.defaults.objs.get('HorizontalPodAutoscaler/fgsn-api') as { spec: Obj };
    expect(hpa.spec).toMatchObject({ minReplicas: 2, maxReplicas: 6, scaleTargetRef: { kind: 'Deployment', name: 'fgsn-api' } });
    expect((rendered.defaults.objs.get('Deployment/fgsn-api') as { spec: Obj }).spec.replicas).toBeUndefined();
    expect((rendered.s3Keda.objs.get('Deployment/fgsn-api') as { spec: Obj }).spec.replicas).toBe(3);
  });

  it('every pod mounts the one data claim, whatever the artifact storage (uploads are shared)', () => {
    for (const name of Object.keys(SCENARIOS)) {
      for (const id of ['Deployment/fgsn-api', 'Deployment/fgsn-worker']) {
        const vol = podSpec(rendered[name].objs.get(id)).volumes.find((v) => v.name === 'data');
        expect(vol, `${name} ${id}`).toEqual({ name: 'data', persistentVolumeClaim: { claimName: 'fgsn-data' } });
      }
      expect(rendered[name].objs.has('PersistentVolumeClaim/fgsn-data')).toBe(true);
    }
    const existing = renderChart(CHART_DIR, { values: deepMerge(SCENARIOS.defaults, { storage: { persistence: { existingClaim: 'nfs-data' } } }) as Obj });
    expect(existing.manifests.has('templates/pvc.yaml')).toBe(false);
    expect(existing.manifests.get('templates/worker-deployment.yaml')).toContain('claimName: nfs-data');
  });

  it('Secret references point at keys the chart writes (or at the operator-made Secrets)', () => {
    for (const name of Object.keys(SCENARIOS)) {
      const { objs } = rendered[name];
      const secret = objs.get('Secret/fgsn') as { stringData: Obj } | undefined;
      for (const id of ['Deployment/fgsn-api', 'Deployment/fgsn-worker']) {
        for (const e of podSpec(objs.get(id)).containers[0].env ?? []) {
          const ref = e.valueFrom?.secretKeyRef;
          if (!ref || ref.name !== 'fgsn' || ref.optional) continue;
          expect(secret?.stringData, `${name} ${id} ${e.name}`).toHaveProperty(ref.key);
        }
      }
    }
    const s3 = podSpec(rendered.s3Keda.objs.get('Deployment/fgsn-worker')).containers[0].env ?? [];
    expect(s3.find((e) => e.name === 'FGSN_S3_SECRET_ACCESS_KEY')?.valueFrom?.secretKeyRef).toEqual({
      name: 's3-creds',
      key: 'FGSN_S3_SECRET_ACCESS_KEY',
    });
    expect(s3.find((e) => e.name === 'REDIS_URL')?.valueFrom?.secretKeyRef).toEqual({ name: 'redis-conn', key: 'url' });
  });

  it('pods restart when settings change (config checksum annotation)', () => {
    const a = renderChart(CHART_DIR, { values: SCENARIOS.defaults }).manifests.get('templates/api-deployment.yaml') as string;
    const b = renderChart(CHART_DIR, { values: deepMerge(SCENARIOS.defaults, { config: { logLevel: 'debug' } }) as Obj }).manifests.get(
      'templates/api-deployment.yaml',
    ) as string;
    const sum = (t: string): string | undefined => /checksum\/config: (\w+)/.exec(t)?.[1];
    expect(sum(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(sum(b)).not.toBe(sum(a));
  });

  it.each<[string, Obj, string]>([
    ['no Redis', {}, 'set redis.url'],
    ['s3 without a bucket', { redis: { url: 'redis://r:6379' }, storage: { type: 's3' } }, 'set storage.s3.bucket'],
    ['cuda without a GPU', { redis: { url: 'redis://r:6379' }, worker: { gpu: { enabled: false } } }, 'worker.executionProvider is cuda'],
    ['KEDA without an address', { redis: { url: 'redis://r:6379' }, worker: { keda: { enabled: true } } }, 'worker.keda.redisAddress'],
    ['float16 compute on cpu', { redis: { url: 'redis://r:6379' }, worker: { executionProvider: 'cpu', gpu: { enabled: false }, computeDtype: 'float16' } }, 'worker.computeDtype float16 needs'],
    [
      'half of the S3 keys',
      { redis: { url: 'redis://r:6379' }, storage: { type: 's3', s3: { bucket: 'b', accessKeyId: 'a' } } },
      'go together',
    ],
  ])('refuses to render with %s', (_what, over, message) => {
    expect(() => renderChart(CHART_DIR, { values: over })).toThrow(message);
  });

  it('NOTES.txt tells how to reach the API and warns when no API key is set', () => {
    expect(rendered.defaults.r.notes).toContain('port-forward svc/fgsn-api 8080:80');
    expect(rendered.defaults.r.notes).not.toContain('WARNING: no API keys');
    expect(rendered.cpuOnly.r.notes).toContain('WARNING: no API keys');
  });
});

describe('chart environment = the service configuration (src/config.ts)', () => {
  /** The environment each container would see, secrets resolved to placeholders where the operator owns them. */
  function containerEnvs(over: Obj): Map<string, Record<string, string>> {
    const objs = kinds(manifestObjects(renderChart(CHART_DIR, { values: over })));
    const cm = (objs.get('ConfigMap/fgsn') as { data: Record<string, string> }).data;
    const secret = (objs.get('Secret/fgsn') as { stringData: Record<string, string> } | undefined)?.stringData ?? {};
    const placeholders: Record<string, string> = {
      REDIS_URL: 'redis://redis.example:6379',
      FGSN_API_KEYS: 'operator-key-0123456:ops',
      FGSN_ADMIN_KEYS: 'operator-key-0123456',
      FGSN_S3_ACCESS_KEY_ID: 'AKID',
      FGSN_S3_SECRET_ACCESS_KEY: 'secret',
    };
    const out = new Map<string, Record<string, string>>();
    for (const id of ['Deployment/fgsn-api', 'Deployment/fgsn-worker']) {
      const c = podSpec(objs.get(id)).containers[0];
      expect(c.envFrom).toEqual([{ configMapRef: { name: 'fgsn' } }]);
      const env: Record<string, string> = { ...cm };
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref) {
          const v = ref.name === 'fgsn' ? secret[ref.key] : placeholders[e.name];
          if (v !== undefined) env[e.name] = v;
        } else env[e.name] = e.value ?? '';
      }
      out.set(id, env);
    }
    return out;
  }

  it.each(Object.keys(SCENARIOS))('%s: every variable the chart sets is one the service reads', (name) => {
    for (const [id, env] of containerEnvs(SCENARIOS[name])) {
      const unknown = Object.keys(env).filter((k) => !CONFIG_ENV_VARS.includes(k));
      expect(unknown, `${id} sets variables src/config.ts does not read`).toEqual([]);
    }
  });

  it.each(Object.keys(SCENARIOS))('%s: the service configuration accepts what the chart sets', (name) => {
    for (const [id, env] of containerEnvs(SCENARIOS[name])) {
      const cfg = loadConfig(env);
      expect(cfg.dataDir, id).toBe('/data');
      expect(cfg.port, id).toBe(8080);
      expect(cfg.storage.kind).toBe((deepMerge(values, SCENARIOS[name]) as { storage: { type: string } }).storage.type);
      expect(cfg.executionProvider).toBe(id.endsWith('api') || name === 'cpuOnly' ? 'cpu' : 'cuda');
    }
  });

  it('large byte limits reach the service as integers, not 6.8719476736e+10', () => {
    const env = containerEnvs(SCENARIOS.defaults).get('Deployment/fgsn-worker') as Record<string, string>;
    expect(env.FGSN_UPLOAD_MAX_BYTES).toBe('68719476736');
    expect(loadConfig(env).uploadMaxBytes).toBe(68719476736);
  });

  it.each(Object.keys(SCENARIOS))('%s: workers serve /healthz and /metrics on the probed port; the API does not', (name) => {
    const objs = kinds(manifestObjects(renderChart(CHART_DIR, { values: SCENARIOS[name] })));
    const probed = podSpec(objs.get('Deployment/fgsn-worker')).containers[0].ports?.find((p) => p.name === 'metrics');
    const envs = containerEnvs(SCENARIOS[name]);
    expect(probed?.containerPort).toBeGreaterThan(0);
    expect(loadConfig(envs.get('Deployment/fgsn-worker') ?? {}).worker.metricsPort).toBe(probed?.containerPort);
    expect(envs.get('Deployment/fgsn-api')).toBeDefined();
    expect(envs.get('Deployment/fgsn-api')).not.toHaveProperty('FGSN_WORKER_METRICS_PORT');
  });

  it('config.webhookAllowPrivate reaches the API and the workers, off by default', () => {
    for (const [over, expected] of [
      [SCENARIOS.defaults, false],
      [deepMerge(SCENARIOS.defaults, { config: { webhookAllowPrivate: true } }) as Obj, true],
    ] as const) {
      for (const [id, env] of containerEnvs(over)) expect(loadConfig(env).webhook.allowPrivate, id).toBe(expected);
    }
  });

  it('every variable of src/config.ts can be set through the chart (PORT is an alias of FGSN_PORT)', () => {
    const set = new Set<string>();
    for (const over of Object.values(SCENARIOS)) for (const env of containerEnvs(over).values()) for (const k of Object.keys(env)) set.add(k);
    const missing = CONFIG_ENV_VARS.filter((v) => v !== 'PORT' && !set.has(v));
    expect(missing, 'add these to values.yaml / the ConfigMap').toEqual([]);
  });
});
