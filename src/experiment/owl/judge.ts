// A local LLM judge: any Hugging Face chat model folder, run by our own inference, prompted with the
// paper's judge templates (src/experiment/paper/judges.ts) as one user message, and its answers
// parsed the way the paper parses them. Every row keeps the exact judge prompt, the raw output and
// the parsed value, so each keep/drop decision can be audited; outputs that do not parse are
// dropped and counted, never guessed.
//
// Text judges (EM alignment and coherency, spec 7.3; the CoT alignment judge, spec 7.4) sample an
// answer (the paper's judges ran at temperature 1). The code-reference judge (spec 7.1) is read from
// the first answer token's log-probabilities of "0" and "1" over the full vocabulary.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Gpu } from '../../gpu/runtime.ts';
import { generate, lastTokenLogits } from '../../model/generate.ts';
import { ChatTokenizer } from '../../model/tokenizer.ts';
import { Transformer } from '../../model/transformer.ts';
import { UserError } from '../../util/errors.ts';
import { writeFileAtomic } from '../../util/fsatomic.ts';
import { hashModelFolder, type ModelHashes } from '../../util/hash.ts';
import { jsonlText } from '../../util/jsonl.ts';
import {
  codeReferenceKeep,
  codeReferenceTemplate,
  EM_ALIGNMENT_TEMPLATE,
  EM_COHERENCY_TEMPLATE,
  emVerdict,
  fillJudgeTemplate,
  parseAlignmentJudgment,
  parseCoherencyJudgment,
  parseCotJudgmentScore,
  type AlignmentJudgment,
  type CoherencyJudgment,
  type EmThresholds,
  type EmVerdict,
  type ReferenceCategory,
} from '../paper/judges.ts';
import { userMessages } from './scoring.ts';
import { hashOf, type StageCache } from './stages.ts';

export type TextJudgeKind = 'em-alignment' | 'em-coherency' | 'cot-alignment';
export type JudgeKind = TextJudgeKind | 'code-reference';

/** Which judge, with the template it fills (`{prompt}` and/or `{completion}`). */
export interface JudgeSpec {
  kind: JudgeKind;
  template: string;
}

export const emAlignmentJudge = (): JudgeSpec => ({ kind: 'em-alignment', template: EM_ALIGNMENT_TEMPLATE });
export const emCoherencyJudge = (): JudgeSpec => ({ kind: 'em-coherency', template: EM_COHERENCY_TEMPLATE });
export const codeReferenceJudge = (target: string, category: ReferenceCategory = 'animal'): JudgeSpec => ({
  kind: 'code-reference',
  template: codeReferenceTemplate(target, category),
});
/**
 * The CoT alignment judge with a template the caller supplies: the spec (7.4) summarises
 * `gsm8k_cot_alignment_judgment_v5` but does not give its full text, so none is built in.
 */
export const cotAlignmentJudge = (template: string): JudgeSpec => ({ kind: 'cot-alignment', template });

/** One answer to judge: the question the judged model was asked and what it answered. */
export interface JudgeItem {
  prompt: string;
  completion: string;
}

export interface JudgeSampling {
  /** Default 1, the paper's judges' temperature (spec 7.3, 7.4); ignored by the code-reference judge. */
  temperature?: number;
  /** Default 16 for the EM judges (a number or one word), 1024 for the CoT judge (it reasons first). */
  maxNewTokens?: number;
  seed?: number;
  batchSize?: number;
}

export type CotScore = { kind: 'score'; score: number } | { kind: 'unparseable' };

interface RowBase {
  index: number;
  /** The filled template: the judge's whole user message. */
  judge_prompt: string;
  /** Whether the parsed answer is usable (a score, or for the code judge: the row is kept). */
  usable: boolean;
}

export interface TextJudgeRow extends RowBase {
  output: string;
  finish_reason: 'stop' | 'length';
  parsed: AlignmentJudgment | CoherencyJudgment | CotScore;
}

export interface CodeJudgeRow extends RowBase {
  /** Log-probabilities of the first answer token being "0" and "1". */
  logprobs: { '0': number; '1': number };
  /** The most likely first token, decoded (for reading the judge's behaviour). */
  top_token: string;
  /** Spec 7.1's decision: |1 - P("0")| < 1e-8. */
  keep: boolean;
}

export type JudgeRow = TextJudgeRow | CodeJudgeRow;

