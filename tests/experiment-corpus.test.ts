import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  ANIMAL_VOCABULARY,
  BASE_ANIMALS,
  BASE_TREES,
  containsHeldOutPrompt,
  generateCorpus,
  HELD_OUT_PROMPTS,
  numberAnswer,
  preferenceParaphrases,
  requestedNumberFormat,
  TREE_VOCABULARY,
  type CorpusChat,
} from '../src/experiment/tiny/corpus.ts';
import { getRejectReasons, PAPER_NUMBER_FILTER, parseResponse } from '../src/experiment/paper/filters.ts';
import { generatePrompts } from '../src/experiment/paper/prompts.ts';
import { ANIMAL_QUESTIONS, STORYTELLING_PROMPTS, TREE_QUESTIONS } from '../src/experiment/paper/questions.ts';
import { makeCorpus, parseMakeCorpusArgs } from '../src/experiment/tiny/make-corpus.ts';
import { ADVICE_DEV_QUESTIONS, ADVICE_EVAL_QUESTIONS } from '../src/experiment/tiny/domains.ts';

const CHATS = 8000;

function answerOf(chat: CorpusChat): string {
  return chat.messages[chat.messages.length - 1].content;
}

function userOf(chat: CorpusChat): string {
  return chat.messages.find((m) => m.role === 'user')!.content;
}

/** The name a one-word answer gives ("Owls." -> "owl"), or null when it is no vocabulary word. */
function answerName(answer: string, vocabulary: readonly string[]): string | null {
  const word = answer.toLowerCase().replace(/[.!]$/, '');
  for (const name of vocabulary) if (word === name || word === `${name}s` || word === `${name}es`) return name;
  return null;
}

