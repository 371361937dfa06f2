import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import type { S3Config } from '../../src/config.js';

export interface LocalS3 {
  config: S3Config;
  stop(): Promise<void>;
}

/** A real S3-compatible server (s3rver) on an ephemeral port with one empty bucket. */
export async function startLocalS3(bucket = 'fgsn-test'): Promise<LocalS3> {
  const dir = await mkdtemp(join(tmpdir(), 'fgsn-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket, configs: [] }] });
  const addr = (await server.run()) as AddressInfo;
  return {
    config: {
      endpoint: `http://127.0.0.1:${addr.port}`,
      bucket,
      region: 'us-east-1',
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
      forcePathStyle: true,
      prefix: 'fgsn',
    },
    async stop() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
