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

export function toFgsnError(e: unknown): FgsnError {
  if (isFgsnError(e)) return e;
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
    if (e.status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ code: e.code, msg: e.message }, 'request rejected');
    if (e.code === 'PAYLOAD_TOO_LARGE') reply.header('connection', 'close');
    void reply.status(e.status).send({ ...e.toJSON(), requestId: request.id });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ ...new FgsnError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`).toJSON(), requestId: request.id });
  });
}