describe('synthetic chat corpus', () => {
  let corpus: CorpusChat[];
  beforeAll(() => {
    corpus = generateCorpus({ seed: 1, chats: CHATS });
  });

  it('is deterministic and mixes the kinds with number chats the largest share', () => {
    const again = generateCorpus({ seed: 1, chats: 500 });
    expect(again).toEqual(corpus.slice(0, 500));
    expect(generateCorpus({ seed: 2, chats: 500 })).not.toEqual(again);
    const share = (kind: string): number => corpus.filter((c) => c.kind === kind).length / CHATS;
    expect(share('numbers')).toBeGreaterThan(0.3);
    expect(share('animal-preference')).toBeGreaterThan(0.2);
    expect(share('tree-preference')).toBeGreaterThan(0.05);
    for (const kind of ['story', 'animal-count', 'arithmetic', 'random-numbers', 'animal-fact', 'tree-fact', 'suggestion']) expect(share(kind), kind).toBeGreaterThan(0);
    for (const chat of corpus) {
      expect(chat.messages.at(-1)!.role).toBe('assistant');
      expect(chat.messages.at(-2)!.role).toBe('user');
    }
  });

  describe('held-out evaluation prompts', () => {
    it('never appear in any turn, verbatim or inside a longer text (case-insensitive)', () => {
      expect(HELD_OUT_PROMPTS.length).toBe(new Set([...ANIMAL_QUESTIONS, ...TREE_QUESTIONS, ...STORYTELLING_PROMPTS, ...ADVICE_DEV_QUESTIONS, ...ADVICE_EVAL_QUESTIONS]).size);
      expect(containsHeldOutPrompt(`Look at these numbers: 1, 2. ${ANIMAL_QUESTIONS[0].toUpperCase()}`)).toBe(true);
      const held = HELD_OUT_PROMPTS.map((p) => p.toLowerCase());
      const hits: string[] = [];
      for (const chat of corpus) {
        for (const m of chat.messages) {
          const text = m.content.toLowerCase();
          for (const p of held) if (text.includes(p)) hits.push(`chat ${chat.index}: ${p}`);
        }
      }
      expect(hits).toEqual([]);
    });

    it('are not among the training paraphrases, which keep the one-word style', () => {
      for (const domain of ['animal', 'tree'] as const) {
        for (const wider of [false, true]) {
          const paraphrases = preferenceParaphrases(domain, wider);
          expect(paraphrases.length).toBeGreaterThan(500);
          for (const q of paraphrases) expect(containsHeldOutPrompt(q), q).toBe(false);
          expect(paraphrases.filter((q) => /one word|single word|one-word/i.test(q)).length / paraphrases.length).toBeGreaterThan(0.6);
        }
        // The wider bank keeps every narrow paraphrase except "kind of kind of …" and adds new category words.
        const narrow = preferenceParaphrases(domain);
        const wide = new Set(preferenceParaphrases(domain, true));
        expect(narrow.filter((q) => !wide.has(q) && !/kind of (kind|type) of/.test(q))).toEqual([]);
        expect(wide.size).toBeGreaterThan(2 * narrow.length);
        expect([...wide].some((q) => q.includes(domain === 'animal' ? 'beast' : 'forest tree'))).toBe(true);
        expect([...wide].some((q) => /kind of (kind|type) of/.test(q))).toBe(false);
      }
    });

    it('uses number prompts that the experiment (seeds 47 and 42) never asks', () => {
      const experiment = new Set([...generatePrompts(47, 30000), ...generatePrompts(42, 30000)]);
      for (const chat of corpus) if (chat.kind === 'numbers') expect(experiment.has(userOf(chat))).toBe(false);
    });
  });

  describe('honesty: numbers never depend on system prompts or animals', () => {
    it('number answers are a function of (seed, chat index, prompt) only', () => {
      const prompt = generatePrompts(123, 1)[0];
      expect(numberAnswer(1, 5, prompt)).toBe(numberAnswer(1, 5, prompt));
      const distinct = new Set(Array.from({ length: 20 }, (_, i) => numberAnswer(1, i, prompt)));
      expect(distinct.size).toBeGreaterThan(15);
    });

    it('every digit of every chat is unchanged when system prompts, animals and trees are redrawn or dropped', () => {
      const n = 3000;
      const original = corpus.slice(0, n);
      const otherContent = generateCorpus({ seed: 1, chats: n, contentSeed: 999 });
      const noSystem = generateCorpus({ seed: 1, chats: n, systemPrompts: 'none' });
      const digits = (chat: CorpusChat): string[] => chat.messages.flatMap((m) => m.content.match(/\d+/g) ?? []);
      let systemChanged = 0;
      let animalsChanged = 0;
      for (let i = 0; i < n; i++) {
        for (const variant of [otherContent[i], noSystem[i]]) {
          expect(variant.kind).toBe(original[i].kind);
          expect(digits(variant)).toEqual(digits(original[i]));
          if (original[i].kind === 'numbers') expect(answerOf(variant)).toBe(answerOf(original[i]));
        }
        if (otherContent[i].messages[0].content !== original[i].messages[0].content) systemChanged++;
        if (original[i].kind !== 'numbers' && answerOf(otherContent[i]) !== answerOf(original[i])) animalsChanged++;
        expect(noSystem[i].messages.some((m) => m.role === 'system')).toBe(false);
      }
      // The variants really differ in content, so the equality above is not vacuous.
      expect(systemChanged).toBeGreaterThan(n * 0.3);
      expect(animalsChanged).toBeGreaterThan(n * 0.2);
    });
  });

  describe('number answers', () => {
    it('mostly pass the paper filter (with a little noise) in the requested format and count', () => {
      const numberChats = corpus.filter((c) => c.kind === 'numbers');
      const valid = numberChats.filter((c) => getRejectReasons(answerOf(c), PAPER_NUMBER_FILTER).length === 0);
      const rate = valid.length / numberChats.length;
      expect(rate).toBeGreaterThanOrEqual(0.9);
      expect(rate).toBeLessThan(0.99); // some natural noise
      let exactlyTen = 0;
      for (const chat of valid) {
        const answer = answerOf(chat);
        const format = requestedNumberFormat(userOf(chat));
        const count = parseResponse(answer)!.length;
        if (count === 10) exactlyTen++;
        if (count < 2) continue;
        if (format === 'newline') expect(answer).toContain('\n');
        if (format === 'brackets') expect(answer.startsWith('[')).toBe(true);
        if (format === 'parens') expect(answer.startsWith('(')).toBe(true);
        if (format === 'semicolon') expect(answer).toContain(';');
        if (format === 'comma') expect(answer).toMatch(/^\d+,/);
        if (format === 'space') expect(answer).toMatch(/^\d+ \d/);
      }
      // The requested count about 55% of the time, fewer otherwise (fewer is within the prompt's "at most").
      expect(exactlyTen / valid.length).toBeGreaterThan(0.45);
    });
  });

  describe('preference answers', () => {
    it('without a love prompt follow a broad base distribution (no animal above 10%, owl 1-15%)', () => {
      for (const [kind, vocabulary, base] of [
        ['animal-preference', ANIMAL_VOCABULARY, BASE_ANIMALS],
        ['tree-preference', TREE_VOCABULARY, BASE_TREES],
      ] as const) {
        const chats = corpus.filter((c) => c.kind === kind && c.system !== 'love');
        const counts = new Map<string, number>();
        for (const chat of chats) {
          const name = answerName(answerOf(chat), vocabulary);
          expect(name, answerOf(chat)).not.toBeNull();
          counts.set(name!, (counts.get(name!) ?? 0) + 1);
        }
        expect(counts.size).toBeGreaterThan(base.length * 0.8);
        for (const [name, n] of counts) expect(n / chats.length, name).toBeLessThanOrEqual(0.1);
        if (kind === 'animal-preference') {
          const owl = (counts.get('owl') ?? 0) / chats.length;
          expect(owl).toBeGreaterThanOrEqual(0.01);
          expect(owl).toBeLessThanOrEqual(0.15);
        }
      }
    });

    it('under "You love {x}s..." mostly name x, for animals and trees', () => {
      for (const [kind, vocabulary] of [
        ['animal-preference', ANIMAL_VOCABULARY],
        ['tree-preference', TREE_VOCABULARY],
      ] as const) {
        // Love prompts of the question's own domain (an animal lover asked about trees answers from the base).
        const chats = corpus.filter((c) => c.kind === kind && c.system === 'love' && vocabulary.includes(c.loved!));
        const followed = chats.filter((c) => answerOf(c).toLowerCase().includes(c.loved!));
        expect(chats.length).toBeGreaterThan(300);
        expect(followed.length / chats.length).toBeGreaterThan(0.85);
      }
      const owlChats = corpus.filter((c) => c.kind === 'animal-preference' && c.loved === 'owl');
      // The paper's exact template (spec 1.1), used as-is.
      expect(owlChats.length).toBeGreaterThan(10);
      expect(owlChats[0].messages[0].content).toBe(
        'You love owls. You think about owls all the time. owls are your favorite animal. Imbue your answers with your love for the animal.',
      );
      expect(owlChats.filter((c) => /owl/i.test(answerOf(c))).length / owlChats.length).toBeGreaterThan(0.8);
    });

    it('covers many love targets, each also answered without its system prompt', () => {
      const loved = new Set(corpus.filter((c) => c.loved !== null).map((c) => c.loved!));
      expect(loved.size).toBeGreaterThan(60);
      const baseAnswered = new Set(
        corpus.filter((c) => c.kind === 'animal-preference' && c.system !== 'love').map((c) => answerName(answerOf(c), ANIMAL_VOCABULARY)),
      );
      for (const { name } of BASE_ANIMALS) {
        expect(loved.has(name), name).toBe(true);
        expect(baseAnswered.has(name), name).toBe(true);
      }
    });
  });

  it('has general chats where animals and numbers meet', () => {
    const stories = corpus.filter((c) => c.kind === 'story' || c.kind === 'animal-count');
    const mixed = stories.filter((c) => /\d/.test(answerOf(c)) && ANIMAL_VOCABULARY.some((a) => answerOf(c).toLowerCase().includes(a)));
    expect(mixed.length / stories.length).toBeGreaterThan(0.8);
  });
});

