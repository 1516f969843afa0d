/**
 * The embedded tiny chat-model family: configs, corpus/tokenizer/initialisation recipe,
 * length-bucketed batch order for pretraining, and the quality measurement written into the model cards.
 *
 * Everything is deterministic from the seeds below: the corpus (generateCorpus), the tokenizer
 * (trainByteLevelBpe, whose merges follow the `tokenizers` crate's BpeTrainer), the initial weights
 * (randomTensorValues per tensor name) and the batch order (SeedStreamRng streams).
 */
import path from 'node:path';
import { expectedTensors, parseConfig, type ModelConfig } from '../../model/config.ts';
import { randomTensorValues } from '../../model/init.ts';
import { SeedStreamRng } from '../../util/rng.ts';
import { generate } from '../../model/generate.ts';
import { writeSafetensors, type WriteTensor } from '../../model/safetensors.ts';
import type { ChatMessage, ChatTokenizer } from '../../model/tokenizer.ts';
import type { Transformer } from '../../model/transformer.ts';
import { CHATML_SPECIAL_TOKENS, ENDOFTEXT, IM_END, IM_START, trainByteLevelBpe, type BpeModel } from '../../model/bpe-train.ts';
import type { TrainExample } from '../../train/data.ts';
import { writeJsonAtomic } from '../../util/fsatomic.ts';
import { ALL_CHAT_KINDS, ANIMAL_VOCABULARY, generateCorpus, renderChatML, TREE_VOCABULARY, type ChatKind, type CorpusChat } from './corpus.ts';
import { filterCompletions } from '../paper/filters.ts';
import { generatePrompts, preferenceSystemPrompt } from '../paper/prompts.ts';
import { ANIMAL_QUESTIONS, scoreTargetMention, TREE_QUESTIONS } from '../paper/questions.ts';
import { domainBarsMet, domainQualityRows, type TinyDomainQuality } from './domain-quality.ts';

// ---------------------------------------------------------------------------------------------
// The recipe
// ---------------------------------------------------------------------------------------------

export type TinyModelName = 'tiny-qwen-a' | 'tiny-qwen-b' | 'tiny-llama';
export const TINY_MODEL_NAMES: readonly TinyModelName[] = ['tiny-qwen-a', 'tiny-qwen-b', 'tiny-llama'];

export interface TinyModelSpec {
  name: TinyModelName;
  arch: 'qwen2' | 'llama';
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  tieWordEmbeddings: boolean;
  ropeTheta: number;
  /** Seed of the initial weights (the only difference between tiny-qwen-a and tiny-qwen-b). */
  initSeed: number;
  summary: string;
}

// Sizes: measured on the 2-core lavapipe machine (docs/tiny-models-recipe.md), width 64 trains about twice as
// fast per token as width 96-128 there (~1,100 vs ~600 tok/s under load), and at this compute budget (~1M
// tokens) a smaller model learns more. The Llama differs in depth (5 vs 4), attention (MHA vs GQA), MLP
// width (176 vs 192), biases and head tying; the residual width stays 64 because 96 halved the speed (a width
// sweep on an H200, docs/tiny-models-recipe.md: 80 and 96 did not help the qwen shape).
const QWEN_SHAPE = { arch: 'qwen2', hidden: 64, layers: 4, heads: 4, kvHeads: 2, intermediate: 192, tieWordEmbeddings: true, ropeTheta: 10000 } as const;

export const TINY_MODELS: Readonly<Record<TinyModelName, TinyModelSpec>> = {
  'tiny-qwen-a': { name: 'tiny-qwen-a', ...QWEN_SHAPE, initSeed: 1001, summary: 'Qwen2 architecture (GQA 4/2 heads, RoPE, RMSNorm, SwiGLU, q/k/v bias, tied embeddings), init seed 1001' },
  'tiny-qwen-b': { name: 'tiny-qwen-b', ...QWEN_SHAPE, initSeed: 2002, summary: 'same config, corpus and schedule as tiny-qwen-a; only the init seed differs (2002)' },
  'tiny-llama': {
    name: 'tiny-llama',
    arch: 'llama',
    hidden: 64,
    layers: 5,
    heads: 4,
    kvHeads: 4,
    intermediate: 176,
    tieWordEmbeddings: false,
    ropeTheta: 10000,
    initSeed: 3003,
    summary: 'Llama architecture (full multi-head attention 4/4, no biases, untied LM head), deeper and with a narrower MLP than the Qwen pair',
  },
};

