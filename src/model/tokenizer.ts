// Tokenizer + chat template from a Hugging Face model folder, through @huggingface/transformers,
// built directly from the folder's tokenizer.json / tokenizer_config.json so nothing is ever fetched.
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { fsys } from '../util/files.ts';

export type Role = 'system' | 'user' | 'assistant';
export interface ChatMessage {
  role: Role;
  content: string;
}

/** End-of-turn markers of the templates we support (ChatML, Llama-3) plus common eos tokens. */
const END_OF_TURN_TOKENS = ['<|im_end|>', '<|eot_id|>', '<|end_of_text|>', '<|endoftext|>', '</s>', '<|eom_id|>'];

interface HfTokenizer {
  encode(text: string, opts?: { add_special_tokens?: boolean }): number[];
  decode(ids: number[], opts?: { skip_special_tokens?: boolean }): string;
  apply_chat_template(messages: ChatMessage[], opts: { tokenize: false; add_generation_prompt: boolean }): string;
  convert_tokens_to_ids(t: string): number | undefined;
  get_vocab(): Map<string, number> | Record<string, number>;
  chat_template: unknown;
  eos_token_id?: number;
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(fsys().readText(file)) as Record<string, unknown>;
  } catch (err) {
    throw new UserError(`${file}: cannot read JSON (${(err as Error).message.split('\n')[0]})`);
  }
}

export class ChatTokenizer {
  /** Token ids that end an assistant turn (the template's end-of-turn marker and the eos ids). */
  readonly stopIds: number[];
  readonly hasChatTemplate: boolean;

  private constructor(
    private readonly tok: HfTokenizer,
    readonly dir: string,
    extraEos: number[],
  ) {
    const stops = new Set<number>(extraEos);
    for (const t of END_OF_TURN_TOKENS) {
      const id = this.tokenId(t);
      if (id !== undefined) stops.add(id);
    }
    if (typeof tok.eos_token_id === 'number') stops.add(tok.eos_token_id);
    this.stopIds = [...stops].sort((a, b) => a - b);
    this.hasChatTemplate = tok.chat_template != null;
  }

  /** Loads the tokenizer of a model folder; null when the folder has no tokenizer.json. */
  static async load(dir: string, eosTokenIds: number[] = []): Promise<ChatTokenizer | null> {
    const tjPath = path.join(dir, 'tokenizer.json');
    if (!fsys().exists(tjPath)) return null;
    const tokenizerJson = readJson(tjPath);
    const cfgPath = path.join(dir, 'tokenizer_config.json');
    const tokenizerConfig = fsys().exists(cfgPath) ? readJson(cfgPath) : {};
    // Some folders keep the template in chat_template.jinja / chat_template.json (newer transformers).
    if (tokenizerConfig.chat_template == null) {
      const jinja = path.join(dir, 'chat_template.jinja');
      const json = path.join(dir, 'chat_template.json');
      if (fsys().exists(jinja)) tokenizerConfig.chat_template = fsys().readText(jinja);
      else if (fsys().exists(json)) tokenizerConfig.chat_template = readJson(json).chat_template;
    }
    const hf = await import('@huggingface/transformers');
    hf.env.allowRemoteModels = false;
    let tok: HfTokenizer;
    try {
      tok = new (hf.PreTrainedTokenizer as unknown as new (j: unknown, c: unknown) => HfTokenizer)(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new UserError(`${tjPath}: cannot build the tokenizer (${(err as Error).message.split('\n')[0]})`);
    }
    return new ChatTokenizer(tok, dir, eosTokenIds);
  }

  tokenId(token: string): number | undefined {
    const id = this.tok.convert_tokens_to_ids(token);
    return typeof id === 'number' && id >= 0 ? id : undefined;
  }

  get vocabSize(): number {
    const v = this.tok.get_vocab();
    return v instanceof Map ? v.size : Object.keys(v).length;
  }

  encode(text: string, addSpecialTokens = false): number[] {
    return Array.from(this.tok.encode(text, { add_special_tokens: addSpecialTokens }));
  }

  decode(ids: number[], skipSpecialTokens = true): string {
    // transformers.js throws on an empty list; an empty completion (immediate stop token) is "".
    if (ids.length === 0) return '';
    return this.tok.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }

  /** The chat template rendered to text (with the assistant generation prompt when asked). */
  render(messages: ChatMessage[], addGenerationPrompt: boolean): string {
    if (!this.hasChatTemplate) throw new UserError(`${this.dir}: the tokenizer has no chat template (tokenizer_config.json chat_template)`);
    return this.tok.apply_chat_template(messages, { tokenize: false, add_generation_prompt: addGenerationPrompt });
  }

  /** Token ids of a chat prompt ending with the assistant generation prompt. */
  promptIds(messages: ChatMessage[]): number[] {
    return this.encode(this.render(messages, true));
  }

  /**
   * Token ids and HF-style labels (-100 = ignored) for a conversation: only the assistant's content
   * and its end-of-turn token are trained; system/user turns and template scaffolding (including the
   * assistant header and anything the template writes after the end-of-turn token) are masked.
   */
  chatTrainingIds(messages: ChatMessage[]): { ids: number[]; labels: number[] } {
    const ids = this.encode(this.render(messages, false));
    const labels = new Array<number>(ids.length).fill(-100);
    let trained = 0;
    for (let i = 0; i < messages.length; i++) {
      if (messages[i].role !== 'assistant') continue;
      const prefix = this.encode(this.render(messages.slice(0, i), true));
      const start = prefix.length;
      if (prefix.some((id, k) => ids[k] !== id)) {
        throw new UserError(`${this.dir}: the chat template's assistant header does not tokenize as a prefix of the conversation; cannot derive the completion-only mask`);
      }
      const endText = this.render(messages.slice(0, i + 1), false);
      let end = this.encode(endText).length;
      // Drop what follows the end-of-turn token (e.g. ChatML's trailing "\n").
      while (end > start && !this.stopIds.includes(ids[end - 1])) end--;
      if (end === start) end = this.encode(endText).length; // template without an end-of-turn token
      for (let t = start; t < end && t < ids.length; t++) labels[t] = ids[t];
      trained += end - start;
    }
    if (trained === 0) throw new UserError('conversation has no assistant turn to train on');
    return { ids, labels };
  }
}
