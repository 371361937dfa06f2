/**
 * A job's event log: stage changes, every search step (with its probe metrics, as the pipeline's progress
 * message), warnings (e.g. the safety target missed) and the terminal state. Stored as the BullMQ job's log
 * (one JSON line per event, `keepLogs` caps it), so it lives and expires with the job, costs one RPUSH per
 * event and pages with LRANGE. The API serves it as `GET /v1/jobs/{id}/events` (pages, or Server-Sent Events).
 */
import type { HardenProgress } from './job-data.js';

export const EVENT_TYPES = ['stage', 'step', 'warning', 'error', 'state'] as const;
export type JobEventType = (typeof EVENT_TYPES)[number];

export interface JobEvent {
  type: JobEventType;
  /** ISO time the worker recorded it. */
  at: string;
  stage?: string;
  percent?: number;
  message?: string;
  /** state events: the terminal (or attempt) state; error events: the error code. */
  state?: string;
  code?: string;
}

/** Events kept per job (the oldest are dropped past it): a default search logs a few dozen. */
export const MAX_JOB_EVENTS = 2000;

/**
 * Turns the stream of progress updates into events: a new stage is a `stage` event, a new message within a
 * stage a `step` event (the search's per-step lines carry q, g and the probe metrics); percent-only updates are
 * not events (they are the job's `progress`).
 */
export class ProgressEvents {
  private stage: string | undefined;
  private message: string | undefined;

  next(p: HardenProgress, now = new Date()): JobEvent | undefined {
    const at = now.toISOString();
    const percent = Math.round(p.percent * 10) / 10;
    if (p.stage !== this.stage) {
      this.stage = p.stage;
      this.message = p.message;
      return { type: 'stage', at, stage: p.stage, percent, ...(p.message ? { message: p.message } : {}) };
    }
    if (p.message && p.message !== this.message) {
      this.message = p.message;
      return { type: 'step', at, stage: p.stage, percent, message: p.message };
    }
    return undefined;
  }
}

/** Parses one stored log line; lines that are not events (a future format, a plain log) are skipped. */
export function parseJobEvent(line: string): JobEvent | undefined {
  try {
    const v = JSON.parse(line) as Partial<JobEvent>;
    return typeof v === 'object' && v !== null && typeof v.type === 'string' && (EVENT_TYPES as readonly string[]).includes(v.type) && typeof v.at === 'string'
      ? (v as JobEvent)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Estimated finish time of a running job, by linear extrapolation of its progress since it started; null
 * before 5% (too early to say) and for jobs not running.
 */
export function estimatedFinishAt(state: string, startedAtMs: number | undefined, percent: number, nowMs = Date.now()): string | null {
  if (state !== 'running' || !startedAtMs || percent < 5 || percent >= 100) return null;
  const elapsed = Math.max(0, nowMs - startedAtMs);
  return new Date(nowMs + (elapsed * (100 - percent)) / percent).toISOString();
}
