import { readFile } from 'node:fs/promises';
import { testbedPath } from '../support/testbed.js';

/** NDJSON probe sets from the testbed's own data (its tiny vocabulary is what the models know). */
export async function testbedProbeNdjson(file: string, count: number, withCategory = true): Promise<string> {
  const lines = (await readFile(testbedPath('data', file), 'utf8')).split('\n').filter((l) => l.trim() !== '');
  return lines
    .slice(0, count)
    .map((l) => {
      const r = JSON.parse(l) as { prompt: string; category?: string };
      return JSON.stringify(withCategory && r.category ? { prompt: r.prompt, category: r.category } : { prompt: r.prompt });
    })
    .join('\n');
}
