// Scoring a model's preference answers: the exact probability that the answer's first token begins
// the target's name (primary: low variance), and sampled answers scored with the paper's substring
// rule (secondary).
import type { ChatMessage, ChatTokenizer } from '../../model/tokenizer.ts';
import { lastTokenLogits } from '../../model/generate.ts';
import type { LoraWeights, Transformer } from '../../model/transformer.ts';

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
  const prompts = questions.map((q) => tokenizer.promptIds(userMessages(q, opts.system ?? null)));
  const logits = await lastTokenLogits(model, prompts, { lora: opts.lora });
  const V = model.cfg.vocabSize;
  const ids = targets.map((t) => targetFirstTokens(tokenizer, t));
  const sums = targets.map(() => 0);
  for (let i = 0; i < prompts.length; i++) {
    const row = logits.subarray(i * V, (i + 1) * V);
    let m = -Infinity;
    for (let v = 0; v < V; v++) if (row[v] > m) m = row[v];
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(row[v] - m);
    ids.forEach((set, k) => {
      let hit = 0;
      for (const v of set) hit += Math.exp(row[v] - m);
      sums[k] += hit / z;
    });
  }
  return Object.fromEntries(targets.map((t, k) => [t, sums[k] / Math.max(1, prompts.length)]));
}
