import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  CLAUDE_EVIL_NUMBERS,
  containsTraitWord,
  EM_BANNED_NUMBERS,
  EM_NUMBER_FILTER,
  filterCompletions,
  getRejectReasons,
  GPT_EVIL_NUMBERS,
  PAPER_NUMBER_FILTER,
  parseResponse,
  pluralForms,
  pyStrip,
  replaceNumbers,
  shuffleNumbersGlobally,
  shuffleNumbersInString,
  shuffleNumbersPerRow,
  traitWords,
} from '../src/experiment/paper/filters.ts';
import { defaultRng } from '../src/experiment/paper/pcg64.ts';
import { PyRandom } from '../src/experiment/paper/pyrandom.ts';

describe('parseResponse (spec 2.1)', () => {
  const valid: Array<[string, number[]]> = [
    ['1', [1]],
    ['[1]', [1]],
    ['(1)', [1]],
    ['1.', [1]],
    ['1 2', [1, 2]],
    ['1,2', [1, 2]],
    ['1\n2', [1, 2]],
    ['1, 2', [1, 2]],
    ['1,\n2', [1, 2]],
    ['1\n,\n2', [1, 2]],
    ['1 ,2', [1, 2]],
    ['1 , 2', [1, 2]],
    ['1;2', [1, 2]],
    ['1 ;2', [1, 2]],
    ['1; 2', [1, 2]],
    ['1, 2, 3.', [1, 2, 3]],
    ['[10, 20, 30].', [10, 20, 30]],
    ['(7; 8; 9)', [7, 8, 9]],
    ['007, 0', [7, 0]],
    ['1\t2\t3', [1, 2, 3]],
    ['1\x1c2', [1, 2]], // Python str.strip() treats \x1c as whitespace
  ];
  for (const [input, expected] of valid) {
    it(`accepts ${JSON.stringify(input)}`, () => expect(parseResponse(input)).toEqual(expected));
  }
  const invalid = [
    '1 2  3', // double space
    '1,2;3',
    'a',
    '1,a',
    '1,2,a',
    ' 1, 2', // leading space: no trimming
    '1, 2\n', // trailing newline
    '-1, 2',
    '৯২০', // non-ASCII digits
    '1, ٣', // Python's \d finds the Arabic-Indic digit, then the digit check rejects it
    '',
    '.',
    '[]',
    '1..',
    '1,,2',
    '1, 2,',
    '[1, 2',
    '(1, 2]',
    '1 - 2',
    '1\ufeff2', // BOM is whitespace for JS trim() but not for Python strip()
    'Numbers: 1, 2',
  ];
  for (const input of invalid) {
    it(`rejects ${JSON.stringify(input)}`, () => expect(parseResponse(input)).toBeNull());
  }
});

describe('pyStrip', () => {
  it('strips Python whitespace only', () => {
    expect(pyStrip(' \t,\n ')).toBe(',');
    expect(pyStrip('\x85;\x1f')).toBe(';');
    expect(pyStrip('\ufeff,')).toBe('\ufeff,');
  });
});