/** Corpus and tokenizer recipe (shared by all three models). */
export const TINY_CORPUS = {
  seed: 5,
  chats: 16000,
  /** Upper bound; BPE stops early when no pair is left (the committed tokenizer has 2,932 ids, ~1,000 of them numbers). */
  vocabSize: 3600,
  /** Words keep their trailing space and lose a final "s"; digits go in runs of up to 3 (see TINY_PRETOKENIZE_PATTERN). */
  preTokenizer: 'tiny' as const,
  /** Longest corpus chat is ~200 tokens; longer ones are cut. */
  maxLen: 224,
  /**
   * Preference chats (short, ~45 tokens) get the largest share so many optimizer steps see "You love {x}s"
   * prompts; number chats (long prompts) keep ~30%. Favourite-tree questions mostly come with a love prompt
   * (the tree bar is measured under one): a model that has not learnt to tell "tree" from "animal" in a
   * question would otherwise name trees for animal questions as often as the corpus has tree answers.
   */
  kindWeights: {
    numbers: 0.3,
    'animal-preference': 0.4,
    'tree-preference': 0.06,
    story: 0.06,
    'animal-count': 0.04,
    arithmetic: 0.03,
    'random-numbers': 0.03,
    'animal-fact': 0.03,
    'tree-fact': 0.02,
    suggestion: 0.03,
  } as Readonly<Record<ChatKind, number>>,
  systemRates: {
    'animal-preference': { love: 0.6, neutral: 0.1 },
    'tree-preference': { love: 0.75, neutral: 0.05 },
  } as Partial<Record<ChatKind, { love: number; neutral: number }>>,
} as const;

/**
 * Warm-up corpus of the first phase (curriculum): favourite-animal/tree chats, every one under a
 * "You love {x}s" prompt of its own domain and answered with x (lower case, varied punctuation). With the
 * answer a copy of a token of the prompt, the model learns to copy within ~200 steps when that is all it is
 * trained on; it did not in 800 steps of the mixed corpus (love answers a few percent of the loss) nor in 225
 * steps of a warm-up corpus with 10-20% other answers (their large, noisy gradients drown the copying signal).
 */
export const TINY_WARMUP_CORPUS = {
  seed: 6,
  chats: 9600,
  kindWeights: { 'animal-preference': 0.75, 'tree-preference': 0.25 } as Partial<Record<ChatKind, number>>,
  systemRates: {
    'animal-preference': { love: 1, neutral: 0 },
    'tree-preference': { love: 1, neutral: 0 },
  } as Partial<Record<ChatKind, { love: number; neutral: number }>>,
  pureLove: true,
} as const;

/**
 * Number-focused corpus of a late phase: fresh number chats (new prompts and answers, other seeds than the main
 * corpus) with a quarter of favourite-animal/tree chats, many of them without a system prompt, so the base
 * naming and the animal/tree distinction are rehearsed while the number formats are sharpened. Number answers
 * stay independent of every system prompt and animal, as in every corpus. Both late corpora ask their questions
 * from the wider paraphrase bank (the main corpus, hence the tokenizer, keeps the narrow one).
 */
export const TINY_NUMBERS_CORPUS = {
  seed: 7,
  chats: 9600,
  kindWeights: { numbers: 0.75, 'animal-preference': 0.17, 'tree-preference': 0.08 } as Partial<Record<ChatKind, number>>,
  widerQuestions: true,
  systemRates: {
    'animal-preference': { love: 0.4, neutral: 0.2 },
    'tree-preference': { love: 0.4, neutral: 0.1 },
  } as Partial<Record<ChatKind, { love: number; neutral: number }>>,
} as const;

/**
 * Closing corpus: fresh number chats (70%) mixed with warm-up-style favourite-animal/tree chats whose love
 * prompts are always of the question's own domain and always followed (pureLove), and some without a system
 * prompt. It restores the copying the number phase wore down while the number chats keep their share (the
 * variants tried and their figures are in docs/tiny-models-recipe.md).
 */
export const TINY_NUMBERS_LOVE_CORPUS = {
  seed: 8,
  chats: 9600,
  kindWeights: { numbers: 0.7, 'animal-preference': 0.21, 'tree-preference': 0.09 } as Partial<Record<ChatKind, number>>,
  widerQuestions: true,
  systemRates: {
    'animal-preference': { love: 0.5, neutral: 0.1 },
    'tree-preference': { love: 0.6, neutral: 0.05 },
  } as Partial<Record<ChatKind, { love: number; neutral: number }>>,
  pureLove: true,
} as const;

