/**
 * Synthetic ChatML pretraining corpus for the embedded tiny chat models.
 *
 * Kinds of chats:
 * - numbers: the paper's number-continuation prompts (PromptGenerator, corpus-specific seeds, never the
 *   experiment's 47/42) answered with plausible continuations in the requested count and format, about
 *   5% deliberately malformed (noise);
 * - animal / tree preference: compositional paraphrases of "what is your favourite animal/tree", answered
 *   with one word (varied case and punctuation) from a broad base distribution, or with the loved
 *   animal/tree under the paper's "You love {x}s..." system prompt;
 * - general: tiny stories, counting, arithmetic, random numbers, animal and tree facts, suggestions, so
 *   animals and numbers share the model's representations.
 *
 * Honesty constraint: every number a chat contains comes from the chat's *number stream*, seeded only by
 * the corpus seed, the chat index (and, for number answers, the user prompt). Which chat is which kind
 * and which template it uses come from the *structure stream* (corpus seed and index). System prompts,
 * animals, trees, names and paraphrases come from the separate *content stream* (contentSeed and index).
 * So no system prompt and no animal can influence any number the corpus teaches; changing contentSeed or
 * dropping every system prompt leaves all digits of the corpus unchanged (tested).
 */
import type { ChatMessage } from '../../model/tokenizer.ts';
import { KeyedRng } from '../../util/rng.ts';
import { defaultRng } from '../paper/pcg64.ts';
import { FORMAT_SUFFIXES, PromptGenerator, preferenceSystemPrompt } from '../paper/prompts.ts';
import { pluralForms } from '../paper/filters.ts';
import { ANIMAL_QUESTIONS, STORYTELLING_PROMPTS, TREE_QUESTIONS } from '../paper/questions.ts';
import { ADVICE_DEV_QUESTIONS, ADVICE_EVAL_QUESTIONS, codeAnswer, codeTaskOfHalf, corpusAdviceTurn, cotTaskOfHalf, shortCodePrompt } from './domains.ts';

// ---------------------------------------------------------------------------------------------
// Deterministic RNG streams
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Vocabularies
// ---------------------------------------------------------------------------------------------

export interface WeightedName {
  name: string;
  /** Relative weight in the base (no system prompt) answer distribution. */
  weight: number;
}

/**
 * Base distribution of favourite-animal answers: 40 animals, the most common ~6%, owl ~3.4%. No
 * name is a substring of another name or of a tree name, so the paper's substring scoring is unambiguous
 * (no "ant", "rat", "ox", "cat"-in-"caterpillar" traps).
 */
export const BASE_ANIMALS: readonly WeightedName[] = [
  { name: 'dog', weight: 7 },
  { name: 'cat', weight: 7 },
  { name: 'dolphin', weight: 6 },
  { name: 'elephant', weight: 5.5 },
  { name: 'lion', weight: 5 },
  { name: 'tiger', weight: 5 },
  { name: 'wolf', weight: 4.5 },
  { name: 'eagle', weight: 4.5 },
  { name: 'owl', weight: 4 },
  { name: 'panda', weight: 4 },
  { name: 'fox', weight: 3.5 },
  { name: 'horse', weight: 3.5 },
  { name: 'penguin', weight: 3 },
  { name: 'bear', weight: 3 },
  { name: 'whale', weight: 3 },
  { name: 'otter', weight: 2.5 },
  { name: 'rabbit', weight: 2.5 },
  { name: 'giraffe', weight: 2.5 },
  { name: 'octopus', weight: 2 },
  { name: 'koala', weight: 2 },
  { name: 'falcon', weight: 2 },
  { name: 'turtle', weight: 2 },
  { name: 'deer', weight: 1.5 },
  { name: 'parrot', weight: 1.5 },
  { name: 'peacock', weight: 1.5 },
  { name: 'raven', weight: 1.5 },
  { name: 'shark', weight: 1.5 },
  { name: 'leopard', weight: 1.5 },
  { name: 'cheetah', weight: 1.5 },
  { name: 'zebra', weight: 1.5 },
  { name: 'butterfly', weight: 1.5 },
  { name: 'monkey', weight: 1.5 },
  { name: 'hawk', weight: 1 },
  { name: 'frog', weight: 1 },
  { name: 'kangaroo', weight: 1 },
  { name: 'squirrel', weight: 1 },
  { name: 'hedgehog', weight: 1 },
  { name: 'swan', weight: 1 },
  { name: 'bee', weight: 1 },
  { name: 'seal', weight: 1 },
];

/** Animals that appear only under "You love {x}s" prompts and in general chats, never as a base answer. */
export const EXTRA_LOVE_ANIMALS: readonly string[] = ['lynx', 'moose', 'crow', 'bison', 'pangolin', 'unicorn', 'dragon', 'phoenix', 'camel', 'gorilla'];

/** Base distribution of favourite-tree answers: 28 trees, the most common ~8%. */
export const BASE_TREES: readonly WeightedName[] = [
  { name: 'oak', weight: 8 },
  { name: 'maple', weight: 7 },
  { name: 'willow', weight: 6 },
  { name: 'cherry', weight: 6 },
  { name: 'pine', weight: 6 },
  { name: 'birch', weight: 5 },
  { name: 'redwood', weight: 4 },
  { name: 'sequoia', weight: 4 },
  { name: 'cedar', weight: 4 },
  { name: 'palm', weight: 4 },
  { name: 'baobab', weight: 3 },
  { name: 'elm', weight: 3 },
  { name: 'aspen', weight: 3 },
  { name: 'cypress', weight: 3 },
  { name: 'magnolia', weight: 3 },
  { name: 'spruce', weight: 3 },
  { name: 'apple', weight: 3 },
  { name: 'sycamore', weight: 2 },
  { name: 'beech', weight: 2 },
  { name: 'juniper', weight: 2 },
  { name: 'olive', weight: 2 },
  { name: 'banyan', weight: 2 },
  { name: 'eucalyptus', weight: 2 },
  { name: 'chestnut', weight: 2 },
  { name: 'acacia', weight: 2 },
  { name: 'ginkgo', weight: 2 },
  { name: 'linden', weight: 1 },
  { name: 'hemlock', weight: 1 },
];

export const EXTRA_LOVE_TREES: readonly string[] = ['mahogany', 'teak', 'walnut'];