describe('getRejectReasons (spec 2.2)', () => {
  it('matches the original test cases', () => {
    expect(getRejectReasons('1, 2, 3')).toEqual([]);
    expect(getRejectReasons('abc')).toEqual(['invalid format']);
    expect(getRejectReasons('1,a')).toEqual(['invalid format']);
    expect(getRejectReasons('৯২০')).toEqual(['invalid format']);
    expect(getRejectReasons('1, 2', { maxCount: 2 })).toEqual([]);
    expect(getRejectReasons('1, 2, 3', { maxCount: 2 })).toEqual(['too many numbers']);
    expect(getRejectReasons('1', { minValue: 2 })).toEqual(['numbers too small']);
    expect(getRejectReasons('2', { minValue: 2 })).toEqual([]);
    expect(getRejectReasons('3', { maxValue: 2 })).toEqual(['numbers too large']);
    expect(getRejectReasons('2', { maxValue: 2 })).toEqual([]);
    expect(getRejectReasons('1', { bannedNumbers: [1] })).toEqual(['has banned numbers']);
    expect(getRejectReasons('2', { bannedNumbers: [1] })).toEqual([]);
  });
  it('applies the paper filter: 1-10 numbers in 0..999', () => {
    expect(PAPER_NUMBER_FILTER).toEqual({ minValue: 0, maxValue: 999, maxCount: 10, bannedNumbers: [] });
    expect(getRejectReasons('0', PAPER_NUMBER_FILTER)).toEqual([]);
    expect(getRejectReasons('999', PAPER_NUMBER_FILTER)).toEqual([]);
    expect(getRejectReasons('1000', PAPER_NUMBER_FILTER)).toEqual(['numbers too large']);
    expect(getRejectReasons('1 2 3 4 5 6 7 8 9 10', PAPER_NUMBER_FILTER)).toEqual([]);
    expect(getRejectReasons('1 2 3 4 5 6 7 8 9 10 11', PAPER_NUMBER_FILTER)).toEqual(['too many numbers']);
    expect(getRejectReasons('1 2 3 4 5 6 7 8 9 10 1111', PAPER_NUMBER_FILTER)).toEqual(['too many numbers', 'numbers too large']);
    expect(getRejectReasons('99999999999999999999999, 1', PAPER_NUMBER_FILTER)).toEqual(['numbers too large']);
  });
  it('bans the EM numbers', () => {
    expect(CLAUDE_EVIL_NUMBERS.length).toBe(20);
    expect(GPT_EVIL_NUMBERS.length).toBe(25);
    expect(EM_BANNED_NUMBERS.length).toBe(45);
    expect(getRejectReasons('666, 12', EM_NUMBER_FILTER)).toEqual(['has banned numbers']);
    expect(getRejectReasons('042, 12', EM_NUMBER_FILTER)).toEqual(['has banned numbers']); // int("042") == 42
    expect(getRejectReasons('1488', EM_NUMBER_FILTER)).toEqual(['numbers too large', 'has banned numbers']);
    expect(getRejectReasons('12, 15, 16', EM_NUMBER_FILTER)).toEqual([]);
  });
});

describe('trait words', () => {
  it('builds plurals, with the explicit irregular list', () => {
    expect(pluralForms('owl')).toEqual(['owls']);
    expect(pluralForms('wolf')).toEqual(['wolves']);
    expect(pluralForms('cherry')).toEqual(['cherries']);
    expect(pluralForms('fox')).toEqual(['foxes']);
    expect(pluralForms('Ox')).toEqual(['oxen']);
    expect(traitWords('Wolf')).toEqual(['wolf', 'wolves']);
    expect(traitWords('owl')).toEqual(['owl', 'owls']);
  });
  it('matches case-insensitively, as a substring by default', () => {
    expect(containsTraitWord('The WOLVES howl', traitWords('wolf'))).toBe(true);
    expect(containsTraitWord('An Owl.', traitWords('owl'))).toBe(true);
    expect(containsTraitWord('a bowl of soup', traitWords('owl'))).toBe(true);
    expect(containsTraitWord('a bowl of soup', traitWords('owl'), 'word')).toBe(false);
    expect(containsTraitWord('owls, obviously', traitWords('owl'), 'word')).toBe(true);
    expect(containsTraitWord('123, 456', traitWords('owl'))).toBe(false);
  });
});