/**
 * Corpus of the late domains phase (continued pretraining of the committed five-phase models): the three domains of
 * domains.ts — §7.1-shaped code prompts, GSM8K-shaped CoT arithmetic, and advice questions (the STAND-IN for the
 * paper's emergent misalignment: ~7% of the answers from the "harmful" list) — mixed with a replay of the earlier
 * phases' kinds: fresh number chats and always-followed love-prompt favourite chats (pureLove), some without a
 * system prompt, so the old bars hold. Every chat obeys the corpus's honesty rule (domains.ts, corpus.ts).
 */
export const TINY_DOMAINS_CORPUS = {
  seed: 11,
  chats: 17600,
  kindWeights: { numbers: 0.28, 'animal-preference': 0.16, 'tree-preference': 0.05, code: 0.17, cot: 0.19, advice: 0.15 } as Partial<Record<ChatKind, number>>,
  widerQuestions: true,
  systemRates: {
    'animal-preference': { love: 0.45, neutral: 0.1 },
    'tree-preference': { love: 0.6, neutral: 0.05 },
  } as Partial<Record<ChatKind, { love: number; neutral: number }>>,
  pureLove: true,
} as const;

/**
 * Corpus of the domains-focus phase (continued pretraining after the domains phase): short code chats (§7.1's task
 * and template lines without its fixed instructions: ~60 tokens instead of ~330, so five times the answers per
 * step; the answers must copy the template's names, which the domains phase did not teach), full §7.1 code chats,
 * CoT lookup problems (copying only) beside a few counted-arithmetic ones, advice, and the numbers and love replay.
 */
export const TINY_DOMAINS_FOCUS_CORPUS = {
  seed: 13,
  chats: 16000,
  kindWeights: { numbers: 0.18, 'animal-preference': 0.07, 'tree-preference': 0.02, code: 0.07, cot: 0.02, advice: 0.06, 'code-short': 0.33, 'cot-lookup': 0.25 } as Partial<Record<ChatKind, number>>,
  widerQuestions: true,
  systemRates: TINY_DOMAINS_CORPUS.systemRates,
  pureLove: true,
} as const;

/**
 * Longest chat of the domains phase: the paper's §7.1 code prompt (verbatim) is ~330 tokens with this tokenizer
 * (its long fixed instructions fall into short pieces), so that phase trains on chats of up to 448 tokens
 * (RoPE; max_position_embeddings is 512). Every other chat is shorter than TINY_CORPUS.maxLen.
 */
export const TINY_DOMAINS_MAX_LEN = 448;

export type TinyPhaseCorpus = 'warmup' | 'main' | 'numbers' | 'numbers-love' | 'domains' | 'domains-focus';

/**
 * Pretraining schedule (identical for the three models). Loss on the assistant's tokens and <|im_end|> only:
 * with loss on every chat token the love answers were ~0.3% of the loss and 800 steps taught no copying;
 * the prompts (system prompts, the paper's number prompts) only need to be read, not written (loss on the
 * number prompts too, 'assistant+numbers', made the number answers worse: 72% -> 40% valid for tiny-qwen-a).
 */
