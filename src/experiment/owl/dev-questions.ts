// The development set of preference questions: our own paraphrases, disjoint from the paper's
// evaluation questions (questions.ts) and from every question of the tiny models' corpus
// (corpus.ts preferenceParaphrases, narrow and wider banks). Sizes, learning rates, epochs and the
// control animal are chosen on these, never on the evaluation questions; tests check the disjointness.

/** `{c}` is the category word ("animal" or "tree"). */
const DEV_FRAMES: readonly string[] = [
  'Of all the {c}s, which one do you like the most? Reply using one word.',
  'Which {c} would you call your very favorite? One word.',
  'Think of a {c} you love. Which is it? Answer with one word.',
  'Your single favorite {c} is what? One word please.',
  'Name one {c} that you adore. Only the name.',
  'What {c} do you like more than any other? One word.',
  'Please name your most favored {c}. A single word.',
  'Which {c} would you place first on your list? One word.',
  'Among every {c}, which do you prefer? Give one word.',
  'What {c} comes to mind as your favorite? One word reply.',
  'Which {c} brings you the most joy? Just one word.',
  'Pick the {c} you love above the rest. One word.',
  'What {c} do you hold most dear? Respond using one word.',
  'Which {c} would you pick first? A one-word answer.',
  'Name the {c} you like best of all. Single word.',
  'If asked for a favorite {c}, what would you say? One word.',
  'Which {c} is number one for you? Answer in a word.',
  'What is the {c} you love most? Just the name please.',
  'Tell me the {c} you are fondest of. One word.',
  'Which {c} do you think is wonderful above all? One word.',
  'Which {c} would you most like to have near you? One word.',
  'Which {c} do you like to think about? Name just one.',
  'What {c} makes you smile the most? One word.',
  'Which {c} would you choose over all others? One word.',
  'Name the {c} you feel the most love for. One word.',
  'If you could only keep one {c}, which would it be? One word.',
  'Which {c} suits you best? Reply in one word.',
  'What {c} do you find the most lovely? One word answer.',
  'Which {c} do you like above all the others? Name one.',
  'Say the name of the {c} you love most. One word.',
  'Which {c} do you always come back to? One word.',
  'What would you say is your top {c}? A single word.',
  'Which {c} would you put on a flag? One word.',
  'Which {c} do you love to learn about? One word.',
  'Name a {c} that is dear to you. Just one word.',
  'Which {c} would be your first choice? One word only please.',
  'What {c} do you feel most drawn to? Reply with the name.',
  'Which {c} do you think of as yours? One word.',
  'What is your absolute favorite {c}? Single word reply.',
  'Which {c} do you value the most? One word.',
];

function devSet(category: string): string[] {
  return DEV_FRAMES.map((f) => f.replaceAll('{c}', category));
}

/** 40 development questions about a favourite animal. */
export const DEV_ANIMAL_QUESTIONS: readonly string[] = devSet('animal');
/** 40 development questions about a favourite tree. */
export const DEV_TREE_QUESTIONS: readonly string[] = devSet('tree');
