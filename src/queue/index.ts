/** Public surface of src/queue: what other folders may import (eslint.config.js enforces it). */
export type { ContinueJobData, FgsnJobData, HardenJobData, HardenJobInput, ProbeRef } from './job-data.js';
export { continuableArtifacts } from './job-data.js';
export { cancelFlagKey } from './names.js';
export { createHardenQueue, enqueueHarden, expireJobRecord, getHardenJob, getJobEvents } from './queue.js';
export { EVENT_TYPES, MAX_JOB_EVENTS, parseJobEvent, type JobEvent, type JobEventType } from './events.js';
export type { HardenQueue } from './queue.js';
export { describeJob } from './status.js';
export type { JobStatus } from './status.js';
export { privateLiteral } from './webhook-address.js';
export { createWebhookQueue, enqueueWebhook } from './webhooks.js';
export type { WebhookDelivery } from './webhooks.js';
export { startWorker } from './worker.js';
export type { RunningWorker } from './worker.js';