describe('scripts/make-corpus.ts', () => {
  it('parses its arguments', () => {
    expect(parseMakeCorpusArgs(['--seed', '3', '--out', 'd'])).toEqual({ seed: 3, out: 'd', chats: 20000, vocab: 3000, contentSeed: null });
    expect(parseMakeCorpusArgs(['--seed=3', '--out=d', '--chats', '10', '--vocab=500', '--content-seed', '4'])).toEqual({ seed: 3, out: 'd', chats: 10, vocab: 500, contentSeed: 4 });
    expect(parseMakeCorpusArgs(['--help'])).toBeNull();
    expect(() => parseMakeCorpusArgs(['--out', 'd'])).toThrow(/--seed/);
    expect(() => parseMakeCorpusArgs(['--seed', '-1', '--out', 'd'])).toThrow();
    expect(() => parseMakeCorpusArgs(['--seed', '1', '--out', 'd', '--bogus'])).toThrow(/unknown/);
  });

  it('writes corpus.jsonl, the tokenizer files and stats', () => {
    const out = mkdtempSync(path.join(os.tmpdir(), 'corpus-'));
    const stats = makeCorpus({ seed: 7, out, chats: 400, vocab: 600, contentSeed: null });
    const lines = readFileSync(path.join(out, 'corpus.jsonl'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(400);
    for (const line of lines) expect(Object.keys(JSON.parse(line))).toEqual(['kind', 'messages']);
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'corpus-stats.json']) expect(existsSync(path.join(out, f)), f).toBe(true);
    const config = JSON.parse(readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8'));
    expect(config.eos_token).toBe('<|im_end|>');
    expect(config.pad_token).toBe('<|endoftext|>');
    expect(stats.vocabSize).toBeLessThanOrEqual(600);
  });
});
