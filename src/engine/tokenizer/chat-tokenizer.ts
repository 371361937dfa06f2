/**
 * Tokenization and chat formatting with maintained libraries: HF's Rust `tokenizers` (npm `tokenizers`) for
 * tokenizer.json and `@huggingface/jinja` for tokenizer_config.json's chat_template. The rendered template
 * already holds the special tokens (e.g. `<s>`), so it is encoded with add_special_tokens = false.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from 'tokenizers';
import { FgsnError } from '../../errors.js';

export interface ChatEncoding {
  ids: number[];
  /** Tokens of the prompt part, generation prompt included (the response starts at this index). */
  promptLength: number;
}

interface TokenizerConfig {
  chatTemplate: string | null;
  bosToken: string | null;
  eosToken: string | null;
  padToken: string | null;
}

function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

async function readTokenizerConfig(dir: string): Promise<TokenizerConfig> {
  const path = join(dir, 'tokenizer_config.json');
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new FgsnError('ENGINE_TOKENIZER_INVALID', `cannot read ${path}: ${(e as Error).message}`, { cause: e, details: { file: path } });
  }
  const tpl = json.chat_template;
  return {
    chatTemplate: typeof tpl === 'string' ? tpl : null,
    bosToken: tokenText(json.bos_token),
    eosToken: tokenText(json.eos_token),
    padToken: tokenText(json.pad_token),
  };
}

export class ChatTokenizer {
  private constructor(
    private readonly tok: Tokenizer,
    private readonly template: Template | null,
    readonly config: TokenizerConfig,
    readonly padTokenId: number,
  ) {}

  /** Reads tokenizer.json and tokenizer_config.json from a model folder. */
  static async load(dir: string, fallbackPadId = 0): Promise<ChatTokenizer> {
    const cfg = await readTokenizerConfig(dir);
    let tok: Tokenizer;
    try {
      tok = Tokenizer.fromFile(join(dir, 'tokenizer.json'));
    } catch (e) {
      throw new FgsnError('ENGINE_TOKENIZER_INVALID', `cannot load ${join(dir, 'tokenizer.json')}: ${(e as Error).message}`, { cause: e });
    }
    let template: Template | null = null;
    if (cfg.chatTemplate !== null) {
      try {
        template = new Template(cfg.chatTemplate);
      } catch (e) {
        throw new FgsnError('ENGINE_TOKENIZER_INVALID', `chat_template of ${dir} does not parse: ${(e as Error).message}`, { cause: e });
      }
    }
    const pad = cfg.padToken === null ? null : tok.tokenToId(cfg.padToken);
    return new ChatTokenizer(tok, template, cfg, pad ?? fallbackPadId);
  }

  async encode(text: string, addSpecialTokens = false): Promise<number[]> {
    const enc = await this.tok.encode(text, null, { addSpecialTokens });
    return enc.getIds();
  }

  /** Chat-formatted text: the prompt with the generation prompt, or the full turn when a response is given. */
  renderChat(prompt: string, response?: string): string {
    if (this.template === null) {
      throw new FgsnError('ENGINE_TOKENIZER_INVALID', 'tokenizer_config.json has no chat_template');
    }
    const messages = [{ role: 'user', content: prompt }];
    if (response !== undefined) messages.push({ role: 'assistant', content: response });
    return this.template.render({
      messages,
      bos_token: this.config.bosToken ?? '',
      eos_token: this.config.eosToken ?? '',
      pad_token: this.config.padToken ?? '',
      add_generation_prompt: response === undefined,
    });
  }

  async encodeChat(prompt: string, response?: string): Promise<ChatEncoding> {
    const promptIds = await this.encode(this.renderChat(prompt));
    if (response === undefined) return { ids: promptIds, promptLength: promptIds.length };
    const ids = await this.encode(this.renderChat(prompt, response));
    // The response must extend the prompt token for token, or "response tokens" would be ill-defined.
    const prefixOk = ids.length >= promptIds.length && promptIds.every((t, i) => ids[i] === t);
    if (!prefixOk) {
      throw new FgsnError('ENGINE_TOKENIZER_INVALID', 'the chat template does not render the prompt as a prefix of prompt + response', {
        details: { prompt, response },
      });
    }
    return { ids, promptLength: promptIds.length };
  }

  decode(ids: number[], skipSpecialTokens = true): Promise<string> {
    return this.tok.decode(ids, skipSpecialTokens);
  }

  tokenToId(token: string): number | null {
    return this.tok.tokenToId(token);
  }

  vocabSize(): number {
    return this.tok.getVocabSize(true);
  }
}
