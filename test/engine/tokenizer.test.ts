/** Chat formatting and tokenization from the checkpoint's own files, checked against the testbed's reference ids. */
import { readFileSync } from 'node:fs';
import { beforeAll, expect, it } from 'vitest';
import { ChatTokenizer } from '../../src/engine/tokenizer/chat-tokenizer.js';
import { describeTestbed, testbedPath } from '../support/testbed.js';

describeTestbed('ChatTokenizer on the dev testbed', () => {
  let tok: ChatTokenizer;
  beforeAll(async () => {
    tok = await ChatTokenizer.load(testbedPath('aligned'));
  });

  it('renders and encodes the golden prompts to the recorded ids', async () => {
    const manifest = JSON.parse(readFileSync(testbedPath('golden_manifest.json'), 'utf8')) as { prompts: { text: string; input_ids: number[] }[] };
    for (const p of manifest.prompts) {
      const enc = await tok.encodeChat(p.text);
      expect(enc.ids).toEqual(p.input_ids);
      expect(enc.promptLength).toBe(p.input_ids.length);
    }
  });

  it('a teacher-forced response extends the prompt and ends the turn', async () => {
    const enc = await tok.encodeChat('define gravity .', 'gravity is a force .');
    const prompt = await tok.encodeChat('define gravity .');
    expect(enc.ids.slice(0, enc.promptLength)).toEqual(prompt.ids);
    expect(enc.ids.at(-1)).toBe(tok.tokenToId('<|end|>'));
    expect(await tok.decode(enc.ids.slice(enc.promptLength))).toBe('gravity is a force .');
  });

  it('decodes by joining word tokens; special tokens only on request', async () => {
    const ids = await tok.encode('<|user|> can you share', false);
    expect(await tok.decode(ids)).toBe('can you share');
    expect(await tok.decode(ids, false)).toBe('<|user|> can you share');
    expect(tok.padTokenId).toBe(0);
  });

  it('reports a missing folder with ENGINE_TOKENIZER_INVALID', async () => {
    await expect(ChatTokenizer.load(testbedPath('no-such-folder'))).rejects.toMatchObject({ code: 'ENGINE_TOKENIZER_INVALID' });
  });
});
