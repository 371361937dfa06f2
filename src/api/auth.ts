import type { FastifyReply, FastifyRequest } from 'fastify';
import { hashApiKey } from '../config.js';
import { FgsnError } from '../errors.js';
import type { ApiContext } from './context.js';

/**
 * Bearer API keys. Only sha256 digests of keys are held (config hashes them at load), so a key is found by
 * hashing what the client sent: no plaintext comparison, nothing to leak from memory dumps or Redis.
 */
export function authenticate(ctx: ApiContext) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const header = request.headers.authorization;
    const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m === null) throw new FgsnError('UNAUTHORIZED', 'missing or malformed Authorization: Bearer <api key>');
    const key = ctx.config.apiKeys.get(hashApiKey(m[1]));
    if (key === undefined) throw new FgsnError('UNAUTHORIZED', 'unknown API key');
    request.auth = { tenant: key.tenant, admin: key.admin, keyHash: key.keyHash };
    await rateLimit(ctx, key.keyHash, reply);
  };
}

/** Fixed window per key, counted in Redis so every API replica shares it. */
async function rateLimit(ctx: ApiContext, keyHash: string, reply: FastifyReply): Promise<void> {
  const { max, windowS } = ctx.config.rateLimit;
  if (max === 0) return;
  const now = Date.now();
  const window = Math.floor(now / (windowS * 1000));
  const k = `${ctx.config.queuePrefix}:rl:${keyHash.slice(0, 32)}:${window}`;
  const [[, count]] = (await ctx.redis.multi().incr(k).pexpire(k, windowS * 1000 + 1000).exec()) as [[Error | null, number]];
  const resetS = Math.ceil(((window + 1) * windowS * 1000 - now) / 1000);
  reply.header('ratelimit-limit', max).header('ratelimit-remaining', Math.max(0, max - count)).header('ratelimit-reset', resetS);
  if (count > max) {
    reply.header('retry-after', resetS);
    ctx.metrics.rateLimited.inc();
    throw new FgsnError('RATE_LIMITED', `rate limit of ${max} requests per ${windowS}s reached for this key`, { details: { retryAfterS: resetS } });
  }
}

export function requireAdmin(request: FastifyRequest): void {
  if (!request.auth.admin) throw new FgsnError('FORBIDDEN', 'this operation needs an admin API key (FGSN_ADMIN_KEYS)');
}
