/**
 * How long this machine takes to touch fresh memory: sixteen 256 MiB buffers filled, twice in a row, after an
 * optional idle wait. On a VM with free page reporting (Firecracker, `page_reporting.page_reporting_order` on the
 * kernel command line) the first pass after an idle spell pays the host's fault-in; docs/scale.md quotes it.
 *
 *   npx tsx bench/scale/first-touch.ts [idle seconds, default 30]
 */
const idle = Number(process.argv[2] ?? 30);
await new Promise((r) => setTimeout(r, idle * 1000));
for (let pass = 1; pass <= 2; pass++) {
  const t = performance.now();
  const held: Buffer[] = [];
  for (let k = 0; k < 16; k++) held.push(Buffer.allocUnsafeSlow(256 * 2 ** 20).fill(1));
  console.log(`pass ${pass} after ${pass === 1 ? `${idle} s idle` : 'pass 1'}: touching 4 GiB took ${((performance.now() - t) / 1000).toFixed(2)} s`);
  held.length = 0;
}
