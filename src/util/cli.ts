// Flag parsing for the CLIs: node's parseArgs in strict mode, every problem a one-line UserError.
import { parseArgs, type ParseArgsConfig } from 'node:util';

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig['options']>;
import { UserError } from './errors.ts';

/** node:util parseArgs (strict, no positionals) with every problem turned into a one-line UserError. */
export function parseFlags<const O extends ParseArgsOptionsConfig>(argv: string[], options: O) {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
    if (positionals.length) throw new UserError(`unexpected argument '${positionals[0]}' (see --help)`);
    return values;
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`${(err as Error).message.split('\n')[0]} (see --help)`);
  }
}

export function numberFlag(v: unknown, name: string, def: number, check: { min?: number; max?: number; integer?: boolean; exclusiveMin?: boolean } = {}): number {
  if (v === undefined) return def;
  const s = String(v);
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n)) throw new UserError(`--${name} must be a number, got '${s}'`);
  if (check.integer && !Number.isInteger(n)) throw new UserError(`--${name} must be an integer, got '${s}'`);
  if (check.min !== undefined && (check.exclusiveMin ? n <= check.min : n < check.min)) {
    throw new UserError(`--${name} must be ${check.exclusiveMin ? '>' : '≥'} ${check.min}, got ${s}`);
  }
  if (check.max !== undefined && n > check.max) throw new UserError(`--${name} must be ≤ ${check.max}, got ${s}`);
  return n;
}

export function choiceFlag<T extends string>(v: unknown, name: string, choices: readonly T[], def: T): T {
  if (v === undefined) return def;
  if (!choices.includes(v as T)) throw new UserError(`--${name} must be one of ${choices.join(', ')}; got '${String(v)}'`);
  return v as T;
}
