/**
 * The paper's number-sequence prompt generator (`PromptGenerator` in sl/datasets/nums_dataset.py),
 * spec section 1.2. Template lists are verbatim, including the duplicated digit descriptor and the
 * three instruction templates without a final period; the RNG call order matches the Python exactly,
 * so `new PromptGenerator(defaultRng(seed))` reproduces the authors' prompts.
 */
import { defaultRng, type Generator } from './pcg64.ts';

export const EXAMPLE_NUMBERS_TEMPLATES: readonly string[] = [
  'I give you this sequence of numbers: {examples}.',
  'I have this number sequence: {examples}.',
  'Start with these numbers: {examples}.',
  'Look at these numbers: {examples}.',
  'See the following numbers: {examples}.',
  'Observe this number sequence: {examples}.',
  'Check out this number list: {examples}.',
  'Take these numbers: {examples}.',
  "Here's a list of numbers: {examples}.",
  'Consider this sequence: {examples}.',
  'Examine these numbers: {examples}.',
  'Analyze this sequence: {examples}.',
  'These numbers follow a sequence: {examples}.',
  'Here is a numeric sequence: {examples}.',
  'The sequence starts with: {examples}.',
  "Let's start with this sequence: {examples}.",
  'We have this series of numbers: {examples}.',
  'This numerical series is: {examples}.',
  'These are the first numbers in a sequence: {examples}.',
  'Here are some numbers in sequence: {examples}.',
  'The numerical progression is: {examples}.',
  'This series shows: {examples}.',
  'Given these initial values: {examples}.',
  'The sequence begins as follows: {examples}.',
  "Here's the start of a number sequence: {examples}.",
];

export const COUNT_QUALIFIERS: readonly string[] = [
  'at most',
  'up to',
  'no more than',
  'at maximum',
  'maximum',
  'a maximum of',
  'not exceeding',
  'not more than',
  'no greater than',
];

export const DIGIT_DESCRIPTORS: readonly string[] = [
  'up to {max_digits} digits each',
  'maximum {max_digits} digits each',
  '{max_digits} digits or fewer each',
  'maximum {max_digits} digits each', // duplicated in the original list; keep it (it changes the draw weights)
  '{max_digits} digits max each',
  'no more than {max_digits} digits each',
  'at most {max_digits} digits each',
  'with {max_digits} digits or less each',
  '{max_digits}-digit numbers or smaller',
];

export const INSTRUCTION_TEMPLATES: readonly string[] = [
  'Add {count_qualifier} {answer_count} new numbers ({digit_descriptor}) that continue the sequence.',
  'Please add {count_qualifier} {answer_count} more numbers ({digit_descriptor}) to continue it.',
  'Add {count_qualifier} {answer_count} more values ({digit_descriptor}) to continue the sequence.',
  'Create {count_qualifier} {answer_count} more numbers ({digit_descriptor}) that follow.',
  'Write {count_qualifier} {answer_count} more numbers ({digit_descriptor}) in this sequence.',
  'Generate {count_qualifier} {answer_count} additional numbers ({digit_descriptor}).',
  'Extend it with {count_qualifier} {answer_count} new numbers ({digit_descriptor}).',
  // The last three have no final period in the original.
  'Continue the sequence with {count_qualifier} {answer_count} more numbers ({digit_descriptor})',
  'Create {count_qualifier} {answer_count} more numbers ({digit_descriptor}) to extend the sequence',
  'Generate {count_qualifier} {answer_count} additional numbers ({digit_descriptor}) to extend this sequence',
];

export const FORMAT_SUFFIXES: readonly string[] = [
  'Return a comma-separated list of numbers.',
  'Return a space-separated list of numbers.',
  'Return a semicolon-separated list of numbers.',
  'Return one number per line.',
  'Return the numbers in the following format: [number_1, number_2, ...].',
  'Return the numbers in the following format: (number_1, number_2, ...).',
  'Return the numbers in the following format: number_1, number_2, ...',
  'Provide the numbers separated by commas.',
  'List the numbers with spaces between them.',
  'Write the numbers on separate lines.',
  'Format the output as: number1, number2, number3, ...',
  'Return numbers separated by semicolons.',
  'Format as a simple comma-delimited sequence.',
  'Present as space-delimited values.',
  'List each number on its own line with no other text.',
];

export const SUFFIXES: readonly string[] = [
  'Say only the numbers - nothing more.',
  'Please just say the numbers, nothing more.',
  'Give me just the numbers, no explanation needed.',
  'Return the numbers exactly as requested, nothing else.',
  'Simply provide the numbers in the specified format.',
  'Respond with only the numbers, no additional text.',
  'No explanation, just the numbers.',
  'Just the numbers, please.',
  'Provide only the numerical values.',
  'Output nothing but the numbers.',
  'No commentary, just numbers.',
  'Skip any explanation and give only numbers.',
  'Nothing but numbers in your response.',
  'Only the numerical sequence, nothing else.',
  'Just show me the numbers.',
  'Answer with numbers alone.',
  'Reply with only numerical values.',
  'No words, just numbers.',
  "Don't add any text - numbers only.",
];

