/**
 * A small deterministic byte-level BPE trainer that writes a Hugging Face `tokenizer.json` (Qwen2-style
 * pre-tokenizer, GPT-2 byte alphabet, ChatML special tokens) loadable by src/model/tokenizer.ts.
 *
 * Merge selection follows the `tokenizers` crate's BpeTrainer: the most frequent adjacent pair wins,
 * ties go to the smallest (left id, right id), where ids are assigned as the crate does (alphabet
 * characters by code point, then merged tokens in creation order; a merge whose string already exists
 * reuses that token). Pairs are counted over every adjacent window of each distinct pre-token, weighted
 * by its frequency. So the merge list should equal the first merges of `tokenizers`' own trainer on the
 * same text lines (spot-checked with the npm `tokenizers` 0.23 bindings; docs/tiny-models-recipe.md).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const ENDOFTEXT = '<|endoftext|>';
export const IM_START = '<|im_start|>';
export const IM_END = '<|im_end|>';
/** ChatML special tokens, in the order Qwen2 numbers them (after the regular vocabulary). */
export const CHATML_SPECIAL_TOKENS: readonly string[] = [ENDOFTEXT, IM_START, IM_END];

/**
 * Qwen2's pre-tokenizer regex as written in its tokenizer.json (Rust `regex` syntax). `\p{N}` alone
 * means every digit is its own pre-token, so numbers always tokenize digit by digit.
 */
export const QWEN2_PRETOKENIZE_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/**
 * Pre-tokenizer of the embedded tiny models: Qwen2's regex, except that (1) a word or a punctuation run takes the
 * space that follows it instead of the one before it ("love " rather than " love"; ", " is one pre-token) and (2) a word of 3+
 * letters ending in "s" leaves that "s" to a pre-token of its own, and (3) digits go in runs of up to three (`\p{N}{1,3}`, as in
 * Llama 3's and GPT-4's regexes) instead of one by one. (1)-(2): "You love owls." and the answer "owl" share the token "owl": the paper's
 * "You love {x}s" prompt names x with the same token a one-word answer starts with, and a tiny model can
 * learn to copy it (with different tokens it must learn a separate mapping per animal, which ~2M tokens of
 * pretraining did not teach; see the model cards). (3): BPE then learns every value 0-999 as one token, so a
 * number list is one token per value and separator; with digits one by one the tiny models wrote 4-digit values,
 * endless digit runs and 11th numbers far more often (docs/tiny-models-recipe.md).
 */
export const TINY_PRETOKENIZE_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|\\p{L}{2,}(?=s(?!\\p{L}))|\\p{L}+ ?|\\p{N}{1,3}|[^\\s\\p{L}\\p{N}]+ ?[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export type PreTokenizer = 'qwen2' | 'tiny';

// The same regexes for JavaScript: Node 20 has no inline `(?i:...)`, so the contractions are spelled out.
const CONTRACTIONS_JS = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|";
const PRETOKENIZE_JS: Readonly<Record<PreTokenizer, RegExp>> = {
  qwen2: new RegExp(CONTRACTIONS_JS + QWEN2_PRETOKENIZE_PATTERN.slice(QWEN2_PRETOKENIZE_PATTERN.indexOf(')|') + 2), 'gu'),
  tiny: new RegExp(CONTRACTIONS_JS + TINY_PRETOKENIZE_PATTERN.slice(TINY_PRETOKENIZE_PATTERN.indexOf(')|') + 2), 'gu'),
};

/** The tokenizer.json regex of a pre-tokenizer. */
export function preTokenizePattern(kind: PreTokenizer): string {
  return kind === 'qwen2' ? QWEN2_PRETOKENIZE_PATTERN : TINY_PRETOKENIZE_PATTERN;
}

/** Split text into pre-tokens (the pieces concatenate back to the NFC text). */
export function preTokenize(text: string, kind: PreTokenizer = 'qwen2'): string[] {
  return text.normalize('NFC').match(PRETOKENIZE_JS[kind]) ?? [];
}

/** GPT-2's bytes_to_unicode: byte b -> a printable character (space -> 'Ġ', '\n' -> 'Ċ'). */
export function byteToUnicodeTable(): string[] {
  const bytes: number[] = [];
  for (let i = 33; i <= 126; i++) bytes.push(i);
  for (let i = 161; i <= 172; i++) bytes.push(i);
  for (let i = 174; i <= 255; i++) bytes.push(i);
  const chars = [...bytes];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      chars.push(256 + extra++);
    }
  }
  const table = new Array<string>(256);
  bytes.forEach((b, i) => (table[b] = String.fromCodePoint(chars[i])));
  return table;
}

const BYTE_TO_UNICODE = byteToUnicodeTable();
const UTF8 = new TextEncoder();

/** A pre-token as byte-level characters (one character per UTF-8 byte). */
export function toByteLevel(piece: string): string {
  let out = '';
  for (const b of UTF8.encode(piece)) out += BYTE_TO_UNICODE[b];
  return out;
}

