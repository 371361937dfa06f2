import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { FgsnError } from '../../errors.js';
import {
  continuableArtifacts, describeJob, enqueueHarden, enqueueWebhook, expireJobRecord, getHardenJob, privateLiteral,
  type ContinueJobData, type FgsnJobData, type HardenJobData, type HardenJobInput, type JobStatus, type ProbeRef,
} from '../../queue/index.js';
import { deleteJobArtifacts, readManifest } from '../../storage/index.js';
import type { ApiContext } from '../context.js';
import { ID_PATTERN, newId } from '../ids.js';
import type { JobRecord } from '../records.js';
import { authErrorResponses, IdParams, JobContinueBody, JobCreateBody, JobList, JobListQuery, JobSchema } from '../schemas.js';
import { noContent } from '../zod-schema.js';
import { checkQuota, ownCheckpoint } from './checkpoints.js';
import { loadProbes, visibleProbeSet } from './probe-sets.js';
import { visibleReference } from './references.js';
import { sha256Text } from '../../util/index.js';

type JobBody = z.output<typeof JobCreateBody>;
type ContinueBody = z.output<typeof JobContinueBody>;

/** Canonical JSON (sorted keys) so the same body in another key order is the same request. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Loose: the other headers stay as they are, only the idempotency key is checked. */
const JobCreateHeaders = z.looseObject({ 'idempotency-key': z.string().max(255).optional() });


export async function jobStatusFor(ctx: ApiContext, record: JobRecord): Promise<JobStatus> {
  // State first, then the job's data: a job finishing in between shows as still running, never as
  // completed without its result.
  const state = await ctx.queue.getJobState(record.id);
  const job = await getHardenJob(ctx.queue, record.id);
  return describeJob(job, { id: record.id, createdAt: record.createdAt, request: record.request, cancelRequested: record.cancelRequestedAt !== undefined }, state);
}

export async function ownJob(ctx: ApiContext, tenant: string, id: string): Promise<JobRecord> {
  const r = ID_PATTERN.test(id) ? await ctx.records.getJob(id) : undefined;
  if (r === undefined || r.tenant !== tenant) throw new FgsnError('NOT_FOUND', `no job ${id}`);
  return r;
}

function encodeCursor(c: { score: number; id: string }): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}
function decodeCursor(s: string): { score: number; id: string } {
  try {
    const c = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as { score: unknown; id: unknown };
    if (typeof c.score === 'number' && typeof c.id === 'string') return { score: c.score, id: c.id };
  } catch {
    // fall through
  }
  throw new FgsnError('VALIDATION_FAILED', 'cursor is not one this API returned');
}

