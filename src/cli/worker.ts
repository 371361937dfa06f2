/** `fgsn worker`: one BullMQ harden worker (sandboxed processors) plus webhook delivery, until SIGTERM. */
import { createServer, type Server } from 'node:http';
import { parseArgs } from 'node:util';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { createLogger, stopOnSignals } from '../api/index.js';
import { loadConfig } from '../config.js';
import { startWorker } from '../queue/index.js';

const HELP = `usage: fgsn worker [--concurrency N]

Runs a harden worker against REDIS_URL (configuration from the environment; see src/config.ts).
  --concurrency N   jobs at once, each in its own child process (default FGSN_WORKER_CONCURRENCY)
With FGSN_WORKER_METRICS_PORT set, serves GET /metrics (Prometheus) and GET /healthz on that port.`;

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
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'fgsn_worker_process_' });
  const worker = startWorker(config, { logger, registry });
  await worker.worker.waitUntilReady();
  let server: Server | undefined;
  if (config.worker.metricsPort !== undefined) {
    server = createServer((req, res) => {
      if (req.url === '/metrics') {
        registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
          () => res.writeHead(500).end(),
        );
      } else if (req.url === '/healthz') {
        res.writeHead(worker.worker.isRunning() ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: worker.worker.isRunning() ? 'ok' : 'stopped' }));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server?.listen(config.worker.metricsPort, config.host, r));
    const addr = server.address();
    logger.info({ metricsPort: typeof addr === 'object' && addr ? addr.port : config.worker.metricsPort }, 'worker metrics listening');
  }
  logger.info({ concurrency: config.worker.concurrency, queuePrefix: config.queuePrefix }, 'fgsn worker ready');
  await stopOnSignals(async () => {
    await worker.close();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  }, logger, config.shutdownTimeoutS + 15);
  return 0;
}
