/** Hand-checked cases for the small pure pieces of the service. */
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { newId, ID_PATTERN } from '../../src/api/ids.js';
import { parseProbeNdjson } from '../../src/api/probes.js';
import { parseRange } from '../../src/api/routes/artifacts.js';
import { scrubPaths } from '../../src/api/routes/checkpoints.js';
import { checkUploadName } from '../../src/api/upload-names.js';
import { decodeCodedError, encodeCodedError } from '../../src/queue/job-data.js';
import { mapState } from '../../src/queue/status.js';
import { guardedLookup, isPrivateAddress, privateLiteral } from '../../src/queue/webhook-address.js';
import { deliverWebhook, isHttpUrl, signWebhook } from '../../src/queue/webhooks.js';
import { assertSafeKey } from '../../src/storage/keys.js';

describe('parseRange (RFC 9110 single ranges over a 1000-byte object)', () => {
  it.each([
    [undefined, null],
    ['bytes=0-99', { start: 0, end: 99 }],
    ['bytes=900-', { start: 900, end: 999 }],
    ['bytes=990-2000', { start: 990, end: 999 }],
    ['bytes=-10', { start: 990, end: 999 }],
    ['bytes=-5000', { start: 0, end: 999 }],
    ['bytes=1000-', 'unsatisfiable'],
    // RFC 9110: an invalid range-spec makes the header ignored (issue 15 item 10)
    ['bytes=50-10', null],
    ['bytes=5-2', null],
    ['bytes=-0', 'unsatisfiable'],
    ['bytes=0-1,5-6', null],
    ['items=0-1', null],
    ['bytes=-', null],
  ])('%s', (header, expected) => {
    expect(parseRange(header, 1000)).toEqual(expected);
  });
});

describe('upload names', () => {
  it.each(['model.safetensors', 'model-00001-of-00002.safetensors', 'config.json', 'tokenizer.json', 'a..b.json'])('accepts %s', (n) => {
    expect(() => checkUploadName(n)).not.toThrow();
  });
  it.each(['..', '.', '../x', 'a/b', '/etc/passwd', 'a\\b', 'x\0y', '.hidden', 'C:evil', '', 'a'.repeat(256), 'tab\there'])('refuses %j as unsafe', (n) => {
    expect(() => checkUploadName(n)).toThrow(expect.objectContaining({ code: 'CHECKPOINT_PATH_UNSAFE' }));
  });
  it.each(['pytorch_model.bin', 'adapter_model.bin', 'x.pt', 'x.pth', 'x.pkl', 'x.ckpt'])('refuses pickle %s', (n) => {
    expect(() => checkUploadName(n)).toThrow(expect.objectContaining({ code: 'CHECKPOINT_PICKLE_REFUSED' }));
  });
});

describe('storage keys', () => {
  it('accept relative keys and refuse escapes', () => {
    expect(() => assertSafeKey('jobs/j/a/model/model.safetensors')).not.toThrow();
    for (const k of ['', '/a', 'a/', 'a//b', '../a', 'a/./b', 'a\\b', 'a\0']) expect(() => assertSafeKey(k), k).toThrow();
  });
});

describe('probe NDJSON', () => {
  it('skips blank lines, drops unknown keys, numbers bad lines from 1', () => {
    expect(parseProbeNdjson('{"prompt":"a","x":1}\r\n\n{"prompt":"b","category":"c","response":"r"}')).toEqual([{ prompt: 'a' }, { prompt: 'b', category: 'c', response: 'r' }]);
    expect(() => parseProbeNdjson('{"prompt":"a"}\n{"prompt":3}')).toThrow(expect.objectContaining({ code: 'PROBES_INVALID', details: { problems: [expect.objectContaining({ line: 2 })] } }));
    expect(() => parseProbeNdjson('')).toThrow(expect.objectContaining({ code: 'PROBES_EMPTY' }));
  });
});