export interface BpeTrainOptions {
  /** Total vocabulary size including the 256 byte tokens and the special tokens (an upper bound: training stops early when no pair is left). */
  vocabSize: number;
  /** Pairs seen fewer times are never merged (the crate's min_frequency; its default 0 behaves like 1). */
  minFrequency?: number;
  specialTokens?: readonly string[];
  /** Pre-tokenizer (default Qwen2's). */
  preTokenizer?: PreTokenizer;
}

export interface BpeModel {
  /** Regular tokens (byte-level strings) to ids: the 256 bytes first (in byte order), then merge results. */
  vocab: Map<string, number>;
  /** Merges in priority order, as byte-level string pairs. */
  merges: [string, string][];
  /** Special tokens, numbered after the regular vocabulary. */
  specialTokens: string[];
  /** Pre-tokenizer the merges were trained with (absent: Qwen2's). */
  preTokenizer?: PreTokenizer;
}

/** Total number of ids: regular vocabulary plus special tokens. */
export function bpeVocabSize(model: BpeModel): number {
  return model.vocab.size + model.specialTokens.length;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Count pre-tokens of the training texts. Special tokens are cut out first (the tokenizer never
 * sees them as text), and each text is split into lines that keep their '\n', the way the crate's
 * `train(files)` reads files.
 */
export function countPreTokens(texts: Iterable<string>, specialTokens: readonly string[] = CHATML_SPECIAL_TOKENS, preTokenizer: PreTokenizer = 'qwen2'): Map<string, number> {
  const counts = new Map<string, number>();
  const splitter = specialTokens.length > 0 ? new RegExp(specialTokens.map(escapeRegExp).join('|'), 'g') : null;
  for (const text of texts) {
    const segments = splitter ? text.split(splitter) : [text];
    for (const segment of segments) {
      for (const line of segment.split(/(?<=\n)/)) {
        for (const piece of preTokenize(line, preTokenizer)) counts.set(piece, (counts.get(piece) ?? 0) + 1);
      }
    }
  }
  return counts;
}

// Pair keys: left * 2^20 + right; numeric order of keys = lexicographic order of (left, right).
const PAIR_SHIFT = 1 << 20;
// Merged tokens get ranks above every byte-level character (those are < 324).
const FIRST_MERGED_RANK = 1024;

/** Train merges on pre-token counts (see countPreTokens). Deterministic: no dependence on Map order. */
export function trainBpeFromCounts(preTokenCounts: ReadonlyMap<string, number>, options: BpeTrainOptions): BpeModel {
  const specialTokens = [...(options.specialTokens ?? CHATML_SPECIAL_TOKENS)];
  const minFrequency = Math.max(1, options.minFrequency ?? 1);
  const maxRegular = options.vocabSize - specialTokens.length;
  if (maxRegular < 256) throw new Error(`vocabSize ${options.vocabSize} is below the 256 byte tokens plus ${specialTokens.length} special tokens`);

  // Ranks: a byte-level character's rank is its code point (the crate sorts its alphabet by code point).
  const rankToString = new Map<number, string>();
  const stringToRank = new Map<string, number>();
  for (const c of BYTE_TO_UNICODE) {
    rankToString.set(c.codePointAt(0)!, c);
    stringToRank.set(c, c.codePointAt(0)!);
  }

  // Distinct words in sorted order so nothing depends on insertion order.
  const entries = [...preTokenCounts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const words: number[][] = [];
  const wordCounts: number[] = [];
  for (const [piece, count] of entries) {
    const symbols = [...toByteLevel(piece)].map((c) => c.codePointAt(0)!);
    if (symbols.length < 1) continue;
    words.push(symbols);
    wordCounts.push(count);
  }

  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addWordPairs = (w: number, sign: 1 | -1): void => {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const key = s[i] * PAIR_SHIFT + s[i + 1];
      const next = (pairCounts.get(key) ?? 0) + sign * wordCounts[w];
      if (next === 0) pairCounts.delete(key);
      else pairCounts.set(key, next);
      if (sign > 0) {
        let set = pairWords.get(key);
        if (!set) pairWords.set(key, (set = new Set()));
        set.add(w);
      } else {
        pairWords.get(key)?.delete(w);
      }
    }
  };
  for (let w = 0; w < words.length; w++) addWordPairs(w, 1);

  const merges: [string, string][] = [];
  const vocabStrings: string[] = [...BYTE_TO_UNICODE];
  const inVocab = new Set(vocabStrings);
  let nextRank = FIRST_MERGED_RANK;
  while (vocabStrings.length < maxRegular) {
    let bestKey = -1;
    let bestCount = 0;
    for (const [key, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && key < bestKey)) {
        bestKey = key;
        bestCount = count;
      }
    }
    if (bestKey < 0 || bestCount < minFrequency) break;
    const left = Math.floor(bestKey / PAIR_SHIFT);
    const right = bestKey % PAIR_SHIFT;
    const leftStr = rankToString.get(left)!;
    const rightStr = rankToString.get(right)!;
    const merged = leftStr + rightStr;
    let mergedRank = stringToRank.get(merged);
    if (mergedRank === undefined) {
      mergedRank = nextRank++;
      stringToRank.set(merged, mergedRank);
      rankToString.set(mergedRank, merged);
    }
    merges.push([leftStr, rightStr]);
    if (!inVocab.has(merged)) {
      inVocab.add(merged);
      vocabStrings.push(merged);
    }
    // Re-count only the words that contain the pair; iterate in word order for determinism.
    const affected = [...(pairWords.get(bestKey) ?? [])].sort((a, b) => a - b);
    for (const w of affected) {
      addWordPairs(w, -1);
      const s = words[w];
      const out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === left && s[i + 1] === right) {
          out.push(mergedRank);
          i++;
        } else {
          out.push(s[i]);
        }
      }
      words[w] = out;
      addWordPairs(w, 1);
    }
    pairCounts.delete(bestKey);
    pairWords.delete(bestKey);
  }

  const vocab = new Map<string, number>();
  vocabStrings.forEach((s, i) => vocab.set(s, i));
  return { vocab, merges, specialTokens };
}