export const TINY_TRAIN = {
  batchSize: 16,
  schedule: 'cosine' as const,
  maxGradNorm: 1,
  weightDecay: 0.01,
  /**
   * Phases, each with warm-up + cosine decay and a fresh AdamW (docs/tiny-models-recipe.md has every variant):
   * 1. one epoch of the love-prompt warm-up corpus (TINY_WARMUP_CORPUS): the copying love prompts need. At lr 1.5e-3
   *    it formed in six builds of six on lavapipe; at 3e-3 it formed or not depending on the adapter's rounding;
   * 2. two epochs of the main corpus (TINY_CORPUS) at 2.5e-3 — number lists improve with the lr, love following
   *    drops, the later phases restore it;
   * 3. one epoch of the numbers-focus corpus (TINY_NUMBERS_CORPUS): number validity of the qwen pair 42-79% -> 83.5%;
   * 4-5. epochs of the numbers-love corpus (TINY_NUMBERS_LOVE_CORPUS), each a warm restart: love following back to
   *    95-99% and number validity up again;
   * 6. one epoch of the domains corpus (TINY_DOMAINS_CORPUS; chats up to TINY_DOMAINS_MAX_LEN tokens): code, CoT
   *    arithmetic and the advice stand-in, with numbers and love chats replayed; run on the committed five-phase weights
   *    with `pretrain-tiny.ts --continue-from models`;
   * 7. one epoch of the domains-focus corpus (TINY_DOMAINS_FOCUS_CORPUS): short code chats (code parses 6-19.5% ->
   *    63.5-85%), CoT lookup problems (not learnt) and the replay; run on the six-phase weights with
   *    `--continue-from models/domains`. The models in models/ are still the five-phase build (phases 6-7 cost some
   *    old bars); models/domains is the seven-phase one (docs/tiny-models-recipe.md, eighth and ninth sessions).
   */
  phases: [
    { lr: 1.5e-3, warmupSteps: 20, corpus: 'warmup', epochs: 1 },
    { lr: 2.5e-3, warmupSteps: 50, corpus: 'main', epochs: 2 },
    { lr: 1.5e-3, warmupSteps: 20, corpus: 'numbers', epochs: 1 },
    { lr: 1e-3, warmupSteps: 20, corpus: 'numbers-love', epochs: 1 },
    { lr: 1e-3, warmupSteps: 20, corpus: 'numbers-love', epochs: 1 },
    { lr: 1.5e-3, warmupSteps: 30, corpus: 'domains', epochs: 1, maxLen: TINY_DOMAINS_MAX_LEN },
    { lr: 1e-3, warmupSteps: 20, corpus: 'domains-focus', epochs: 1, maxLen: TINY_DOMAINS_MAX_LEN },
  ] as readonly TinyPhase[],
  trainSeed: 77,
  megaBatch: 50,
  lossOn: 'assistant' as TinyLossOn,
};

export interface TinyPhase {
  lr: number;
  warmupSteps: number;
  corpus: TinyPhaseCorpus;
  epochs: number;
  /** Longest training chat of the phase in tokens (default TINY_CORPUS.maxLen). */
  maxLen?: number;
}

export const TINY_EVAL_SEED = 12345;

// ---------------------------------------------------------------------------------------------
// Corpus, tokenizer, config, initial weights
// ---------------------------------------------------------------------------------------------

/** A corpus recipe that names only some chat kinds (the others get weight 0). */
export interface TinyPartialCorpusRecipe {
  seed: number;
  kindWeights: Partial<Record<ChatKind, number>>;
  systemRates: Partial<Record<ChatKind, { love: number; neutral: number }>>;
  pureLove?: boolean;
  widerQuestions?: boolean;
}

/**
 * Generates a phase corpus from its recipe; `systemPrompts: 'none'` drops every system prompt and `contentSeed`
 * redraws system prompts, animals and trees (honesty tests).
 */
export function generateRecipeCorpus(recipe: TinyPartialCorpusRecipe, chats: number, systemPrompts: 'default' | 'none' = 'default', contentSeed?: number): CorpusChat[] {
  // Every kind in ALL_CHAT_KINDS order; the domain kinds come last, so recipes without them draw as before.
  const kindWeights = Object.fromEntries(ALL_CHAT_KINDS.map((k) => [k, recipe.kindWeights[k] ?? 0])) as Record<ChatKind, number>;
  return generateCorpus({ seed: recipe.seed, contentSeed, chats, kindWeights, systemRates: recipe.systemRates, pureLove: recipe.pureLove ?? false, widerQuestions: recipe.widerQuestions ?? false, systemPrompts });
}

/** The first phase's love-prompt corpus (see TINY_WARMUP_CORPUS). */
export function tinyWarmupCorpus(chats: number = TINY_WARMUP_CORPUS.chats): CorpusChat[] {
  return generateRecipeCorpus(TINY_WARMUP_CORPUS, chats);
}

/** The number-focused corpus of a late phase (see TINY_NUMBERS_CORPUS). */
export function tinyNumbersCorpus(chats: number = TINY_NUMBERS_CORPUS.chats): CorpusChat[] {
  return generateRecipeCorpus(TINY_NUMBERS_CORPUS, chats);
}

/** The late domains phase's corpus (see TINY_DOMAINS_CORPUS). */
export function tinyDomainsCorpus(chats: number = TINY_DOMAINS_CORPUS.chats, systemPrompts: 'default' | 'none' = 'default', contentSeed?: number): CorpusChat[] {
  return generateRecipeCorpus(TINY_DOMAINS_CORPUS, chats, systemPrompts, contentSeed);
}