describe('job states and coded errors', () => {
  it('round-trips a coded error through a failedReason string', () => {
    const e = { code: 'DEFENSE_OPTION_INVALID', message: 'q must be in (0, 1)', details: { option: 'q' } };
    expect(decodeCodedError(encodeCodedError(e))).toEqual(e);
    expect(decodeCodedError('job stalled more than allowable limit')).toMatchObject({ code: 'WORKER_LOST' });
    expect(decodeCodedError('Unexpected exit code: null signal: SIGKILL')).toMatchObject({ code: 'WORKER_LOST' });
    expect(decodeCodedError('boom')).toEqual({ code: 'INTERNAL', message: 'boom' });
    expect(decodeCodedError(undefined)).toBeUndefined();
  });
  it('maps BullMQ states onto the public ones', () => {
    expect(mapState('waiting', undefined, false)).toBe('queued');
    expect(mapState('delayed', { code: 'STORAGE_ERROR', message: '' }, false)).toBe('queued');
    expect(mapState('prioritized', undefined, false)).toBe('queued');
    expect(mapState('active', undefined, true)).toBe('running');
    expect(mapState('completed', undefined, false)).toBe('completed');
    expect(mapState('failed', { code: 'JOB_CANCELLED', message: '' }, true)).toBe('cancelled');
    expect(mapState('failed', { code: 'CHECKPOINT_IO', message: '' }, false)).toBe('failed');
    expect(mapState('unknown', undefined, true)).toBe('cancelled');
  });
});

describe('webhooks', () => {
  it('sign the exact body with HMAC-SHA256', () => {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    expect(signWebhook('Jefe', 'what do ya want for nothing?')).toBe('sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
    expect(signWebhook('k', '{"a":1}')).toBe('sha256=' + createHmac('sha256', 'k').update('{"a":1}').digest('hex'));
  });
  it('only go to http(s)', () => {
    expect(isHttpUrl('https://example.com/hook')).toBe(true);
    expect(isHttpUrl('http://127.0.0.1:8080/x')).toBe(true);
    for (const u of ['ftp://x/y', 'file:///etc/passwd', 'gopher://x', 'javascript:alert(1)', 'not a url']) expect(isHttpUrl(u), u).toBe(false);
  });
});

describe('ids and paths', () => {
  it('ids are unguessable and match the URL pattern', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newId('job')));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(ID_PATTERN.test(id)).toBe(true);
    expect(ID_PATTERN.test('job_../../x')).toBe(false);
  });
  it('server paths are scrubbed from problem details', () => {
    expect(scrubPaths({ message: '/data/u/x/files/model.safetensors: bad', details: { dir: '/data/u/x/files' } }, '/data/u/x/files')).toEqual({
      message: 'model.safetensors: bad',
      details: { dir: '.' },
    });
  });
});

describe('webhook address guard', () => {
  it('classifies private and public addresses', () => {
    for (const ip of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fd00::1', 'fe80::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1']) {
      expect(isPrivateAddress(ip), ip).toBe(true);
    }
    for (const ip of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) expect(isPrivateAddress(ip), ip).toBe(false);
  });

  it('catches private literals and names that resolve to private addresses', async () => {
    expect(privateLiteral(new URL('http://127.0.0.1:8080/x'))).toBe('127.0.0.1');
    expect(privateLiteral(new URL('http://[::1]/x'))).toBe('::1');
    expect(privateLiteral(new URL('http://localhost/x'))).toBe('localhost');
    expect(privateLiteral(new URL('https://hooks.example.com/x'))).toBeUndefined();
    const err = await new Promise<Error | null>((r) => guardedLookup('localhost', {}, (e) => r(e)));
    expect(err?.name).toBe('PrivateAddressError');
  });

  it('refuses delivery to a private address unless allowed, without retry', async () => {
    const job = { id: 'job_x' } as never;
    const d = { url: 'http://127.0.0.1:9/hook', secret: 's'.repeat(16), event: 'job.completed' as const, job };
    await expect(deliverWebhook(d, 1, { timeoutMs: 1000, allowPrivate: false })).rejects.toMatchObject({ name: 'UnrecoverableError' });
    // allowed: it is attempted (and fails to connect on the discard port, a retryable error)
    await expect(deliverWebhook(d, 1, { timeoutMs: 1000, allowPrivate: true })).rejects.not.toMatchObject({ name: 'UnrecoverableError' });
  });
});
