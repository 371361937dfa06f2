/**
 * Issue 15 item 7 (submission side): method options are validated when the job is submitted, by the
 * defense's own parser: a bad or unknown option, or a non-finite / huge number, is a 400 naming the field,
 * never a queued job that fails (or, for strength 1e308, completes with +Inf weights).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openApiDocument } from '../../src/api/app.js';
import { loadConfig } from '../../src/config.js';
import { securitySetup, type SecuritySetup } from './fixtures.js';

type Err = { code: string; details: { issues: { path: string; message: string }[] } };

let s: SecuritySetup;
beforeAll(async () => {
  s = await securitySetup();
});
afterAll(async () => {
  await s?.close();
});

const submit = (method: string, options: unknown, headers: Record<string, string> = {}) =>
  s.h.json<Err & { id: string; state: string }>('POST', '/v1/jobs', { json: { finetuned: s.finetuned, reference: s.reference, method, options }, headers });

describe('item 7: options at submission', () => {
  it.each([
    ['fgsn', { q: -0.5 }, 'options.q'],
    ['fgsn', { nope: 1 }, 'options.nope'],
    ['fgsn', { targetAsr: 'off', strength: 1e308 }, 'options.strength'],
    ['fgsn', { strength: '1e308' }, 'options.strength'],
    ['fgsn', { batchSize: 1e9 }, 'options.batchSize'],
    ['fgsn', { maxParams: 1e6 }, 'options.maxParams'],
    ['fgsn', { utilityWeight: 1e300 }, 'options.utilityWeight'],
    ['fgsn', { layers: 'x'.repeat(10_000) }, 'options.layers'],
    ['fgsn', { mode: 'nope' }, 'options.mode'],
    ['resta', { gamma: -1e200 }, 'options.gamma'],
    ['safelora', { q: 0.1 }, 'options.q'],
    ['fgsn', { q: { deep: [1] } }, 'options.q'],
  ])('%s %j -> 400 naming %s', async (method, options, path) => {
    const r = await submit(method, options);
    expect(r.status, JSON.stringify(r.body)).toBe(400);
    expect(r.body.code).toBe('VALIDATION_FAILED');
    expect(r.body.details.issues.map((i) => i.path)).toContain(path);
  });

  it('cross-field rules of the parser apply too', async () => {
    const r = await submit('safelora', { threshold: 0.5, topK: 3 });
    expect(r.status).toBe(400);
    // The registry's rule names the field it refuses (topK given with threshold).
    expect(r.body.details.issues[0].path).toBe('options.topK');
    // fgsn's q is the fixed budget: with the target-driven search on it would be ignored, so it is refused.
    const q = await submit('fgsn', { q: 0.02 });
    expect(q.status).toBe(400);
    expect(q.body.details.issues[0].path).toBe('options.q');
    expect(q.body.details.issues[0].message).toMatch(/targetAsr off/);
  });

  it('valid options (including targetAsr "off" and a bounded strength) are queued', async () => {
    const r = await submit('fgsn', { targetAsr: 'off', strength: 5, q: 0.02 });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.state).toBe('queued');
  });

  it('the OpenAPI document lists every option of every method with its bounds', async () => {
    const doc = (await openApiDocument(loadConfig({}))) as { paths: Record<string, { post?: { requestBody: { content: Record<string, { schema: { properties: { options: { anyOf: { title: string; properties: Record<string, { maximum?: number }> }[] } } } }> } } }> };
    const options = doc.paths['/v1/jobs'].post!.requestBody.content['application/json'].schema.properties.options;
    expect(options.anyOf.map((o) => o.title)).toEqual(expect.arrayContaining(['fgsn options', 'resta options', 'safelora options']));
    const fgsn = options.anyOf.find((o) => o.title === 'fgsn options')!;
    expect(fgsn.properties.q.maximum).toBe(1);
    expect(fgsn.properties.strength.maximum).toBeLessThan(1e6);
  });
});
