// Flag parsing for the CLIs: node's parseArgs in strict mode, every problem a one-line UserError.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UserError } from './errors.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

export function parseFlags<O extends Options>(argv: string[], options: O): Record<keyof O, string | boolean | undefined> {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
    if (positionals.length) throw new UserError(`unexpected argument '${positionals[0]}' (see --help)`);
    return values as unknown as Record<keyof O, string | boolean | undefined>;
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
