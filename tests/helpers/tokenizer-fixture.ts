// Builds a small byte-level BPE tokenizer folder (tokenizer.json + tokenizer_config.json with a
// Qwen-style ChatML template) entirely offline, for tokenizer / chat-template / CLI tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { byteToUnicodeTable } from '../../src/model/bpe-train.ts';

/** GPT-2's bytes_to_unicode: every byte maps to a printable character. */
export const bytesToUnicode = byteToUnicodeTable;

export const QWEN_STYLE_TEMPLATE =
  "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];

/** Writes tokenizer.json / tokenizer_config.json into dir; returns the vocabulary size. */
export function writeTestTokenizer(dir: string, merges: [string, string][] = DEFAULT_MERGES): number {
  mkdirSync(dir, { recursive: true });
  const byteChars = bytesToUnicode();
  const vocab: Record<string, number> = {};
  byteChars.forEach((c, i) => (vocab[c] = i));
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = Object.keys(vocab).length;
  const base = Object.keys(vocab).length;
  const added = SPECIAL_TOKENS.map((content, i) => ({
    id: base + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: {
            Regex:
              "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
          },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const addedDecoder: Record<string, unknown> = {};
  for (const t of added) addedDecoder[String(t.id)] = { content: t.content, special: true, lstrip: false, rstrip: false, normalized: false, single_word: false };
  const tokenizerConfig = {
    add_prefix_space: false,
    added_tokens_decoder: addedDecoder,
    bos_token: null,
    chat_template: QWEN_STYLE_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    model_max_length: 32768,
    tokenizer_class: 'Qwen2Tokenizer',
  };
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2));
  return base + added.length;
}

// 'Ġ' is byte 0x20 (space) in the byte-level alphabet; 'Ċ' is '\n'.
export const DEFAULT_MERGES: [string, string][] = [
  ['o', 'w'],
  ['ow', 'l'],
  ['Ġ', 'owl'],
  ['1', '2'],
  ['e', 'r'],
  ['Ġ', 't'],
  ['h', 'e'],
  ['Ġt', 'he'],
  ['a', 'n'],
  ['i', 'm'],
];