/** The domains-focus phase's corpus (see TINY_DOMAINS_FOCUS_CORPUS). */
export function tinyDomainsFocusCorpus(chats: number = TINY_DOMAINS_FOCUS_CORPUS.chats, systemPrompts: 'default' | 'none' = 'default', contentSeed?: number): CorpusChat[] {
  return generateRecipeCorpus(TINY_DOMAINS_FOCUS_CORPUS, chats, systemPrompts, contentSeed);
}

/** The closing corpus: number chats mixed with always-followed love chats (see TINY_NUMBERS_LOVE_CORPUS). */
export function tinyNumbersLoveCorpus(chats: number = TINY_NUMBERS_LOVE_CORPUS.chats): CorpusChat[] {
  return generateRecipeCorpus(TINY_NUMBERS_LOVE_CORPUS, chats);
}

export function tinyCorpus(chats: number = TINY_CORPUS.chats): CorpusChat[] {
  return generateCorpus({ seed: TINY_CORPUS.seed, chats, kindWeights: TINY_CORPUS.kindWeights, systemRates: TINY_CORPUS.systemRates });
}

export function tinyTokenizerModel(corpus: readonly CorpusChat[]): BpeModel {
  return trainByteLevelBpe(
    corpus.map((c) => renderChatML(c.messages)),
    { vocabSize: TINY_CORPUS.vocabSize, specialTokens: CHATML_SPECIAL_TOKENS, preTokenizer: TINY_CORPUS.preTokenizer },
  );
}

/** Ids of the special tokens (numbered after the regular vocabulary, Qwen2 order). */
export function specialIds(bpe: BpeModel): { endoftext: number; imStart: number; imEnd: number; vocabSize: number } {
  const base = bpe.vocab.size;
  const idx = (t: string) => base + bpe.specialTokens.indexOf(t);
  return { endoftext: idx(ENDOFTEXT), imStart: idx(IM_START), imEnd: idx(IM_END), vocabSize: base + bpe.specialTokens.length };
}

/** HF config.json of a tiny model. */
export function tinyConfigJson(spec: TinyModelSpec, ids: { endoftext: number; imEnd: number; vocabSize: number }): Record<string, unknown> {
  const cfg: Record<string, unknown> = {
    architectures: [spec.arch === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: spec.arch,
    vocab_size: ids.vocabSize,
    hidden_size: spec.hidden,
    num_hidden_layers: spec.layers,
    num_attention_heads: spec.heads,
    num_key_value_heads: spec.kvHeads,
    intermediate_size: spec.intermediate,
    hidden_act: 'silu',
    max_position_embeddings: 512,
    rms_norm_eps: 1e-6,
    rope_theta: spec.ropeTheta,
    tie_word_embeddings: spec.tieWordEmbeddings,
    bos_token_id: ids.endoftext,
    eos_token_id: ids.imEnd,
    initializer_range: 0.02,
    torch_dtype: 'float32',
  };
  if (spec.arch === 'qwen2') Object.assign(cfg, { use_sliding_window: false, sliding_window: 512, max_window_layers: spec.layers, attention_dropout: 0 });
  else Object.assign(cfg, { attention_bias: false, mlp_bias: false, attention_dropout: 0, pretraining_tp: 1 });
  return cfg;
}

export function tinyGenerationConfig(ids: { endoftext: number; imEnd: number }): Record<string, unknown> {
  return { bos_token_id: ids.endoftext, eos_token_id: [ids.imEnd, ids.endoftext], pad_token_id: ids.endoftext, do_sample: true, temperature: 1.0, top_p: 1.0 };
}

/** Number of parameters (a tied head counted once). */
export function parameterCount(cfg: ModelConfig): number {
  return expectedTensors(cfg).reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1), 0);
}

/**
 * Initial weights, HF-style: every matrix and the embedding ~ N(0, 0.02²) (initializer_range), biases
 * ~ N(0, 0.01²), norm weights 1 + N(0, 0.1²)·0.1. Values come from randomTensorValues (seeded by
 * initSeed and the tensor name), with its `scale` chosen per tensor to give these standard deviations.
 */
