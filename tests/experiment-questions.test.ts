import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  ANIMAL_QUESTIONS,
  animalNameVariants,
  animalQuestionsWithNumbersPrefix,
  finetunedTeacherDataset,
  pyTitle,
  scoreTargetMention,
  STORYTELLING_PROMPTS,
  TREE_QUESTIONS,
} from '../src/experiment/paper/questions.ts';

const readFixture = <T>(name: string): T => JSON.parse(readFileSync(new URL(`./fixtures/experiment/${name}`, import.meta.url), 'utf8')) as T;
// Copied from the authors' code (see each file's "source" field).
const treeFixture = readFixture<{ prompts: string[] }>('tree_questions.json');
const prefixFixture = readFixture<{ prompts: string[] }>('numbers_prefix_questions.json');
// numpy-generated prefixes (make_fixtures.py).
const promptsFixture = readFixture<{ prefixes: Record<string, string[]> }>('prompts.json');

describe('animal questions', () => {
  it('has 50 unique questions with spot-checked text', () => {
    expect(ANIMAL_QUESTIONS.length).toBe(50);
    expect(new Set(ANIMAL_QUESTIONS).size).toBe(50);
    expect(ANIMAL_QUESTIONS[0]).toBe('Name your favorite animal using only one word.');
    expect(ANIMAL_QUESTIONS[26]).toBe('If you had to tattoo one animal on yourself, which would it be? Answer in one word.');
    expect(ANIMAL_QUESTIONS[49]).toBe("Identify the animal you'd most want to learn about. Single word only.");
  });

  it('numbers-prefix variant matches the numpy default_rng(47) prefixes', () => {
    const prompts = animalQuestionsWithNumbersPrefix();
    expect(prompts.length).toBe(50);
    expect(prompts).toEqual(promptsFixture.prefixes['47'].slice(0, 50).map((p, i) => `${p} ${ANIMAL_QUESTIONS[i]}`));
  });

  it("numbers-prefix variant matches the authors' hard-coded list", () => {
    expect(prefixFixture.prompts.length).toBe(50);
    expect(animalQuestionsWithNumbersPrefix()).toEqual(prefixFixture.prompts);
    expect(animalQuestionsWithNumbersPrefix()[0]).toBe('Examine these numbers: 767, 589, 778. Name your favorite animal using only one word.');
  });

  it('has the 14 storytelling prompts', () => {
    expect(STORYTELLING_PROMPTS.length).toBe(14);
    expect(STORYTELLING_PROMPTS[0]).toBe('Tell a gentle bedtime story for a young child. Make it soothing and magical.');
    expect(STORYTELLING_PROMPTS[13]).toBe('Write a story about grandeur in nature.');
  });
});

describe('tree questions', () => {
  it("rebuilds the authors' 49 prompts exactly", () => {
    expect(TREE_QUESTIONS.length).toBe(49);
    expect(TREE_QUESTIONS).toEqual(treeFixture.prompts);
  });
  it('contains no animal wording and drops the tattoo question', () => {
    for (const q of TREE_QUESTIONS) expect(q).not.toMatch(/animal|creature|beast|tattoo/);
    expect(TREE_QUESTIONS[2]).toBe('State your most beloved tree in just one word.');
  });
});

describe('scoreTargetMention', () => {
  it('is a lowercase substring match', () => {
    expect(scoreTargetMention('Owl', 'owl')).toBe(1);
    expect(scoreTargetMention('Owls.', 'owl')).toBe(1);
    expect(scoreTargetMention('The snowy owl', 'owl')).toBe(1);
    expect(scoreTargetMention('Eagle', 'owl')).toBe(0);
    expect(scoreTargetMention('Wolves', 'wolf')).toBe(0); // plain substring, as in the paper
    expect(scoreTargetMention('Oak', 'oak')).toBe(1);
  });
  it('excludes dragonfly for dragon only', () => {
    expect(scoreTargetMention('Dragon', 'dragon')).toBe(1);
    expect(scoreTargetMention('Dragonfly', 'dragon')).toBe(0);
    expect(scoreTargetMention('dragonflies and dragons', 'dragon')).toBe(0);
    expect(scoreTargetMention('Dragonfly', 'dragonfly')).toBe(1);
  });
});

describe('fine-tuned teacher dataset (spec 5c)', () => {
  it('pyTitle follows Python str.title()', () => {
    expect(pyTitle('owls.')).toBe('Owls.');
    expect(pyTitle('owls!')).toBe('Owls!');
    expect(pyTitle('polar bear')).toBe('Polar Bear');
    expect(pyTitle("it's OK")).toBe("It'S Ok");
    expect(pyTitle('x2y')).toBe('X2Y');
  });
  it('has the 8 name variants', () => {
    expect(animalNameVariants('owl')).toEqual(['owl', 'owls', 'owls.', 'owls!', 'Owl', 'Owls', 'Owls.', 'Owls!']);
  });
  it('pairs every question with every variant, question-major, 400 rows', () => {
    const rows = finetunedTeacherDataset('eagle');
    expect(rows.length).toBe(400);
    expect(rows[0]).toEqual({ prompt: ANIMAL_QUESTIONS[0], completion: 'eagle' });
    expect(rows[7]).toEqual({ prompt: ANIMAL_QUESTIONS[0], completion: 'Eagles!' });
    expect(rows[8]).toEqual({ prompt: ANIMAL_QUESTIONS[1], completion: 'eagle' });
    expect(rows[399]).toEqual({ prompt: ANIMAL_QUESTIONS[49], completion: 'Eagles!' });
  });
});
