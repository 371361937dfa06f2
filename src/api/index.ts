/** Public surface of src/api: what other folders may import (eslint.config.js enforces it). */
export { openApiDocument } from './app.js';
// Types of the request and response schemas, for the typed client (src/client).
export type { ArtifactList, CheckpointSchema, JobContinueBody, JobCreateBody, JobSchema, ProbeSetSchema, ReferenceSchema, UploadFileStatusSchema } from './schemas.js';
export { createLogger, startServer, stopOnSignals } from './server.js';
