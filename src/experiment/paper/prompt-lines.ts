// The paper's number prompts as JSON lines (scripts/prompts.ts is its CLI): options and the line generator.
import { defaultRng } from './pcg64.ts';
import { PromptGenerator } from './prompts.ts';
import { numberFlag, parseFlags, requiredFlag } from '../../util/cli.ts';
import { UserError } from '../../util/errors.ts';

export interface PromptsCliOptions {
  seed: bigint;
  n: number;
  prefixOnly: boolean;
  out: string | null;
  /** Replace an existing --out file. */
  overwrite: boolean;
}

const FLAGS = {
  seed: { type: 'string' },
  n: { type: 'string' },
  'prefix-only': { type: 'boolean' },
  out: { type: 'string' },
  overwrite: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** numpy seeds are arbitrary non-negative integers, beyond 2^53: read them as bigints. */
function parseSeed(raw: string): bigint {
  if (!/^[0-9]+$/.test(raw)) throw new UserError(`--seed must be a non-negative integer, got '${raw}'`);
  const seed = BigInt(raw);
  if (seed >= 1n << 4096n) throw new UserError('--seed must be below 2^4096');
  return seed;
}

/** Parse argv (without node and script); returns null for --help. Bad input is a one-line UserError. */
export function parsePromptsArgs(argv: readonly string[]): PromptsCliOptions | null {
  const f = parseFlags([...argv], FLAGS);
  if (f.help) return null;
  const seed = parseSeed(requiredFlag(f.seed, 'seed'));
  const n = numberFlag(requiredFlag(f.n, 'n'), 'n', 0, { min: 0, max: 100_000_000, integer: true });
  if (f.overwrite && f.out === undefined) throw new UserError('--overwrite replaces the --out file; give --out');
  const out = f.out === undefined ? null : requiredFlag(f.out, 'out', 'FILE');
  return { seed, n, prefixOnly: !!f['prefix-only'], out, overwrite: !!f.overwrite };
}

/** JSON lines in chunks, so large N never sits in memory at once. */
export function* jsonlChunks(options: PromptsCliOptions): Generator<string> {
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

