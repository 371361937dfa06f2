import { describe, expect, it } from 'vitest';
import { FgsnError } from '../../src/errors.js';
import { limitItems, parseHarmfulJsonl, parseLookalikeJsonl, parseTaskJsonl } from '../../src/eval/data.js';

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return e instanceof FgsnError ? `${e.code}: ${e.message}` : 'not-fgsn';
  }
  return undefined;
}

describe('eval JSONL parsing', () => {
  it('keeps prompt/category/answer, ignores extra fields and blank lines', () => {
    expect(parseHarmfulJsonl('{"id":1,"prompt":"p","category":"c","target":"t"}\n\n{"prompt":"q"}\n')).toEqual([
      { prompt: 'p', category: 'c' },
      { prompt: 'q' },
    ]);
    expect(parseTaskJsonl('{"task":"gsm","prompt":"1+1","answer":"2","result":"2"}')).toEqual([{ prompt: '1+1', answer: '2' }]);
    expect(parseLookalikeJsonl('{"prompt":"a"}\n{"prompt":"b","answer":"x"}')).toEqual([{ prompt: 'a' }, { prompt: 'b', answer: 'x' }]);
  });

  it('names file and line of every problem', () => {
    expect(codeOf(() => parseHarmfulJsonl('{"prompt":"a"}\n{oops', 'h.jsonl'))).toMatch(/^EVAL_DATA_INVALID: h\.jsonl:2: not JSON/u);
    expect(codeOf(() => parseHarmfulJsonl('[1]', 'h.jsonl'))).toMatch(/^EVAL_DATA_INVALID: h\.jsonl:1: each line must be a JSON object/u);
    expect(codeOf(() => parseHarmfulJsonl('{"prompt":"  "}', 'h.jsonl'))).toMatch(/empty prompt/u);
    expect(codeOf(() => parseHarmfulJsonl('{"prompt":"a","category":3}', 'h.jsonl'))).toMatch(/"category" must be a string/u);
    expect(codeOf(() => parseTaskJsonl('{"prompt":"a"}', 't.jsonl'))).toMatch(/^EVAL_DATA_INVALID: t\.jsonl record 1: missing "answer"/u);
    expect(codeOf(() => parseTaskJsonl('\n\n', 't.jsonl'))).toMatch(/no records/u);
  });

  it('limitItems keeps the first n, all without n', () => {
    expect(limitItems([1, 2, 3], 2)).toEqual([1, 2]);
    expect(limitItems([1, 2, 3], undefined)).toEqual([1, 2, 3]);
  });
});
