/** Value sets the chart is rendered with in tests and in .ci/static-checks (merged over values.yaml). */
import { join } from 'node:path';
import { REPO_ROOT } from '../support/testbed.js';

export const CHART_DIR = join(REPO_ROOT, 'helm', 'fgsn');
export const DOCKER_DIR = join(REPO_ROOT, 'docker');

export const SCENARIOS: Record<string, Record<string, unknown>> = {
  // values.yaml plus the one value it cannot default: where Redis is.
  defaults: {
    redis: { url: 'redis://:secret@redis.example:6379/0' },
    auth: { apiKeys: [{ key: 'k1-0123456789abcdef', tenant: 'team-a' }], adminKeys: ['k1-0123456789abcdef'] },
  },
  // S3 storage with credentials in Secrets the operator made, KEDA-scaled GPU workers, an ingress.
  s3Keda: {
    redis: { existingSecret: 'redis-conn', existingSecretKey: 'url' },
    auth: { existingSecret: 'fgsn-keys' },
    storage: {
      type: 's3',
      s3: { endpoint: 'http://minio.minio:9000', bucket: 'fgsn', forcePathStyle: true, prefix: 'prod/', existingSecret: 's3-creds' },
    },
    config: { allowedModelDirs: ['/models/aligned', '/models/base'], logLevel: 'debug', cacheMaxBytes: 107374182400 },
    api: {
      autoscaling: { enabled: false },
      replicas: 3,
      ingress: {
        enabled: true,
        className: 'nginx',
        annotations: { 'nginx.ingress.kubernetes.io/proxy-body-size': '0' },
        tls: [{ secretName: 'fgsn-tls', hosts: ['fgsn.example.com'] }],
      },
      extraVolumes: [{ name: 'models', persistentVolumeClaim: { claimName: 'models', readOnly: true } }],
      extraVolumeMounts: [{ name: 'models', mountPath: '/models', readOnly: true }],
    },
    worker: {
      maxMemoryMb: 24576,
      keda: { enabled: true, redisAddress: 'redis.example:6379', authenticationRef: 'redis-auth' },
      nodeSelector: { 'nvidia.com/gpu.present': 'true' },
    },
  },
  // No GPU anywhere: CPU workers, S3 with keys given as values, existing claim unused.
  cpuOnly: {
    redis: { url: 'redis://redis:6379' },
    storage: { type: 's3', s3: { bucket: 'fgsn-artifacts', accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' } },
    worker: { executionProvider: 'cpu', gpu: { enabled: false }, tolerations: [], replicas: 3, podDisruptionBudget: { enabled: false } },
    api: { podDisruptionBudget: { enabled: false } },
    serviceAccount: { create: false },
  },
};
