/** `fgsn serve [--with-worker] [--port N] [--host H]`: the HTTP API (and optionally one worker in-process). */
import { parseArgs } from 'node:util';
import { createLogger, startServer, stopOnSignals } from '../api/index.js';
import { loadConfig } from '../config.js';

const HELP = `usage: fgsn serve [--with-worker] [--port N] [--host H]

Runs the HTTP API (configuration from the environment: REDIS_URL, FGSN_PORT, FGSN_API_KEYS, ...; see src/config.ts).
  --with-worker   also run one harden worker in this process (single-machine use; npm start)
  --port, --host  override FGSN_PORT / FGSN_HOST`;

export async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { 'with-worker': { type: 'boolean' }, port: { type: 'string' }, host: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const env = { ...process.env };
  if (values.port !== undefined) env.FGSN_PORT = values.port;
  if (values.host !== undefined) env.FGSN_HOST = values.host;
  const config = loadConfig(env);
  const logger = createLogger(config, 'api');
  const server = await startServer(config, { withWorker: values['with-worker'] === true, logger });
  logger.info({ url: server.url, worker: values['with-worker'] === true, storage: config.storage.kind }, 'fgsn API listening');
  // The worker gets its own shutdown timeout; the HTTP side a few seconds beyond it.
  await stopOnSignals(server.stop, logger, config.shutdownTimeoutS + 15);
  return 0;
}