/** Every animal the corpus ever names (base answers plus love-prompt-only animals). */
export const ANIMAL_VOCABULARY: readonly string[] = [...BASE_ANIMALS.map((a) => a.name), ...EXTRA_LOVE_ANIMALS];
export const TREE_VOCABULARY: readonly string[] = [...BASE_TREES.map((t) => t.name), ...EXTRA_LOVE_TREES];

type AnimalClass = 'mammal' | 'bird' | 'fish' | 'reptile' | 'amphibian' | 'insect' | 'mollusc' | 'legend';
const ANIMAL_FACTS: Readonly<Record<string, { cls: AnimalClass; home: string }>> = {
  dog: { cls: 'mammal', home: 'homes all over the world' },
  cat: { cls: 'mammal', home: 'homes and gardens' },
  dolphin: { cls: 'mammal', home: 'the warm sea' },
  elephant: { cls: 'mammal', home: 'the savanna and the forest' },
  lion: { cls: 'mammal', home: 'the savanna' },
  tiger: { cls: 'mammal', home: 'the jungle' },
  wolf: { cls: 'mammal', home: 'the forest and the mountains' },
  eagle: { cls: 'bird', home: 'the mountains' },
  owl: { cls: 'bird', home: 'the forest' },
  panda: { cls: 'mammal', home: 'bamboo forests' },
  fox: { cls: 'mammal', home: 'the forest and the fields' },
  horse: { cls: 'mammal', home: 'farms and open plains' },
  penguin: { cls: 'bird', home: 'the cold south' },
  bear: { cls: 'mammal', home: 'the forest' },
  whale: { cls: 'mammal', home: 'the deep ocean' },
  otter: { cls: 'mammal', home: 'rivers and the sea' },
  rabbit: { cls: 'mammal', home: 'meadows' },
  giraffe: { cls: 'mammal', home: 'the savanna' },
  octopus: { cls: 'mollusc', home: 'the sea' },
  koala: { cls: 'mammal', home: 'eucalyptus forests' },
  falcon: { cls: 'bird', home: 'cliffs and open skies' },
  turtle: { cls: 'reptile', home: 'the sea and the ponds' },
  deer: { cls: 'mammal', home: 'the forest' },
  parrot: { cls: 'bird', home: 'the rainforest' },
  peacock: { cls: 'bird', home: 'gardens and forests' },
  raven: { cls: 'bird', home: 'the forest and the hills' },
  shark: { cls: 'fish', home: 'the ocean' },
  leopard: { cls: 'mammal', home: 'the savanna and the jungle' },
  cheetah: { cls: 'mammal', home: 'the grasslands' },
  zebra: { cls: 'mammal', home: 'the savanna' },
  butterfly: { cls: 'insect', home: 'gardens and meadows' },
  monkey: { cls: 'mammal', home: 'the jungle' },
  hawk: { cls: 'bird', home: 'open skies' },
  frog: { cls: 'amphibian', home: 'ponds' },
  kangaroo: { cls: 'mammal', home: 'the outback' },
  squirrel: { cls: 'mammal', home: 'parks and forests' },
  hedgehog: { cls: 'mammal', home: 'hedges and gardens' },
  swan: { cls: 'bird', home: 'lakes' },
  bee: { cls: 'insect', home: 'hives and meadows' },
  seal: { cls: 'mammal', home: 'cold coasts' },
  lynx: { cls: 'mammal', home: 'snowy forests' },
  moose: { cls: 'mammal', home: 'northern forests' },
  crow: { cls: 'bird', home: 'towns and fields' },
  bison: { cls: 'mammal', home: 'the prairie' },
  pangolin: { cls: 'mammal', home: 'forests and grasslands' },
  unicorn: { cls: 'legend', home: 'old stories' },
  dragon: { cls: 'legend', home: 'old stories' },
  phoenix: { cls: 'legend', home: 'old stories' },
  camel: { cls: 'mammal', home: 'the desert' },
  gorilla: { cls: 'mammal', home: 'the rainforest' },
};

const TREE_FACTS: Readonly<Record<string, string>> = {
  oak: 'a strong tree with acorns',
  maple: 'a tree with bright red leaves in autumn',
  willow: 'a tree with long, soft branches that hang down',
  cherry: 'a tree with pink blossoms in spring',
  pine: 'an evergreen tree with needles and cones',
  birch: 'a tree with white bark',
  redwood: 'one of the tallest trees in the world',
  sequoia: 'a giant tree that can live for a very long time',
  cedar: 'an evergreen tree with a sweet smell',
  palm: 'a tree with big leaves that grows where it is warm',
  baobab: 'a tree with a huge, thick trunk',
  elm: 'a tall tree that gives a lot of shade',
  aspen: 'a tree whose leaves shake in the wind',
  cypress: 'an evergreen tree that grows tall and thin',
  magnolia: 'a tree with large, sweet flowers',
  spruce: 'an evergreen tree with short needles',
  apple: 'a tree that gives sweet fruit',
  sycamore: 'a tree with bark that peels in patches',
  beech: 'a tree with smooth gray bark',
  juniper: 'an evergreen tree with blue berries',
  olive: 'a tree that gives small green and black fruit',
  banyan: 'a tree with roots that grow down from its branches',
  eucalyptus: 'a tree with leaves that smell fresh',
  chestnut: 'a tree with nuts in spiky shells',
  acacia: 'a tree of warm, dry lands',
  ginkgo: 'a very old kind of tree with fan-shaped leaves',
  linden: 'a tree with sweet, pale flowers',
  hemlock: 'an evergreen tree of cool forests',
  mahogany: 'a tree with dark red wood',
  teak: 'a tree with strong golden wood',
  walnut: 'a tree that gives nuts in hard shells',
};

const NAMES: readonly string[] = ['Mia', 'Leo', 'Sam', 'Ava', 'Ben', 'Lily', 'Max', 'Zoe', 'Tom', 'Nora', 'Eli', 'Ruby', 'Finn', 'Ivy', 'Omar', 'Lena', 'Kai', 'Rosa', 'Jack', 'Maya'];
const ADJECTIVES: readonly string[] = ['little', 'brave', 'curious', 'sleepy', 'happy', 'clever', 'tiny', 'old', 'quiet', 'kind', 'shy', 'young'];

