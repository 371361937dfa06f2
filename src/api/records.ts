/**
 * Resource records (checkpoints, references, probe sets, jobs) kept in Redis under the service prefix, so
 * that every API replica and worker sees the same state. Records are JSON; the files behind checkpoints live
 * on the shared data volume, artifact bytes in the BlobStore, job execution state in BullMQ.
 */
import type { Redis } from 'ioredis';
import type { ProbeRecord } from '../pipeline/index.js';
import { cancelFlagKey } from '../queue/index.js';
import { parseJsonl } from '../util/index.js';

/** `deleting`: claimed by a DELETE (or the upload sweeper); never used by a new job. */
export type CheckpointState = 'uploading' | 'validating' | 'ready' | 'deleting';

export interface UploadedFile {
  name: string;
  bytes: number;
  sha256: string;
}

export interface CheckpointRecord {
  id: string;
  tenant: string;
  name?: string;
  state: CheckpointState;
  createdAt: string;
  completedAt?: string;
  /** What the checkpoint layer detected when the upload was completed. */
  kind?: 'model' | 'adapter';
  summary?: Record<string, unknown>;
  /**
   * While `validating`: until when the validating request owns the checkpoint. A request (or an API
   * process) that died leaves the state behind; once the lease has passed, complete may validate again
   * and DELETE may remove it.
   */
  leaseUntil?: string;
}

export interface ModelLocation {
  checkpointId?: string;
  path: string;
}

export interface ReferenceRecord {
  id: string;
  tenant: string;
  /** global references are usable (read-only) by every tenant; tenant ones only by their owner. */
  visibility: 'global' | 'tenant';
  name?: string;
  aligned: ModelLocation;
  base: ModelLocation;
  createdAt: string;
}

export interface ProbeSetRecord {
  id: string;
  tenant: string;
  name?: string;
  kind: 'harmful' | 'benign' | 'task';
  count: number;
  categories: Record<string, number>;
  bytes: number;
  createdAt: string;
  /** Where the NDJSON lives in the blob store, and its sha256 (sets stored before this field lived in Redis). */
  key?: string;
  sha256?: string;
}

export interface JobRecord {
  id: string;
  tenant: string;
  createdAt: string;
  /** The request as accepted (webhook secret removed). */
  request: Record<string, unknown>;
  webhook?: { url: string; secret?: string };
  cancelRequestedAt?: string;
  /** sha256 of the Idempotency-Key that created the job, released when the job is deleted. */
  idempotencyKeyHash?: string;
}

export class Records {
  constructor(
    readonly redis: Redis,
    readonly prefix: string,
  ) {}

  key(...parts: string[]): string {
    return [this.prefix, ...parts].join(':');
  }

  private async getJson<T>(key: string): Promise<T | undefined> {
    const raw = await this.redis.get(key);
    return raw === null ? undefined : (JSON.parse(raw) as T);
  }

