/**
 * Job events against a real job (API + worker + the demo trio): the live Server-Sent Events stream carries every
 * stage and search step in order and closes after the terminal state; JSON pages (after/limit) return the same
 * events; Last-Event-ID resumes after the given event; another tenant sees nothing. Plus the pure parts
 * (ProgressEvents, estimatedFinishAt) on hand-checked cases.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FgsnClient } from '../../src/client/index.js';
import { demoSets, writeDemoTestbed } from '../../src/demo/fixtures.js';
import { ProgressEvents, estimatedFinishAt } from '../../src/queue/events.js';
import { tempDir } from '../checkpoint/fixtures.js';
import { KEYS, startHarness, type Harness } from './harness.js';
import { startReceiver } from './webhook-receiver.js';

type Event = { id: number; type: string; stage?: string; message?: string; state?: string; percent?: number };

/** Reads a text/event-stream response to its end: the events' ids, names and data. */
async function readSse(res: Response): Promise<{ id: number; event: string; data: Event }[]> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((block) => block.includes('data: '))
    .map((block) => {
      const field = (name: string): string => block.split('\n').find((l) => l.startsWith(`${name}: `))!.slice(name.length + 2);
      return { id: Number(field('id')), event: field('event'), data: JSON.parse(field('data')) as Event };
    });
}

describe('ProgressEvents and estimatedFinishAt', () => {
  it('a new stage is a stage event, a new message a step event, percent-only updates nothing', () => {
    const pe = new ProgressEvents();
    const at = new Date('2026-01-01T00:00:00Z');
    const p = (stage: string, percent: number, message?: string) => pe.next({ stage, percent, timings: {}, attempt: 1, ...(message ? { message } : {}) }, at);
    expect(p('validate', 0)).toEqual({ type: 'stage', at: at.toISOString(), stage: 'validate', percent: 0 });
    expect(p('validate', 3)).toBeUndefined();
    expect(p('selection', 40, 'ranking')).toMatchObject({ type: 'stage', stage: 'selection', message: 'ranking' });
    expect(p('selection', 41, 'round 1 q=0.0025 g=3: judged probe ASR 0.500')).toMatchObject({ type: 'step', message: 'round 1 q=0.0025 g=3: judged probe ASR 0.500' });
    expect(p('selection', 42, 'round 1 q=0.0025 g=3: judged probe ASR 0.500')).toBeUndefined();
  });

  it('extrapolates the finish time from progress since the start, only for running jobs past 5%', () => {
    const start = Date.parse('2026-01-01T00:00:00Z');
    // 25% after 60 s: 180 s to go.
    expect(estimatedFinishAt('running', start, 25, start + 60_000)).toBe(new Date(start + 240_000).toISOString());
    expect(estimatedFinishAt('running', start, 4, start + 60_000)).toBeNull();
    expect(estimatedFinishAt('queued', start, 50, start + 60_000)).toBeNull();
    expect(estimatedFinishAt('completed', start, 100, start + 60_000)).toBeNull();
  });
});

describe('GET /v1/jobs/{id}/events on a real job', () => {
  let h: Harness;
  let work: { dir: string; cleanup: () => Promise<void> };
  let jobId: string;
  let live: { id: number; event: string; data: Event }[];
  let receiver: Awaited<ReturnType<typeof startReceiver>>;

  beforeAll(async () => {
    h = await startHarness({ worker: true });
    receiver = await startReceiver();
    work = await tempDir('fgsn-events-');
    const tb = await writeDemoTestbed(join(work.dir, 'trio'));
    const admin = new FgsnClient(h.base, KEYS.admin);
    const reference = (await admin.createReference((await admin.uploadCheckpoint(tb.aligned)).id, (await admin.uploadCheckpoint(tb.base)).id)).id;
    const client = new FgsnClient(h.base, KEYS.a);
    const sets = demoSets();
    const job = await client.submitJob({
      finetuned: (await client.uploadCheckpoint(tb.finetuned)).id, reference,
      probes: { harmful: (await client.createProbeSet('harmful', sets.harmfulProbes)).id, benign: (await client.createProbeSet('benign', sets.benignProbes)).id },
      task: (await client.createProbeSet('task', sets.taskProbes)).id, outputs: ['diff'],
      webhook: { url: receiver.url, secret: 'a-webhook-secret-of-some-length', events: ['terminal', 'stage'] },
    });
    jobId = job.id;
    // Subscribed right after submission: the stream follows the job live and ends with it.
    const res = await h.req('GET', `/v1/jobs/${jobId}/events`, { headers: { accept: 'text/event-stream' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    live = await readSse(res);
  }, 300_000);
  afterAll(async () => {
    await receiver?.close();
    await h?.close();
    await work?.cleanup();
  });

  it('streams every stage and search step in order and closes after the terminal state', async () => {
    expect(live.map((e) => e.id)).toEqual(live.map((_, i) => i));
    expect(live.every((e) => e.event === e.data.type)).toBe(true);
    const stages = live.filter((e) => e.event === 'stage').map((e) => e.data.stage);
    for (const s of ['pipeline', 'atlas', 'selection', 'projection', 'publish']) expect(stages).toContain(s);
    expect(live.some((e) => e.event === 'step' && /q=/.test(e.data.message ?? ''))).toBe(true);
    expect(live.at(-1)!.data).toMatchObject({ type: 'state', state: 'completed' });
    expect((await new FgsnClient(h.base, KEYS.a).getJob(jobId)).state).toBe('completed');
  });

  it('JSON pages with after/limit return the same events', async () => {
    const all: Event[] = [];
    let after = -1;
    for (let n = 0; n < 100; n++) {
      const r = await h.json<{ data: Event[]; hasMore: boolean; lastId: number | null }>('GET', `/v1/jobs/${jobId}/events?after=${after}&limit=3`);
      expect(r.status).toBe(200);
      expect(r.body.data.length).toBeLessThanOrEqual(3);
      all.push(...r.body.data);
      if (!r.body.hasMore) break;
      after = r.body.lastId!;
    }
    expect(all).toEqual(live.map((e) => e.data));
  });

  it('Last-Event-ID resumes after that event; another tenant gets 404', async () => {
    const k = Math.floor(live.length / 2);
    const res = await h.req('GET', `/v1/jobs/${jobId}/events`, { headers: { accept: 'text/event-stream', 'last-event-id': String(k) } });
    const rest = await readSse(res);
    expect(rest.map((e) => e.id)).toEqual(live.slice(k + 1).map((e) => e.id));
    expect((await h.req('GET', `/v1/jobs/${jobId}/events`, { key: KEYS.b })).status).toBe(404);
  });

  it('a webhook subscribed to stage events gets one job.stage delivery per stage, then the terminal one', async () => {
    const events = (): { event: string; job: { stage: string | null } }[] => receiver.received.map((r) => JSON.parse(r.body) as { event: string; job: { stage: string | null } });
    for (let i = 0; i < 100 && !events().some((e) => e.event === 'job.completed'); i++) await new Promise((r) => setTimeout(r, 100));
    const got = events();
    const stages = got.filter((e) => e.event === 'job.stage').map((e) => e.job.stage);
    expect(new Set(stages).size).toBe(stages.length);
    const streamed = live.filter((e) => e.event === 'stage').map((e) => e.data.stage);
    expect(stages.sort()).toEqual([...new Set(streamed)].sort());
    expect(got.filter((e) => e.event === 'job.completed')).toHaveLength(1);
  }, 30_000);
});