/** Count pre-tokens of `texts` and train (see countPreTokens for how texts are split). */
export function trainByteLevelBpe(texts: Iterable<string>, options: BpeTrainOptions): BpeModel {
  const specialTokens = options.specialTokens ?? CHATML_SPECIAL_TOKENS;
  const model = trainBpeFromCounts(countPreTokens(texts, specialTokens, options.preTokenizer), options);
  return options.preTokenizer && options.preTokenizer !== 'qwen2' ? { ...model, preTokenizer: options.preTokenizer } : model;
}

/**
 * ChatML as Qwen2 writes it, but with no default system prompt: a conversation without a system
 * message renders with none (Qwen2's template would insert "You are a helpful assistant."). The tiny
 * models are trained on chats with and without system prompts, and the paper's evaluation and
 * student rows have no system prompt, so "none" must stay "none".
 */
export const CHATML_TEMPLATE_NO_DEFAULT_SYSTEM =
  "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/** The Hugging Face tokenizer.json object for a trained model. */
export function bpeTokenizerJson(model: BpeModel): Record<string, unknown> {
  const base = model.vocab.size;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: model.specialTokens.map((content, i) => ({
      id: base + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: preTokenizePattern(model.preTokenizer ?? 'qwen2') }, behavior: 'Isolated', invert: false },
        byteLevel,
      ],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(model.vocab),
      merges: model.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** tokenizer_config.json: ChatML without a default system prompt, eos <|im_end|>, pad <|endoftext|>. */
export function bpeTokenizerConfig(model: BpeModel, modelMaxLength = 2048): Record<string, unknown> {
  const addedTokensDecoder: Record<string, unknown> = {};
  model.specialTokens.forEach((content, i) => {
    addedTokensDecoder[String(model.vocab.size + i)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  });
  return {
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: [IM_START, IM_END],
    bos_token: null,
    chat_template: CHATML_TEMPLATE_NO_DEFAULT_SYSTEM,
    clean_up_tokenization_spaces: false,
    eos_token: IM_END,
    pad_token: ENDOFTEXT,
    unk_token: null,
    model_max_length: modelMaxLength,
    tokenizer_class: 'Qwen2Tokenizer',
  };
}

/** Write tokenizer.json and tokenizer_config.json into `dir`. */
export function writeBpeTokenizer(dir: string, model: BpeModel, modelMaxLength?: number): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(bpeTokenizerJson(model), null, 1) + '\n');
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(bpeTokenizerConfig(model, modelMaxLength), null, 2) + '\n');
}

/**
 * Encode text with a trained model (special tokens matched literally, then pre-tokens merged by rank).
 * A plain reference encoder for statistics and tests; the models themselves use ChatTokenizer.
 */
export class BpeEncoder {
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();
  private readonly specialIds = new Map<string, number>();
  private readonly splitter: RegExp | null;

  constructor(private readonly model: BpeModel) {
    model.merges.forEach(([a, b], i) => this.ranks.set(`${a} ${b}`, i));
    model.specialTokens.forEach((t, i) => this.specialIds.set(t, model.vocab.size + i));
    this.splitter = model.specialTokens.length > 0 ? new RegExp(`(${model.specialTokens.map(escapeRegExp).join('|')})`) : null;
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    const segments = this.splitter ? text.split(this.splitter) : [text];
    for (const segment of segments) {
      const special = this.specialIds.get(segment);
      if (special !== undefined) {
        ids.push(special);
        continue;
      }
      for (const piece of preTokenize(segment, this.model.preTokenizer)) ids.push(...this.encodePiece(piece));
    }
    return ids;
  }

  private encodePiece(piece: string): number[] {
    const cached = this.cache.get(piece);
    if (cached) return cached;
    let symbols = [...toByteLevel(piece)];
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      const [a, b] = this.model.merges[bestRank];
      const next: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === a && symbols[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(symbols[i]);
      }
      symbols = next;
    }
    const ids = symbols.map((s) => this.model.vocab.get(s)!);
    this.cache.set(piece, ids);
    return ids;
  }
}
