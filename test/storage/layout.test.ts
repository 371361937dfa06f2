import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dataLayout } from '../../src/storage/layout.js';
import { pathScrubber } from '../../src/queue/run-job.js';

describe('data layout', () => {
  const root = join('/srv', 'fgsn-data');
  const layout = dataLayout(root);

  it('keeps every folder under the data dir, apart from one another', () => {
    const paths = [layout.upload('ckpt_1'), layout.uploadFiles('ckpt_1'), layout.uploadPartial('ckpt_1'), layout.jobScratch('job_1'), layout.cache, layout.engineCache, layout.artifacts];
    for (const p of paths) expect(p.startsWith(root + '/')).toBe(true);
    expect(new Set(paths).size).toBe(paths.length);
    // The scratch, cache and store folders never lie inside an upload (deleting one must not touch them).
    for (const p of [layout.jobScratch('job_1'), layout.cache, layout.artifacts]) expect(p.startsWith(layout.upload('ckpt_1'))).toBe(false);
  });

  it('recognises an upload folder and nothing else', () => {
    expect(layout.uploadOf(join(layout.uploadFiles('ckpt_9'), 'model.safetensors'))).toEqual({ checkpointId: 'ckpt_9', rest: ['model.safetensors'] });
    expect(layout.uploadOf(layout.uploadPartial('ckpt_9'))).toBeUndefined();
    expect(layout.uploadOf(layout.jobScratch('job_1'))).toBeUndefined();
    expect(layout.uploadOf('/elsewhere/uploads/x/files')).toBeUndefined();
  });

  it('is what the path scrubber names uploads by', () => {
    const scrub = pathScrubber({ basePath: '/models/base', alignedPath: '/models/aligned', finetunedPath: layout.uploadFiles('ckpt_7') }, root);
    expect(scrub(`read ${layout.uploadFiles('ckpt_7')}/config.json`)).toBe('read ckpt_7/config.json');
  });
});
