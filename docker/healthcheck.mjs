// Container health probe for the API role: exits 0 when GET /healthz answers 2xx within 4 s.
// A file rather than `node -e` so the image's HEALTHCHECK stays plain exec form and the probe itself is tested.
// The port follows the service's own settings (FGSN_PORT, else PORT); the image binds FGSN_HOST=0.0.0.0,
// so loopback always reaches it.
const port = process.env.FGSN_PORT || process.env.PORT || '8080';

try {
  const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(4000) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
