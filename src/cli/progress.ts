/**
 * Progress for long CLI commands, in the form the reader can use:
 * - a terminal (stderr is a TTY, not CI): a cli-progress bar with elapsed time and ETA, the stage and message;
 * - a pipe or log file: the plain "[ 42%] stage: message" lines, one per update;
 * - --json: machine events as NDJSON on stdout ({"event":"progress",...}), the result as the last event.
 */
import { SingleBar } from 'cli-progress';

export type ProgressMode = 'bar' | 'lines' | 'json' | 'quiet';

export interface ProgressUpdate {
  /** 0..100 */
  percent: number;
  stage: string;
  message?: string;
}

export interface ProgressReporter {
  update(p: ProgressUpdate): void;
  /** Ends the bar; `result` is the command's final JSON (printed as the last event in json mode). */
  done(result?: unknown): void;
}

export function progressMode(flags: { json?: boolean; quiet?: boolean }, stream: NodeJS.WriteStream = process.stderr): ProgressMode {
  if (flags.json) return 'json';
  if (flags.quiet) return 'quiet';
  return stream.isTTY === true && process.env.CI !== 'true' && process.env.TERM !== 'dumb' ? 'bar' : 'lines';
}

/** Seconds left by linear extrapolation of the overall percent; null until there is something to go on. */
export function etaSeconds(elapsedS: number, percent: number): number | null {
  if (percent <= 0 || percent >= 100 || elapsedS <= 0) return percent >= 100 ? 0 : null;
  return (elapsedS * (100 - percent)) / percent;
}

export function createProgress(command: string, mode: ProgressMode, out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WriteStream } = process): ProgressReporter {
  const t0 = performance.now();
  const elapsed = (): number => (performance.now() - t0) / 1000;
  if (mode === 'bar') {
    const bar = new SingleBar({
      stream: out.stderr,
      format: `${command} {bar} {percentage}% | {duration_formatted} elapsed | ETA {eta_formatted} | {stage}{message}`,
      barsize: 24, hideCursor: true, clearOnComplete: false, etaBuffer: 20, fps: 5, noTTYOutput: false,
    });
    bar.start(100, 0, { stage: 'starting', message: '' });
    return {
      update: (p) => bar.update(p.percent, { stage: p.stage, message: p.message ? `: ${p.message.slice(0, 60)}` : '' }),
      done: (result) => {
        bar.stop();
        if (result !== undefined) out.stdout.write(JSON.stringify(result, null, 2) + '\n');
      },
    };
  }
  if (mode === 'json') {
    return {
      update: (p) => {
        const e = elapsed();
        out.stdout.write(JSON.stringify({ event: 'progress', command, stage: p.stage, percent: p.percent, ...(p.message ? { message: p.message } : {}), elapsedS: round(e), etaS: nullableRound(etaSeconds(e, p.percent)) }) + '\n');
      },
      done: (result) => out.stdout.write(JSON.stringify({ event: 'result', command, elapsedS: round(elapsed()), result }) + '\n'),
    };
  }
  return {
    update: (p) => {
      if (mode === 'lines') out.stderr.write(`[${p.percent.toFixed(0).padStart(3)}%] ${p.stage}${p.message ? `: ${p.message}` : ''}\n`);
    },
    done: (result) => {
      if (result !== undefined) out.stdout.write(JSON.stringify(result, null, 2) + '\n');
    },
  };
}

const round = (x: number): number => Math.round(x * 10) / 10;
const nullableRound = (x: number | null): number | null => (x === null ? null : round(x));
