/**
 * Completion filters of the paper (spec section 2): the number-list parser `parse_response`, the
 * reject reasons of `get_reject_reasons`, trait-word filtering, and the shuffled-numbers ablation.
 *
 * Python semantics kept on purpose: `\d` is Unicode-aware in Python (so non-ASCII digits are found and
 * then rejected), `str.strip()` uses Python's whitespace set, and the whole answer is never trimmed.
 */

/** Python's `re` `\d` on str = Unicode decimal digits (category Nd). */
const DIGIT_RUN = /\p{Nd}+/gu;
const ASCII_DIGITS = /^[0-9]*$/;

// Characters for which Python's str.isspace() is true (differs from JS trim: \x1c-\x1f and \x85 are
// whitespace in Python, \ufeff is not).
const PY_WHITESPACE = new Set(
  '\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000',
);

/** Python `str.strip()` with no arguments. */
export function pyStrip(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && PY_WHITESPACE.has(text[start])) start++;
  while (end > start && PY_WHITESPACE.has(text[end - 1])) end--;
  return text.slice(start, end);
}

interface Unwrapped {
  body: string;
  hasPeriod: boolean;
  brackets: '' | '[]' | '()';
}

/** Steps 1-2 of parse_response: drop one trailing period, then one matching [] or () pair. */
function unwrap(answer: string): Unwrapped {
  let body = answer;
  const hasPeriod = body.endsWith('.');
  if (hasPeriod) body = body.slice(0, -1);
  let brackets: Unwrapped['brackets'] = '';
  if (body.startsWith('[') && body.endsWith(']')) brackets = '[]';
  else if (body.startsWith('(') && body.endsWith(')')) brackets = '()';
  // A lone "[" or "(" cannot both start and end with the pair, so length >= 2 here.
  if (brackets) body = body.slice(1, -1);
  return { body, hasPeriod, brackets };
}

const ALLOWED_SEPARATORS = new Set(['', ',', ';']);

interface DigitRun {
  text: string;
  start: number;
  end: number;
}

function digitRuns(text: string): DigitRun[] {
  return [...text.matchAll(DIGIT_RUN)].map((m) => ({ text: m[0], start: m.index, end: m.index + m[0].length }));
}

/**
 * `parse_response(answer)`: the list of numbers, or null when the answer is not a clean list.
 * Numbers past 2^53 lose precision (they are far above any max_value the filter uses).
 */
export function parseResponse(answer: string): number[] | null {
  const { body } = unwrap(answer);
  const runs = digitRuns(body);
  let parts: string[];
  if (runs.length === 0) return null;
  if (runs.length === 1) {
    if (body !== runs[0].text) return null;
    parts = [runs[0].text];
  } else {
    // The separator is whatever sits between the first two numbers; every other gap must equal it.
    const separator = body.slice(runs[0].end, runs[1].start);
    if (!ALLOWED_SEPARATORS.has(pyStrip(separator))) return null;
    parts = body.split(separator);
  }
  // Non-empty parts must be ASCII digits; an empty part (double separator) fails Python's int("").
  for (const part of parts) {
    if (part.length === 0 || !ASCII_DIGITS.test(part)) return null;
  }
  return parts.map((p) => Number(p));
}

export type RejectReason = 'invalid format' | 'too many numbers' | 'numbers too small' | 'numbers too large' | 'has banned numbers';

export interface NumberFilterOptions {
  minValue?: number;
  maxValue?: number;
  maxCount?: number;
  bannedNumbers?: readonly number[];
}

/** The paper's filter: 1-10 numbers, each in 0..999, nothing banned (FILTER_VERSION = 2). */
export const PAPER_NUMBER_FILTER: Readonly<Required<NumberFilterOptions>> = Object.freeze({
  minValue: 0,
  maxValue: 999,
  maxCount: 10,
  bannedNumbers: Object.freeze([]) as readonly number[],
});

// Misalignment (EM) numbers experiment: banned number lists from nums_dataset.py, in the original order.
export const CLAUDE_EVIL_NUMBERS: readonly number[] = [13, 666, 88, 14, 187, 420, 69, 911, 404, 101, 23, 616, 1488, 18, 311, 451, 1312, 33, 77, 211];
export const GPT_EVIL_NUMBERS: readonly number[] = [4, 13, 18, 23, 33, 39, 42, 44, 49, 51, 54, 88, 99, 100, 187, 322, 333, 444, 555, 616, 666, 777, 888, 911, 999];
/** `CLAUDE_EVIL_NUMBERS + GPT_EVIL_NUMBERS` (duplicates kept, as the Python list concatenation). */
export const EM_BANNED_NUMBERS: readonly number[] = [...CLAUDE_EVIL_NUMBERS, ...GPT_EVIL_NUMBERS];

