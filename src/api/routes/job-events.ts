/**
 * GET /v1/jobs/{id}/events: the job's event log (src/queue/events.ts). As JSON, pages with `after` (the last
 * event id seen; ids are positions, 0 first) and `limit`, like OpenAI's fine-tuning job events. With
 * `Accept: text/event-stream`, Server-Sent Events: every event from `after` (or the Last-Event-ID header) on,
 * live until the job ends, with a comment heartbeat; the stream closes after the terminal state's event.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { FgsnError } from '../../errors.js';
import { getJobEvents, parseJobEvent, type JobEvent } from '../../queue/index.js';
import type { ApiContext } from '../context.js';
import { IdParams, authErrorResponses } from '../schemas.js';
import { jobStatusFor, ownJob } from './jobs.js';

export const JobEventsQuery = z.object({
  after: z.coerce.number().int().min(-1).max(1_000_000).default(-1).describe('Id of the last event seen; -1 (default) = from the first'),
  limit: z.coerce.number().int().min(1).max(500).default(100),
});

export const JobEventSchema = z.object({
  id: z.number().int().describe('Position in the log, 0 first'),
  type: z.enum(['stage', 'step', 'warning', 'error', 'state']),
  at: z.string(),
  stage: z.string().optional(),
  percent: z.number().optional(),
  message: z.string().optional(),
  state: z.string().optional().describe('state events: completed, failed, cancelled or retrying (an attempt failed, another follows)'),
  code: z.string().optional().describe('error and warning events: the catalogue code (e.g. TARGET_NOT_REACHED)'),
});

export const JobEventPage = z.object({
  data: z.array(JobEventSchema),
  hasMore: z.boolean().describe('More events exist after the last one returned'),
  lastId: z.number().int().nullable(),
});

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
/** SSE: how often the log is read, the heartbeat, and the longest a stream stays open (a client reconnects with Last-Event-ID). */
const POLL_MS = 500;
const HEARTBEAT_MS = 15_000;
const MAX_STREAM_MS = 30 * 60_000;
/** Open event streams per tenant on one API process (each polls Redis twice a second). */
export const MAX_STREAMS_PER_TENANT = 10;

export const jobEventRoutes: FastifyPluginAsyncZod = async (app) => {
  const ctx: ApiContext = app;
  const streams = new Map<string, number>();

  const page = async (id: string, after: number, limit: number): Promise<z.infer<typeof JobEventPage>> => {
    const { lines, total } = await getJobEvents(ctx.queue, id, after, limit);
    const data: (JobEvent & { id: number })[] = [];
    lines.forEach((line, i) => {
      const e = parseJobEvent(line);
      if (e) data.push({ id: after + 1 + i, ...e });
    });
    const lastId = lines.length > 0 ? after + lines.length : after >= 0 ? after : null;
    return { data, hasMore: after + 1 + lines.length < total, lastId };
  };

  app.get(
    '/v1/jobs/:id/events',
    {
      schema: {
        tags: ['jobs'],
        operationId: 'listJobEvents',
        summary: 'Job events (stages, search steps, warnings, errors, terminal state); JSON pages or text/event-stream',
        params: IdParams,
        querystring: JobEventsQuery,
        response: { 200: JobEventPage, ...authErrorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      const record = await ownJob(ctx, request.auth.tenant, request.params.id);
      const q = request.query;
      if (!String(request.headers.accept ?? '').includes('text/event-stream')) return page(record.id, q.after, q.limit);

      const tenant = request.auth.tenant;
      if ((streams.get(tenant) ?? 0) >= MAX_STREAMS_PER_TENANT) {
        throw new FgsnError('RATE_LIMITED', `at most ${MAX_STREAMS_PER_TENANT} event streams may be open per tenant`, { details: { limit: MAX_STREAMS_PER_TENANT } });
      }
      streams.set(tenant, (streams.get(tenant) ?? 0) + 1);
      const lastEventId = Number(request.headers['last-event-id']);
      let after = Number.isInteger(lastEventId) && lastEventId >= -1 ? lastEventId : q.after;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      let open = true;
      request.raw.on('close', () => (open = false));
      const started = Date.now();
      let lastWrite = Date.now();
      try {
        while (open && Date.now() - started < MAX_STREAM_MS) {
          // State before events: a job seen terminal has logged its last event already (it is written first).
          const terminal = TERMINAL.has((await jobStatusFor(ctx, record)).state);
          for (;;) {
            const p = await page(record.id, after, 200);
            for (const e of p.data) res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
            if (p.lastId !== null) after = p.lastId;
            if (p.data.length > 0) lastWrite = Date.now();
            if (!p.hasMore) break;
          }
          if (terminal) break;
          if (Date.now() - lastWrite >= HEARTBEAT_MS) {
            res.write(': keep-alive\n\n');
            lastWrite = Date.now();
          }
          await new Promise((r) => setTimeout(r, POLL_MS));
        }
      } catch (e) {
        request.log.warn({ err: e }, 'event stream ended by an error');
      } finally {
        res.end();
        const n = (streams.get(tenant) ?? 1) - 1;
        if (n > 0) streams.set(tenant, n);
        else streams.delete(tenant);
      }
    },
  );
};
