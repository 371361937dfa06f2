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
    const key = m === null ? undefined : ctx.config.apiKeys.get(hashApiKey(m[1]));
    if (key === undefined) {
      // Guessing keys costs a 429 after a few tries per client address (counted in Redis, shared by replicas).
      await countAuthFailure(ctx, request.ip, reply);
      throw new FgsnError('UNAUTHORIZED', m === null ? 'missing or malformed Authorization: Bearer <api key>' : 'unknown API key');
    }
    // An address over its failure budget is refused even with a right key: guessing must not pay off.
    await checkAuthFailures(ctx, request.ip, reply);
    request.auth = { tenant: key.tenant, admin: key.admin, keyHash: key.keyHash };
    await rateLimit(ctx, key.keyHash, reply);
  };
}

function authFailWindow(ctx: ApiContext, ip: string): { key: string; resetS: number } {
  const windowS = ctx.config.rateLimit.windowS;
  const now = Date.now();
  const window = Math.floor(now / (windowS * 1000));
  return { key: `${ctx.config.queuePrefix}:authfail:${ip}:${window}`, resetS: Math.ceil(((window + 1) * windowS * 1000 - now) / 1000) };
}

async function checkAuthFailures(ctx: ApiContext, ip: string, reply: FastifyReply): Promise<void> {
  const limit = ctx.config.authFailureLimit;
  if (limit === 0) return;
  const { key, resetS } = authFailWindow(ctx, ip);
  if (Number((await ctx.redis.get(key)) ?? 0) > limit) refuseFailures(ctx, limit, resetS, reply);
}

function refuseFailures(ctx: ApiContext, limit: number, resetS: number, reply: FastifyReply): never {
  reply.header('retry-after', resetS);
  ctx.metrics.rateLimited.inc();
  throw new FgsnError('RATE_LIMITED', `too many failed authentications from this address (${limit} per ${ctx.config.rateLimit.windowS}s)`, { details: { retryAfterS: resetS } });
}

/** Failed authentications per client address in a fixed window; over the limit, 429 with Retry-After. */
async function countAuthFailure(ctx: ApiContext, ip: string, reply: FastifyReply): Promise<void> {
  const limit = ctx.config.authFailureLimit;
  if (limit === 0) return;
  const { key, resetS } = authFailWindow(ctx, ip);
  const windowS = ctx.config.rateLimit.windowS;
  const [[, count]] = (await ctx.redis.multi().incr(key).pexpire(key, windowS * 1000 + 1000).exec()) as [[Error | null, number]];
  if (count > limit) refuseFailures(ctx, limit, resetS, reply);
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
