import type { Config } from '../config.js';
import { FsBlobStore } from './fs-store.js';
import { dataLayout } from './layout.js';
import { S3BlobStore } from './s3-store.js';
import type { BlobStore } from './types.js';

export type { BlobStore, ByteRange } from './types.js';
export { FsBlobStore } from './fs-store.js';
export { S3BlobStore } from './s3-store.js';
export { dataLayout, type DataLayout } from './layout.js';

/** The artifact store the configuration names; the fs store lives in <dataDir>/artifacts. */
export function createBlobStore(config: Pick<Config, 'storage' | 'dataDir'>): BlobStore {
  return config.storage.kind === 's3' ? new S3BlobStore(config.storage.s3) : new FsBlobStore(dataLayout(config.dataDir).artifacts);
}
export { deleteJobArtifacts, publishArtifacts, readManifest, removeStaleAttempts, type PublishedArtifact } from './artifacts.js';
export { probeNdjson, putProbeBlob, readProbeBlob, sha256Text } from './probe-blobs.js';
