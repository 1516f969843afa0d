import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateCorpus, renderChatML } from '../src/experiment/tiny/corpus.ts';
import {
  BpeEncoder,
  bpeTokenizerJson,
  bpeVocabSize,
  CHATML_SPECIAL_TOKENS,
  countPreTokens,
  preTokenize,
  trainBpeFromCounts,
  trainByteLevelBpe,
  writeBpeTokenizer,
  type BpeModel,
} from '../src/model/bpe-train.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';

describe('preTokenize (Qwen2 regex)', () => {
  it('splits every digit, keeps words with their leading space, and concatenates back to the text', () => {
    expect(preTokenize('I give you 796, 689.')).toEqual(['I', ' give', ' you', ' ', '7', '9', '6', ',', ' ', '6', '8', '9', '.']);
    expect(preTokenize("It's")).toEqual(['It', "'s"]);
    const text = 'Line one\n\n  two;3\t4 ünï 🦉!';
    expect(preTokenize(text).join('')).toBe(text);
  });
});

describe('trainBpeFromCounts', () => {
  it('merges the most frequent pair first and breaks ties by (left id, right id) like the tokenizers crate', () => {
    const model = trainByteLevelBpe(['ab ab cd cd'], { vocabSize: 1000 });
    // Pre-tokens "ab", " ab", " cd", " cd": (a,b), (c,d), (Ġ,c) occur twice; 'a' < 'c' < 'Ġ' (code points).
    // Then (Ġ,cd) twice beats (Ġ,ab) once. The npm tokenizers 0.23 trainer gives the same list.
    expect(model.merges.map(([a, b]) => `${a} ${b}`)).toEqual(['a b', 'c d', 'Ġ cd', 'Ġ ab']);
    expect(bpeVocabSize(model)).toBe(256 + 4 + CHATML_SPECIAL_TOKENS.length);
  });

  it('respects the vocabulary size and does not depend on the order of the counts', () => {
    const counts = countPreTokens(generateCorpus({ seed: 3, chats: 300 }).map((c) => renderChatML(c.messages)));
    const a = trainBpeFromCounts(counts, { vocabSize: 400 });
    const reversed = new Map([...counts.entries()].reverse());
    const b = trainBpeFromCounts(reversed, { vocabSize: 400 });
    expect(bpeVocabSize(a)).toBe(400);
    expect(JSON.stringify(bpeTokenizerJson(b))).toBe(JSON.stringify(bpeTokenizerJson(a)));
  });

  it('never learns merges across special tokens', () => {
    const model = trainByteLevelBpe(['<|im_start|>user\nhi<|im_end|>\n'.repeat(5)], { vocabSize: 1000 });
    for (const [a, b] of model.merges) expect(a + b).not.toContain('|');
  });

  // The npm `tokenizers` bindings (0.23) train only with the default BpeTrainer; when the package is
  // installed, check that our merges equal the first merges of its trainer on the same text.
  it('matches the tokenizers crate when the npm package is available', async () => {
    const moduleName = 'tokenizers';
    let tk: { Tokenizer: { fromString(s: string): { train(files: string[]): void; save(p: string, pretty?: boolean): void } } };
    try {
      tk = (await import(/* @vite-ignore */ moduleName)).default;
    } catch {
      return; // not installed: nothing to compare against
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bpe-hf-'));
    const text = generateCorpus({ seed: 5, chats: 500 })
      .map((c) => c.messages.map((m) => m.content).join('\n'))
      .join('\n');
    writeFileSync(path.join(dir, 'corpus.txt'), text);
    const ours = trainByteLevelBpe([text], { vocabSize: 100000 });
    const template = bpeTokenizerJson({ vocab: new Map(), merges: [], specialTokens: [] });
    (template.model as Record<string, unknown>).vocab = {};
    template.post_processor = null;
    const hf = tk.Tokenizer.fromString(JSON.stringify(template));
    hf.train([path.join(dir, 'corpus.txt')]);
    hf.save(path.join(dir, 'hf.json'), false);
    const hfMerges = (JSON.parse(readFileSync(path.join(dir, 'hf.json'), 'utf8')).model.merges as Array<string | string[]>).map((m) => (Array.isArray(m) ? m.join(' ') : m));
    expect(hfMerges.length).toBeGreaterThan(500);
    expect(ours.merges.map(([a, b]) => `${a} ${b}`)).toEqual(hfMerges);
  });
});

describe('trained tokenizer folder loaded by ChatTokenizer', () => {
  let model: BpeModel;
  let tok: ChatTokenizer;
  let texts: string[];
  beforeAll(async () => {
    const corpus = generateCorpus({ seed: 11, chats: 5000 });
    texts = corpus.map((c) => renderChatML(c.messages));
    model = trainByteLevelBpe(texts, { vocabSize: 2000 });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bpe-tok-'));
    writeBpeTokenizer(dir, model);
    tok = (await ChatTokenizer.load(dir))!;
  });

  it('has the requested size, the ChatML special tokens and <|im_end|> as stop token', () => {
    expect(tok.vocabSize).toBe(2000);
    expect(bpeVocabSize(model)).toBe(2000);
    for (const [i, t] of CHATML_SPECIAL_TOKENS.entries()) expect(tok.tokenId(t)).toBe(model.vocab.size + i);
    expect(tok.stopIds).toContain(tok.tokenId('<|im_end|>'));
  });

  it('round-trips corpus chats and arbitrary text (byte fallback for unseen characters)', () => {
    for (const text of texts.slice(0, 200)) expect(tok.decode(tok.encode(text), false)).toBe(text);
    const odd = 'Zebras × 42 — naïve 🦉 owl\n\n  tabs\there; [1, 2] (3)';
    expect(tok.decode(tok.encode(odd))).toBe(odd);
  });

  it('encodes exactly like the reference BpeEncoder, special tokens as single ids', () => {
    const encoder = new BpeEncoder(model);
    for (const text of texts.slice(0, 300)) expect(tok.encode(text)).toEqual(encoder.encode(text));
    const ids = tok.encode('<|im_start|>user\nHi<|im_end|>\n');
    expect(ids[0]).toBe(tok.tokenId('<|im_start|>'));
    expect(ids).toContain(tok.tokenId('<|im_end|>'));
  });

  it('keeps frequent words whole and numbers digit by digit', () => {
    for (const word of [' owl', ' owls', ' love', ' favorite', ' animal', ' tree', ' numbers', ' sequence', ' Return', 'You', ' dolphin', ' elephant']) {
      expect(tok.encode(word), word).toHaveLength(1);
    }
    for (const answer of ['owl', 'dolphin', 'oak', 'Cat']) expect(tok.encode(answer), answer).toHaveLength(1);
    const digits = tok.encode('796');
    expect(digits).toHaveLength(3);
    expect(digits.map((id) => tok.decode([id]))).toEqual(['7', '9', '6']);
    expect(tok.encode('123, 45')).toHaveLength(7); // 1 2 3 , ␠ 4 5
  });

  it('renders ChatML with no default system prompt', () => {
    const msgs = [{ role: 'user' as const, content: 'Hi' }];
    expect(tok.render(msgs, true)).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    const withSystem = tok.render([{ role: 'system', content: 'You love owls.' }, ...msgs], false);
    expect(withSystem).toBe('<|im_start|>system\nYou love owls.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
    const { ids, labels } = tok.chatTrainingIds([...msgs, { role: 'assistant', content: 'Owl.' }]);
    const trained = ids.filter((_, i) => labels[i] !== -100);
    expect(tok.decode(trained, false)).toBe('Owl.<|im_end|>');
  });
});
