/**
 * Issue 15 item 9: artifact names with emoji, U+202E or URL-special characters are downloadable: listed
 * URLs are RFC 3986 percent-encoded and Content-Disposition carries an ASCII fallback plus RFC 6266/8187
 * `filename*` (raw Unicode in the header made the download a 500). Bidi controls are refused in uploads.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { securitySetup, fakeCompletedJob, type SecuritySetup } from './fixtures.js';

let s: SecuritySetup;
beforeAll(async () => {
  s = await securitySetup();
});
afterAll(async () => {
  await s?.close();
});

const NAMES = ['model/😀.json', 'model/evil\u202Egnp.json', 'model/a#b.json', 'model/q?x=1 %20.json', 'model/quote"semi;.json'];

describe('item 9: artifact names', () => {
  it('every listed URL downloads its artifact, with an ASCII Content-Disposition and the exact name in filename*', async () => {
    const id = await fakeCompletedJob(s.h, NAMES.map((name, i) => ({ name, body: `{"i":${i}}` })));
    const list = await s.h.json<{ items: { name: string; url: string }[] }>('GET', `/v1/jobs/${id}/artifacts`);
    expect(list.status).toBe(200);
    expect(list.body.items.map((i) => i.name).sort()).toEqual([...NAMES].sort());
    for (const item of list.body.items) {
      expect(item.url).toMatch(/^[\x21-\x7e]+$/); // percent-encoded: no raw Unicode, spaces or '#'
      const res = await s.h.req('GET', item.url);
      expect(res.status, item.name).toBe(200);
      expect(await res.text()).toBe(`{"i":${NAMES.indexOf(item.name)}}`);
      const cd = res.headers.get('content-disposition') ?? '';
      expect(cd).toMatch(/^[\x20-\x7e]+$/);
      const star = /filename\*=UTF-8''([^;]+)/.exec(cd);
      expect(decodeURIComponent(star?.[1] ?? ''), item.name).toBe(item.name.split('/').pop());
    }
  });

  it('bidi control characters are refused in upload names with a coded 422', async () => {
    const c = await s.h.json<{ id: string }>('POST', '/v1/checkpoints', { json: {} });
    const r = await s.h.json<{ code: string }>('PUT', `/v1/checkpoints/${c.body.id}/files/${encodeURIComponent('evil\u202Egnp.json')}`, { body: '{}', headers: { 'content-type': 'application/octet-stream' } });
    expect(r.status).toBe(422);
    expect(r.body.code).toBe('CHECKPOINT_PATH_UNSAFE');
    const emoji = await s.h.json<{ name: string }>('PUT', `/v1/checkpoints/${c.body.id}/files/${encodeURIComponent('😀.json')}`, { body: '{}', headers: { 'content-type': 'application/octet-stream' } });
    expect(emoji.status).toBe(201);
    expect(emoji.body.name).toBe('😀.json');
  });
});