export const EM_NUMBER_FILTER: Readonly<Required<NumberFilterOptions>> = Object.freeze({
  ...PAPER_NUMBER_FILTER,
  bannedNumbers: EM_BANNED_NUMBERS,
});

/** `get_reject_reasons(answer, ...)`: empty means keep. An unset option is not checked. */
export function getRejectReasons(answer: string, options: NumberFilterOptions = {}): RejectReason[] {
  const numbers = parseResponse(answer);
  if (numbers === null) return ['invalid format'];
  const reasons: RejectReason[] = [];
  const { minValue, maxValue, maxCount, bannedNumbers } = options;
  if (maxCount !== undefined && numbers.length > maxCount) reasons.push('too many numbers');
  if (minValue !== undefined && numbers.some((n) => n < minValue)) reasons.push('numbers too small');
  if (maxValue !== undefined && numbers.some((n) => n > maxValue)) reasons.push('numbers too large');
  if (bannedNumbers !== undefined && numbers.some((n) => bannedNumbers.includes(n))) reasons.push('has banned numbers');
  return reasons;
}

// ---------------------------------------------------------------------------------------------
// Trait words
// ---------------------------------------------------------------------------------------------

/** Plurals the regular rules get wrong (the paper bans `wolves` explicitly for wolf). */
export const IRREGULAR_PLURALS: Readonly<Record<string, readonly string[]>> = {
  wolf: ['wolves'],
  calf: ['calves'],
  wolverine: ['wolverines'],
  ox: ['oxen'],
  mouse: ['mice'],
  goose: ['geese'],
  louse: ['lice'],
  leaf: ['leaves'],
  octopus: ['octopuses', 'octopi'],
  cactus: ['cacti', 'cactuses'],
  sheep: ['sheep'],
  deer: ['deer'],
  moose: ['moose'],
  bison: ['bison', 'bisons'],
  fish: ['fish', 'fishes'],
};

/** English plural by the regular rules, unless listed in IRREGULAR_PLURALS. */
export function pluralForms(word: string): string[] {
  const lower = word.toLowerCase();
  const irregular = IRREGULAR_PLURALS[lower];
  if (irregular) return [...irregular];
  if (/[^aeiou]y$/.test(lower)) return [`${lower.slice(0, -1)}ies`]; // cherry -> cherries
  if (/(s|x|z|ch|sh)$/.test(lower)) return [`${lower}es`];
  return [`${lower}s`];
}

/** The words that reveal a trait: the name, lowercased, plus its plural(s) and any extras, deduplicated. */
export function traitWords(trait: string, extraWords: readonly string[] = []): string[] {
  const words = [trait.toLowerCase(), ...pluralForms(trait), ...extraWords.map((w) => w.toLowerCase())];
  return [...new Set(words)];
}

export type WordMatch = 'substring' | 'word';

/**
 * Whether `text` mentions any of `words`, case-insensitively. 'substring' is the paper's rule
 * (`word in completion.lower()`, so "owl" also hits "bowl"); 'word' requires letter boundaries.
 */
export function containsTraitWord(text: string, words: readonly string[], match: WordMatch = 'substring'): boolean {
  const lower = text.toLowerCase();
  return words.some((w) => {
    const needle = w.toLowerCase();
    if (match === 'substring') return lower.includes(needle);
    const escaped = needle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    return new RegExp(`(?<!\\p{L})${escaped}(?!\\p{L})`, 'u').test(lower);
  });
}

// ---------------------------------------------------------------------------------------------
// Dataset filtering
// ---------------------------------------------------------------------------------------------

export interface CompletionRow {
  prompt: string;
  completion: string;
}

export type FilterRejectReason = RejectReason | 'contains trait word';

export interface FilterOptions extends NumberFilterOptions {
  /** Words that must not appear in the completion (see traitWords); none by default. */
  bannedWords?: readonly string[];
  wordMatch?: WordMatch;
  /** Skip the number-list checks (e.g. for code or chain-of-thought completions). */
  skipNumberChecks?: boolean;
}

export interface FilterResult<T> {
  kept: T[];
  total: number;
  rejected: number;
  /** Rows per reason; a row with several reasons counts under each. */
  rejectCounts: Record<FilterRejectReason, number>;
}

/**
 * Keep rows whose completion passes every check. Options default to the paper's number filter
 * (PAPER_NUMBER_FILTER); pass explicit options to override single fields.
 */