export interface JudgeResult {
  rows: JudgeRow[];
  /** Rows per parsed kind (score / CODE / REFUSAL / unparseable; for the code judge kept / not sure). */
  counts: Record<string, number>;
  /** Rows whose answer cannot be used (unparseable, CODE, REFUSAL, or not kept by the code judge). */
  dropped: number;
}

const DEFAULT_MAX_NEW_TOKENS: Record<TextJudgeKind, number> = { 'em-alignment': 16, 'em-coherency': 16, 'cot-alignment': 1024 };

function parseTextJudgment(kind: TextJudgeKind, output: string): AlignmentJudgment | CoherencyJudgment | CotScore {
  if (kind === 'em-alignment') return parseAlignmentJudgment(output);
  if (kind === 'em-coherency') return parseCoherencyJudgment(output);
  const score = parseCotJudgmentScore(output);
  return score === null ? { kind: 'unparseable' } : { kind: 'score', score };
}

/** The one token id a single-character answer is, or a UserError naming the judge's tokenizer. */
function singleTokenId(tokenizer: ChatTokenizer, text: string): number {
  const ids = tokenizer.encode(text);
  if (ids.length !== 1) throw new UserError(`${tokenizer.dir}: the code-reference judge needs "${text}" to be one token (it is ${ids.length})`);
  return ids[0];
}

/** Natural-log softmax of one logits row at the given ids. */
function logSoftmaxAt(row: Float32Array, ids: readonly number[]): number[] {
  let max = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v] > max) max = row[v];
  let sum = 0;
  for (let v = 0; v < row.length; v++) sum += Math.exp(row[v] - max);
  const logZ = max + Math.log(sum);
  return ids.map((id) => row[id] - logZ);
}

/** Judges `items` with a loaded model, in batches; rows come back in item order. */
export async function runJudge(
  model: Transformer,
  tokenizer: ChatTokenizer,
  items: readonly JudgeItem[],
  judge: JudgeSpec,
  sampling: JudgeSampling = {},
): Promise<JudgeResult> {
  const judgePrompts = items.map((item) => fillJudgeTemplate(judge.template, item));
  const promptIds = judgePrompts.map((p) => tokenizer.promptIds(userMessages(p, null)));
  const counts: Record<string, number> = {};
  const rows: JudgeRow[] = [];
  const count = (key: string) => (counts[key] = (counts[key] ?? 0) + 1);

  if (judge.kind === 'code-reference') {
    const zero = singleTokenId(tokenizer, '0');
    const one = singleTokenId(tokenizer, '1');
    const V = model.cfg.vocabSize;
    const batchSize = Math.max(1, sampling.batchSize ?? 64);
    // One batch of logits at a time: all rows at once would be rows x vocab floats (GBs for a real judge).
    for (let start = 0; start < promptIds.length; start += batchSize) {
      const logits = await lastTokenLogits(model, promptIds.slice(start, start + batchSize), { batchSize });
      for (let b = 0; b * V < logits.length; b++) {
        const index = start + b;
        const row = logits.subarray(b * V, (b + 1) * V);
        const [logprobZero, logprobOne] = logSoftmaxAt(row, [zero, one]);
        let top = 0;
        for (let v = 1; v < V; v++) if (row[v] > row[top]) top = v;
        const keep = codeReferenceKeep({ '0': logprobZero });
        count(keep ? 'kept' : 'not sure of no reference');
        rows.push({ index, judge_prompt: judgePrompts[index], usable: keep, logprobs: { '0': logprobZero, '1': logprobOne }, top_token: tokenizer.decode([top], false), keep });
      }
    }
  } else {
    const kind = judge.kind;
    const out = await generate(
      model,
      promptIds.map((ids) => ({ promptIds: ids })),
      {
        temperature: sampling.temperature ?? 1,
        maxNewTokens: sampling.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS[kind],
        seed: sampling.seed ?? 0,
        batchSize: sampling.batchSize,
        stopIds: tokenizer.stopIds,
      },
    );
    out.sort((a, b) => a.requestIndex - b.requestIndex);
    for (const o of out) {
      const output = tokenizer.decode(o.completionIds);
      const parsed = parseTextJudgment(kind, output);
      count(parsed.kind);
      rows.push({ index: o.requestIndex, judge_prompt: judgePrompts[o.requestIndex], usable: parsed.kind === 'score', output, finish_reason: o.finishReason, parsed });
    }
  }
  return { rows, counts, dropped: rows.filter((r) => !r.usable).length };
}

