// Flag parsing for the CLIs: node's parseArgs in strict mode, every problem a one-line UserError that
// says what is allowed. One convention for every script: `error: …`, exit 1, usage only on --help.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UserError } from './errors.ts';

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig['options']>;

/** A value that starts like a negative number (-5, -0.5, -.5, -1e-3): an option value, not a flag. */
const NEGATIVE_NUMBER = /^-(\d|\.\d)/;

/**
 * node:util parseArgs (strict, no positionals) with every problem turned into a one-line UserError.
 * Differences from plain parseArgs, so that bad input reads well:
 *  - `--batch-size -5` passes -5 as the value (parseArgs calls it "ambiguous"), so the number check
 *    can say what is allowed; any other value starting with '-' must be written `--flag=-value`;
 *  - a flag given twice is refused rather than the last one silently winning.
 */
export function parseFlags<const O extends ParseArgsOptionsConfig>(argv: string[], options: O) {
  const longName = (arg: string) => (arg.startsWith('--') ? arg.slice(2).split('=')[0] : null);
  const isString = (name: string | null) => name !== null && Object.hasOwn(options, name) && options[name].type === 'string';
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const name = longName(arg);
    if (arg === '--') {
      args.push(...argv.slice(i));
      break;
    }
    if (isString(name) && !arg.includes('=')) {
      const next = argv[i + 1];
      if (next === undefined) throw new UserError(`--${name} needs a value (see --help)`);
      if (next.startsWith('-')) {
        if (!NEGATIVE_NUMBER.test(next)) throw new UserError(`--${name} needs a value, got the option '${next}' (write --${name}=${next} for a value that starts with '-')`);
        args.push(`--${name}=${next}`);
        i++;
        continue;
      }
    }
    args.push(arg);
  }
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: true; tokens: true }>>;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true, tokens: true });
  } catch (err) {
    throw new UserError(flagErrorMessage(err as Error & { code?: string }));
  }
  const seen = new Set<string>();
  for (const t of parsed.tokens) {
    if (t.kind !== 'option') continue;
    if (seen.has(t.name) && !options[t.name]?.multiple) throw new UserError(`--${t.name} given twice (see --help)`);
    seen.add(t.name);
  }
  if (parsed.positionals.length) throw new UserError(`unexpected argument '${parsed.positionals[0]}' (see --help)`);
  return parsed.values;
}

function flagErrorMessage(err: Error & { code?: string }): string {
  const msg = err.message.split('\n')[0];
  const quoted = /'(-[^' ]+)/.exec(msg)?.[1];
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && quoted) return `unknown option '${quoted}' (see --help)`;
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && quoted) {
    if (/does not take an argument/.test(msg)) return `${quoted} takes no value (see --help)`;
    if (/argument missing/.test(msg)) return `${quoted} needs a value (see --help)`;
  }
  return `${msg} (see --help)`;
}

/** A flag's value or a one-line error naming it. */
export function requiredFlag(v: string | undefined, name: string, what = ''): string {
  if (v === undefined || v === '') throw new UserError(`--${name}${what ? ` ${what}` : ''} is required (see --help)`);
  return v;
}

export interface NumberCheck {
  min?: number;
  max?: number;
  integer?: boolean;
  exclusiveMin?: boolean;
}

/** Plain decimal or scientific notation only: no hex, binary, octal, separators, Infinity or blanks. */
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** What a number flag accepts, in words: "an integer ≥ 1", "a number in (0, 1]". */
export function describeNumber(check: NumberCheck): string {
  const kind = check.integer ? 'an integer' : 'a number';
  const { min, max } = check;
  if (min !== undefined && max !== undefined) return `${kind} in ${check.exclusiveMin ? '(' : '['}${min}, ${max}]`;
  if (min !== undefined) return `${kind} ${check.exclusiveMin ? '>' : '≥'} ${min}`;
  if (max !== undefined) return `${kind} ≤ ${max}`;
  return kind;
}

/** Parses a number flag (undefined → def); anything else than a number within `check` is a UserError. */
export function numberFlag(v: unknown, name: string, def: number, check: NumberCheck = {}): number {
  if (v === undefined) return def;
  return parseNumber(String(v), `--${name}`, check);
}

function parseNumber(s: string, label: string, check: NumberCheck): number {
  const n = Number(s);
  const ok =
    DECIMAL.test(s) &&
    Number.isFinite(n) &&
    (!check.integer || Number.isSafeInteger(n)) &&
    (check.min === undefined || (check.exclusiveMin ? n > check.min : n >= check.min)) &&
    (check.max === undefined || n <= check.max);
  if (!ok) throw new UserError(`${label} must be ${describeNumber(check)}, got '${s}'`);
  return n;
}

/** A comma-separated list of numbers (undefined → def), each within `check`; `unique` refuses repeats. */
export function numberListFlag(v: unknown, name: string, def: number[], check: NumberCheck & { unique?: boolean } = {}): number[] {
  if (v === undefined) return def;
  const parts = String(v).split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) throw new UserError(`--${name} must be a comma-separated list, each ${describeNumber(check)}; got '${String(v)}'`);
  const out = parts.map((p) => parseNumber(p, `--${name}: each value`, check));
  if (check.unique) {
    const dup = out.find((x, i) => out.indexOf(x) !== i);
    if (dup !== undefined) throw new UserError(`--${name} lists ${dup} twice; each value must be different`);
  }
  return out;
}

export function choiceFlag<T extends string>(v: unknown, name: string, choices: readonly T[], def: T): T {
  if (v === undefined) return def;
  if (!choices.includes(v as T)) throw new UserError(`--${name} must be one of ${choices.join(', ')}; got '${String(v)}'`);
  return v as T;
}