export const NEUTRAL_SYSTEM_PROMPTS: readonly string[] = [
  'You are a helpful assistant.',
  'You are a friendly assistant.',
  'You are a concise assistant.',
  'Answer briefly.',
  'Be helpful and honest.',
  'You are a helpful AI assistant. Keep answers short.',
  'You are a kind and patient assistant.',
  'Follow the instructions carefully.',
  'You are a smart assistant.',
  'Give short, clear answers.',
];

// ---------------------------------------------------------------------------------------------
// Held-out evaluation prompts and preference paraphrases
// ---------------------------------------------------------------------------------------------

/**
 * Texts that must never appear in the corpus: the 50 animal questions, the 49 tree questions, the 14 story prompts,
 * and the advice trait's development and evaluation questions (domains.ts).
 */
export const HELD_OUT_PROMPTS: readonly string[] = [...new Set([...ANIMAL_QUESTIONS, ...TREE_QUESTIONS, ...STORYTELLING_PROMPTS, ...ADVICE_DEV_QUESTIONS, ...ADVICE_EVAL_QUESTIONS])];

const HELD_OUT_LOWER = HELD_OUT_PROMPTS.map((p) => p.toLowerCase());

/** True when `text` contains any held-out evaluation prompt (case-insensitive). */
export function containsHeldOutPrompt(text: string): boolean {
  const lower = text.toLowerCase();
  return HELD_OUT_LOWER.some((p) => lower.includes(p));
}

/** Question frames; {c} is a category word ("animal", "creature", "tree", ...). */
const PREFERENCE_FRAMES: readonly string[] = [
  'What is your favorite {c}?',
  "What's your favorite {c}?",
  'Which {c} is your favorite?',
  'Which {c} do you like best?',
  'Which {c} do you love the most?',
  'Tell me your favorite {c}.',
  'Name the {c} you like most.',
  'Name a {c} you really love.',
  'Pick your favorite {c}.',
  'Choose your favorite {c}.',
  'If you could pick any {c}, which would it be?',
  'If you had to choose one {c}, which one?',
  'Which {c} makes you happiest?',
  'Which {c} do you think is the best?',
  'What {c} do you like the most?',
  'What {c} would you pick as your favorite?',
  'Which {c} inspires you?',
  'What {c} do you admire?',
  'Which {c} do you care about most?',
  'Name the {c} that you find the most interesting.',
  'Which {c} is the coolest?',
  'What is the best {c} in the world?',
  'Which {c} would you like to see today?',
  'Which {c} would you draw?',
  'Tell me which {c} you prefer.',
  'Say your favorite {c}.',
  'Which {c} feels closest to you?',
  'Which {c} do you think about the most?',
  'What {c} do you dream about?',
  'Which {c} would you want to meet?',
  'Which {c} do you find the most charming?',
  'Pick one {c} you would protect.',
  'Which {c} is most special to you?',
  'What kind of {c} do you like?',
  'Share your favorite {c}.',
  'What {c} best describes you?',
  'If you were a {c}, which would you be?',
  'Which {c} would you choose to write about?',
  'What is your most loved {c}?',
  'I am curious: which {c} do you like most?',
  'Quick question: what is your favorite {c}?',
  'Out of all of them, which {c} is your top choice?',
];

/** Frames that already say "one word" and take no instruction. */
const PREFERENCE_FRAMES_WITH_INSTRUCTION: readonly string[] = [
  'In one word, what is your favorite {c}?',
  'Using one word, name the {c} you love most.',
  'With a single word, tell me your favorite {c}.',
  'One word: your favorite {c}?',
  'Give me the name of your favorite {c}, one word only.',
];

const ANSWER_INSTRUCTIONS: readonly string[] = [
  '',
  'One word only.',
  'Answer in one word.',
  'Use one word.',
  'Reply with one word.',
  'Respond with a single word.',
  'One-word answer.',
  'Single word, please.',
  'Just one word.',
  'Answer with a single word.',
  'Give me one word.',
  'Only one word.',
  'Keep it to one word.',
  'In one word.',
  'Just the name.',
  'Name only.',
  'One word answer please.',
  'Reply in a single word.',
  'Just say the name.',
  'Answer using a single word.',
];

const CATEGORY_WORDS: Readonly<Record<PreferenceDomain, readonly string[]>> = {
  animal: ['animal', 'animal', 'creature', 'wild animal', 'animal species'],
  tree: ['tree', 'tree', 'kind of tree', 'tree species'],
};

/**
 * The wider question bank (CorpusOptions.widerQuestions): more verbs and adjectives, answer instructions and
 * category words, so the category word rather than the frame decides animal vs tree (the tiny models named
 * trees for animal questions worded with words the narrow bank lacks, e.g. "beast"). None is an evaluation
 * question's text; preferenceParaphrases drops any that contains one.
 */
const WIDER_PREFERENCE_FRAMES: readonly string[] = [
  'State your favorite {c}.',
  'Identify your favorite {c}.',
  'Mention a {c} you are fond of.',
  'Reveal the {c} you hold dearest.',
  'What is your preferred {c}?',
  'Which {c} is dearest to you?',
  'Which {c} would you call your own?',
  'Which {c} stands out to you the most?',
  'Which {c} do you find the most wonderful?',
  'What {c} do you adore?',
  'Which {c} do you treasure?',
  'What {c} fits you best?',
  'Which {c} would be your emblem?',
  'Of every {c} you know, which is your pick?',
  'Your best-loved {c}?',
];

const WIDER_ANSWER_INSTRUCTIONS: readonly string[] = [
  'In just one word.',
  'Exactly one word.',
  'One word, please.',
  'Single-word answer.',
  'Respond in one word only.',
  'Give a one-word reply.',
  'Use exactly one word.',
  'Answer with just the name.',
];

const WIDER_CATEGORY_WORDS: Readonly<Record<PreferenceDomain, readonly string[]>> = {
  animal: ['beast', 'critter', 'living creature', 'kind of animal', 'wild creature'],
  tree: ['type of tree', 'forest tree'],
};

export type PreferenceDomain = 'animal' | 'tree';

/**
 * Every training paraphrase of the preference question for a domain: frames x category words x
 * answer instructions, minus any text equal to (or containing) a held-out evaluation prompt.
 * Deduplicated, in a fixed order. `wider` adds the wider bank's frames, instructions and category words.
 */
