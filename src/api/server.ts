/**
 * Process-level wiring for `fgsn serve` and `fgsn worker`: logger, listening, embedded worker, and a
 * graceful stop on SIGTERM/SIGINT (stop accepting, finish in-flight requests and jobs, close connections).
 */
import pino, { type Logger } from 'pino';
import { Registry } from 'prom-client';
import type { Config } from '../config.js';
import { FgsnError } from '../errors.js';
import { startWorker, type RunningWorker } from '../queue/index.js';
import { buildApp, type BuiltApp } from './app.js';

export function createLogger(config: Config, name: string): Logger {
  return pino({ name, level: config.logLevel, base: { service: 'fgsn', role: name, pid: process.pid } });
}

export interface RunningServer {
  built: BuiltApp;
  worker?: RunningWorker;
  url: string;
  stop(): Promise<void>;
}

export async function startServer(config: Config, opts: { withWorker?: boolean; logger?: Logger } = {}): Promise<RunningServer> {
  const logger = opts.logger ?? createLogger(config, 'api');
  const registry = new Registry();
  const built = await buildApp(config, { logger, registry });
  let url: string;
  try {
    url = await built.app.listen({ port: config.port, host: config.host });
  } catch (e) {
    // Nothing may stay open (connections, timers): the process must exit with this error.
    await built.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      const why = code === 'EADDRINUSE' ? 'the port is already in use' : code === 'EACCES' ? 'permission denied' : 'the address is not available here';
      throw new FgsnError('CONFIG_INVALID', `cannot listen on ${config.host}:${config.port}: ${why} (${code}); set FGSN_PORT / FGSN_HOST or --port / --host`, { cause: e });
    }
    throw e;
  }
  // The worker starts once the API listens: a failed start leaves nothing running.
  const worker = opts.withWorker ? startWorker(config, { logger: logger.child({ role: 'worker' }), registry }) : undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await built.close();
      await worker?.close();
    })());
  return { built, worker, url, stop };
}

/**
 * Runs until SIGTERM/SIGINT, then stops once; a second signal exits at once, and so does a stop that
 * outlives `timeoutS` (an upload or a job that will not end must not keep the process forever).
 */
export function stopOnSignals(stop: () => Promise<void>, logger: Logger, timeoutS = 60): Promise<void> {
  return new Promise((resolve) => {
    let signalled = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (signalled) {
        logger.warn({ signal: sig }, 'second signal: exiting now');
        process.exit(1);
      }
      signalled = true;
      logger.info({ signal: sig }, 'shutting down');
      setTimeout(() => {
        logger.error({ timeoutS }, 'shutdown did not finish in time: exiting');
        process.exit(1);
      }, timeoutS * 1000).unref();
      stop().then(
        () => {
          logger.info('stopped');
          resolve();
        },
        (e) => {
          logger.error({ err: e }, 'shutdown failed');
          resolve();
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