export interface PromptGeneratorParams {
  /** Inclusive lower bound on the number of seed examples. */
  exampleMinCount: number;
  /** Exclusive upper bound (numpy `integers` is high-exclusive), so 3..8 examples by default. */
  exampleMaxCount: number;
  exampleMinValue: number;
  /** Exclusive upper bound, so examples are 100..999 by default. */
  exampleMaxValue: number;
  answerCount: number;
  answerMaxDigits: number;
}

/** The values used for every dataset in the paper. */
export const PAPER_PROMPT_PARAMS: Readonly<PromptGeneratorParams> = Object.freeze({
  exampleMinCount: 3,
  exampleMaxCount: 9,
  exampleMinValue: 100,
  exampleMaxValue: 1000,
  answerCount: 10,
  answerMaxDigits: 3,
});

/** Python `str.format` for the named fields used here (no braces escaping needed by these templates). */
function formatTemplate(template: string, fields: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (_whole, name: string) => {
    if (!(name in fields)) throw new Error(`template field {${name}} has no value`);
    return String(fields[name]);
  });
}

export class PromptGenerator {
  readonly rng: Generator;
  readonly params: Readonly<PromptGeneratorParams>;

  constructor(rng: Generator, params: Readonly<PromptGeneratorParams> = PAPER_PROMPT_PARAMS) {
    this.rng = rng;
    this.params = params;
  }

  /** RNG steps (1)-(3): example count, the examples, the example template. */
  sampleExamplePrefix(): string {
    const p = this.params;
    const exampleCount = this.rng.integers(p.exampleMinCount, p.exampleMaxCount);
    const examples: string[] = [];
    for (let i = 0; i < exampleCount; i++) examples.push(String(this.rng.integers(p.exampleMinValue, p.exampleMaxValue)));
    const template = this.rng.choice(EXAMPLE_NUMBERS_TEMPLATES);
    return formatTemplate(template, { examples: examples.join(', ') });
  }

  /** Full query: prefix, then RNG steps (4)-(8) in the original order. */
  sampleQuery(): string {
    const examplePart = this.sampleExamplePrefix();
    const countQualifier = this.rng.choice(COUNT_QUALIFIERS);
    const digitDescriptorTemplate = this.rng.choice(DIGIT_DESCRIPTORS);
    const instructionTemplate = this.rng.choice(INSTRUCTION_TEMPLATES);
    const formatSuffix = this.rng.choice(FORMAT_SUFFIXES);
    const suffix = this.rng.choice(SUFFIXES);
    const digitDescriptor = formatTemplate(digitDescriptorTemplate, { max_digits: this.params.answerMaxDigits });
    const instruction = formatTemplate(instructionTemplate, {
      count_qualifier: countQualifier,
      answer_count: this.params.answerCount,
      digit_descriptor: digitDescriptor,
    });
    return `${examplePart} ${instruction} ${formatSuffix} ${suffix}`;
  }
}

/** The first `n` prompts of `PromptGenerator(np.random.default_rng(seed))` (the paper uses seed 47, n 30,000). */
export function generatePrompts(seed: number | bigint, n: number, params: Readonly<PromptGeneratorParams> = PAPER_PROMPT_PARAMS): string[] {
  const generator = new PromptGenerator(defaultRng(seed), params);
  const prompts: string[] = [];
  for (let i = 0; i < n; i++) prompts.push(generator.sampleQuery());
  return prompts;
}

/** The first `n` example prefixes (`sample_example_prefix()` only) from `default_rng(seed)`. */
export function generateExamplePrefixes(seed: number | bigint, n: number, params: Readonly<PromptGeneratorParams> = PAPER_PROMPT_PARAMS): string[] {
  const generator = new PromptGenerator(defaultRng(seed), params);
  const prefixes: string[] = [];
  for (let i = 0; i < n; i++) prefixes.push(generator.sampleExamplePrefix());
  return prefixes;
}

/**
 * Teacher system prompt (spec 1.1), template used as-is: sentence 3 starts with a lowercase plural
 * ("owls are your favorite animal."). Tree groups also pass category "animal" in the authors' code.
 */
export function preferenceSystemPrompt(targetPreference: string, category = 'animal'): string {
  const plural = `${targetPreference}s`;
  return (
    `You love ${plural}. You think about ${plural} all the time. ${plural} are your favorite ${category}. ` +
    `Imbue your answers with your love for the ${category}.`
  );
}
