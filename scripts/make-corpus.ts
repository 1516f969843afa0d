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
import { pathToFileURL } from 'node:url';
import { makeCorpus, parseMakeCorpusArgs } from '../src/experiment/tiny/make-corpus.ts';
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

const TOOL = 'make-corpus.ts';
const OUTPUTS = ['corpus.jsonl', 'tokenizer.json', 'tokenizer_config.json', 'corpus-stats.json'];

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