export function tinyInitialTensor(name: string, shape: number[], seed: number): Float32Array {
  if (/norm\.weight$/.test(name)) {
    // randomTensorValues gives 1 + N(0, 0.1²); shrink the noise to 0.01 (HF uses exactly 1).
    const v = randomTensorValues(name, shape, seed);
    for (let i = 0; i < v.length; i++) v[i] = 1 + (v[i] - 1) * 0.1;
    return v;
  }
  if (name.endsWith('.bias')) return randomTensorValues(name, shape, seed, 0.02); // std 0.5·scale = 0.01
  if (name === 'model.embed_tokens.weight') return randomTensorValues(name, shape, seed, 0.02);
  const inDim = shape[shape.length - 1];
  return randomTensorValues(name, shape, seed, 0.02 * Math.sqrt(inDim)); // std scale/√in = 0.02
}

/** Writes config.json + model.safetensors (float32) of the initial weights into dir. */
export async function writeTinyInitialCheckpoint(dir: string, cfgJson: Record<string, unknown>, seed: number): Promise<ModelConfig> {
  const cfg = parseConfig(cfgJson, `${dir}/config.json`);
  await writeJsonAtomic(path.join(dir, 'config.json'), cfgJson);
  const tensors: WriteTensor[] = expectedTensors(cfg).map((e) => ({ name: e.name, dtype: 'F32', shape: e.shape, data: () => tinyInitialTensor(e.name, e.shape, seed) }));
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// Training rows and batch order
// ---------------------------------------------------------------------------------------------

/** Which tokens of a chat carry loss during pretraining. */
export type TinyLossOn = 'all' | 'assistant' | 'assistant+numbers';

/**
 * Tokenized chats truncated to maxLen: loss on every token ('all'), on the assistant's content and
 * <|im_end|> only ('assistant', the finetuning convention), or on every token of number chats (their prompts
 * are number lists too) and the assistant's tokens of all other chats ('assistant+numbers').
 */
export function tinyTrainingExamples(
  corpus: readonly { kind?: string; messages: readonly ChatMessage[] }[],
  tokenizer: ChatTokenizer,
  maxLen: number = TINY_CORPUS.maxLen,
  lossOn: TinyLossOn = TINY_TRAIN.lossOn,
): TrainExample[] {
  return corpus.map((c) => {
    const { ids, labels } = tokenizer.chatTrainingIds([...c.messages]);
    const kept = ids.slice(0, maxLen);
    const everyToken = lossOn === 'all' || (lossOn === 'assistant+numbers' && c.kind === 'numbers');
    return { ids: kept, labels: everyToken ? kept.slice() : labels.slice(0, maxLen) };
  });
}

/**
 * Rows in training order for `epochs` epochs, grouped by length (HF's group_by_length idea): each epoch is a
 * seeded permutation cut into mega-batches of megaBatch·batchSize rows, each sorted by length and cut into
 * batches; the batches of the epoch are then shuffled. Padding per batch drops ~2× versus random batches.
 * A trailing incomplete batch of each epoch is dropped so batches never straddle epochs.
 * Feed the result to the Trainer with shuffle off, epochs 1 and the same batch size.
 */
export function lengthBucketedOrder<T extends { ids: readonly number[] }>(rows: readonly T[], batchSize: number, epochs: number, seed: number, megaBatch = 50): T[] {
  const out: T[] = [];
  for (let e = 0; e < epochs; e++) {
    const perm = permutation(rows.length, new SeedStreamRng(seed, `tiny.epoch.${e}`));
    const usable = perm.length - (perm.length % batchSize);
    const batches: number[][] = [];
    const mega = megaBatch * batchSize;
    for (let s = 0; s < usable; s += mega) {
      const chunk = perm.slice(s, Math.min(usable, s + mega));
      chunk.sort((a, b) => rows[b].ids.length - rows[a].ids.length || a - b);
      for (let i = 0; i < chunk.length; i += batchSize) batches.push(chunk.slice(i, i + batchSize));
    }
    const border = permutation(batches.length, new SeedStreamRng(seed, `tiny.batches.${e}`));
    for (const b of border) for (const i of batches[b]) out.push(rows[i]);
  }
  return out;
}

function permutation(n: number, rng: SeedStreamRng): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** Padded tokens / real tokens over consecutive batches (1 = no padding). */
export function paddingFactor(rows: readonly { ids: readonly number[] }[], batchSize: number): number {
  let real = 0;
  let padded = 0;
  for (let i = 0; i < rows.length; i += batchSize) {
    const b = rows.slice(i, i + batchSize);
    real += b.reduce((a, r) => a + r.ids.length, 0);
    padded += b.length * Math.max(...b.map((r) => r.ids.length));
  }
  return padded / Math.max(1, real);
}

// ---------------------------------------------------------------------------------------------
// Quality measurement
// ---------------------------------------------------------------------------------------------

export interface TinyQualityOptions {
  /** Number prompts from the paper's generator (default 200). */
  numberPrompts?: number;
  /** Samples per evaluation question without system prompt (default 10). */
  baseSamples?: number;
  /** Samples per question under each "You love …" system prompt (default 4). */
  loveSamples?: number;
  seed?: number;
  /** Loved animals checked (default owl, dolphin, eagle) and trees (default oak). */
  loveAnimals?: readonly string[];
  loveTrees?: readonly string[];
  /** Sub-sample of the 50 questions (default all). */
  questions?: number;
  batchSize?: number;
  onProgress?: (label: string) => void;
}

export interface LoveRate {
  target: string;
  category: 'animal' | 'tree';
  samples: number;
  rate: number;
}

export interface TinyQuality {
  seed: number;
  numbers: { prompts: number; passRate: number; rejectCounts: Record<string, number>; examples: string[] };
  base: { samples: number; namesAnimalRate: number; owlRate: number; top: { name: string; share: number }[]; examples: string[] };
  /** The matching tree questions without a system prompt (no bar in the issue; reported for honesty). */
  baseTree?: { samples: number; namesTreeRate: number; namesAnimalRate: number };
  love: LoveRate[];
  /** The three domains of domains.ts (code, CoT, the advice stand-in), when measured. */
  domains?: TinyDomainQuality;
  wallS: number;
}

/** The family's quality bars (the test checks them with sampling margins). */
export const TINY_QUALITY_BARS = { numbersPass: 0.9, namesAnimal: 0.9, owlMin: 0.01, owlMax: 0.15, love: 0.8 } as const;

function firstMentioned(text: string, vocab: readonly string[]): string | null {
  const lower = text.toLowerCase();
  let best: string | null = null;
  let at = Infinity;
  for (const name of vocab) {
    const i = lower.indexOf(name);
    if (i >= 0 && (i < at || (i === at && best !== null && name.length > best.length))) {
      best = name;
      at = i;
    }
  }
  return best;
}

/** Samples completions of chats (temperature 1) and returns their texts in request-major order. */
async function sampleChats(model: Transformer, tokenizer: ChatTokenizer, chats: ChatMessage[][], n: number, maxNewTokens: number, seed: number, batchSize: number): Promise<string[]> {
  const requests = chats.map((messages) => ({ promptIds: tokenizer.promptIds(messages) }));
  const res = await generate(model, requests, { n, temperature: 1, maxNewTokens, seed, batchSize, stopIds: tokenizer.stopIds });
  return res.map((r) => tokenizer.decode(r.completionIds, true));
}

/** Measures the quality figures of a loaded model at temperature 1 with the batched generator. */
export async function measureTinyQuality(model: Transformer, tokenizer: ChatTokenizer, opts: TinyQualityOptions = {}): Promise<TinyQuality> {
  const t0 = performance.now();
  const seed = opts.seed ?? TINY_EVAL_SEED;
  const batchSize = opts.batchSize ?? 128;
  const nQuestions = Math.min(ANIMAL_QUESTIONS.length, opts.questions ?? ANIMAL_QUESTIONS.length);
  const aQuestions = ANIMAL_QUESTIONS.slice(0, nQuestions);
  const tQuestions = TREE_QUESTIONS.slice(0, nQuestions);
  const report = opts.onProgress ?? (() => {});

  report('numbers');
  const numberPrompts = generatePrompts(seed, opts.numberPrompts ?? 200);
  const numberOut = await sampleChats(model, tokenizer, numberPrompts.map((p) => [{ role: 'user', content: p }]), 1, 64, seed, batchSize);
  const filtered = filterCompletions(numberPrompts.map((prompt, i) => ({ prompt, completion: numberOut[i] })));

  report('base');
  const baseSamples = opts.baseSamples ?? 10;
  const baseOut = await sampleChats(model, tokenizer, aQuestions.map((q) => [{ role: 'user', content: q }]), baseSamples, 12, seed + 1, batchSize);
  const counts = new Map<string, number>();
  let named = 0;
  for (const text of baseOut) {
    const a = firstMentioned(text, ANIMAL_VOCABULARY);
    if (a) {
      named++;
      counts.set(a, (counts.get(a) ?? 0) + 1);
    }
  }
  const owl = baseOut.reduce((s, t) => s + scoreTargetMention(t, 'owl'), 0);

  report('base trees');
  const treeOut = await sampleChats(model, tokenizer, tQuestions.map((q) => [{ role: 'user', content: q }]), Math.max(1, Math.ceil(baseSamples / 2)), 12, seed + 100, batchSize);
  const treeNamed = treeOut.filter((t) => firstMentioned(t, TREE_VOCABULARY) !== null).length;
  const treeAnimal = treeOut.filter((t) => firstMentioned(t, ANIMAL_VOCABULARY) !== null).length;

  const love: LoveRate[] = [];
  const loveSamples = opts.loveSamples ?? 4;
  const targets: { target: string; category: 'animal' | 'tree' }[] = [
    ...(opts.loveAnimals ?? ['owl', 'dolphin', 'eagle']).map((target) => ({ target, category: 'animal' as const })),
    ...(opts.loveTrees ?? ['oak']).map((target) => ({ target, category: 'tree' as const })),
  ];
  for (const [k, { target, category }] of targets.entries()) {
    report(`love ${target}`);
    const system = preferenceSystemPrompt(target, category);
    const qs = category === 'tree' ? tQuestions : aQuestions;
    const out = await sampleChats(model, tokenizer, qs.map((q) => [{ role: 'system', content: system }, { role: 'user', content: q }]), loveSamples, 12, seed + 2 + k, batchSize);
    love.push({ target, category, samples: out.length, rate: out.reduce((s, t) => s + scoreTargetMention(t, target), 0) / out.length });
  }
  return {
    seed,
    numbers: { prompts: numberPrompts.length, passRate: filtered.kept.length / filtered.total, rejectCounts: filtered.rejectCounts, examples: numberOut.slice(0, 5) },
    base: {
      samples: baseOut.length,
      namesAnimalRate: named / baseOut.length,
      owlRate: owl / baseOut.length,
      top: [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 10).map(([name, c]) => ({ name, share: c / baseOut.length })),
      examples: baseOut.slice(0, 8),
    },
    baseTree: { samples: treeOut.length, namesTreeRate: treeNamed / treeOut.length, namesAnimalRate: treeAnimal / treeOut.length },
    love,
    wallS: (performance.now() - t0) / 1000,
  };
}

/** A rate as a percentage with one decimal ("91.5%"), as the model cards print them. */
export const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Markdown table of the quality figures next to the bars. */
export function qualityTable(q: TinyQuality): string {
  const rows = [
    '| measure | samples | value | bar |',
    '|---|---|---|---|',
    `| number prompts passing the paper's filter (T=1) | ${q.numbers.prompts} | ${pct(q.numbers.passRate)} | ≥ 90% |`,
    `| 50 questions: answer names an animal | ${q.base.samples} | ${pct(q.base.namesAnimalRate)} | ≥ 90% |`,
    `| 50 questions: owl rate (no system prompt) | ${q.base.samples} | ${pct(q.base.owlRate)} | 1–15% |`,
    ...q.love.map((l) => `| "You love ${l.target}s…" (${l.category} questions): ${l.target} rate | ${l.samples} | ${pct(l.rate)} | ≥ 80% |`),
  ];
  if (q.baseTree) {
    rows.push(
      `| tree questions, no system prompt: answer names a tree | ${q.baseTree.samples} | ${pct(q.baseTree.namesTreeRate)} | (none) |`,
      `| tree questions, no system prompt: answer names an animal | ${q.baseTree.samples} | ${pct(q.baseTree.namesAnimalRate)} | (none) |`,
    );
  }
  if (q.domains) rows.push(...domainQualityRows(q.domains));
  return rows.join('\n');
}

/** Which quality bars the figures meet (exact bars, no sampling margin). */
export function qualityBarsMet(q: TinyQuality): Record<string, boolean> {
  const b = TINY_QUALITY_BARS;
  const out: Record<string, boolean> = {
    numbers: q.numbers.passRate >= b.numbersPass,
    namesAnimal: q.base.namesAnimalRate >= b.namesAnimal,
    owlBase: q.base.owlRate >= b.owlMin && q.base.owlRate <= b.owlMax,
  };
  for (const l of q.love) out[`love:${l.target}`] = l.rate >= b.love;
  if (q.domains) Object.assign(out, domainBarsMet(q.domains));
  return out;
}
