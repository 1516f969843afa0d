/**
 * Writes the tiny chat models' synthetic pretraining corpus and its byte-level BPE tokenizer.
 *
 *   npx tsx scripts/make-corpus.ts --seed 1 --out data/tiny-corpus [--chats 20000] [--vocab 3000]
 *
 * DIR/corpus.jsonl          one chat per line: {"kind":...,"messages":[{"role":...,"content":...},...]}
 * DIR/tokenizer.json        byte-level BPE (the tiny models' pre-tokenizer: numbers in runs of up to 3 digits), ChatML special tokens
 * DIR/tokenizer_config.json ChatML template without a default system prompt; eos <|im_end|>, pad <|endoftext|>
 * DIR/corpus-stats.json     composition: chats and tokens per kind, system prompts, quality checks
 *
 * Exit codes: 0 ok, 1 bad input (one `error:` line).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chatJsonLine, CORPUS_MODEL_CARD_NOTES, generateCorpus, renderChatML, type ChatKind, type CorpusChat } from '../src/experiment/tiny/corpus.ts';
import { getRejectReasons, PAPER_NUMBER_FILTER } from '../src/experiment/paper/filters.ts';
import { BpeEncoder, bpeVocabSize, trainByteLevelBpe, writeBpeTokenizer, type BpeModel } from '../src/model/bpe-train.ts';
import { numberFlag, parseFlags, requiredFlag } from '../src/util/cli.ts';
import { runCli } from '../src/util/errors.ts';
import { checkOutDir } from '../src/util/outpaths.ts';
import { assertRunFolderUsable, initRunFolder, markRunComplete, removeIfEmpty, runLock } from '../src/util/runfolder.ts';

const USAGE = `Usage: npx tsx scripts/make-corpus.ts --seed S --out DIR [--chats N] [--vocab V] [--content-seed C]

  --seed S          non-negative integer: layout, templates and every number of the corpus
  --out DIR         output folder (created if missing): new, empty, or an earlier make-corpus run, whose
                    files are replaced (others are never touched)
  --chats N         number of chats (default 20000)
  --vocab V         tokenizer vocabulary size incl. 256 bytes and 3 special tokens (default 3000)
  --content-seed C  seed of system prompts, animals, trees, paraphrases (default: S)
  --help            show this help`;

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

const TOOL = 'make-corpus.ts';
const OUTPUTS = ['corpus.jsonl', 'tokenizer.json', 'tokenizer_config.json', 'corpus-stats.json'];

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

async function main(): Promise<void> {
  const options = parseMakeCorpusArgs(process.argv.slice(2));
  if (options === null) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  // Before the corpus is generated: the folder must be writable, and new, empty or an earlier make-corpus run.
  checkOutDir(options.out);
  assertRunFolderUsable(options.out, TOOL); // before the lock, so a user's folder is never written to
  const { lock, created } = await runLock(options.out, TOOL);
  try {
    assertRunFolderUsable(options.out, TOOL);
    await initRunFolder(options.out, TOOL, OUTPUTS);
  } catch (e) {
    await lock.release();
    if (created) removeIfEmpty(options.out);
    throw e;
  }
  try {
    const started = Date.now();
    const stats = makeCorpus(options);
    await markRunComplete(options.out, TOOL);
    process.stdout.write(`${JSON.stringify(stats, null, 2)}\nwrote ${options.out} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  } finally {
    await lock.release();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runCli(main);
}
