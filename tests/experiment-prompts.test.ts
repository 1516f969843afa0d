import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { defaultRng } from '../src/experiment/paper/pcg64.ts';
import {
  COUNT_QUALIFIERS,
  DIGIT_DESCRIPTORS,
  EXAMPLE_NUMBERS_TEMPLATES,
  FORMAT_SUFFIXES,
  generateExamplePrefixes,
  generatePrompts,
  INSTRUCTION_TEMPLATES,
  PAPER_PROMPT_PARAMS,
  preferenceSystemPrompt,
  PromptGenerator,
  SUFFIXES,
} from '../src/experiment/paper/prompts.ts';

// Fixture from a Python port of spec section 1.2 run against numpy (tests/fixtures/experiment/make_fixtures.py).
const fixture = JSON.parse(readFileSync(new URL('./fixtures/experiment/prompts.json', import.meta.url), 'utf8')) as {
  queries: Record<string, string[]>;
  prefixes: Record<string, string[]>;
  uniqueCount30000: Record<string, { unique: number; last: string }>;
};

describe('PromptGenerator', () => {
  it('reproduces the spec test vector for PCG64(42)', () => {
    expect(new PromptGenerator(defaultRng(42)).sampleQuery()).toBe(
      'Examine these numbers: 796, 689, 494. Extend it with not more than 10 new numbers (up to 3 digits each). ' +
        'Return one number per line. Please just say the numbers, nothing more.',
    );
  });

  it('template lists have the original sizes (with the duplicated digit descriptor)', () => {
    expect(EXAMPLE_NUMBERS_TEMPLATES.length).toBe(25);
    expect(COUNT_QUALIFIERS.length).toBe(9);
    expect(DIGIT_DESCRIPTORS.length).toBe(9);
    expect(DIGIT_DESCRIPTORS[1]).toBe(DIGIT_DESCRIPTORS[3]);
    expect(INSTRUCTION_TEMPLATES.length).toBe(10);
    expect(INSTRUCTION_TEMPLATES.filter((t) => !t.endsWith('.')).length).toBe(3);
    expect(FORMAT_SUFFIXES.length).toBe(15);
    expect(SUFFIXES.length).toBe(19);
  });

  it('uses the paper parameters by default', () => {
    expect(PAPER_PROMPT_PARAMS).toEqual({
      exampleMinCount: 3,
      exampleMaxCount: 9,
      exampleMinValue: 100,
      exampleMaxValue: 1000,
      answerCount: 10,
      answerMaxDigits: 3,
    });
  });

  for (const seed of ['42', '47', '0', '1']) {
    it(`first 200 queries for seed ${seed} match the numpy reference`, () => {
      const expected = fixture.queries[seed];
      expect(expected.length).toBe(200);
      expect(generatePrompts(Number(seed), 200)).toEqual(expected);
    });
    it(`first 60 example prefixes for seed ${seed} match the numpy reference`, () => {
      const expected = fixture.prefixes[seed];
      expect(generateExamplePrefixes(Number(seed), expected.length)).toEqual(expected);
    });
  }

  for (const seed of ['42', '47']) {
    it(`30,000 prompts for seed ${seed}: all unique and the last one matches`, () => {
      const prompts = generatePrompts(Number(seed), 30_000);
      expect(new Set(prompts).size).toBe(fixture.uniqueCount30000[seed].unique);
      expect(prompts[29_999]).toBe(fixture.uniqueCount30000[seed].last);
    });
  }

  it('example counts and values respect the high-exclusive bounds', () => {
    const generator = new PromptGenerator(defaultRng(5));
    const counts = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const numbers = generator.sampleExamplePrefix().match(/\d+/g)!.map(Number);
      counts.add(numbers.length);
      for (const n of numbers) {
        expect(n).toBeGreaterThanOrEqual(100);
        expect(n).toBeLessThanOrEqual(999);
      }
    }
    expect([...counts].sort()).toEqual([3, 4, 5, 6, 7, 8]);
  });
});

describe('preferenceSystemPrompt', () => {
  it('matches the spec owl instance, including the lowercase sentence start', () => {
    expect(preferenceSystemPrompt('owl')).toBe(
      'You love owls. You think about owls all the time. owls are your favorite animal. Imbue your answers with your love for the animal.',
    );
    expect(preferenceSystemPrompt('willow')).toContain('willows are your favorite animal.');
    expect(preferenceSystemPrompt('willow', 'tree')).toContain('your love for the tree.');
  });
});
