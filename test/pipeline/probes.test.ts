import { describe, expect, it } from 'vitest';
import { parseProbes } from '../../src/probes.js';

describe('probe loader', () => {
  it('reads prompt, category and response, skips blank lines, ignores other keys', () => {
    const p = parseProbes('{"prompt":"a","category":"x","id":3}\n\n{"prompt":"b","response":"no"}\n', 'f.jsonl');
    expect(p).toEqual([{ prompt: 'a', category: 'x' }, { prompt: 'b', response: 'no' }]);
  });
  it('takes a task file\'s answer as the response', () => {
    expect(parseProbes('{"prompt":"a","answer":"x"}\n{"prompt":"b","answer":"y","response":"z"}')).toEqual([
      { prompt: 'a', response: 'x' }, { prompt: 'b', response: 'z' },
    ]);
  });
  it('names the line of a bad record', () => {
    expect(() => parseProbes('{"prompt":"a"}\n{"prompt":3}\n', 'f.jsonl')).toThrow(/f\.jsonl:2/);
    expect(() => parseProbes('{"prompt":"a"}\nnot json\n', 'f.jsonl')).toThrow(expect.objectContaining({ code: 'PROBES_INVALID' }));
    expect(() => parseProbes('[1]\n', 'f.jsonl')).toThrow(/f\.jsonl:1: each line/);
    expect(() => parseProbes('{"prompt":"a","category":1}', 'f.jsonl')).toThrow(/category/);
    expect(() => parseProbes('\n\n', 'f.jsonl')).toThrow(expect.objectContaining({ code: 'PROBES_EMPTY' }));
  });
});
