// Flag parsing: one-line errors that say what is allowed, strict numbers, negative values, repeats.
import { describe, expect, it } from 'vitest';
import { choiceFlag, describeNumber, numberFlag, numberListFlag, parseFlags } from '../src/util/cli.ts';
import { UserError } from '../src/util/errors.ts';

const OPTS = { lr: { type: 'string' }, 'batch-size': { type: 'string' }, out: { type: 'string' }, quiet: { type: 'boolean' } } as const;

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    return m;
  }
  throw new Error('expected a UserError');
}

describe('numberFlag', () => {
  it('accepts decimal and scientific notation only', () => {
    expect(numberFlag('2e-4', 'lr', 0)).toBe(2e-4);
    expect(numberFlag('.5', 'lr', 0)).toBe(0.5);
    expect(numberFlag('+3', 'lr', 0)).toBe(3);
    expect(numberFlag('1E3', 'n', 0, { integer: true })).toBe(1000);
    expect(numberFlag(undefined, 'lr', 7)).toBe(7);
    for (const bad of ['0x10', '0b11', '0o7', '1_000', 'Infinity', '-Infinity', 'NaN', '', ' 5', '5 ', '1e', 'e5', '1..2', 'fast']) {
      expect(message(() => numberFlag(bad, 'lr', 0)), bad).toBe(`--lr must be a number, got '${bad}'`);
    }
  });

  it('says what is allowed', () => {
    expect(message(() => numberFlag('0', 'rank', 8, { min: 1, integer: true }))).toBe("--rank must be an integer ≥ 1, got '0'");
    expect(message(() => numberFlag('1.5', 'rank', 8, { min: 1, integer: true }))).toBe("--rank must be an integer ≥ 1, got '1.5'");
    expect(message(() => numberFlag('0', 'lr', 1, { min: 0, exclusiveMin: true }))).toBe("--lr must be a number > 0, got '0'");
    expect(message(() => numberFlag('1.5', 'top-p', 1, { min: 0, exclusiveMin: true, max: 1 }))).toBe("--top-p must be a number in (0, 1], got '1.5'");
    expect(message(() => numberFlag('1e400', 'x', 1))).toMatch(/must be a number/);
    expect(message(() => numberFlag('9007199254740993', 'x', 1, { integer: true }))).toMatch(/must be an integer/);
    expect(describeNumber({ max: 3 })).toBe('a number ≤ 3');
  });
});

describe('numberListFlag', () => {
  it('parses lists and refuses repeats and blanks', () => {
    expect(numberListFlag('0,1, 2', 'seeds', [9], { min: 0, integer: true, unique: true })).toEqual([0, 1, 2]);
    expect(numberListFlag(undefined, 'seeds', [9])).toEqual([9]);
    expect(message(() => numberListFlag('0,0', 'seeds', [], { min: 0, integer: true, unique: true }))).toBe('--seeds lists 0 twice; each value must be different');
    expect(message(() => numberListFlag('0,,1', 'seeds', [], { min: 0, integer: true }))).toMatch(/^--seeds must be a comma-separated list, each an integer ≥ 0/);
    expect(message(() => numberListFlag('0,x', 'seeds', [], { min: 0, integer: true }))).toBe("--seeds: each value must be an integer ≥ 0, got 'x'");
  });
});

describe('parseFlags', () => {
  it('passes negative numbers as values so the range check can speak', () => {
    expect(parseFlags(['--batch-size', '-5'], OPTS)['batch-size']).toBe('-5');
    expect(parseFlags(['--lr', '-.5'], OPTS).lr).toBe('-.5');
    expect(message(() => numberFlag(parseFlags(['--batch-size', '-5'], OPTS)['batch-size'], 'batch-size', 1, { min: 1, integer: true }))).toBe("--batch-size must be an integer ≥ 1, got '-5'");
  });

  it('one line for every parse problem', () => {
    expect(message(() => parseFlags(['--out', '--quiet'], OPTS))).toBe("--out needs a value, got the option '--quiet' (write --out=--quiet for a value that starts with '-')");
    expect(parseFlags(['--out=-odd'], OPTS).out).toBe('-odd');
    expect(message(() => parseFlags(['--lr'], OPTS))).toBe('--lr needs a value (see --help)');
    expect(message(() => parseFlags(['--bogus'], OPTS))).toBe("unknown option '--bogus' (see --help)");
    expect(message(() => parseFlags(['-x'], OPTS))).toBe("unknown option '-x' (see --help)");
    expect(message(() => parseFlags(['--quiet=yes'], OPTS))).toBe("--quiet takes no value (see --help)");
    expect(message(() => parseFlags(['--lr', '1', '--lr', '2'], OPTS))).toBe('--lr given twice (see --help)');
    expect(message(() => parseFlags(['stray'], OPTS))).toBe("unexpected argument 'stray' (see --help)");
  });

  it('choiceFlag lists the choices', () => {
    expect(message(() => choiceFlag('fast', 'schedule', ['linear', 'cosine'] as const, 'linear'))).toBe("--schedule must be one of linear, cosine; got 'fast'");
  });
});
