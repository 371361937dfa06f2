/**
 * Bookkeeping of resumable (Content-Range) uploads in Redis: which files of a tenant are partial and the total
 * size each one announced, and a per-file write lease. The bytes themselves are the file under
 * layout.uploadResumable(checkpoint); its length on disk is the offset the server has received, so a chunk
 * cut off mid-way keeps the prefix that arrived and the client resumes from there.
 *
 * Why the totals are kept: the tenant's byte quota counts a partial file at its announced total from the first
 * chunk on (a tenant cannot hold more disk in partials than its quota allows), and the number of partial files
 * per tenant is bounded (MAX_PARTIAL_FILES), so abandoned partials cannot pile up before the upload TTL
 * sweeper removes their checkpoint.
 */
import { randomUUID } from 'node:crypto';
import type { Records } from './records.js';

/** Partial (Content-Range) files a tenant may hold at once, over all its open uploads. */
export const MAX_PARTIAL_FILES = 16;
/** A write lease outlives a stalled writer by this much; it is renewed while bytes are being written. */
const LEASE_MS = 30_000;

export interface PartialEntry {
  total: number;
}

export class UploadPartials {
  constructor(private readonly records: Records) {}

  private key(tenant: string): string {
    return this.records.key('tenant', tenant, 'partials');
  }

  async get(tenant: string, checkpointId: string, name: string): Promise<PartialEntry | undefined> {
    const raw = await this.records.redis.hget(this.key(tenant), `${checkpointId}/${name}`);
    return raw === null ? undefined : (JSON.parse(raw) as PartialEntry);
  }

  /** Bytes announced by the tenant's partial files (counted against its byte quota until they complete). */
  async reservedBytes(tenant: string): Promise<number> {
    return (await this.records.redis.hvals(this.key(tenant))).reduce((n, v) => n + (JSON.parse(v) as PartialEntry).total, 0);
  }

  /**
   * Registers a partial file unless the tenant already holds MAX_PARTIAL_FILES (checked and set in one Lua
   * call, so concurrent first chunks cannot overshoot). Returns the count held when refused.
   */
  async add(tenant: string, checkpointId: string, name: string, entry: PartialEntry): Promise<{ ok: true } | { ok: false; used: number }> {
    const script = `
      if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
        return -redis.call('HLEN', KEYS[1])
      end
      redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
      return 1`;
    const r = (await this.records.redis.eval(script, 1, this.key(tenant), `${checkpointId}/${name}`, JSON.stringify(entry), String(MAX_PARTIAL_FILES))) as number;
    return r === 1 ? { ok: true } : { ok: false, used: -r };
  }

  async remove(tenant: string, checkpointId: string, name: string): Promise<boolean> {
    return (await this.records.redis.hdel(this.key(tenant), `${checkpointId}/${name}`)) === 1;
  }

  /** Forgets every partial file of a checkpoint (completed, deleted or swept; the caller removes the bytes). */
  async removeCheckpoint(tenant: string, checkpointId: string): Promise<void> {
    const mine = (await this.records.redis.hkeys(this.key(tenant))).filter((k) => k.startsWith(`${checkpointId}/`));
    if (mine.length > 0) await this.records.redis.hdel(this.key(tenant), ...mine);
  }

  /**
   * The write lease of one file: undefined when another request holds it. The lease is renewed while held and
   * lapses LEASE_MS after a writer's process died, so a crashed API replica never blocks a file for good.
   */
  async lock(checkpointId: string, name: string): Promise<(() => Promise<void>) | undefined> {
    const key = this.records.key('ckpt', checkpointId, 'writing', name);
    const token = randomUUID();
    if ((await this.records.redis.set(key, token, 'PX', LEASE_MS, 'NX')) !== 'OK') return undefined;
    const renew = setInterval(() => {
      void this.records.redis
        .eval(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`, 1, key, token, String(LEASE_MS))
        .catch(() => undefined);
    }, LEASE_MS / 3);
    renew.unref();
    return async () => {
      clearInterval(renew);
      await this.records.redis.eval(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, 1, key, token);
    };
  }
}
