/**
 * Renders helm/fgsn with the test renderer and writes each manifest to OUTDIR, for yamllint in
 * .ci/static-checks:  npx tsx test/deploy/render-chart.ts OUTDIR [values.yaml ...]
 * Without value files it renders the scenarios of test/deploy/scenarios.ts, one folder each.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CHART_DIR, SCENARIOS } from './scenarios.js';
import { readYaml, renderChart } from './helm-render.js';

const [outDir, ...valueFiles] = process.argv.slice(2);
if (!outDir) {
  process.stderr.write('usage: render-chart.ts OUTDIR [values.yaml ...]\n');
  process.exit(2);
}
const runs: [string, Record<string, unknown>][] =
  valueFiles.length > 0
    ? valueFiles.map((f) => [basename(f).replace(/\.ya?ml$/, ''), readYaml(f) as Record<string, unknown>])
    : Object.entries(SCENARIOS);
for (const [name, values] of runs) {
  const rendered = renderChart(CHART_DIR, { values });
  const dir = join(outDir, name);
  mkdirSync(dir, { recursive: true });
  for (const [file, text] of rendered.manifests) {
    const body = text.replace(/^\s+/, '');
    writeFileSync(join(dir, basename(file)), body.startsWith('---') ? body : `---\n${body}`);
  }
  writeFileSync(join(dir, 'NOTES.txt'), rendered.notes);
  process.stdout.write(`${name}: ${rendered.manifests.size} manifests -> ${dir}\n`);
}
