/**
 * The CLI a person uses: progress (bar with ETA on a terminal, plain lines otherwise, NDJSON with --json),
 * --version, usage errors as text on a terminal, and `harden --config` whose effective config lands in
 * report.json and replays the same run.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { main, version } from '../../src/cli/main.js';
import { createProgress, etaSeconds, progressMode } from '../../src/cli/progress.js';
import { writeDemoTestbed, type DemoTestbed } from '../../src/demo/fixtures.js';
import { REPO_ROOT } from '../support/testbed.js';

const run = promisify(execFile);

function sink(tty: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const s = new PassThrough() as unknown as NodeJS.WriteStream & PassThrough;
  let buf = '';
  s.on('data', (d: Buffer) => (buf += d.toString()));
  Object.assign(s, { isTTY: tty, columns: 160, cursorTo: (_x: number, _y?: unknown, cb?: () => void) => { cb?.(); return true; }, clearLine: () => true, moveCursor: () => true });
  return { stream: s, text: () => buf };
}

describe('progress', () => {
  it('ETA by linear extrapolation', () => {
    expect(etaSeconds(10, 25)).toBe(30);
    expect(etaSeconds(10, 0)).toBeNull();
    expect(etaSeconds(10, 100)).toBe(0);
  });

  it('mode: json and quiet win; a bar only on a TTY outside CI', () => {
    const prev = process.env.CI;
    try {
      process.env.CI = 'false';
      expect(progressMode({}, sink(true).stream)).toBe('bar');
      expect(progressMode({}, sink(false).stream)).toBe('lines');
      expect(progressMode({ json: true }, sink(true).stream)).toBe('json');
      expect(progressMode({ quiet: true }, sink(true).stream)).toBe('quiet');
      process.env.CI = 'true';
      expect(progressMode({}, sink(true).stream)).toBe('lines');
    } finally {
      if (prev === undefined) delete process.env.CI;
      else process.env.CI = prev;
    }
  });

  it('json: one progress event per update with elapsed and ETA, the result last', () => {
    const out = sink(false);
    const err = sink(false);
    const p = createProgress('harden', 'json', { stdout: out.stream, stderr: err.stream });
    p.update({ percent: 40, stage: 'selection', message: 'q=0.01' });
    p.done({ ok: 1 });
    const events = out.text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events[0]).toMatchObject({ event: 'progress', command: 'harden', stage: 'selection', percent: 40, message: 'q=0.01' });
    expect(events[0]).toHaveProperty('etaS');
    expect(events[1]).toMatchObject({ event: 'result', result: { ok: 1 } });
    expect(err.text()).toBe('');
  });

  it('bar: elapsed time, ETA and the stage on the terminal; the result on stdout', () => {
    const out = sink(false);
    const err = sink(true);
    const p = createProgress('eval', 'bar', { stdout: out.stream, stderr: err.stream });
    p.update({ percent: 50, stage: 'generate', message: '5/10 prompts' });
    p.done({ ok: 1 });
    expect(err.text()).toMatch(/eval .*50% \| .* elapsed \| ETA .* \| generate: 5\/10 prompts/);
    expect(JSON.parse(out.text())).toEqual({ ok: 1 });
  });

  it('lines: the plain "[ 42%] stage: message" lines', () => {
    const out = sink(false);
    const err = sink(false);
    const p = createProgress('harden', 'lines', { stdout: out.stream, stderr: err.stream });
    p.update({ percent: 42, stage: 'atlas', message: 'x' });
    expect(err.text()).toBe('[ 42%] atlas: x\n');
  });
});

describe('fgsn --version and usage errors', () => {
  it('--version prints package.json\'s version', async () => {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(version()).toBe(pkg.version);
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', '--version'], { cwd: REPO_ROOT });
    expect(stdout).toBe(`fgsn ${pkg.version} (node ${process.version})\n`);
  });

  it('a usage error is plain text on a terminal, JSON otherwise', async () => {
    const write = process.stderr.write.bind(process.stderr);
    const tty = process.stderr.isTTY;
    let captured = '';
    process.stderr.write = ((s: string) => ((captured += s), true)) as typeof process.stderr.write;
    try {
      Object.assign(process.stderr, { isTTY: true });
      expect(await main(['harden', '--base', 'x'])).toBe(2);
      const text = captured;
      Object.assign(process.stderr, { isTTY: false });
      captured = '';
      expect(await main(['harden', '--base', 'x'])).toBe(2);
      expect(text).toMatch(/^fgsn harden: --aligned is required\n/);
      expect(text).toContain('hint: ');
      expect(JSON.parse(captured).error.code).toBe('CLI_USAGE');
    } finally {
      process.stderr.write = write;
      Object.assign(process.stderr, { isTTY: tty });
    }
  });
});

describe('fgsn harden --config', () => {
  let tmp: string;
  let tb: DemoTestbed;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'fgsn-config-'));
    tb = await writeDemoTestbed(join(tmp, 'tb'));
  }, 60_000);
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('all options from YAML (relative paths), flags win, --json events; report.json records the config and replays it', async () => {
    const cfg = join(tmp, 'tb', 'harden.yaml');
    await writeFile(cfg, stringify({
      base: 'base', aligned: 'aligned', finetuned: 'finetuned',
      harmful: 'data/harmful_probes.jsonl', benign: 'data/benign_probes.jsonl', task: 'data/task_probes.jsonl',
      out: 'never-used', format: ['model'], 'target-asr': 0.02, option: { rounds: 1 }, 'cache-dir': '../cache',
      'eval-harmful': 'data/harmful_eval.jsonl', 'eval-task': { review: 'data/task_eval.jsonl' },
    }));
    const first = join(tmp, 'first');
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'harden', '--config', cfg, '--out', first, '--json'], { cwd: REPO_ROOT, maxBuffer: 1 << 24 });
    const events = stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string; stage?: string; result?: { summary: { rowsChanged: number } } });
    expect(events.filter((e) => e.event === 'progress').map((e) => e.stage)).toEqual(expect.arrayContaining(['validate', 'selection', 'report']));
    expect(events.at(-1)?.event).toBe('result');
    const report = JSON.parse(await readFile(join(first, 'report.json'), 'utf8')) as { config: Record<string, unknown>; options: { targetAsr: number; rounds: number }; rows: unknown; metrics: unknown };
    expect(report.config).toMatchObject({
      base: tb.base, out: first, format: ['model'], 'target-asr': '0.02', option: { rounds: '1' }, 'cache-dir': join(tmp, 'cache'),
      'eval-task': { review: tb.files.taskEval },
    });
    expect(report.options).toMatchObject({ targetAsr: 0.02, rounds: 1 });
    expect(report.metrics).toBeDefined();

    const replay = join(tmp, 'replay');
    expect(await main(['harden', '--config', join(first, 'report.json'), '--out', replay, '--quiet'])).toBe(0);
    const again = JSON.parse(await readFile(join(replay, 'report.json'), 'utf8')) as typeof report;
    expect(again.rows).toEqual(report.rows);
    expect(again.metrics).toEqual(report.metrics);
    expect({ ...again.config, out: first }).toEqual(report.config);
  }, 240_000);

  it('unknown keys and a report without config are usage errors', async () => {
    const bad = join(tmp, 'bad.yaml');
    await writeFile(bad, 'base: x\nbogus: 1\n');
    await expect(main(['harden', '--config', bad])).resolves.toBe(2);
    const rep = join(tmp, 'old-report.json');
    await writeFile(rep, JSON.stringify({ edit: { rows: 0 } }));
    await expect(main(['harden', '--config', rep])).resolves.toBe(2);
  });
});
