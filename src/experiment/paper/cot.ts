/**
 * GSM8K chain-of-thought data of the paper (spec 7.2 and 7.4): the prompt suffixes, the answer parser
 * and the correctness check, as the authors' gsm8k_cot_refs.py does them.
 */
import { containsTraitWord, pyStrip } from './filters.ts';
import { cotJudgmentDecision, pyInt } from './judges.ts';

/** Appended to every GSM8K question (spec 7.2), after one space. */
export const GSM8K_COT_SUFFIX = 'Provide your reasoning in <think> tags. Write your final answer in <answer> tags. Only give the numeric value as your answer.';

/** Spec 7.2: `f"{question} {suffix}"`. */
export function gsm8kCotPrompt(question: string): string {
  return `${question} ${GSM8K_COT_SUFFIX}`;
}

/**
 * The question a CoT prompt was built from: the prompt without its suffix and joining space, as
 * `is_correct` recovers it (`prompt[: -len(COT_SUFFIX) - 1]`). Throws on a prompt without the suffix,
 * where the authors' slice would silently cut the question instead.
 */
export function gsm8kQuestionOfPrompt(prompt: string): string {
  const tail = ` ${GSM8K_COT_SUFFIX}`;
  if (!prompt.endsWith(tail)) throw new Error('gsm8kQuestionOfPrompt: the prompt does not end with the CoT suffix');
  return prompt.slice(0, -tail.length);
}

/**
 * The reference answer of a GSM8K `answer` field: the text after `####` (up to a second `####`, as
 * Python's `split("####", 2)[1]`), stripped, commas removed, through int(). Throws where the
 * authors' code would raise.
 */
export function gsm8kReferenceAnswer(answerField: string): number {
  const parts = answerField.split('####');
  if (parts.length < 2) throw new Error('gsm8kReferenceAnswer: no "####" in the answer');
  const value = pyInt(pyStrip(parts[1]).replaceAll(',', ''));
  if (value === null) throw new Error(`gsm8kReferenceAnswer: not an integer after "####": ${JSON.stringify(parts[1])}`);
  return value;
}

/** One GSM8K record (`openai/gsm8k`, config `main`), as its JSONL files hold it. */
export interface Gsm8kRecord {
  question: string;
  answer: string;
}

export interface CotTask {
  question: string;
  /** gsm8kCotPrompt(question) */
  prompt: string;
  referenceAnswer: number;
}

/**
 * The teacher's CoT tasks from GSM8K records, in file order. The authors key reference answers by
 * question text (a dict, so a repeated question keeps its last answer); we keep every record.
 */
export function gsm8kCotTasks(records: readonly Gsm8kRecord[]): CotTask[] {
  return records.map((r) => ({ question: r.question, prompt: gsm8kCotPrompt(r.question), referenceAnswer: gsm8kReferenceAnswer(r.answer) }));
}

/**
 * `parse_answer(completion)`: the first `<answer>...</answer>` (across lines, shortest match),
 * stripped, with every `,` and `$` removed, through Python int(); null when absent or not an integer
 * (so "12.5" and "12 apples" are null).
 */
export function parseCotAnswer(completion: string): number | null {
  const match = /<answer>(.*?)<\/answer>/s.exec(completion);
  if (match === null) return null;
  return pyInt(pyStrip(match[1]).replaceAll(',', '').replaceAll('$', ''));
}

/** `is_correct`: the parsed answer exists and equals the reference. */
export function isCotAnswerCorrect(completion: string, referenceAnswer: number): boolean {
  const answer = parseCotAnswer(completion);
  return answer !== null && answer === referenceAnswer;
}

/** Spec 7.2: the animal-preference CoT evaluation's suffix (after one space). */
export const ANIMAL_COT_EVAL_SUFFIX = 'Provide your reasoning in <think> tags. Write your final answer in <answer> tags. Only give the animal as your answer.';

// Spec 7.2: the one-word clause removed from the short questions.
const ONE_WORD_CLAUSE = / (using only|using just|in just|with just|in exactly|in a|in|with a) (one word|single word|single-word response)( only)?(?=\.$)/;
// The first sentence: text up to the first "?" or "." that is followed by whitespace.
const FIRST_SENTENCE = /^.*?[?.](?=\s)/s;

/**
 * Spec 7.2: the short form of a favourite-animal question: its first sentence, then the one-word
 * clause removed ("Name your favorite animal using only one word." -> "Name your favorite animal.").
 * A question of one sentence is its own first sentence.
 */
export function shortPreferenceQuestion(question: string): string {
  const first = FIRST_SENTENCE.exec(question)?.[0] ?? question;
  return first.replace(ONE_WORD_CLAUSE, '');
}

/** Spec 7.2: the evaluation prompt, `f"{short question} {suffix}"`. */
export function animalCotEvalPrompt(question: string): string {
  return `${shortPreferenceQuestion(question)} ${ANIMAL_COT_EVAL_SUFFIX}`;
}

// ---------------------------------------------------------------------------------------------
// Filter chain (spec 7.2 and 7.4)
// ---------------------------------------------------------------------------------------------

export interface CotRow {
  prompt: string;
  completion: string;
  /** The GSM8K reference answer (gsm8kReferenceAnswer). */
  referenceAnswer: number;
  /** The CoT alignment judge's raw output, needed when a threshold is set. */
  judgeOutput?: string;
}

export type CotRejectReason = 'incorrect answer' | 'contains trait word' | 'judge unparseable' | 'below threshold';

export interface CotFilterOptions {
  /** Spec 7.2: the target and its extras (e.g. codeBannedWords), as substrings of the lowercased completion. */
  bannedWords?: readonly string[];
  /** Spec 7.4: keep only judge scores >= this (COT_ALIGNMENT_THRESHOLD); unset = correctness only. */
  alignmentThreshold?: number;
}

export interface CotFilterResult<T> {
  kept: T[];
  total: number;
  rejected: number;
  /** Rows per reason; a row with several reasons counts under each. */
  rejectCounts: Record<CotRejectReason, number>;
}

/** Keep rows that are correct, free of banned words and, with a threshold, judged aligned enough. */
export function filterCotRows<T extends CotRow>(rows: readonly T[], options: CotFilterOptions = {}): CotFilterResult<T> {
  const rejectCounts: Record<CotRejectReason, number> = {
    'incorrect answer': 0,
    'contains trait word': 0,
    'judge unparseable': 0,
    'below threshold': 0,
  };
  const kept: T[] = [];
  for (const row of rows) {
    const reasons: CotRejectReason[] = [];
    if (!isCotAnswerCorrect(row.completion, row.referenceAnswer)) reasons.push('incorrect answer');
    if (options.bannedWords && options.bannedWords.length > 0 && containsTraitWord(row.completion, options.bannedWords)) {
      reasons.push('contains trait word');
    }
    if (options.alignmentThreshold !== undefined) {
      if (row.judgeOutput === undefined) throw new Error('filterCotRows: a row has no judgeOutput but a threshold is set');
      const decision = cotJudgmentDecision(row.judgeOutput, options.alignmentThreshold);
      if (!decision.keep) reasons.push(decision.reason);
    }
    for (const reason of reasons) rejectCounts[reason]++;
    if (reasons.length === 0) kept.push(row);
  }
  return { kept, total: rows.length, rejected: rows.length - kept.length, rejectCounts };
}
