/** The app's compilers: requests validated into the coded 400, responses enforced by their declared schema. */
import Fastify from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { installErrorHandling } from '../../src/api/error-handler.js';
import { errorResponses } from '../../src/api/schemas.js';
import { zodSerializerCompiler, zodValidatorCompiler } from '../../src/api/zod-schema.js';

function app() {
  const a = Fastify({ logger: false });
  a.setValidatorCompiler(zodValidatorCompiler);
  a.setSerializerCompiler(zodSerializerCompiler);
  installErrorHandling(a);
  const t = a.withTypeProvider<ZodTypeProvider>();
  const Thing = z.object({ id: z.string(), n: z.number().int() });
  t.post('/things', { schema: { body: z.object({ n: z.number().int() }).strict(), response: { 201: Thing, ...errorResponses(400) } } }, async (request, reply) =>
    reply.status(201).send({ id: 't1', n: request.body.n, secret: 'not documented' } as never),
  );
  t.get('/broken', { schema: { response: { 200: Thing } } }, async () => ({ id: 't1', n: 'not a number' }) as never);
  return a;
}

describe('zod compilers', () => {
  it('a declared response drops undocumented keys', async () => {
    const r = await app().inject({ method: 'POST', url: '/things', payload: { n: 3 } });
    expect(r.statusCode).toBe(201);
    expect(r.json()).toEqual({ id: 't1', n: 3 });
  });

  it('a response that violates its schema is a coded 500, never sent', async () => {
    const r = await app().inject({ method: 'GET', url: '/broken' });
    expect(r.statusCode).toBe(500);
    expect(r.json()).toMatchObject({ code: 'INTERNAL' });
    expect(r.body).not.toContain('not a number');
  });

  it('an invalid body is the coded 400 naming the field', async () => {
    const r = await app().inject({ method: 'POST', url: '/things', payload: { n: 1.5 } });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ code: 'VALIDATION_FAILED', details: { in: 'body', issues: [{ path: 'n' }] } });
  });
});
