/** Names shared by the API (producer) and the workers (consumers). */
export const HARDEN_QUEUE = 'harden';
export const WEBHOOK_QUEUE = 'webhooks';

/** Redis key of a job's cancel flag, under the service prefix (set by the API, polled by the worker). */
export function cancelFlagKey(prefix: string, jobId: string): string {
  return `${prefix}:job:${jobId}:cancel`;
}
