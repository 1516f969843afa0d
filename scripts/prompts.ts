/**
 * Write the paper's number-sequence prompts as JSON lines: {"index": i, "prompt": "..."}.
 *
 *   npx tsx scripts/prompts.ts --seed 47 --n 30000 --out prompts.jsonl
 *
 * Exit codes: 0 ok, 1 I/O failure, 2 bad arguments.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { defaultRng } from '../src/experiment/pcg64.ts';
import { PromptGenerator } from '../src/experiment/prompts.ts';

const USAGE = `Usage: npx tsx scripts/prompts.ts --seed S --n N [--prefix-only] [--out FILE.jsonl]

Generates the first N prompts of the paper's PromptGenerator(np.random.default_rng(S))
(the paper's datasets use --seed 47 --n 30000) as JSON lines {"index":i,"prompt":"..."}.

  --seed S        non-negative integer numpy seed (required)
  --n N           number of prompts, non-negative integer (required)
  --prefix-only   emit only sample_example_prefix() (the "I give you this sequence..." part)
  --out FILE      write to FILE atomically (temp file + rename) instead of stdout
  --help          show this help`;

export interface PromptsCliOptions {
  seed: bigint;
  n: number;
  prefixOnly: boolean;
  out: string | null;
}

export class UsageError extends Error {}

function parseNonNegativeInteger(flag: string, raw: string | undefined): bigint {
  if (raw === undefined || raw.startsWith('--')) throw new UsageError(`${flag} needs a value`);
  if (!/^[0-9]+$/.test(raw)) throw new UsageError(`${flag} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return BigInt(raw);
}

/** Parse argv (without node and script); returns null for --help. Throws UsageError on bad input. */
export function parsePromptsArgs(argv: readonly string[]): PromptsCliOptions | null {
  let seed: bigint | null = null;
  let n: bigint | null = null;
  let prefixOnly = false;
  let out: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    // Accept --flag=value as well as --flag value.
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    const inlineValue = eq >= 0 ? arg.slice(eq + 1) : undefined;
    const takeValue = (): string | undefined => (inlineValue !== undefined ? inlineValue : argv[++i]);
    switch (flag) {
      case '--help':
      case '-h':
        return null;
      case '--seed':
        if (seed !== null) throw new UsageError('--seed given twice');
        seed = parseNonNegativeInteger('--seed', takeValue());
        break;
      case '--n':
        if (n !== null) throw new UsageError('--n given twice');
        n = parseNonNegativeInteger('--n', takeValue());
        break;
      case '--prefix-only':
        if (inlineValue !== undefined) throw new UsageError('--prefix-only takes no value');
        prefixOnly = true;
        break;
      case '--out': {
        const value = takeValue();
        if (value === undefined || value === '' || value.startsWith('--')) throw new UsageError('--out needs a file name');
        out = value;
        break;
      }
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    }
  }
  if (seed === null) throw new UsageError('--seed is required');
  if (n === null) throw new UsageError('--n is required');
  if (n > 100_000_000n) throw new UsageError('--n must be at most 100000000');
  if (seed >= 1n << 4096n) throw new UsageError('--seed is too large');
  return { seed, n: Number(n), prefixOnly, out };
}

/** JSON lines in chunks, so large N never sits in memory at once. */
function* jsonlChunks(options: PromptsCliOptions): Generator<string> {
  const generator = new PromptGenerator(defaultRng(options.seed));
  const linesPerChunk = 2000;
  let chunk: string[] = [];
  for (let index = 0; index < options.n; index++) {
    const prompt = options.prefixOnly ? generator.sampleExamplePrefix() : generator.sampleQuery();
    chunk.push(`${JSON.stringify({ index, prompt })}\n`);
    if (chunk.length === linesPerChunk) {
      yield chunk.join('');
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk.join('');
}

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

export async function main(argv: readonly string[]): Promise<number> {
  let options: PromptsCliOptions | null;
  try {
    options = parsePromptsArgs(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`prompts: ${error.message} (see --help)\n`);
      return 2;
    }
    throw error;
  }
  if (options === null) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  try {
    if (options.out === null) await writeToStdout(jsonlChunks(options));
    else writeAtomically(options.out, jsonlChunks(options));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EPIPE') return 0; // reader went away (e.g. `| head`)
    const target = options.out === null ? 'stdout' : options.out;
    process.stderr.write(`prompts: cannot write ${target}: ${code ?? (error instanceof Error ? error.message : String(error))}\n`);
    return 1;
  }
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
