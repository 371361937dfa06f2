/** `fgsn worker`: one BullMQ harden worker (sandboxed processors) plus webhook delivery, until SIGTERM. */
import { parseArgs } from 'node:util';
import { createLogger, stopOnSignals } from '../api/server.js';
import { loadConfig } from '../config.js';
import { startWorker } from '../queue/worker.js';

const HELP = `usage: fgsn worker [--concurrency N]

Runs a harden worker against REDIS_URL (configuration from the environment; see src/config.ts).
  --concurrency N   jobs at once, each in its own child process (default FGSN_WORKER_CONCURRENCY)`;

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { concurrency: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const env = { ...process.env };
  if (values.concurrency !== undefined) env.FGSN_WORKER_CONCURRENCY = values.concurrency;
  const config = loadConfig(env);
  const logger = createLogger(config, 'worker');
  const worker = startWorker(config, { logger });
  await worker.worker.waitUntilReady();
  logger.info({ concurrency: config.worker.concurrency, queuePrefix: config.queuePrefix }, 'fgsn worker ready');
  await stopOnSignals(worker.close, logger);
  return 0;
}