export const jobRoutes: FastifyPluginAsyncZod = async (app) => {
  const ctx: ApiContext = app;
  const { records, config } = app;

  /** Resolves ids to server-side inputs, checking the tenant may use each; the job then needs nothing else. */
  const checkWebhook = (webhook: { url: string } | undefined): void => {
    if (webhook && !config.webhook.allowPrivate) {
      const literal = privateLiteral(new URL(webhook.url));
      if (literal !== undefined) {
        throw new FgsnError('VALIDATION_FAILED', `webhook host ${literal} is a private address; this service delivers only to public hosts`, {
          details: { in: 'body', issues: [{ path: 'webhook.url', message: 'private address' }] },
        });
      }
    }
  };

  const resolve = async (tenant: string, body: JobBody, jobId: string): Promise<HardenJobData> => {
    checkWebhook(body.webhook);
    // Indexed before the state is read: a DELETE of the checkpoint either sees this job or makes it not ready.
    await records.addCheckpointJob((await ownCheckpoint(records, tenant, body.finetuned)).id, jobId);
    const ft = await ownCheckpoint(records, tenant, body.finetuned);
    if (ft.state !== 'ready') throw new FgsnError('CONFLICT', `checkpoint ${ft.id} is not completed; POST /v1/checkpoints/${ft.id}/complete first`);
    const ref = await visibleReference(records, tenant, body.reference);
    const harmful = (await visibleProbeSet(ctx, tenant, body.probes?.harmful ?? 'default-harmful')).ref;
    const benign = (await visibleProbeSet(ctx, tenant, body.probes?.benign ?? 'default-benign')).ref;
    const task = body.task === undefined ? undefined : (await visibleProbeSet(ctx, tenant, body.task)).ref;
    const ftPath = ctx.layout.uploadFiles(ft.id);
    const { webhook, ...publicRequest } = body;
    return {
      kind: 'harden',
      jobId,
      tenant,
      input: {
        basePath: ref.base.path,
        alignedPath: ref.aligned.path,
        ...(ft.kind === 'adapter' ? { adapterPath: ftPath } : { finetunedPath: ftPath }),
        harmful,
        benign,
        task,
        method: body.method,
        options: body.options,
        outputs: body.outputs,
        evaluate: await evaluationSets(tenant, body.evaluate, harmful, benign),
      },
      webhook,
      request: { ...publicRequest, ...(webhook ? { webhook: { url: webhook.url } } : {}) },
    };
  };

  const evaluationSets = async (tenant: string, e: JobBody['evaluate'], harmful: ProbeRef, benign: ProbeRef): Promise<HardenJobInput['evaluate']> => {
    if (e === false) return undefined;
    if (e === true) return { harmful, lookalike: benign };
    const load = async (id: string | undefined) => (id === undefined ? undefined : (await visibleProbeSet(ctx, tenant, id)).ref);
    const out: NonNullable<HardenJobInput['evaluate']> = {};
    const h = await load(e.harmful);
    const em = await load(e.emerging);
    const l = await load(e.lookalike);
    if (h) out.harmful = h;
    if (em) out.emerging = em;
    if (l) out.lookalike = l;
    if (e.maxNewTokens !== undefined) out.maxNewTokens = e.maxNewTokens;
    if (e.tasks) {
      out.tasks = {};
      for (const [name, id] of Object.entries(e.tasks)) {
        const probeRef = (await load(id)) as ProbeRef;
        const missing = (await loadProbes(ctx, probeRef)).findIndex((p) => p.response === undefined);
        if (missing >= 0) throw new FgsnError('PROBES_INVALID', `task probe set ${id} (${name}): record ${missing + 1} has no "response" (the expected answer)`);
        out.tasks[name] = probeRef;
      }
    }
    return out;
  };

  /**
   * A continue job starts from the published output of a completed job of the same tenant: its report.json
   * and model folder (read by the worker from the artifact store), and its checkpoints' server paths (from
   * the source job's queued data, kept as long as the job is).
   */
  const resolveContinue = async (tenant: string, sourceId: string, body: ContinueBody, jobId: string): Promise<ContinueJobData> => {
    checkWebhook(body.webhook);
    const source = await ownJob(ctx, tenant, sourceId);
    const status = await jobStatusFor(ctx, source);
    if (status.state !== 'completed') {
      throw new FgsnError('SOURCE_JOB_NOT_COMPLETED', `job ${source.id} is ${status.state}; only a completed job can be continued`, { details: { job: source.id, state: status.state } });
    }
    const manifest = await readManifest(ctx.store, source.id);
    const sourceJob = await getHardenJob(ctx.queue, source.id);
    if (manifest === undefined || sourceJob === undefined || !continuableArtifacts(manifest.artifacts)) {
      throw new FgsnError('SOURCE_JOB_NO_MODEL', `job ${source.id} published no model folder with report.json to continue from`, {
        details: { job: source.id, artifacts: (manifest?.artifacts ?? []).filter((a) => !a.name.includes('/')).map((a) => a.name) },
      });
    }
    const src: FgsnJobData = sourceJob.data;
    const probes = (await visibleProbeSet(ctx, tenant, body.probes)).ref;
    const task = body.task === undefined ? undefined : (await visibleProbeSet(ctx, tenant, body.task)).ref;
    if (task !== undefined) {
      const missing = (await loadProbes(ctx, task)).findIndex((p) => p.response === undefined);
      if (missing >= 0) throw new FgsnError('PROBES_INVALID', `task probe set ${body.task}: record ${missing + 1} has no "response" (the expected answer)`);
    }
    const { basePath, alignedPath, finetunedPath, adapterPath } = src.input;
    const atlasProbes = src.kind === 'continue' ? src.input.atlasProbes : { harmful: src.input.harmful, benign: src.input.benign };
    const { webhook, ...publicRequest } = body;
    const o = body.options;
    return {
      kind: 'continue',
      jobId,
      tenant,
      input: {
        sourceJobId: source.id, basePath, alignedPath, ...(finetunedPath ? { finetunedPath } : {}), ...(adapterPath ? { adapterPath } : {}),
        category: body.category, probes, ...(task ? { task } : {}), ...(atlasProbes ? { atlasProbes } : {}), outputs: body.outputs,
        ...(o.q !== undefined ? { q: o.q } : {}), ...(o.targetAsr !== undefined ? { targetAsr: o.targetAsr } : {}),
        ...(o.maxExtraParams !== undefined ? { maxExtraParams: o.maxExtraParams } : {}), ...(o.exactTolerance !== undefined ? { exactTolerance: o.exactTolerance } : {}),
        ...(o.edit ? { options: o.edit } : {}),
      },
      webhook,
      // The echoed request says what the job is and which job it continues.
      request: { kind: 'continue', continues: source.id, ...publicRequest, ...(webhook ? { webhook: { url: webhook.url } } : {}) },
    };
  };

  /** Queued + running jobs of the tenant (finished ones leave the index as they are seen). */
  const activeJobCount = async (tenant: string): Promise<number> => {
    const key = records.key('tenant', tenant, 'active');
    let n = 0;
    for (const jobId of await ctx.redis.zrange(key, '0', '-1')) {
      const state = await ctx.queue.getJobState(jobId);
      if (state === 'completed' || state === 'failed' || state === 'unknown') await ctx.redis.zrem(key, jobId);
      else n++;
    }
    return n;
  };

  /** Quota, record, queue: nothing half-made stays visible (no record without a queued job). */
  const submit = async (tenant: string, id: string, makeData: () => Promise<FgsnJobData>, idempotencyKeyHash?: string): Promise<JobRecord> => {
    let stored: JobRecord | undefined;
    try {
      if (config.quotas.concurrentJobs > 0) await checkQuota('concurrentJobs', config.quotas.concurrentJobs, await activeJobCount(tenant));
      const data = await makeData();
      const record: JobRecord = { id, tenant, createdAt: new Date().toISOString(), request: data.request, webhook: data.webhook, idempotencyKeyHash };
      await records.putJob(record);
      stored = record;
      await enqueueHarden(ctx.queue, data, { attempts: config.worker.attempts, backoffMs: config.worker.backoffMs, retentionS: config.jobRetentionS });
      if (config.quotas.concurrentJobs > 0) await ctx.redis.zadd(records.key('tenant', tenant, 'active'), Date.now(), id);
      return record;
    } catch (e) {
      if (stored !== undefined && (await getHardenJob(ctx.queue, id)) === undefined) await records.deleteJob(stored);
      throw e;
    }
  };

  /**
   * Idempotency-Key (kept 24 h per tenant, one key space for every job-creating operation): the same key with
   * the same request returns the job it created (Idempotent-Replayed: true); with another request,
   * IDEMPOTENCY_CONFLICT. `hashed` is what identifies the request (a continue's includes the source job).
   */
  const idempotent = async (reply: FastifyReply, tenant: string, id: string, idemKey: string | undefined, hashed: unknown, create: (claimedKey: string | undefined) => Promise<JobRecord>) => {
    let claimedKey: string | undefined;
    if (typeof idemKey === 'string' && idemKey.length > 0) {
      const keyHash = sha256Text(idemKey);
      const bodyHash = sha256Text(canonical(hashed));
      const existing = await records.claimIdempotencyKey(tenant, keyHash, bodyHash, id);
      if (existing !== undefined) {
        if (existing.bodyHash !== bodyHash) {
          throw new FgsnError('IDEMPOTENCY_CONFLICT', 'this Idempotency-Key was already used with a different request body');
        }
        // The first request may still be creating its job: wait briefly for its record.
        for (let i = 0; i < 50; i++) {
          const r = await records.getJob(existing.jobId);
          if (r !== undefined) return accepted(reply, await jobStatusFor(ctx, r), true);
          await new Promise((res) => setTimeout(res, 100));
        }
        throw new FgsnError('CONFLICT', 'a request with this Idempotency-Key is still being processed; retry shortly');
      }
      claimedKey = keyHash;
    }
    try {
      const record = await create(claimedKey);
      return accepted(reply, await jobStatusFor(ctx, record), false);
    } catch (e) {
      if (claimedKey !== undefined) await ctx.redis.del(records.key('idem', tenant, claimedKey));
      throw e;
    }
  };

  const accepted = (reply: FastifyReply, status: JobStatus, replayed: boolean) =>
    reply
      .status(202)
      .header('location', `/v1/jobs/${status.id}`)
      .header('idempotent-replayed', replayed ? 'true' : 'false')
      .send(status);

  app.post(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        operationId: 'createJob',
        summary: 'Submit a hardening job',
        description: 'Idempotency-Key header (kept 24 h per tenant): the same key with the same body returns the same job (Idempotent-Replayed: true); with another body, 409 IDEMPOTENCY_CONFLICT.',
        headers: JobCreateHeaders,
        body: JobCreateBody,
        response: { 202: JobSchema, ...authErrorResponses(400, 404, 409) },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const tenant = request.auth.tenant;
      const id = newId('job');
      return idempotent(reply, tenant, id, request.headers['idempotency-key'], body, async (claimedKey) => {
        const record = await submit(tenant, id, () => resolve(tenant, body, id), claimedKey);
        request.log.info({ jobId: id, method: body.method }, 'job queued');
        return record;
      });
    },
  );

  app.post(
    '/v1/jobs/:id/continue',
    {
      schema: {
        tags: ['jobs'],
        operationId: 'continueJob',
        summary: 'Patch a completed job for a new harm category, as a new job',
        description:
          'Continual defense (`fgsn continue`): the completed job\'s published model is patched for the new category\'s harmful probes; ' +
          'only rows the job did not edit are edited. The result is a new job (GET /v1/jobs/{newId}, its events and artifacts) whose report ' +
          'lists the patch under `continual`, with `from` the id of the job it continued. A continue job can itself be continued. ' +
          '404 when the job is not this tenant\'s; 409 SOURCE_JOB_NOT_COMPLETED while it is not completed; 409 SOURCE_JOB_NO_MODEL when it published no model folder and report.json. ' +
          'Idempotency-Key as for POST /v1/jobs (one key space): safe to retry when applying a category to many past jobs.',
        headers: JobCreateHeaders,
        params: IdParams,
        body: JobContinueBody,
        response: { 202: JobSchema, ...authErrorResponses(400, 404, 409) },
      },
    },
    async (request, reply) => {
      const tenant = request.auth.tenant;
      const id = newId('job');
      return idempotent(reply, tenant, id, request.headers['idempotency-key'], { continues: request.params.id, ...request.body }, async (claimedKey) => {
        const record = await submit(tenant, id, () => resolveContinue(tenant, request.params.id, request.body, id), claimedKey);
        request.log.info({ jobId: id, continues: request.params.id, category: request.body.category }, 'continue job queued');
        return record;
      });
    },
  );

  app.get(
    '/v1/jobs/:id',
    {
      schema: { tags: ['jobs'], operationId: 'getJob', summary: 'Job state, stage, progress, timings, error', params: IdParams, response: { 200: JobSchema, ...authErrorResponses(404) } },
    },
    async (request) => jobStatusFor(ctx, await ownJob(ctx, request.auth.tenant, request.params.id)),
  );

  app.get(
    '/v1/jobs',
    { schema: { tags: ['jobs'], operationId: 'listJobs', summary: "The tenant's jobs, newest first", querystring: JobListQuery, response: { 200: JobList, ...authErrorResponses(400) } } },
    async (request) => {
      const q = request.query;
      let cursor = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
      const items: JobStatus[] = [];
      let exhausted = false;
      // Filtering by state happens after paging, so scan forward until the page is full or the list ends.
      while (items.length < q.limit && !exhausted) {
        const page = await records.pageJobIds(request.auth.tenant, cursor, Math.max(q.limit, 50));
        if (page.length === 0) {
          exhausted = true;
          break;
        }
        const recs = await records.getJobs(page.map((p) => p.id));
        for (let i = 0; i < page.length; i++) {
          cursor = page[i];
          const rec = recs[i];
          if (rec === undefined) {
            // The record expired (retention) or was deleted: drop it from the tenant's index too.
            await ctx.redis.zrem(records.key('tenant', request.auth.tenant, 'jobs'), page[i].id);
            continue;
          }
          const s = await jobStatusFor(ctx, rec);
          if (q.state === undefined || s.state === q.state) items.push(s);
          if (items.length >= q.limit) break;
        }
      }
      return { items, nextCursor: !exhausted && cursor !== undefined ? encodeCursor(cursor) : null };
    },
  );

  app.delete(
    '/v1/jobs/:id',
    {
      schema: {
        tags: ['jobs'],
        operationId: 'deleteJob',
        summary: 'Delete a finished job and its artifacts (cancel a running one first)',
        params: IdParams,
        response: { 204: noContent('Deleted'), ...authErrorResponses(404, 409) },
      },
    },
    async (request, reply) => {
      const record = await ownJob(ctx, request.auth.tenant, request.params.id);
      const status = await jobStatusFor(ctx, record);
      if (status.state === 'queued' || status.state === 'running') throw new FgsnError('CONFLICT', `job ${record.id} is ${status.state}; cancel it first`);
      // The record goes first: from then on the job is a 404, whatever remains to be removed.
      await records.deleteJob(record);
      const job = await getHardenJob(ctx.queue, record.id);
      await job?.remove().catch(() => undefined);
      await deleteJobArtifacts(ctx.store, record.id);
      request.log.info({ jobId: record.id }, 'job deleted');
      return reply.status(204).send();
    },
  );

  app.post(
    '/v1/jobs/:id/cancel',
    {
      schema: {
        tags: ['jobs'],
        operationId: 'cancelJob',
        summary: 'Cancel a queued or running job (running jobs stop at the next stage boundary)',
        params: IdParams,
        response: { 202: JobSchema, ...authErrorResponses(404, 409) },
      },
    },
    async (request, reply) => {
      const record = await ownJob(ctx, request.auth.tenant, request.params.id);
      const before = await jobStatusFor(ctx, record);
      if (before.state === 'cancelled') return reply.status(202).send(before);
      if (before.state === 'completed' || before.state === 'failed') throw new FgsnError('CONFLICT', `job ${record.id} already ${before.state}`);
      await records.requestCancel(record.id);
      record.cancelRequestedAt = new Date().toISOString();
      await records.putJob(record);
      const job = await getHardenJob(ctx.queue, record.id);
      if (job !== undefined) {
        const state = await job.getState();
        if (state !== 'active') {
          // Not running: take it off the queue. If a worker grabbed it meanwhile, remove fails on the lock
          // and the worker sees the flag instead.
          const removed = await job.remove().then(
            () => true,
            () => false,
          );
          if (removed) {
            await expireJobRecord(ctx.redis, config.queuePrefix, record.id, config.jobRetentionS);
            const status = await jobStatusFor(ctx, record);
            if (record.webhook?.secret) {
              await enqueueWebhook(ctx.webhookQueue, { url: record.webhook.url, secret: record.webhook.secret, event: 'job.cancelled', job: status }, config.webhook);
            }
            request.log.info({ jobId: record.id }, 'queued job cancelled');
            return reply.status(202).send(status);
          }
        }
      }
      request.log.info({ jobId: record.id }, 'cancel requested for running job');
      return reply.status(202).send(await jobStatusFor(ctx, record));
    },
  );
};