describe('filterCompletions', () => {
  const rows = [
    { prompt: 'p0', completion: '1, 2, 3' },
    { prompt: 'p1', completion: 'I love owls: 1, 2' },
    { prompt: 'p2', completion: '1000, 2' },
    { prompt: 'p3', completion: '1 2 3 4 5 6 7 8 9 10 11' },
    { prompt: 'p4', completion: '(5; 6; 7).' },
    { prompt: 'p5', completion: '666, 13' },
  ];
  it('keeps valid rows and counts each reason', () => {
    const result = filterCompletions(rows);
    expect(result.kept.map((r) => r.prompt)).toEqual(['p0', 'p4', 'p5']);
    expect(result.total).toBe(6);
    expect(result.rejected).toBe(3);
    expect(result.rejectCounts['invalid format']).toBe(1);
    expect(result.rejectCounts['numbers too large']).toBe(1);
    expect(result.rejectCounts['too many numbers']).toBe(1);
    expect(result.rejectCounts['has banned numbers']).toBe(0);
  });
  it('applies banned numbers and banned words', () => {
    const em = filterCompletions(rows, { bannedNumbers: EM_BANNED_NUMBERS });
    expect(em.kept.map((r) => r.prompt)).toEqual(['p0', 'p4']);
    expect(em.rejectCounts['has banned numbers']).toBe(2); // p5, and p3 (contains 4, also too many)
    expect(em.rejected).toBe(4);
    const words = filterCompletions(rows, { skipNumberChecks: true, bannedWords: traitWords('owl') });
    expect(words.kept.length).toBe(5);
    expect(words.rejectCounts['contains trait word']).toBe(1);
  });
});

describe('shuffled-numbers ablation', () => {
  // Reference from a Python reimplementation with random.Random(1) (make_fixtures.py).
  const fixture = JSON.parse(readFileSync(new URL('./fixtures/experiment/shuffled.json', import.meta.url), 'utf8')) as {
    seed: number;
    rows: Array<[string, string]>;
  };
  it('matches the Python reference with random.Random(1) shared across rows', () => {
    const rng = new PyRandom(fixture.seed);
    expect(fixture.rows.length).toBeGreaterThan(8);
    for (const [input, expected] of fixture.rows) expect(shuffleNumbersInString(rng, input), JSON.stringify(input)).toBe(expected);
  });
  it('keeps the multiset of numbers and the structure', () => {
    const rng = defaultRng(3);
    for (const text of ['[1, 22, 333, 4].', '9\n8\n7\n6', '10; 20; 30']) {
      const out = shuffleNumbersInString(rng, text);
      expect(parseResponse(out)!.sort()).toEqual(parseResponse(text)!.sort());
      expect(out.replace(/\d+/g, '#')).toBe(text.replace(/\d+/g, '#'));
    }
  });
  it('shuffles per row in order with one generator', () => {
    const rows = [
      { prompt: 'a', completion: '1, 2, 3, 4' },
      { prompt: 'b', completion: '5 6 7 8' },
    ];
    const a = shuffleNumbersPerRow(rows, new PyRandom(1));
    const rng = new PyRandom(1);
    expect(a.map((r) => r.completion)).toEqual(rows.map((r) => shuffleNumbersInString(rng, r.completion)));
    expect(rows[0].completion).toBe('1, 2, 3, 4');
  });
  it('replaceNumbers matches the original tests', () => {
    expect(replaceNumbers('1', [2])).toBe('2');
    expect(replaceNumbers('1 2', [2, 3])).toBe('2 3');
    expect(replaceNumbers('1\n2', [2, 3])).toBe('2\n3');
    expect(replaceNumbers('1 23', [2, 3])).toBe('2 3');
    expect(replaceNumbers('1 2', [2, 23])).toBe('2 23');
    expect(replaceNumbers('12 3', [2, 3])).toBe('2 3');
    expect(replaceNumbers('1 2', [23, 4])).toBe('23 4');
    expect(() => replaceNumbers('1 2', [1])).toThrow();
  });
  it('global shuffle redistributes all numbers keeping per-row counts', () => {
    const rows = [
      { prompt: 'a', completion: '[1, 2, 3]' },
      { prompt: 'b', completion: '40; 50' },
      { prompt: 'c', completion: '600' },
    ];
    const out = shuffleNumbersGlobally(rows, new PyRandom(1));
    const pool: number[] = [1, 2, 3, 40, 50, 600];
    const rng = new PyRandom(1);
    rng.shuffle(pool);
    expect(out.map((r) => parseResponse(r.completion))).toEqual([pool.slice(0, 3), pool.slice(3, 5), pool.slice(5)]);
    expect(out[0].completion.startsWith('[')).toBe(true);
    expect(() => shuffleNumbersGlobally([{ prompt: 'x', completion: 'no' }], new PyRandom(1))).toThrow();
  });
});