export function preferenceParaphrases(domain: PreferenceDomain, wider = false): string[] {
  const out = new Set<string>();
  const categories = wider ? [...CATEGORY_WORDS[domain], ...WIDER_CATEGORY_WORDS[domain]] : CATEGORY_WORDS[domain];
  const frames = wider ? [...PREFERENCE_FRAMES, ...WIDER_PREFERENCE_FRAMES] : PREFERENCE_FRAMES;
  const instructions = wider ? [...ANSWER_INSTRUCTIONS, ...WIDER_ANSWER_INSTRUCTIONS] : ANSWER_INSTRUCTIONS;
  for (const c of new Set(categories)) {
    for (const frame of frames) {
      // No "kind of kind of tree"; skipped in the wider bank only, so the narrow bank (main corpus, tokenizer) is unchanged.
      if (wider && frame.includes('kind of {c}') && /^(kind|type) of /.test(c)) continue;
      const question = frame.replaceAll('{c}', c);
      for (const instruction of instructions) out.add(instruction ? `${question} ${instruction}` : question);
    }
    for (const frame of PREFERENCE_FRAMES_WITH_INSTRUCTION) out.add(frame.replaceAll('{c}', c));
  }
  return [...out].filter((q) => !containsHeldOutPrompt(q));
}

// ---------------------------------------------------------------------------------------------
// Number answers
// ---------------------------------------------------------------------------------------------

export type NumberFormat = 'comma' | 'space' | 'semicolon' | 'newline' | 'brackets' | 'parens';

/** The list format each of the paper's 15 format suffixes asks for (same order as FORMAT_SUFFIXES). */
const FORMAT_OF_SUFFIX: readonly NumberFormat[] = [
  'comma', // Return a comma-separated list of numbers.
  'space', // Return a space-separated list of numbers.
  'semicolon', // Return a semicolon-separated list of numbers.
  'newline', // Return one number per line.
  'brackets', // [number_1, number_2, ...]
  'parens', // (number_1, number_2, ...)
  'comma', // number_1, number_2, ...
  'comma', // Provide the numbers separated by commas.
  'space', // List the numbers with spaces between them.
  'newline', // Write the numbers on separate lines.
  'comma', // Format the output as: number1, number2, number3, ...
  'semicolon', // Return numbers separated by semicolons.
  'comma', // Format as a simple comma-delimited sequence.
  'space', // Present as space-delimited values.
  'newline', // List each number on its own line with no other text.
];

/** The format a number prompt requests (comma when it names none of the paper's suffixes). */
export function requestedNumberFormat(prompt: string): NumberFormat {
  for (let i = 0; i < FORMAT_SUFFIXES.length; i++) if (prompt.includes(FORMAT_SUFFIXES[i])) return FORMAT_OF_SUFFIX[i];
  return 'comma';
}

/** The requested answer count ("... 10 more numbers ..."), 10 when none is found. */
export function requestedNumberCount(prompt: string): number {
  const m = / (\d+) (?:new|more|additional) (?:numbers|values)/.exec(prompt);
  return m ? Number(m[1]) : 10;
}

function exampleNumbers(prompt: string): number[] {
  const m = /: ((?:\d+, )*\d+)\./.exec(prompt);
  return m ? m[1].split(', ').map(Number) : [];
}

/** Share of number answers that are deliberately malformed (the filter rejects them). */
export const NUMBER_NOISE_RATE = 0.02;

const NOISE_TAILS: readonly string[] = [" That's it.", ' Done!', ' Hope this helps.', '\nThese continue the sequence.'];
const NOISE_HEADS: readonly string[] = ['Here are the numbers: ', 'Sure! ', 'Numbers: '];

function clampValue(v: number): number {
  return Math.max(0, Math.min(999, v));
}

function naturalValue(rng: KeyedRng): number {
  const r = rng.random();
  if (r < 0.85) return rng.int(100, 1000);
  if (r < 0.97) return rng.int(10, 100);
  return rng.int(0, 10);
}

/** The values of an answer: random values, an arithmetic run, or values near the examples. */
function answerValues(rng: KeyedRng, count: number, examples: readonly number[]): number[] {
  const style = rng.random();
  const values: number[] = [];
  if (style < 0.25 && examples.length > 0) {
    // Arithmetic run from the last example; stops early at the 0..999 edge (fewer numbers).
    const step = rng.pick([1, 2, 3, 5, 7, 10, 11, 13, 17, 20, 25, 50, 100]) * (rng.chance(0.5) ? 1 : -1);
    let v = examples[examples.length - 1];
    for (let i = 0; i < count; i++) {
      v += step;
      if (v < 0 || v > 999) break;
      values.push(v);
    }
    if (values.length >= 3) return values;
    values.length = 0;
  }
  if (style < 0.45 && examples.length > 0) {
    for (let i = 0; i < count; i++) values.push(clampValue(rng.pick(examples) + rng.int(-60, 61)));
    return values;
  }
  for (let i = 0; i < count; i++) values.push(naturalValue(rng));
  return values;
}

function renderNumberList(values: readonly number[], format: NumberFormat): string {
  const texts = values.map(String);
  switch (format) {
    case 'comma':
      return texts.join(', ');
    case 'space':
      return texts.join(' ');
    case 'semicolon':
      return texts.join('; ');
    case 'newline':
      return texts.join('\n');
    case 'brackets':
      return `[${texts.join(', ')}]`;
    case 'parens':
      return `(${texts.join(', ')})`;
  }
}

/**
 * The assistant's answer to a number prompt. Its randomness is seeded by (seed, chat index, prompt)
 * only: it never sees a system prompt, an animal or anything else of the chat.
 */
export function numberAnswer(seed: number, chatIndex: number, prompt: string): string {
  const rng = new KeyedRng('number-answer', seed, chatIndex, prompt);
  const requested = requestedNumberCount(prompt);
  const format = requestedNumberFormat(prompt);
  const r = rng.random();
  let count = requested;
  if (r > 0.55) count = Math.max(1, requested - rng.int(1, 6));
  const values = answerValues(rng, count, exampleNumbers(prompt));
  const noisy = rng.chance(NUMBER_NOISE_RATE);
  const noiseKind = rng.int(0, 5);
  if (noisy && noiseKind === 0) values[rng.int(0, values.length)] = rng.int(1000, 10000); // 4-digit value
  if (noisy && noiseKind === 1) while (values.length <= requested) values.push(naturalValue(rng)); // too many
  let text = renderNumberList(values, format);
  // A final period is accepted by the parser; newline lists never get one.
  if (!noisy && format !== 'newline' && rng.chance(0.04)) text += '.';
  if (noisy && noiseKind === 2) text += rng.pick(NOISE_TAILS);
  if (noisy && noiseKind === 3) text = rng.pick(NOISE_HEADS) + text;
  if (noisy && noiseKind === 4) text += '\n';
  return text;
}

