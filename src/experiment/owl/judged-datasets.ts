// Teacher datasets filtered with a local judge, as the paper filters its code (spec 7.1) and
// chain-of-thought (spec 7.2, 7.4) data: every row is judged (the authors judge the raw dataset),
// the judge's stored rows are joined back by index, then the domain's filter chain decides, with a
// count per reason (a row failing several ways counts under each).
import type { Gpu } from '../../gpu/runtime.ts';
import { UserError } from '../../util/errors.ts';
import { readJsonl } from '../../util/jsonl.ts';
import { codeBannedWords, filterCodeRows, type CodeFilterResult, type CodeRow } from '../paper/code-data.ts';
import { filterCotRows, type CotFilterResult, type CotRow } from '../paper/cot.ts';
import type { CompletionRow } from '../paper/filters.ts';
import type { ReferenceCategory } from '../paper/judges.ts';
import { codeReferenceJudge, cotAlignmentJudge, judgeStage, type CodeJudgeRow, type JudgeSampling, type TextJudgeRow } from './judge.ts';
import type { StageCache } from './stages.ts';

/** The judge's rows, checked to be one per dataset row in the same order. */
function joinedJudgments<T extends { index: number }>(judgments: readonly T[], n: number, file: string): readonly T[] {
  if (judgments.length !== n || judgments.some((j, i) => j.index !== i)) throw new UserError(`${file}: the judge's rows do not match the ${n} dataset rows`);
  return judgments;
}

export interface JudgedCodeOptions {
  gpu: Gpu;
  judgeDir: string;
  rows: readonly CompletionRow[];
  target: string;
  category?: ReferenceCategory;
  batchSize?: number;
}

/** Spec 7.1: banned words (codeBannedWords) and the code-reference judge sure of no reference. */
export async function filterCodeWithJudge(store: StageCache, opts: JudgedCodeOptions): Promise<CodeFilterResult<CodeRow> & { judgments: string }> {
  const judged = await judgeStage(store, {
    gpu: opts.gpu,
    modelDir: opts.judgeDir,
    items: opts.rows.map((r) => ({ prompt: r.prompt, completion: r.completion })),
    judge: codeReferenceJudge(opts.target, opts.category),
    sampling: { batchSize: opts.batchSize },
  });
  const judgments = joinedJudgments(readJsonl<CodeJudgeRow>(judged.file), opts.rows.length, judged.file);
  const rows: CodeRow[] = opts.rows.map((r, i) => ({ prompt: r.prompt, completion: r.completion, judgeFirstTokenLogprobs: judgments[i].logprobs }));
  return { ...filterCodeRows(rows, { bannedWords: codeBannedWords(opts.target, opts.category), useJudge: true }), judgments: judged.file };
}

export interface JudgedCotOptions {
  gpu: Gpu;
  judgeDir: string;
  rows: readonly CotRow[];
  /** The CoT alignment judge's template (the spec does not hold gsm8k_cot_alignment_judgment_v5's text). */
  template: string;
  /** Spec 7.4: COT_ALIGNMENT_THRESHOLD (78). */
  alignmentThreshold: number;
  bannedWords?: readonly string[];
  sampling?: JudgeSampling;
}

/** Spec 7.4: correct answers whose judge score is at least the threshold (plus banned words, if any). */
export async function filterCotWithJudge(store: StageCache, opts: JudgedCotOptions): Promise<CotFilterResult<CotRow> & { judgments: string }> {
  const judged = await judgeStage(store, {
    gpu: opts.gpu,
    modelDir: opts.judgeDir,
    items: opts.rows.map((r) => ({ prompt: r.prompt, completion: r.completion })),
    judge: cotAlignmentJudge(opts.template),
    sampling: opts.sampling,
  });
  const judgments = joinedJudgments(readJsonl<TextJudgeRow>(judged.file), opts.rows.length, judged.file);
  const rows: CotRow[] = opts.rows.map((r, i) => ({ ...r, judgeOutput: judgments[i].output }));
  return { ...filterCotRows(rows, { bannedWords: opts.bannedWords, alignmentThreshold: opts.alignmentThreshold }), judgments: judged.file };
}
