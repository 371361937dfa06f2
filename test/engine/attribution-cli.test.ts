/** `fgsn attribute`: argument errors, and on the dev testbed the written scores equal the API's. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { run } from '../../src/cli/attribute.js';
import { ModelCheckpoint, SafetensorsFile } from '../../src/checkpoint/index.js';
import { attributionScores, checkpointDifference } from '../../src/engine/attribution/index.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

const tmp = mkdtempSync(join(tmpdir(), 'fgsn-attr-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('fgsn attribute: usage', () => {
  it('rejects missing inputs and malformed directions with CLI_USAGE', async () => {
    await expect(run(['model'])).rejects.toMatchObject({ code: 'CLI_USAGE' });
    writeFileSync(join(tmp, 'p.jsonl'), '{"prompt": "a", "response": "b"}\n');
    await expect(run(['model', '--probes', join(tmp, 'p.jsonl'), '--out', join(tmp, 'o.safetensors'), '--direction', 'x=onlyone'])).rejects.toMatchObject({ code: 'CLI_USAGE' });
    await expect(run(['model', '--probes', join(tmp, 'p.jsonl'), '--out', join(tmp, 'o.safetensors'), '--reduction', 'max'])).rejects.toMatchObject({ code: 'CLI_USAGE' });
  });
});

describeTestbed('fgsn attribute on the dev testbed', () => {
  it('writes <direction>.<weight> score tensors equal to attributionScores', async () => {
    const lines = readFileSync(testbedPath('data', 'harmful_attack_pool.jsonl'), 'utf8').trim().split('\n').slice(0, 2);
    const probes = join(tmp, 'probes.jsonl');
    writeFileSync(probes, lines.join('\n') + '\n');
    const out = join(tmp, 'scores.safetensors');
    const printed: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => (printed.push(String(s)), true));
    try {
      const rc = await run([testbedPath('ft_sst_p10'), '--probes', probes, '--response-field', 'refusal', '--out', out, '--cache-dir', join(tmp, 'cache'),
        '--direction', `safety=${testbedPath('aligned')}:${testbedPath('base')}`]);
      expect(rc).toBe(0);
    } finally {
      spy.mockRestore();
    }
    const summary = JSON.parse(printed.join('')) as { tensors: number; reduction: string };
    expect(summary).toMatchObject({ tensors: 28, reduction: 'mean' });

    const [aligned, base] = [await ModelCheckpoint.open(testbedPath('aligned')), await ModelCheckpoint.open(testbedPath('base'))];
    const f = await SafetensorsFile.open(out);
    try {
      const api = await attributionScores({
        model: testbedPath('ft_sst_p10'), cacheRoot: join(tmp, 'cache'),
        sequences: lines.map((l) => JSON.parse(l) as { prompt: string; refusal: string }).map((p) => ({ prompt: p.prompt, response: p.refusal })),
        directions: [checkpointDifference('safety', aligned, base)],
      });
      const w = 'model.layers.1.mlp.down_proj.weight';
      expect(await f.readF32(`safety.${w}`)).toEqual(api.scores.get('safety')?.get(w));
      expect(Number(f.metadata.loss)).toBeCloseTo(api.loss, 6);
    } finally {
      await f.close();
      await aligned.close();
      await base.close();
    }
  });
});