  // checkpoints
  async putCheckpoint(r: CheckpointRecord): Promise<void> {
    await this.redis
      .multi()
      .set(this.key('ckpt', r.id), JSON.stringify(r))
      .zadd(this.key('tenant', r.tenant, 'ckpts'), Date.parse(r.createdAt), r.id)
      .exec();
  }
  /** The tenant's newest checkpoints. */
  async listCheckpoints(tenant: string, limit: number): Promise<CheckpointRecord[]> {
    const ids = await this.redis.zrevrange(this.key('tenant', tenant, 'ckpts'), '0', String(limit - 1));
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(...ids.map((i) => this.key('ckpt', i)));
    return raws.flatMap((r) => (r === null ? [] : [JSON.parse(r) as CheckpointRecord]));
  }
  getCheckpoint(id: string): Promise<CheckpointRecord | undefined> {
    return this.getJson(this.key('ckpt', id));
  }
  /**
   * Moves a checkpoint between states only if it is in `from` (compare-and-set in Lua, so concurrent
   * completes race safely). The new record is built here: only transitions change a record, and they are
   * all guarded by the state, so the copy read first cannot be stale when the swap succeeds.
   */
  async transitionCheckpoint(
    id: string,
    from: CheckpointState,
    patch: Partial<CheckpointRecord>,
    /** Also require this lease (the one the caller holds), so an expired owner cannot overwrite a new one. */
    lease?: string,
  ): Promise<CheckpointRecord | undefined> {
    const current = await this.getCheckpoint(id);
    if (current === undefined || current.state !== from) return undefined;
    if (lease !== undefined && current.leaseUntil !== lease) return undefined;
    const next: CheckpointRecord = { ...current, ...patch };
    for (const [k, v] of Object.entries(patch)) if (v === undefined) delete (next as unknown as Record<string, unknown>)[k];
    const script = `
      local raw = redis.call('GET', KEYS[1])
      if not raw then return 0 end
      local r = cjson.decode(raw)
      if r.state ~= ARGV[1] then return 0 end
      if ARGV[3] ~= '' and r.leaseUntil ~= ARGV[3] then return 0 end
      redis.call('SET', KEYS[1], ARGV[2])
      return 1`;
    const ok = (await this.redis.eval(script, 1, this.key('ckpt', id), from, JSON.stringify(next), lease ?? '')) as number;
    return ok === 1 ? next : undefined;
  }
  /** Removes the checkpoint's record, file list and job index, and its bytes from the tenant's usage (the caller removes its folder). */
  async deleteCheckpoint(r: CheckpointRecord): Promise<void> {
    const bytes = (await this.listFiles(r.id)).reduce((n, f) => n + f.bytes, 0);
    await this.redis
      .multi()
      .del(this.key('ckpt', r.id), this.key('ckpt', r.id, 'files'), this.key('ckpt', r.id, 'jobs'))
      .zrem(this.key('tenant', r.tenant, 'ckpts'), r.id)
      .zrem(this.key('uploads', 'open'), r.id)
      .decrby(this.key('tenant', r.tenant, 'bytes'), bytes)
      .exec();
  }
  /** Open uploads, by creation time, for the sweeper of abandoned ones. */
  async markUploadOpen(r: CheckpointRecord): Promise<void> {
    await this.redis.zadd(this.key('uploads', 'open'), Date.parse(r.createdAt), r.id);
  }
  async markUploadClosed(id: string): Promise<void> {
    await this.redis.zrem(this.key('uploads', 'open'), id);
  }
  uploadsOpenedBefore(ms: number, limit: number): Promise<string[]> {
    return this.redis.zrangebyscore(this.key('uploads', 'open'), '-inf', String(ms), 'LIMIT', '0', String(limit));
  }
  // per-tenant usage (quotas)
  async storedBytes(tenant: string): Promise<number> {
    return Number((await this.redis.get(this.key('tenant', tenant, 'bytes'))) ?? 0);
  }
  async addStoredBytes(tenant: string, delta: number): Promise<void> {
    if (delta !== 0) await this.redis.incrby(this.key('tenant', tenant, 'bytes'), delta);
  }
  countCheckpoints(tenant: string): Promise<number> {
    return this.redis.zcard(this.key('tenant', tenant, 'ckpts'));
  }
  countProbeSets(tenant: string): Promise<number> {
    return this.redis.zcard(this.key('tenant', tenant, 'probes'));
  }
  /** Jobs that were submitted with this checkpoint as an input (their state decides whether it may go). */
  async addCheckpointJob(checkpointId: string, jobId: string): Promise<void> {
    await this.redis.sadd(this.key('ckpt', checkpointId, 'jobs'), jobId);
  }
  checkpointJobs(checkpointId: string): Promise<string[]> {
    return this.redis.smembers(this.key('ckpt', checkpointId, 'jobs'));
  }
  async forgetCheckpointJob(checkpointId: string, jobId: string): Promise<void> {
    await this.redis.srem(this.key('ckpt', checkpointId, 'jobs'), jobId);
  }
  /** Records a file (replacing one of the same name) and moves the tenant's stored bytes by the difference. */
  async putFile(id: string, f: UploadedFile, tenant: string): Promise<void> {
    const previous = await this.redis.hget(this.key('ckpt', id, 'files'), f.name);
    const delta = f.bytes - (previous === null ? 0 : (JSON.parse(previous) as UploadedFile).bytes);
    await this.redis.multi().hset(this.key('ckpt', id, 'files'), f.name, JSON.stringify(f)).incrby(this.key('tenant', tenant, 'bytes'), delta).exec();
  }
  async deleteFile(id: string, name: string, tenant: string): Promise<boolean> {
    const previous = await this.redis.hget(this.key('ckpt', id, 'files'), name);
    if (previous === null) return false;
    const [[, removed]] = (await this.redis
      .multi()
      .hdel(this.key('ckpt', id, 'files'), name)
      .decrby(this.key('tenant', tenant, 'bytes'), (JSON.parse(previous) as UploadedFile).bytes)
      .exec()) as [[Error | null, number], unknown];
    return removed === 1;
  }
  async listFiles(id: string): Promise<UploadedFile[]> {
    const all = await this.redis.hgetall(this.key('ckpt', id, 'files'));
    return Object.values(all)
      .map((v) => JSON.parse(v) as UploadedFile)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  // references
  async putReference(r: ReferenceRecord): Promise<void> {
    const m = this.redis.multi().set(this.key('ref', r.id), JSON.stringify(r));
    m.zadd(r.visibility === 'global' ? this.key('refs', 'global') : this.key('tenant', r.tenant, 'refs'), Date.parse(r.createdAt), r.id);
    await m.exec();
  }
  getReference(id: string): Promise<ReferenceRecord | undefined> {
    return this.getJson(this.key('ref', id));
  }
  async listReferences(tenant: string): Promise<ReferenceRecord[]> {
    const ids = [
      ...(await this.redis.zrange(this.key('refs', 'global'), '0', '-1')),
      ...(await this.redis.zrange(this.key('tenant', tenant, 'refs'), '0', '-1')),
    ];
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(...ids.map((i) => this.key('ref', i)));
    return raws.flatMap((r) => (r === null ? [] : [JSON.parse(r) as ReferenceRecord]));
  }

  // probe sets
  /** The record only: the probes themselves are in the blob store (record.key). */
  async putProbeSet(r: ProbeSetRecord): Promise<void> {
    await this.redis
      .multi()
      .set(this.key('probes', r.id), JSON.stringify(r))
      .zadd(this.key('tenant', r.tenant, 'probes'), Date.parse(r.createdAt), r.id)
      .exec();
  }
  async listProbeSets(tenant: string): Promise<ProbeSetRecord[]> {
    const ids = await this.redis.zrange(this.key('tenant', tenant, 'probes'), '0', '-1');
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(...ids.map((i) => this.key('probes', i)));
    return raws.flatMap((r) => (r === null ? [] : [JSON.parse(r) as ProbeSetRecord]));
  }
  getProbeSet(id: string): Promise<ProbeSetRecord | undefined> {
    return this.getJson(this.key('probes', id));
  }
  /** Probes of a set stored in Redis by an earlier version (before probe sets moved to the blob store). */
  async getLegacyProbeRecords(id: string): Promise<ProbeRecord[] | undefined> {
    const raw = await this.redis.get(this.key('probes', id, 'records'));
    if (raw === null) return undefined;
    return parseJsonl(raw, { source: `probe set ${id}`, empty: false }, (o) => o as unknown as ProbeRecord);
  }

  // jobs
  async putJob(r: JobRecord): Promise<void> {
    await this.redis
      .multi()
      .set(this.key('job', r.id), JSON.stringify(r))
      .zadd(this.key('tenant', r.tenant, 'jobs'), Date.parse(r.createdAt), r.id)
      .exec();
  }
  async deleteJob(r: JobRecord): Promise<void> {
    const m = this.redis.multi().del(this.key('job', r.id)).zrem(this.key('tenant', r.tenant, 'jobs'), r.id);
    if (r.idempotencyKeyHash) m.del(this.key('idem', r.tenant, r.idempotencyKeyHash));
    await m.exec();
  }
  getJob(id: string): Promise<JobRecord | undefined> {
    return this.getJson(this.key('job', id));
  }
  async getJobs(ids: string[]): Promise<(JobRecord | undefined)[]> {
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(...ids.map((i) => this.key('job', i)));
    return raws.map((r) => (r === null ? undefined : (JSON.parse(r) as JobRecord)));
  }
  /** Job ids of a tenant, newest first, strictly older than (score, id) when a cursor is given. */
  async pageJobIds(tenant: string, before: { score: number; id: string } | undefined, count: number): Promise<{ id: string; score: number }[]> {
    const key = this.key('tenant', tenant, 'jobs');
    const max = before === undefined ? '+inf' : String(before.score);
    const raw = await this.redis.zrevrangebyscore(key, max, '-inf', 'WITHSCORES', 'LIMIT', '0', String(count + 64));
    const out: { id: string; score: number }[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      const id = raw[i];
      const score = Number(raw[i + 1]);
      // Same-millisecond jobs are ordered by id (descending, as ZREVRANGE does) to make the cursor total.
      if (before !== undefined && score === before.score && id >= before.id) continue;
      out.push({ id, score });
      if (out.length >= count) break;
    }
    return out;
  }
  cancelKey(jobId: string): string {
    return cancelFlagKey(this.prefix, jobId);
  }
  async requestCancel(jobId: string): Promise<void> {
    await this.redis.set(this.cancelKey(jobId), '1', 'EX', 7 * 24 * 3600);
  }
  async isCancelRequested(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.cancelKey(jobId))) === 1;
  }

  /**
   * Idempotency: the first request with a key stores (bodyHash, jobId); later ones get the stored entry.
   * Returns undefined when this call claimed the key.
   */
  async claimIdempotencyKey(tenant: string, keyHash: string, bodyHash: string, jobId: string): Promise<{ bodyHash: string; jobId: string } | undefined> {
    const k = this.key('idem', tenant, keyHash);
    const ok = await this.redis.set(k, JSON.stringify({ bodyHash, jobId }), 'EX', 24 * 3600, 'NX');
    if (ok === 'OK') return undefined;
    const existing = await this.getJson<{ bodyHash: string; jobId: string }>(k);
    return existing ?? { bodyHash, jobId };
  }
}