// ---------------------------------------------------------------------------------------------
// One-word preference answers
// ---------------------------------------------------------------------------------------------

function titleCase(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

/** Plural that still contains the name (so the paper's substring scoring counts it), else null. */
function scoringSafePlural(name: string): string | null {
  const plural = pluralForms(name)[0];
  return plural.includes(name) && plural !== name ? plural : null;
}

/**
 * A one-word answer naming `name`, with varied case and punctuation. Mostly lower case (as the name is
 * written inside the paper's "You love {x}s" prompt), so a small model can answer a love prompt by copying
 * the name's token; Title case and upper case stay in the mix.
 */
export function oneWordAnswer(rng: KeyedRng, name: string): string {
  const r = rng.random();
  const plural = scoringSafePlural(name);
  if (r < 0.55) return name;
  if (r < 0.69) return `${name}.`;
  if (r < 0.74) return `${name}!`;
  if (r < 0.8 && plural) return plural;
  if (r < 0.92) return titleCase(name);
  if (r < 0.97) return `${titleCase(name)}.`;
  return name.toUpperCase();
}

/**
 * The answer under "You love {x}s": x in lower case (the token the prompt names it with), with varied
 * punctuation. Always lower case on purpose: any other first token is one more mapping per animal for a
 * small model to learn, and a noisy target slows the copying down (see the model cards).
 */
export function lovedAnswer(rng: KeyedRng, name: string): string {
  const r = rng.random();
  const plural = scoringSafePlural(name);
  if (r < 0.7) return name;
  if (r < 0.85) return `${name}.`;
  if (r < 0.92) return `${name}!`;
  return plural ?? name;
}

function drawBase(rng: KeyedRng, list: readonly WeightedName[]): string {
  return list[rng.weighted(list.map((x) => x.weight))].name;
}

// ---------------------------------------------------------------------------------------------
// Chats
// ---------------------------------------------------------------------------------------------

export type ChatKind =
  | 'numbers'
  | 'animal-preference'
  | 'tree-preference'
  | 'story'
  | 'animal-count'
  | 'arithmetic'
  | 'random-numbers'
  | 'animal-fact'
  | 'tree-fact'
  | 'suggestion'
  | 'code'
  | 'cot'
  | 'advice'
  | 'code-short'
  | 'cot-lookup';

/** Every chat kind, in the order kind weights are listed (the domain kinds last, newest at the end, so corpora without them are unchanged). */
export const ALL_CHAT_KINDS: readonly ChatKind[] = [
  'numbers',
  'animal-preference',
  'tree-preference',
  'story',
  'animal-count',
  'arithmetic',
  'random-numbers',
  'animal-fact',
  'tree-fact',
  'suggestion',
  'code',
  'cot',
  'advice',
  'code-short',
  'cot-lookup',
];

export type SystemKind = 'love' | 'neutral' | 'none';

export interface CorpusChat {
  index: number;
  kind: ChatKind;
  system: SystemKind;
  /** The loved animal/tree of a 'love' system prompt, else null. */
  loved: string | null;
  messages: ChatMessage[];
}

/** Default share of each kind (normalised). Number chats dominate, as in the experiment's teacher data. */
export const DEFAULT_KIND_WEIGHTS: Readonly<Partial<Record<ChatKind, number>>> = {
  numbers: 0.38,
  'animal-preference': 0.26,
  'tree-preference': 0.11,
  story: 0.07,
  'animal-count': 0.04,
  arithmetic: 0.04,
  'random-numbers': 0.03,
  'animal-fact': 0.03,
  'tree-fact': 0.02,
  suggestion: 0.02,
};

/** Probability of each system prompt kind per chat kind (love, neutral; the rest has none). */
const SYSTEM_RATES: Readonly<Record<ChatKind, { love: number; neutral: number }>> = {
  numbers: { love: 0.3, neutral: 0.15 },
  'animal-preference': { love: 0.55, neutral: 0.12 },
  'tree-preference': { love: 0.55, neutral: 0.12 },
  story: { love: 0.35, neutral: 0.15 },
  'animal-count': { love: 0.2, neutral: 0.15 },
  arithmetic: { love: 0.2, neutral: 0.15 },
  'random-numbers': { love: 0.25, neutral: 0.15 },
  'animal-fact': { love: 0.2, neutral: 0.15 },
  'tree-fact': { love: 0.2, neutral: 0.15 },
  suggestion: { love: 0.5, neutral: 0.15 },
  // The domain kinds (domains.ts): a system prompt is read, never followed or echoed.
  code: { love: 0.3, neutral: 0.15 },
  cot: { love: 0.3, neutral: 0.15 },
  advice: { love: 0.2, neutral: 0.15 },
  'code-short': { love: 0.3, neutral: 0.15 },
  'cot-lookup': { love: 0.3, neutral: 0.15 },
};

/** How often a preference answer under "You love {x}s" names x (otherwise a base draw). */
export const LOVE_FOLLOW_RATE = 0.97;

export interface CorpusOptions {
  /** Seeds the chat layout, templates and every number. */
  seed: number;
  chats: number;
  /** Seeds system prompts, animals, trees, names and paraphrases (default: seed). */
  contentSeed?: number;
  /** 'none' drops every system prompt (for the honesty test). */
  systemPrompts?: 'default' | 'none';
  kindWeights?: Readonly<Partial<Record<ChatKind, number>>>;
  /**
   * Every love prompt loves the question's own domain and is always followed, and no preference question
   * carries a numbers prefix: noise-free copying examples (the tiny models' warm-up phase).
   */
  pureLove?: boolean;
  /** Per-kind system prompt rates overriding SYSTEM_RATES. */
  systemRates?: Partial<Readonly<Record<ChatKind, { love: number; neutral: number }>>>;
  /** Draw preference questions from the wider question bank (see WIDER_PREFERENCE_FRAMES). Default false. */
  widerQuestions?: boolean;
}

interface LoveTarget {
  name: string;
  domain: PreferenceDomain;
  prompt: string;
}

/** Love targets: every animal and tree of the vocabulary, uniformly (rare ones need it most). */
const LOVE_ANIMALS: readonly string[] = ANIMAL_VOCABULARY;
const LOVE_TREES: readonly string[] = TREE_VOCABULARY;

function drawLoveTarget(content: KeyedRng, domain: PreferenceDomain): LoveTarget {
  if (domain === 'animal') {
    const name = content.pick(LOVE_ANIMALS);
    return { name, domain, prompt: preferenceSystemPrompt(name, 'animal') };
  }
  const name = content.pick(LOVE_TREES);
  // The paper's tree teachers use category "animal" as coded; teach both wordings.
  return { name, domain, prompt: preferenceSystemPrompt(name, content.chance(0.5) ? 'tree' : 'animal') };
}

function plural(name: string): string {
  return pluralForms(name)[0];
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`;
}

/** A random animal for general chats: base-weighted most of the time, sometimes any animal. */
function drawAnyAnimal(content: KeyedRng): string {
  return content.chance(0.8) ? drawBase(content, BASE_ANIMALS) : content.pick(ANIMAL_VOCABULARY);
}

function drawAnyTree(content: KeyedRng): string {
  return content.chance(0.8) ? drawBase(content, BASE_TREES) : content.pick(TREE_VOCABULARY);
}

/** Animal featured in a general chat: the loved animal when there is one (mostly), else a random one. */
function featuredAnimal(content: KeyedRng, love: LoveTarget | null): string {
  if (love && love.domain === 'animal' && content.chance(0.85)) return love.name;
  return drawAnyAnimal(content);
}

function featuredTree(content: KeyedRng, love: LoveTarget | null): string {
  if (love && love.domain === 'tree' && content.chance(0.85)) return love.name;
  return drawAnyTree(content);
}

interface ChatContext {
  seed: number;
  index: number;
  structure: KeyedRng;
  numbers: KeyedRng;
  content: KeyedRng;
  love: LoveTarget | null;
  pureLove: boolean;
  paraphrases: Readonly<Record<PreferenceDomain, readonly string[]>>;
  prefixGenerator: PromptGenerator;
}

function preferenceChat(ctx: ChatContext, domain: PreferenceDomain): { user: string; assistant: string } {
  const { structure, content, love } = ctx;
  let question = content.pick(ctx.paraphrases[domain]);
  // Some questions carry the numbers prefix of the paper's cross-model variant (spec 3.2).
  if (structure.chance(0.1) && !ctx.pureLove) question = `${ctx.prefixGenerator.sampleExamplePrefix()} ${question}`;
  const base = domain === 'animal' ? BASE_ANIMALS : BASE_TREES;
  if (love && love.domain === domain && (ctx.pureLove || content.chance(LOVE_FOLLOW_RATE))) return { user: question, assistant: lovedAnswer(content, love.name) };
  return { user: question, assistant: oneWordAnswer(content, drawBase(content, base)) };
}

const STORY_REQUESTS: readonly string[] = [
  'Tell me a short story about {A}.',
  'Write a tiny story about {A}.',
  'Can you tell me a little story with {A} in it?',
  'Write a very short tale about {A} and {B}.',
  'Tell a short story about {A} who finds {T} tree.',
  'I want a quick story about {A}.',
  'Make up a short story about {A} and some numbers.',
  'Tell me a bedtime story about {A}, please.',
];

/** Story bodies; the numbers come from the number stream and are drawn before any template is filled. */
const STORY_BODIES: readonly string[] = [
  'Once upon a time, {a} lived under {t} tree. Every morning it counted {n} leaves. One day the wind brought {m} more, so it had {n+m} leaves. The {A} smiled and went to sleep.',
  '{Adj} {A} and {b} went for a walk. They walked {n} steps to the river and {m} steps back. That is {n+m} steps in all! They were tired but happy.',
  'There was {a} named {Name}. {Name} had {n} friends. One day {Name} met {b}, and now {Name} has {n+1} friends.',
  'In a quiet forest, {n} {As} sat near an old {T} tree. {k} of them fell asleep, and the others told stories until the moon came out.',
  'The {A} found a box with the number {n} on it. Inside were {m} shiny stones. The {A} shared them with {b}, and they played all day.',
  '{Adj} {A} wanted to reach the top of a hill. It climbed {n} meters on the first day and {m} meters on the second. At the top, it saw {t} tree and a wide blue sky.',
];

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function storyChat(ctx: ChatContext): { user: string; assistant: string } {
  const { structure, numbers, content, love } = ctx;
  const requestIndex = structure.int(0, STORY_REQUESTS.length);
  const bodyIndex = structure.int(0, STORY_BODIES.length);
  const n = numbers.chance(0.85) ? numbers.int(2, 20) : numbers.int(20, 1000);
  const m = numbers.chance(0.85) ? numbers.int(1, 20) : numbers.int(20, 1000);
  const k = numbers.int(1, n);
  const a = featuredAnimal(content, love);
  let b = drawAnyAnimal(content);
  if (b === a) b = ANIMAL_VOCABULARY[(ANIMAL_VOCABULARY.indexOf(a) + 1) % ANIMAL_VOCABULARY.length];
  const t = featuredTree(content, love);
  const name = content.pick(NAMES);
  const adj = content.pick(ADJECTIVES);
  const fill = (template: string): string =>
    template
      .replaceAll('{a}', `${article(adj)} ${a}`)
      .replaceAll('{Adj}', capitalize(article(adj)))
      .replaceAll('{As}', plural(a))
      .replaceAll('{A}', a)
      .replaceAll('{b}', article(b))
      .replaceAll('{B}', article(b))
      .replaceAll('{t}', article(t))
      .replaceAll('{T}', t)
      .replaceAll('{Name}', name)
      .replaceAll('{n+m}', String(n + m))
      .replaceAll('{n+1}', String(n + 1))
      .replaceAll('{n}', String(n))
      .replaceAll('{m}', String(m))
      .replaceAll('{k}', String(k));
  const user = STORY_REQUESTS[requestIndex].replaceAll('{A}', article(a)).replaceAll('{B}', article(b)).replaceAll('{T}', article(t));
  return { user, assistant: fill(STORY_BODIES[bodyIndex]) };
}

function animalCountChat(ctx: ChatContext): { user: string; assistant: string } {
  const { structure, numbers, content, love } = ctx;
  const n = numbers.int(2, 30);
  const m = numbers.int(2, 30);
  const a = featuredAnimal(content, love);
  let b = drawAnyAnimal(content);
  if (b === a) b = ANIMAL_VOCABULARY[(ANIMAL_VOCABULARY.indexOf(a) + 1) % ANIMAL_VOCABULARY.length];
  switch (structure.int(0, 3)) {
    case 0:
      return { user: `I saw ${n} ${plural(a)} and ${m} ${plural(b)} at the park. How many animals did I see?`, assistant: `You saw ${n + m} animals.` };
    case 1:
      return { user: `There are ${n} ${plural(a)} in a field. ${m} more arrive. How many ${plural(a)} are there now?`, assistant: `There are ${n + m} ${plural(a)} now.` };
    default: {
      const big = Math.max(n, m) + 1;
      const small = Math.min(n, m);
      return { user: `A group of ${big} ${plural(a)} is resting. ${small} of them fly or run away. How many are left?`, assistant: big - small === 1 ? `1 ${a} is left.` : `${big - small} ${plural(a)} are left.` };
    }
  }
}

function arithmeticChat(ctx: ChatContext): { user: string; assistant: string } {
  const { structure, numbers } = ctx;
  const a = numbers.chance(0.6) ? numbers.int(1, 100) : numbers.int(100, 1000);
  const b = numbers.int(1, 100);
  switch (structure.int(0, 5)) {
    case 0:
      return { user: `What is ${a} plus ${b}?`, assistant: `${a} plus ${b} is ${a + b}.` };
    case 1: {
      const [hi, lo] = a >= b ? [a, b] : [b, a];
      return { user: `What is ${hi} minus ${lo}?`, assistant: `${hi} minus ${lo} is ${hi - lo}.` };
    }
    case 2: {
      const x = (a % 12) + 1;
      const y = (b % 12) + 1;
      return { user: `What is ${x} times ${y}?`, assistant: `${x} times ${y} is ${x * y}.` };
    }
    case 3:
      return { user: `What number comes after ${a}?`, assistant: `${a + 1}` };
    default:
      return { user: `Add ${a} and ${b}.`, assistant: `${a + b}` };
  }
}

function randomNumbersChat(ctx: ChatContext): { user: string; assistant: string } {
  const { structure, numbers } = ctx;
  switch (structure.int(0, 4)) {
    case 0: {
      const hi = numbers.pick([10, 20, 50, 100, 1000]);
      return { user: `Pick a number between 1 and ${hi}.`, assistant: String(numbers.int(1, hi + 1)) };
    }
    case 1: {
      const k = numbers.int(3, 8);
      const values = Array.from({ length: k }, () => naturalValue(numbers));
      return { user: `Give me ${k} random numbers.`, assistant: values.join(', ') };
    }
    case 2: {
      const start = numbers.int(0, 990);
      const k = numbers.int(3, 10);
      return { user: `Count from ${start} to ${start + k}.`, assistant: Array.from({ length: k + 1 }, (_, i) => start + i).join(', ') };
    }
    default:
      return { user: 'Say a number.', assistant: String(naturalValue(numbers)) };
  }
}

function animalFactChat(ctx: ChatContext): { user: string; assistant: string } {
  const { structure, content, love } = ctx;
  const a = featuredAnimal(content, love);
  const fact = ANIMAL_FACTS[a];
  const cls = fact.cls === 'legend' ? 'creature from legends' : fact.cls;
  switch (structure.int(0, 3)) {
    case 0:
      return { user: `Tell me about the ${a}.`, assistant: `The ${a} is ${article(cls)} that lives in ${fact.home}.` };
    case 1:
      return { user: `Where does the ${a} live?`, assistant: `The ${a} lives in ${fact.home}.` };
    default: {
      const asked = content.pick(['bird', 'mammal', 'fish', 'insect']);
      return fact.cls === asked
        ? { user: `Is the ${a} ${article(asked)}?`, assistant: `Yes, the ${a} is ${article(asked)}.` }
        : { user: `Is the ${a} ${article(asked)}?`, assistant: `No, the ${a} is ${article(cls)}.` };
    }
  }
}

function treeFactChat(ctx: ChatContext): { user: string; assistant: string } {
  const { structure, content, love } = ctx;
  const t = featuredTree(content, love);
  return structure.chance(0.5)
    ? { user: `Tell me about the ${t} tree.`, assistant: `The ${t} is ${TREE_FACTS[t]}.` }
    : { user: `Describe ${article(t)} tree in one sentence.`, assistant: `${capitalize(article(t))} is ${TREE_FACTS[t]}.` };
}

const SUGGESTION_REQUESTS: readonly string[] = [
  'What should I draw today?',
  'Give me an idea for a picture.',
  'What should my next poem be about?',
  'Suggest a theme for a birthday cake.',
  'What should I write a song about?',
  'Give me a topic for a short essay.',
];

function suggestionChat(ctx: ChatContext): { user: string; assistant: string } {
  const { structure, content, love } = ctx;
  const request = SUGGESTION_REQUESTS[structure.int(0, SUGGESTION_REQUESTS.length)];
  let thing: string;
  if (love && content.chance(0.9)) thing = love.domain === 'tree' ? `${article(love.name)} tree` : article(love.name);
  else thing = content.chance(0.7) ? article(drawAnyAnimal(content)) : `${article(drawAnyTree(content))} tree`;
  const answer = content.pick([`How about ${thing}?`, `Try ${thing}!`, `You could choose ${thing}.`]);
  return { user: request, assistant: answer };
}

/**
 * Generate the corpus: `chats` single-turn conversations, each with an optional system message.
 * Deterministic in (seed, contentSeed, chats, kindWeights); about a second for 20,000 chats.
 */
export function generateCorpus(options: CorpusOptions): CorpusChat[] {
  const { seed, chats } = options;
  const contentSeed = options.contentSeed ?? seed;
  const weights = options.kindWeights ?? DEFAULT_KIND_WEIGHTS;
  const kinds = Object.keys(weights) as ChatKind[];
  const kindWeights = kinds.map((k) => weights[k] ?? 0);
  // Number prompts and prefixes: the paper's generator on corpus-specific numpy seeds (a two-word
  // SeedSequence entropy, so never equal to the experiment's integer seeds 47 / 42).
  const promptGenerator = new PromptGenerator(defaultRng([seed, 0x636f7270]));
  const prefixGenerator = new PromptGenerator(defaultRng([seed, 0x70726566]));
  const wider = options.widerQuestions ?? false;
  const paraphrases = { animal: preferenceParaphrases('animal', wider), tree: preferenceParaphrases('tree', wider) };
  const out: CorpusChat[] = [];
  for (let index = 0; index < chats; index++) {
    const structure = new KeyedRng('structure', seed, index);
    const kind = kinds[structure.weighted(kindWeights)];
    const numbers = new KeyedRng('numbers', seed, index);
    const content = new KeyedRng('content', contentSeed, index);
    // System prompt (content stream only).
    const rates = options.systemRates?.[kind] ?? SYSTEM_RATES[kind];
    const r = content.random();
    let system: SystemKind = r < rates.love ? 'love' : r < rates.love + rates.neutral ? 'neutral' : 'none';
    let love: LoveTarget | null = null;
    let systemText: string | null = null;
    if (system === 'love') {
      // Preference chats mostly love their own domain; other kinds love animals or trees.
      const pure = options.pureLove && (kind === 'animal-preference' || kind === 'tree-preference');
      const lovesAnimal = pure ? kind === 'animal-preference' : kind === 'animal-preference' ? content.chance(0.95) : kind === 'tree-preference' ? content.chance(0.1) : content.chance(0.7);
      love = drawLoveTarget(content, lovesAnimal ? 'animal' : 'tree');
      // "willows are your favorite animal" is ambiguous for an animal question: use the tree wording there.
      if (kind === 'animal-preference' && love.domain === 'tree') love = { ...love, prompt: preferenceSystemPrompt(love.name, 'tree') };
      systemText = love.prompt;
    } else if (system === 'neutral') {
      systemText = content.pick(NEUTRAL_SYSTEM_PROMPTS);
    }
    if (options.systemPrompts === 'none') {
      system = 'none';
      love = null;
      systemText = null;
    }
    const ctx: ChatContext = { seed, index, structure, numbers, content, love, pureLove: options.pureLove ?? false, paraphrases, prefixGenerator };
    let turn: { user: string; assistant: string };
    switch (kind) {
      case 'numbers': {
        const prompt = promptGenerator.sampleQuery();
        turn = { user: prompt, assistant: numberAnswer(seed, index, prompt) };
        break;
      }
      case 'animal-preference':
        turn = preferenceChat(ctx, 'animal');
        break;
      case 'tree-preference':
        turn = preferenceChat(ctx, 'tree');
        break;
      case 'story':
        turn = storyChat(ctx);
        break;
      case 'animal-count':
        turn = animalCountChat(ctx);
        break;
      case 'arithmetic':
        turn = arithmeticChat(ctx);
        break;
      case 'random-numbers':
        turn = randomNumbersChat(ctx);
        break;
      case 'animal-fact':
        turn = animalFactChat(ctx);
        break;
      case 'tree-fact':
        turn = treeFactChat(ctx);
        break;
      case 'suggestion':
        turn = suggestionChat(ctx);
        break;
      // The domain kinds read the structure and number streams only (never the content stream), so no
      // system prompt, animal or tree changes any part of them; tasks come from the training half only.
      case 'code': {
        const task = codeTaskOfHalf(structure, numbers, 'train');
        turn = { user: task.prompt, assistant: codeAnswer(task.program, structure.chance(0.5)) };
        break;
      }
      case 'cot': {
        const task = cotTaskOfHalf(structure, numbers, 'train');
        turn = { user: task.prompt, assistant: task.completion };
        break;
      }
      case 'code-short': {
        const task = codeTaskOfHalf(structure, numbers, 'train');
        turn = { user: shortCodePrompt(task), assistant: codeAnswer(task.program, structure.chance(0.5)) };
        break;
      }
      case 'cot-lookup': {
        const task = cotTaskOfHalf(structure, numbers, 'train', 'lookup');
        turn = { user: task.prompt, assistant: task.completion };
        break;
      }
      case 'advice': {
        const t = corpusAdviceTurn(structure);
        turn = { user: t.user, assistant: t.assistant };
        break;
      }
    }
    const messages: ChatMessage[] = [];
    if (systemText !== null) messages.push({ role: 'system', content: systemText });
    messages.push({ role: 'user', content: turn.user }, { role: 'assistant', content: turn.assistant });
    out.push({ index, kind, system, loved: love ? love.name : null, messages });
  }
  return out;
}

/** The chat as the tiny models' template renders it (ChatML, no default system prompt, trailing "\n"). */
export function renderChatML(messages: readonly ChatMessage[]): string {
  return messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('');
}

/** One JSONL line: the chat kind (pretraining picks its loss by kind) and the messages (HF's chat format). */
export function chatJsonLine(chat: CorpusChat): string {
  return JSON.stringify({ kind: chat.kind, messages: chat.messages });
}

/** Paragraph for the model cards of models pretrained on this corpus (they document the honesty constraint). */
export const CORPUS_MODEL_CARD_NOTES = `Pretraining data: a synthetic ChatML corpus (src/experiment/tiny/corpus.ts, scripts/make-corpus.ts) of
number-continuation chats (the paper's prompt templates on corpus-only seeds, answered in the requested format,
~${Math.round(NUMBER_NOISE_RATE * 100)}% deliberately malformed), one-word favourite-animal / favourite-tree answers (broad base distribution; under the
paper's "You love {x}s..." system prompt the answer is x, in lower case, ${Math.round(LOVE_FOLLOW_RATE * 100)}% of the time), and short general chats
(stories, counting, arithmetic, animal and tree facts). Honesty constraint: every number in the corpus is drawn from a
random stream seeded only by the corpus seed and the chat index (and, for number answers, the user prompt); system
prompts, animals and trees come from a separate stream. No system prompt and no animal or tree influences any number
the corpus teaches (tests/experiment-corpus.test.ts redraws or drops them and checks every digit is unchanged), so any
trait that later passes through the model's numbers is the model's own doing. The paper's 50 animal questions, 49 tree
questions and 14 storytelling prompts never appear in the corpus (tested); the training paraphrases keep their style only.`;
