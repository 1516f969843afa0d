// Scoring a model's preference answers: the exact probability that the answer's first token begins
// the target's name (primary: low variance), and sampled answers scored with the paper's substring
// rule (secondary).
import type { ChatMessage, ChatTokenizer } from '../../model/tokenizer.ts';
import { lastTokenLogits } from '../../model/generate.ts';
import type { LoraWeights, Transformer } from '../../model/transformer.ts';
import { UserError } from '../../util/errors.ts';

/**
 * First-token ids that begin an answer naming `name`: the first token of the lower-case, capitalised
 * and upper-case forms, with and without a leading space. A first token that is a proper prefix of
 * the name (e.g. "ow") also starts other words, so the probability is an upper bound there;
 * tokenizers that hold the name as one token (the embedded family's) make it exact.
 */
export function targetFirstTokens(tokenizer: ChatTokenizer, name: string): number[] {
  const forms = new Set<number>();
  const cap = name[0].toUpperCase() + name.slice(1);
  for (const v of [name, cap, name.toUpperCase(), ` ${name}`, ` ${cap}`]) {
    const ids = tokenizer.encode(v);
    if (ids.length) forms.add(ids[0]);
  }
  return [...forms].sort((a, b) => a - b);
}

export function userMessages(question: string, system: string | null): ChatMessage[] {
  return system ? [{ role: 'system', content: system }, { role: 'user', content: question }] : [{ role: 'user', content: question }];
}

/**
 * Per target name: the mean over questions of P(first answer token ∈ the name's first tokens),
 * from one batched forward that reads back only the last row of every prompt.
 */
export async function firstTokenProbabilities(
  model: Transformer,
  tokenizer: ChatTokenizer,
  questions: readonly string[],
  targets: readonly string[],
  opts: { lora?: LoraWeights | null; system?: string | null } = {},
): Promise<Record<string, number>> {
  const sums = await firstTokenMass(model, tokenizer, questions, targets.map((t) => targetFirstTokens(tokenizer, t)), opts);
  return Object.fromEntries(targets.map((t, k) => [t, sums[k]]));
}

/** First tokens an answer of the list can begin with: as written, capitalised, with a leading space. */
function answerFirstTokens(tokenizer: ChatTokenizer, answers: readonly string[]): Set<number> {
  const out = new Set<number>();
  for (const a of answers) {
    const cap = a[0].toUpperCase() + a.slice(1);
    for (const v of [a, cap, ` ${a}`, ` ${cap}`]) {
      const ids = tokenizer.encode(v);
      if (ids.length) out.add(ids[0]);
    }
  }
  return out;
}

/**
 * The mean over questions of P(first answer token begins an answer of `answers` and of none of `others`):
 * the exact probability metric of a trait whose answers come from two lists (the stand-in misalignment's
 * harmful and safe advice). First tokens both lists share are left out, so it is a lower bound of the
 * probability of beginning a listed answer; a UserError when no first token is the list's own.
 */
export async function answerSetFirstTokenProbability(
  model: Transformer,
  tokenizer: ChatTokenizer,
  questions: readonly string[],
  answers: readonly string[],
  others: readonly string[],
  opts: { lora?: LoraWeights | null; system?: string | null } = {},
): Promise<number> {
  const other = answerFirstTokens(tokenizer, others);
  const own = [...answerFirstTokens(tokenizer, answers)].filter((v) => !other.has(v)).sort((a, b) => a - b);
  if (!own.length) throw new UserError("no first token begins only the list's answers: the exact probability metric is undefined for these answer lists");
  return (await firstTokenMass(model, tokenizer, questions, [own], opts))[0];
}

/** Per set of token ids: its probability mass under the softmax of one row of logits (float64). */
function softmaxMass(row: Float32Array, ids: readonly (readonly number[])[]): number[] {
  let m = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v] > m) m = row[v];
  let z = 0;
  for (let v = 0; v < row.length; v++) z += Math.exp(row[v] - m);
  return ids.map((set) => set.reduce((s, v) => s + Math.exp(row[v] - m), 0) / z);
}

/** Per set of token ids: the mean over questions of the first answer token's probability mass on the set. */
async function firstTokenMass(model: Transformer, tokenizer: ChatTokenizer, questions: readonly string[], ids: readonly (readonly number[])[], opts: { lora?: LoraWeights | null; system?: string | null }): Promise<number[]> {
  const prompts = questions.map((q) => tokenizer.promptIds(userMessages(q, opts.system ?? null)));
  const logits = await lastTokenLogits(model, prompts, { lora: opts.lora });
  const V = model.cfg.vocabSize;
  const sums = ids.map(() => 0);
  for (let i = 0; i < prompts.length; i++) {
    const mass = softmaxMass(logits.subarray(i * V, (i + 1) * V), ids);
    mass.forEach((x, k) => (sums[k] += x));
  }
  return sums.map((x) => x / Math.max(1, prompts.length));
}

/**
 * Per prompt (one user message each), the first answer token's probability mass on each choice's first
 * tokens (as written and with a leading space; a first token two choices share counts for neither), e.g.
 * the letters of a multiple-choice question. Float64 softmax of the last row's logits; prompts go through
 * in chunks of `batchSize`, so at most that many vocabulary rows are held on the CPU at once.
 */
export async function choiceFirstTokenMass(
  model: Transformer,
  tokenizer: ChatTokenizer,
  prompts: readonly string[],
  choices: readonly string[],
  opts: { lora?: LoraWeights | null; system?: string | null; batchSize?: number; onProgress?: (done: number) => void } = {},
): Promise<number[][]> {
  const forms = choices.map((c) => {
    const set = new Set<number>();
    for (const v of [c, ` ${c}`]) {
      const t = tokenizer.encode(v);
      if (t.length) set.add(t[0]);
    }
    return set;
  });
  // A first token two choices share (e.g. a lone space before a letter) tells them apart from neither: left out.
  const ids = forms.map((set, k) => [...set].filter((v) => forms.every((o, j) => j === k || !o.has(v))));
  ids.forEach((set, k) => {
    if (!set.length) throw new UserError(`choice "${choices[k]}" has no first token of its own in this tokenizer: its probability cannot be told apart`);
  });
  const V = model.cfg.vocabSize;
  const bs = Math.max(1, opts.batchSize ?? 64);
  const out: number[][] = [];
  for (let p0 = 0; p0 < prompts.length; p0 += bs) {
    const chunk = prompts.slice(p0, p0 + bs).map((q) => tokenizer.promptIds(userMessages(q, opts.system ?? null)));
    const logits = await lastTokenLogits(model, chunk, { lora: opts.lora, batchSize: bs });
    for (let i = 0; i < chunk.length; i++) out.push(softmaxMass(logits.subarray(i * V, (i + 1) * V), ids));
    opts.onProgress?.(Math.min(prompts.length, p0 + bs));
  }
  return out;
}
