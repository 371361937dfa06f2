// Container health probe: exits 0 when GET /healthz answers 2xx within 4 s, 1 otherwise.
// A file rather than `node -e` so the image's HEALTHCHECK stays plain exec form and the probe itself is tested.
// The port follows the role's own settings, read the way the service reads them:
//   healthcheck.mjs          the API (`fgsn serve`): FGSN_PORT, else PORT, else 8080 (the image's HEALTHCHECK)
//   healthcheck.mjs worker   a worker (`fgsn worker`): FGSN_WORKER_METRICS_PORT, where it serves /healthz;
//                            unset means the worker has no HTTP endpoint, so its health cannot be known
// Both roles bind FGSN_HOST (0.0.0.0 in the image), so loopback always reaches them.
const role = process.argv[2] ?? 'serve';

function portOf(r) {
  if (r === 'serve') return process.env.FGSN_PORT || process.env.PORT || '8080';
  if (r === 'worker') {
    const port = process.env.FGSN_WORKER_METRICS_PORT;
    // 0 lets the OS pick a port, which a probe cannot know.
    if (!port || port === '0') {
      process.stderr.write('healthcheck: FGSN_WORKER_METRICS_PORT is not set: the worker serves no /healthz\n');
      return undefined;
    }
    return port;
  }
  process.stderr.write(`healthcheck: unknown role "${r}" (serve or worker)\n`);
  return undefined;
}

const port = portOf(role);
if (port === undefined) process.exit(1);
try {
  const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(4000) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