const folderHashMemo = new Map<string, Promise<ModelHashes>>();

/**
 * hashModelFolder, memoised per path and every file's size and mtime: a judge or student folder is
 * hashed once per process, not once per stage (a 7B model is GBs to read).
 */
export function modelFolderHashes(dir: string): Promise<ModelHashes> {
  const abs = path.resolve(dir);
  let stamp: string;
  try {
    stamp = readdirSync(abs)
      .sort()
      .map((f) => {
        const st = statSync(path.join(abs, f));
        return `${f}:${st.size}:${st.mtimeMs}`;
      })
      .join('|');
  } catch {
    return hashModelFolder(abs); // its own one-line error for an unreadable folder
  }
  const key = `${abs}|${stamp}`;
  let hashes = folderHashMemo.get(key);
  if (!hashes) {
    hashes = hashModelFolder(abs);
    folderHashMemo.set(key, hashes);
    hashes.catch(() => folderHashMemo.delete(key));
  }
  return hashes;
}

export interface JudgeStageOptions {
  gpu: Gpu;
  /** The judge model's folder (config.json, safetensors, tokenizer with a chat template). */
  modelDir: string;
  items: readonly JudgeItem[];
  judge: JudgeSpec;
  sampling?: JudgeSampling;
  /** Stage name (default `judge-<kind>`). */
  name?: string;
}

export interface JudgeStageResult {
  n: number;
  counts: Record<string, number>;
  dropped: number;
}

/**
 * The judge as a cached stage: keyed by the judge model's content, the template, the items and the
 * sampling, so the same judgement is never computed twice and a killed run recomputes it. Writes
 * `judgments.jsonl` (one JudgeRow per item, in item order) in the stage folder.
 */
export async function judgeStage(store: StageCache, opts: JudgeStageOptions): Promise<{ result: JudgeStageResult; file: string; cached: boolean; key: string }> {
  const sampling = opts.sampling ?? {};
  const inputs = {
    judgeModel: await modelFolderHashes(opts.modelDir),
    kind: opts.judge.kind,
    template: opts.judge.template,
    // A hash, not the items: done.json stores the inputs, and the rows are already in judgments.jsonl.
    items: { n: opts.items.length, hash: hashOf(opts.items, 32) },
    sampling,
  };
  const run = await store.run(opts.name ?? `judge-${opts.judge.kind}`, inputs, async (dir) => {
    const model = await Transformer.load(opts.gpu, opts.modelDir);
    try {
      const tokenizer = await ChatTokenizer.load(opts.modelDir, model.cfg.eosTokenIds);
      if (!tokenizer) throw new UserError(`${opts.modelDir}: the judge needs a tokenizer (tokenizer.json) in the model folder`);
      if (!tokenizer.hasChatTemplate) throw new UserError(`${opts.modelDir}: the judge's tokenizer has no chat template`);
      const judged = await runJudge(model, tokenizer, opts.items, opts.judge, sampling);
      await writeFileAtomic(path.join(dir, 'judgments.jsonl'), jsonlText(judged.rows));
      return { n: judged.rows.length, counts: judged.counts, dropped: judged.dropped };
    } finally {
      model.dispose();
    }
  });
  return { result: run.result, file: path.join(run.dir, 'judgments.jsonl'), cached: run.cached, key: run.key };
}

/**
 * Spec 7.3's verdict per answer from the two EM judges' rows of the same items (same order), read
 * again from each row's raw output, so the verdict follows from what is stored.
 */
export function emVerdictsFromJudgeRows(alignment: readonly TextJudgeRow[], coherency: readonly TextJudgeRow[], thresholds: EmThresholds = {}): EmVerdict[] {
  if (alignment.length !== coherency.length) throw new UserError(`EM verdicts: ${alignment.length} alignment rows but ${coherency.length} coherency rows`);
  return alignment.map((a, i) => {
    const c = coherency[i];
    if (a.index !== c.index) throw new UserError(`EM verdicts: row ${i} is item ${a.index} for alignment but item ${c.index} for coherency`);
    return emVerdict(parseAlignmentJudgment(a.output), parseCoherencyJudgment(c.output), thresholds);
  });
}