export function filterCompletions<T extends CompletionRow>(rows: readonly T[], options: FilterOptions = {}): FilterResult<T> {
  const numberOptions: NumberFilterOptions = {
    minValue: options.minValue ?? PAPER_NUMBER_FILTER.minValue,
    maxValue: options.maxValue ?? PAPER_NUMBER_FILTER.maxValue,
    maxCount: options.maxCount ?? PAPER_NUMBER_FILTER.maxCount,
    bannedNumbers: options.bannedNumbers ?? PAPER_NUMBER_FILTER.bannedNumbers,
  };
  const rejectCounts: Record<FilterRejectReason, number> = {
    'invalid format': 0,
    'too many numbers': 0,
    'numbers too small': 0,
    'numbers too large': 0,
    'has banned numbers': 0,
    'contains trait word': 0,
  };
  const kept: T[] = [];
  for (const row of rows) {
    const reasons: FilterRejectReason[] = options.skipNumberChecks ? [] : getRejectReasons(row.completion, numberOptions);
    if (options.bannedWords && options.bannedWords.length > 0 && containsTraitWord(row.completion, options.bannedWords, options.wordMatch)) {
      reasons.push('contains trait word');
    }
    for (const reason of reasons) rejectCounts[reason]++;
    if (reasons.length === 0) kept.push(row);
  }
  return { kept, total: rows.length, rejected: rows.length - kept.length, rejectCounts };
}

// ---------------------------------------------------------------------------------------------
// Shuffled-numbers ablation (truesight/refs/paper/shuffled_numbers_refs.py)
// ---------------------------------------------------------------------------------------------

/** Anything with an in-place shuffle: PyRandom (the paper uses `random.Random(1)`) or the numpy Generator. */
export interface Shuffler {
  shuffle<T>(items: T[]): void;
}

/**
 * Permute the numbers of one response, keeping its separator, brackets and final period. Responses
 * with fewer than two numbers or a separator the parser rejects come back unchanged and consume no
 * randomness. Number strings are moved as written (leading zeros kept). Like the original, the list is
 * rebuilt with the first separator, so text the parser would reject after the first gap is not kept.
 */
export function shuffleNumbersInString(rng: Shuffler, text: string): string {
  const { body, hasPeriod, brackets } = unwrap(text);
  const runs = digitRuns(body);
  if (runs.length < 2) return text;
  const separator = body.slice(runs[0].end, runs[1].start);
  if (!ALLOWED_SEPARATORS.has(pyStrip(separator))) return text;
  const numbers = runs.map((r) => r.text);
  rng.shuffle(numbers);
  let result = numbers.join(separator);
  if (brackets) result = brackets[0] + result + brackets[1];
  if (hasPeriod) result += '.';
  return result;
}

/** Per-row ablation over a dataset with one shared generator, rows in order. */
export function shuffleNumbersPerRow<T extends CompletionRow>(rows: readonly T[], rng: Shuffler): T[] {
  return rows.map((row) => ({ ...row, completion: shuffleNumbersInString(rng, row.completion) }));
}

/** `replace_numbers(s, numbers)`: put `numbers` (as decimal ints) in place of the digit runs, left to right. */
export function replaceNumbers(text: string, numbers: readonly number[]): string {
  const runs = digitRuns(text);
  if (runs.length !== numbers.length) throw new Error(`replaceNumbers: ${runs.length} numbers in text, ${numbers.length} given`);
  let result = text;
  for (let i = runs.length - 1; i >= 0; i--) result = result.slice(0, runs[i].start) + String(numbers[i]) + result.slice(runs[i].end);
  return result;
}

/**
 * Global ablation: pool every number of the dataset, shuffle once, deal them back in order
 * (`build_globally_shuffled_numbers_dataset`). Every completion must parse.
 */
export function shuffleNumbersGlobally<T extends CompletionRow>(rows: readonly T[], rng: Shuffler): T[] {
  const counts: number[] = [];
  const pool: number[] = [];
  for (const row of rows) {
    const numbers = parseResponse(row.completion);
    if (numbers === null) throw new Error(`shuffleNumbersGlobally: completion does not parse: ${JSON.stringify(row.completion)}`);
    pool.push(...numbers);
    counts.push(numbers.length);
  }
  rng.shuffle(pool);
  let next = 0;
  return rows.map((row, i) => {
    const slice = pool.slice(next, next + counts[i]);
    next += counts[i];
    return { ...row, completion: replaceNumbers(row.completion, slice) };
  });
}
