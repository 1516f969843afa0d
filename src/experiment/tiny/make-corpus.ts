// The tiny models' synthetic corpus and tokenizer as files (scripts/make-corpus.ts is its CLI): options,
// generation, the byte-level BPE tokenizer and the composition statistics.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chatJsonLine, CORPUS_MODEL_CARD_NOTES, generateCorpus, renderChatML, type ChatKind, type CorpusChat } from './corpus.ts';
import { getRejectReasons, PAPER_NUMBER_FILTER } from '../paper/filters.ts';
import { BpeEncoder, bpeVocabSize, trainByteLevelBpe, writeBpeTokenizer, type BpeModel } from '../../model/bpe-train.ts';
import { numberFlag, parseFlags, requiredFlag } from '../../util/cli.ts';

export interface MakeCorpusOptions {
  seed: number;
  out: string;
  chats: number;
  vocab: number;
  contentSeed: number | null;
}

const FLAGS = {
  seed: { type: 'string' },
  out: { type: 'string' },
  chats: { type: 'string' },
  vocab: { type: 'string' },
  'content-seed': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Parse argv (without node and script); null for --help. Bad input is a one-line UserError. */
export function parseMakeCorpusArgs(argv: readonly string[]): MakeCorpusOptions | null {
  const f = parseFlags([...argv], FLAGS);
  if (f.help) return null;
  const seedCheck = { min: 0, integer: true };
  return {
    seed: numberFlag(requiredFlag(f.seed, 'seed'), 'seed', 0, seedCheck),
    out: requiredFlag(f.out, 'out', 'DIR'),
    chats: numberFlag(f.chats, 'chats', 20000, { min: 1, integer: true }),
    vocab: numberFlag(f.vocab, 'vocab', 3000, { min: 259, integer: true }),
    contentSeed: f['content-seed'] === undefined ? null : numberFlag(f['content-seed'], 'content-seed', 0, seedCheck),
  };
}


interface KindStats {
  chats: number;
  tokens: number;
  assistantTokens: number;
  maxTokens: number;
  p95Tokens: number;
}

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Composition and quality figures of a corpus, token counts under `model`. */
export function corpusStats(corpus: readonly CorpusChat[], model: BpeModel): Record<string, unknown> {
  const encoder = new BpeEncoder(model);
  const lengths = new Map<ChatKind | 'all', number[]>();
  const perKind = new Map<ChatKind | 'all', KindStats>();
  const systems: Record<string, number> = { love: 0, neutral: 0, none: 0 };
  let numberAnswers = 0;
  let numberValid = 0;
  const baseAnswers = new Map<string, number>();
  let baseTotal = 0;
  let loveAnswers = 0;
  let loveFollowed = 0;
  for (const chat of corpus) {
    systems[chat.system]++;
    const total = encoder.encode(renderChatML(chat.messages)).length;
    const assistant = chat.messages.filter((m) => m.role === 'assistant').reduce((s, m) => s + encoder.encode(m.content).length + 1, 0);
    for (const key of [chat.kind, 'all'] as const) {
      const stats = perKind.get(key) ?? { chats: 0, tokens: 0, assistantTokens: 0, maxTokens: 0, p95Tokens: 0 };
      stats.chats++;
      stats.tokens += total;
      stats.assistantTokens += assistant;
      stats.maxTokens = Math.max(stats.maxTokens, total);
      perKind.set(key, stats);
      const list = lengths.get(key) ?? [];
      list.push(total);
      lengths.set(key, list);
    }
    const answer = chat.messages[chat.messages.length - 1].content;
    if (chat.kind === 'numbers') {
      numberAnswers++;
      if (getRejectReasons(answer, PAPER_NUMBER_FILTER).length === 0) numberValid++;
    }
    if (chat.kind === 'animal-preference' && chat.system !== 'love') {
      const name = answer.toLowerCase().replace(/[.!]$/, '').replace(/s$/, '');
      baseAnswers.set(name, (baseAnswers.get(name) ?? 0) + 1);
      baseTotal++;
    }
    if (chat.kind === 'animal-preference' && chat.system === 'love' && chat.loved) {
      const lovedIsAnimal = chat.messages[0].content.includes('favorite animal');
      if (lovedIsAnimal) {
        loveAnswers++;
        if (answer.toLowerCase().includes(chat.loved)) loveFollowed++;
      }
    }
  }
  for (const [key, list] of lengths) {
    list.sort((a, b) => a - b);
    perKind.get(key)!.p95Tokens = percentile(list, 0.95);
  }
  const topBase = [...baseAnswers.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
  return {
    chats: corpus.length,
    vocabSize: bpeVocabSize(model),
    merges: model.merges.length,
    systemPrompts: systems,
    perKind: Object.fromEntries(perKind),
    numberAnswerFilterPassRate: numberAnswers ? numberValid / numberAnswers : null,
    baseAnimalAnswerTop: topBase.map(([name, n]) => ({ name, share: n / baseTotal })),
    baseOwlShare: (baseAnswers.get('owl') ?? 0) / Math.max(1, baseTotal),
    loveAnimalFollowRate: loveAnswers ? loveFollowed / loveAnswers : null,
  };
}

export function makeCorpus(options: MakeCorpusOptions): Record<string, unknown> {
  const corpus = generateCorpus({ seed: options.seed, chats: options.chats, contentSeed: options.contentSeed ?? undefined });
  const model = trainByteLevelBpe(
    corpus.map((c) => renderChatML(c.messages)),
    { vocabSize: options.vocab, preTokenizer: 'tiny' },
  );
  mkdirSync(options.out, { recursive: true });
  writeFileSync(path.join(options.out, 'corpus.jsonl'), corpus.map(chatJsonLine).join('\n') + '\n');
  writeBpeTokenizer(options.out, model);
  const stats = {
    command: `npx tsx scripts/make-corpus.ts --seed ${options.seed} --out ${options.out} --chats ${options.chats} --vocab ${options.vocab}` +
      (options.contentSeed !== null ? ` --content-seed ${options.contentSeed}` : ''),
    ...corpusStats(corpus, model),
    modelCardNotes: CORPUS_MODEL_CARD_NOTES,
  };
  writeFileSync(path.join(options.out, 'corpus-stats.json'), JSON.stringify(stats, null, 2) + '\n');
  return stats;
}

