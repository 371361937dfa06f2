import type { FastifyError, FastifyInstance } from 'fastify';
import { FgsnError, isFgsnError, type ErrorCode } from '../errors.js';

/** Fastify's own client errors, mapped onto catalogue codes. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'VALIDATION_FAILED',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'VALIDATION_FAILED',
  FST_ERR_CTP_INVALID_JSON_BODY: 'VALIDATION_FAILED',
  FST_ERR_VALIDATION: 'VALIDATION_FAILED',
  FST_REQ_FILE_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_FILES_LIMIT: 'VALIDATION_FAILED',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
};

/** Seconds a client is told to wait when Redis does not answer. */
export const REDIS_RETRY_AFTER_S = 5;

/**
 * ioredis failures (command timeout, no connection with the offline queue off, retries used up): the
 * request could not be served now, which is a 503 to retry, not an internal error.
 */
export function isRedisUnavailable(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === 'MaxRetriesPerRequestError') return true;
  return /Command timed out|enableOfflineQueue|Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|Reached the max retries per request/.test(e.message);
}

export function redisUnavailable(cause?: unknown): FgsnError {
  return new FgsnError('SERVICE_UNAVAILABLE', 'Redis does not answer; the request was not processed', { details: { retryAfterS: REDIS_RETRY_AFTER_S }, cause });
}

export function toFgsnError(e: unknown): FgsnError {
  if (isFgsnError(e)) return e;
  if (isRedisUnavailable(e)) return redisUnavailable(e);
  const fe = e as Partial<FastifyError> & { statusCode?: number };
  const mapped = fe?.code ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) return new FgsnError(mapped, fe.message ?? mapped);
  if (fe?.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500) {
    if (fe.statusCode === 404) return new FgsnError('NOT_FOUND', fe.message ?? 'not found');
    if (fe.statusCode === 413) return new FgsnError('PAYLOAD_TOO_LARGE', fe.message ?? 'too large');
    if (fe.statusCode === 415) return new FgsnError('UNSUPPORTED_MEDIA_TYPE', fe.message ?? 'unsupported media type');
    return new FgsnError('VALIDATION_FAILED', fe.message ?? 'bad request');
  }
  return new FgsnError('INTERNAL', 'internal error', { cause: e });
}

/** Every error leaves as `{code, message, hint, details, requestId}` with the catalogue's status. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const e = toFgsnError(err);
    if (e.code === 'SERVICE_UNAVAILABLE') request.log.warn({ err }, 'Redis unavailable: answered 503');
    else if (e.status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ code: e.code, msg: e.message }, 'request rejected');
    if (e.code === 'PAYLOAD_TOO_LARGE') reply.header('connection', 'close');
    if (e.code === 'SERVICE_UNAVAILABLE') reply.header('retry-after', REDIS_RETRY_AFTER_S);
    void reply.status(e.status).send({ ...e.toJSON(), requestId: request.id });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ ...new FgsnError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`).toJSON(), requestId: request.id });
  });
}
