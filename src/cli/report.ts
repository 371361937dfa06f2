import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FgsnError } from '../errors.js';
import { renderReportHtml } from '../pipeline/index.js';

const USAGE = `usage: fgsn report REPORT.json [--out FILE.html] [--open]

Renders a harden job's report.json as report.html (self-contained: inline SVG charts, no network), by default
beside the JSON, and prints its path. --open also opens it in the desktop's browser (xdg-open / open).`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args, allowPositionals: true,
    options: { out: { type: 'string' }, open: { type: 'boolean' }, help: { type: 'boolean' } },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw new FgsnError('CLI_USAGE', `give exactly one report.json\n${USAGE}`);
  const input = resolve(positionals[0]);
  let report: unknown;
  try {
    report = JSON.parse(await readFile(input, 'utf8'));
  } catch (e) {
    throw new FgsnError('CLI_USAGE', `${input}: not a readable JSON report (${(e as Error).message})`);
  }
  if (report === null || typeof report !== 'object' || Array.isArray(report) || !('edit' in report)) {
    throw new FgsnError('CLI_USAGE', `${input}: not a harden report (no "edit")`);
  }
  const out = resolve(values.out ?? join(dirname(input), 'report.html'));
  await writeFile(out, await renderReportHtml(report as Record<string, unknown>));
  process.stdout.write(out + '\n');
  if (values.open) {
    const opener = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
    const child = spawn(opener, [out], { detached: true, stdio: 'ignore' });
    child.on('error', () => process.stderr.write(`could not run ${opener}; open ${out} in a browser\n`));
    child.unref();
  }
  return 0;
}
