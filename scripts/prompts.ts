/**
 * Write the paper's number-sequence prompts as JSON lines: {"index": i, "prompt": "..."}.
 *
 *   npx tsx scripts/prompts.ts --seed 47 --n 30000 --out prompts.jsonl
 *
 * Exit codes: 0 ok, 1 bad input or a file that cannot be written (one `error:` line).
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { jsonlChunks, parsePromptsArgs } from '../src/experiment/paper/prompt-lines.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { checkOutFile, errnoText } from '../src/util/outpaths.ts';

const USAGE = `Usage: npx tsx scripts/prompts.ts --seed S --n N [--prefix-only] [--out FILE.jsonl [--overwrite]]

Generates the first N prompts of the paper's PromptGenerator(np.random.default_rng(S))
(the paper's datasets use --seed 47 --n 30000) as JSON lines {"index":i,"prompt":"..."}.

  --seed S        non-negative integer numpy seed (required)
  --n N           number of prompts, an integer in [0, 100000000] (required)
  --prefix-only   emit only sample_example_prefix() (the "I give you this sequence..." part)
  --out FILE      write to FILE atomically (temp file + rename) instead of stdout; an existing FILE is
                  refused unless --overwrite
  --overwrite     replace an existing --out FILE
  --help          show this help`;

function writeAtomically(path: string, chunks: Iterable<string>): void {
  const tempPath = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  let fd: number | null = null;
  try {
    fd = openSync(tempPath, 'wx');
    for (const chunk of chunks) writeSync(fd, chunk);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tempPath, path);
  } catch (error) {
    if (fd !== null) closeSync(fd);
    rmSync(tempPath, { force: true });
    throw error;
  }
}

/** Write chunk by chunk, waiting for each write so a closed pipe (e.g. `| head`) stops generation. */
async function writeToStdout(chunks: Iterable<string>): Promise<void> {
  // Errors also arrive as an 'error' event; the write callback below handles them, so swallow the event.
  process.stdout.on('error', () => {});
  for (const chunk of chunks) {
    await new Promise<void>((resolve, reject) => {
      process.stdout.write(chunk, (error) => (error ? reject(error) : resolve()));
    });
  }
}

export async function main(argv: readonly string[]): Promise<void> {
  const options = parsePromptsArgs(argv);
  if (options === null) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (options.out !== null) checkOutFile(options.out, { overwrite: options.overwrite });
  try {
    if (options.out === null) await writeToStdout(jsonlChunks(options));
    else writeAtomically(options.out, jsonlChunks(options));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EPIPE') return; // reader went away (e.g. `| head`)
    throw new UserError(`cannot write ${options.out ?? 'stdout'}: ${errnoText(error)}`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runCli(() => main(process.argv.slice(2)));
}
