// Rebuilding the embedded tiny chat models from seeds (scripts/pretrain-tiny.ts is its CLI): synthetic corpus →
// byte-level BPE tokenizer (shared) → seeded initial weights → phased full pretraining with the project's
// Trainer → HF folder → quality measurement → README.md model card.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { adapterLabel } from '../../gpu/device.ts';
import { getGpu, type Gpu } from '../../gpu/runtime.ts';
import { CORPUS_MODEL_CARD_NOTES, chatJsonLine, type CorpusChat } from './corpus.ts';
import {
  lengthBucketedOrder,
  measureTinyQuality,
  paddingFactor,
  parameterCount,
  pct,
  qualityBarsMet,
  qualityTable,
  specialIds,
  tinyConfigJson,
  tinyCorpus,
  tinyGenerationConfig,
  tinyTokenizerModel,
  tinyTrainingExamples,
  type TinyLossOn,
  type TinyPhaseCorpus,
  tinyNumbersCorpus,
  tinyNumbersLoveCorpus,
  tinyDomainsCorpus,
  tinyDomainsFocusCorpus,
  tinyWarmupCorpus,
  TINY_DOMAINS_CORPUS,
  TINY_DOMAINS_FOCUS_CORPUS,
  TINY_CORPUS,
  TINY_NUMBERS_CORPUS,
  TINY_NUMBERS_LOVE_CORPUS,
  TINY_WARMUP_CORPUS,
  TINY_MODELS,
  TINY_TRAIN,
  writeTinyInitialCheckpoint,
  type TinyModelName,
  type TinyModelSpec,
  type TinyQuality,
} from './models.ts';
import { writeBpeTokenizer, type BpeModel } from '../../model/bpe-train.ts';
import { parseConfig } from '../../model/config.ts';
import { ChatTokenizer, type ChatMessage } from '../../model/tokenizer.ts';
import { Transformer } from '../../model/transformer.ts';
import { saveFullModel } from '../../train/full.ts';
import { hasCheckpoint } from '../../train/state.ts';
import { Trainer, type TrainConfig } from '../../train/trainer.ts';
import { UserError } from '../../util/errors.ts';
import { readControlJson, writeFileAtomic, writeJsonAtomic } from '../../util/fsatomic.ts';
import { readJsonl } from '../../util/jsonl.ts';
import { Progress } from '../../util/progress.ts';
import { corpusStats } from './make-corpus.ts';
import { measureTinyDomains, TINY_DOMAIN_MAX_POSITIONS } from './domain-quality.ts';

export interface PreparedCorpus {
  /** JSONL file of each corpus a phase can train on (WORK/corpus/). */
  phaseFiles: Record<TinyPhaseCorpus, string>;
  tokenizerDir: string;
  bpe: BpeModel;
  stats: Record<string, unknown>;
}

/** The running totals saved inside each checkpoint. */
const TOTALS_FILE = 'totals.json';

/** File name of each phase corpus in WORK/corpus (the main corpus keeps the name make-corpus gives it). */
const PHASE_CORPUS_FILES: Record<TinyPhaseCorpus, string> = { main: 'corpus.jsonl', warmup: 'warmup.jsonl', numbers: 'numbers.jsonl', 'numbers-love': 'numbers-love.jsonl', domains: 'domains.jsonl', 'domains-focus': 'domains-focus.jsonl' };

/** Corpus + tokenizer (deterministic; rewritten identically on every call). */
export async function prepareCorpus(work: string): Promise<PreparedCorpus> {
  const corpus = tinyCorpus();
  const bpe = tinyTokenizerModel(corpus);
  const corpusDir = path.join(work, 'corpus');
  const tokenizerDir = path.join(work, 'tokenizer');
  mkdirSync(corpusDir, { recursive: true });
  mkdirSync(tokenizerDir, { recursive: true });
  const generators: Record<TinyPhaseCorpus, () => CorpusChat[]> = { main: () => corpus, warmup: () => tinyWarmupCorpus(), numbers: () => tinyNumbersCorpus(), 'numbers-love': () => tinyNumbersLoveCorpus(), domains: () => tinyDomainsCorpus(), 'domains-focus': () => tinyDomainsFocusCorpus() };
  const phaseFiles = {} as Record<TinyPhaseCorpus, string>;
  for (const [name, file] of Object.entries(PHASE_CORPUS_FILES) as [TinyPhaseCorpus, string][]) {
    phaseFiles[name] = path.join(corpusDir, file);
    await writeFileAtomic(phaseFiles[name], generators[name]().map(chatJsonLine).join('\n') + '\n');
  }
  // writeBpeTokenizer writes tokenizer.json + tokenizer_config.json (ChatML template, eos <|im_end|>).
  const tmp = path.join(tokenizerDir, `.tmp-${process.pid}`);
  writeBpeTokenizer(tmp, bpe, 512);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await writeFileAtomic(path.join(tokenizerDir, f), readFileSync(path.join(tmp, f)));
  const stats = corpusStats(corpus, bpe);
  await writeJsonAtomic(path.join(corpusDir, 'corpus-stats.json'), stats);
  return { phaseFiles, tokenizerDir, bpe, stats };
}

/** Initial HF folder of a model: config, seeded weights, tokenizer files, generation config. */
export async function writeInitialFolder(dir: string, spec: TinyModelSpec, prepared: PreparedCorpus): Promise<Record<string, unknown>> {
  mkdirSync(dir, { recursive: true });
  const ids = specialIds(prepared.bpe);
  const cfgJson = tinyConfigJson(spec, ids);
  await writeTinyInitialCheckpoint(dir, cfgJson, spec.initSeed);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await writeFileAtomic(path.join(dir, f), readFileSync(path.join(prepared.tokenizerDir, f)));
  await writeJsonAtomic(path.join(dir, 'generation_config.json'), tinyGenerationConfig(ids));
  return cfgJson;
}

interface RunTotals {
  tokens: number;
  paddedTokens: number;
  wallS: number;
}

export interface TrainSummary {
  name: TinyModelName;
  parameters: number;
  steps: number;
  rows: number;
  epochs: number;
  tokens: number;
  paddedTokens: number;
  wallS: number;
  tokensPerS: number;
  paddedTokensPerS: number;
  finalLoss: number;
  meanLossLast50: number;
  initialLoss: number;
  loadAverage: number[];
  /** WebGPU adapter and CPU count of the training run (absent in summaries of older builds). */
  machine?: string;
  phases: PhaseSummary[];
}

interface PhaseSummary {
  phase: number;
  steps: number;
  tokens: number;
  paddedTokens: number;
  wallS: number;
  initialLoss: number;
  finalLoss: number;
  meanLossLast50: number;
  loadAverage: number[];
}

/**
 * One phase = its epochs of the length-bucketed order with their own warm-up + cosine schedule and a fresh
 * AdamW (warm restart). Starts from the previous phase's final weights (or the initial folder); writes
 * PHASE/state (resumable, every 50 steps), PHASE/final (HF folder), PHASE/summary.json and PHASE/loss.csv.
 */
async function trainPhase(
  gpu: Gpu,
  spec: TinyModelSpec,
  phase: number,
  fromDir: string,
  initDir: string,
  phaseDir: string,
  corpus: { messages: ChatMessage[] }[],
  resume: boolean,
  quiet: boolean,
  maxSteps?: number,
): Promise<PhaseSummary> {
  const stateDir = path.join(phaseDir, 'state');
  const t = TINY_TRAIN;
  const ph = t.phases[phase];
  const maxLen = ph.maxLen ?? TINY_CORPUS.maxLen;
  const model = await Transformer.load(gpu, fromDir, { maxPositions: maxLen + 1 });
  const tokenizer = await ChatTokenizer.load(initDir, model.cfg.eosTokenIds);
  if (!tokenizer) throw new UserError(`${initDir}: no tokenizer`);
  const examples = tinyTrainingExamples(corpus, tokenizer, maxLen);
  // Epochs first..first+epochs−1 of the bucketed order, numbered across phases (each epoch is its own
  // seeded permutation, so no two phases see the same order).
  const first = t.phases.slice(0, phase).reduce((a, p) => a + p.epochs, 0);
  const all = lengthBucketedOrder(examples, t.batchSize, first + ph.epochs, t.trainSeed, t.megaBatch);
  const perEpoch = all.length / (first + ph.epochs);
  const ordered = all.slice(first * perEpoch);
  const cfg: TrainConfig = {
    mode: 'full',
    lr: ph.lr,
    epochs: 1,
    batchSize: t.batchSize,
    gradAccum: 1,
    warmupSteps: ph.warmupSteps,
    schedule: t.schedule,
    maxGradNorm: t.maxGradNorm,
    weightDecay: t.weightDecay,
    optimizer: 'adamw',
    seed: t.trainSeed,
    shuffle: false, // the bucketed order is the shuffle
    checkpointing: false,
    distillWeight: 0,
    maxSteps,
  };
  const trainer = new Trainer(gpu, model, ordered, cfg, null);
  let totals: RunTotals = { tokens: 0, paddedTokens: 0, wallS: 0 };
  if (resume && hasCheckpoint(stateDir)) {
    const got = trainer.loadState(stateDir);
    for (const n of got.notes) console.error(`warning: ${n}`);
    // The totals are part of the checkpoint, so they always match its step.
    const saved = readControlJson(path.join(got.dir, TOTALS_FILE), 'training totals') as RunTotals | null;
    if (saved) totals = saved;
    if (!quiet) console.error(`${spec.name}: phase ${phase + 1} resuming at step ${trainer.state.step}/${trainer.totalSteps}`);
  }
  if (!quiet) {
    console.error(
      `${spec.name}: phase ${phase + 1}/${t.phases.length}, ${parameterCount(model.cfg).toLocaleString('en')} parameters, ${ordered.length} rows, ` +
        `${trainer.totalSteps} steps of ${cfg.batchSize}, lr ${cfg.lr}, max length ${maxLen}, padding factor ${paddingFactor(ordered, cfg.batchSize).toFixed(2)}`,
    );
  }
  const bar = new Progress(`${spec.name} phase ${phase + 1}`, trainer.totalSteps, { unit: 'step', quiet });
  bar.update(trainer.state.step);
  const segStart = performance.now();
  const base = { ...totals };
  const save = async (tr: Trainer) => {
    await tr.saveState(stateDir, (dir) => writeJsonAtomic(path.join(dir, TOTALS_FILE), { ...totals, wallS: base.wallS + (performance.now() - segStart) / 1000 }));
  };
  await trainer.run({
    saveEvery: 50,
    save,
    onStep: (s) => {
      totals.tokens += s.tokens;
      // s.step is 1-based (the step just finished).
      const rows = ordered.slice((s.step - 1) * cfg.batchSize, s.step * cfg.batchSize);
      totals.paddedTokens += rows.length * Math.max(...rows.map((r) => r.ids.length));
      const wall = base.wallS + (performance.now() - segStart) / 1000;
      bar.update(s.step, `loss ${s.loss.toFixed(3)} lr ${s.lr.toExponential(1)} ${(totals.tokens / Math.max(1e-9, wall)).toFixed(0)} tok/s`);
    },
  });
  bar.finish();
  totals.wallS = base.wallS + (performance.now() - segStart) / 1000;
  await saveFullModel(gpu, model.weights, model.cfg, initDir, path.join(phaseDir, 'final'));
  const losses = trainer.state.losses;
  const last = losses.slice(-50);
  const summary: PhaseSummary = {
    phase: phase + 1,
    steps: trainer.state.step,
    tokens: totals.tokens,
    paddedTokens: totals.paddedTokens,
    wallS: totals.wallS,
    initialLoss: losses[0]?.loss ?? NaN,
    finalLoss: losses.at(-1)?.loss ?? NaN,
    meanLossLast50: last.reduce((a, l) => a + l.loss, 0) / Math.max(1, last.length),
    loadAverage: loadavg(),
  };
  await writeFileAtomic(path.join(phaseDir, 'loss.csv'), ['step,loss,lr,grad_norm', ...losses.map((l) => `${l.step},${l.loss},${l.lr},${l.gradNorm ?? ''}`)].join('\n') + '\n');
  await writeJsonAtomic(path.join(phaseDir, 'summary.json'), summary);
  trainer.dispose();
  model.dispose();
  if (!quiet) console.error(`${spec.name}: phase ${phase + 1} done: ${summary.steps} steps, final loss ${summary.finalLoss.toFixed(4)}, ${(summary.tokens / summary.wallS).toFixed(0)} tok/s, ${(summary.wallS / 60).toFixed(1)} min`);
  return summary;
}

/**
 * A committed model to continue from: its folder (DIR/<name>) holds the weights after its training.json's phases,
 * which must be the first phases of this recipe, and the tokenizer must be this recipe's (byte-identical).
 */
export function continuationStart(continueFrom: string, name: TinyModelName, prepared: PreparedCorpus): { dir: string; phases: PhaseSummary[] } {
  const dir = path.join(continueFrom, name);
  const trainingFile = path.join(dir, 'training.json');
  if (!existsSync(path.join(dir, 'model.safetensors'))) throw new UserError(`--continue-from ${continueFrom}: no ${name}/model.safetensors there`);
  const training = readControlJson(trainingFile, 'training summary') as Partial<TrainSummary> | null;
  if (!training || !Array.isArray(training.phases) || training.phases.length === 0) throw new UserError(`--continue-from: ${trainingFile} is missing or has no phases`);
  const done = training.phases.length;
  if (done >= TINY_TRAIN.phases.length) throw new UserError(`--continue-from: ${name} there already has ${done} phases (the recipe has ${TINY_TRAIN.phases.length}); nothing to continue`);
  const ours = readFileSync(path.join(prepared.tokenizerDir, 'tokenizer.json'));
  const theirs = existsSync(path.join(dir, 'tokenizer.json')) ? readFileSync(path.join(dir, 'tokenizer.json')) : null;
  if (!theirs || !ours.equals(theirs)) throw new UserError(`--continue-from: ${dir}/tokenizer.json is not this recipe's tokenizer`);
  return { dir, phases: training.phases as PhaseSummary[] };
}

async function pretrainOne(gpu: Gpu, spec: TinyModelSpec, prepared: PreparedCorpus, work: string, out: string, resume: boolean, quiet: boolean, maxSteps?: number, continueFrom?: string): Promise<TrainSummary> {
  const modelWork = path.join(work, spec.name);
  const initDir = path.join(modelWork, 'init');
  await writeInitialFolder(initDir, spec, prepared);
  const start = continueFrom === undefined ? null : continuationStart(continueFrom, spec.name, prepared);
  const readChats = (file: string) => readJsonl<{ kind?: string; messages: ChatMessage[] }>(file);
  // Only the corpora the phases name are read, each once.
  const corpora = new Map<TinyPhaseCorpus, { kind?: string; messages: ChatMessage[] }[]>();
  const corpusOf = (name: TinyPhaseCorpus) => {
    if (!corpora.has(name)) corpora.set(name, readChats(prepared.phaseFiles[name]));
    return corpora.get(name)!;
  };
  // Continuing: the committed phases are taken as done (their figures from the committed training.json).
  const phases: PhaseSummary[] = start ? [...start.phases] : [];
  let from = start ? start.dir : initDir;
  if (start && !quiet) console.error(`${spec.name}: continuing from ${start.dir} after its ${start.phases.length} phases`);
  for (let p = start ? start.phases.length : 0; p < TINY_TRAIN.phases.length; p++) {
    const phaseDir = path.join(modelWork, `phase-${p + 1}`);
    const doneFile = path.join(phaseDir, 'summary.json');
    const done = resume && existsSync(path.join(phaseDir, 'final', 'model.safetensors')) ? readPhaseSummary(doneFile) : null;
    if (done) {
      phases.push(done);
      if (!quiet) console.error(`${spec.name}: phase ${p + 1} already done (${doneFile})`);
    } else {
      phases.push(await trainPhase(gpu, spec, p, from, initDir, phaseDir, corpusOf(TINY_TRAIN.phases[p].corpus), resume, quiet, maxSteps));
    }
    from = path.join(phaseDir, 'final');
  }
  // The last phase's weights are the model.
  const outDir = path.join(out, spec.name);
  const model = await Transformer.load(gpu, from, { maxPositions: TINY_CORPUS.maxLen + 1 });
  await saveFullModel(gpu, model.weights, model.cfg, initDir, outDir);
  if (start) {
    // The quality files of the committed model are those of the model continued from (kept for the comparison).
    for (const f of ['quality.json', 'quality-large.json']) if (existsSync(path.join(start.dir, f))) await writeFileAtomic(path.join(modelWork, `continued-from-${f}`), readFileSync(path.join(start.dir, f)));
  }
  const sum = (k: 'steps' | 'tokens' | 'paddedTokens' | 'wallS') => phases.reduce((a, ph) => a + ph[k], 0);
  const summary: TrainSummary = {
    name: spec.name,
    parameters: parameterCount(model.cfg),
    steps: sum('steps'),
    rows: TINY_CORPUS.chats,
    epochs: phases.length,
    tokens: sum('tokens'),
    paddedTokens: sum('paddedTokens'),
    wallS: sum('wallS'),
    tokensPerS: sum('tokens') / Math.max(1e-9, sum('wallS')),
    paddedTokensPerS: sum('paddedTokens') / Math.max(1e-9, sum('wallS')),
    finalLoss: phases.at(-1)!.finalLoss,
    meanLossLast50: phases.at(-1)!.meanLossLast50,
    initialLoss: phases[0].initialLoss,
    loadAverage: phases.at(-1)!.loadAverage,
    machine: machineText(gpu),
    phases,
  };
  model.dispose();
  await writeJsonAtomic(path.join(modelWork, 'train-summary.json'), summary);
  if (!quiet) console.error(`${spec.name}: ${summary.steps} steps, final loss ${summary.finalLoss.toFixed(4)}, ${summary.tokensPerS.toFixed(0)} tok/s, ${(summary.wallS / 60).toFixed(1)} min → ${outDir}`);
  return summary;
}

/** A finished phase's summary, or null (then the phase is redone): a corrupt one is named, never trusted. */
function readPhaseSummary(file: string): PhaseSummary | null {
  try {
    const s = readControlJson(file, 'phase summary') as PhaseSummary | null;
    if (s === null) return null;
    if (typeof s.steps !== 'number' || typeof s.finalLoss !== 'number') throw new UserError(`${file}: corrupt phase summary (no steps/finalLoss)`);
    return s;
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    console.error(`warning: ${e.message}; redoing the phase`);
    return null;
  }
}

function machineText(gpu: Gpu): string {
  return `WebGPU adapter "${adapterLabel(gpu.info.adapterInfo)}"${gpu.isSoftware ? ' (software, on the CPU)' : ''}, ${cpus().length} CPU cores (${cpus()[0]?.model ?? 'unknown CPU'})`;
}

/** Measures quality on the saved folder and writes OUT/<name>/quality.json. */
export async function measureFolder(gpu: Gpu, dir: string, quiet: boolean): Promise<TinyQuality> {
  const model = await Transformer.load(gpu, dir, { maxPositions: TINY_DOMAIN_MAX_POSITIONS });
  const tokenizer = await ChatTokenizer.load(dir, model.cfg.eosTokenIds);
  if (!tokenizer) throw new UserError(`${dir}: no tokenizer.json`);
  const onProgress = (l: string) => !quiet && console.error(`${path.basename(dir)}: measuring ${l}`);
  const q = await measureTinyQuality(model, tokenizer, { onProgress });
  // The domains phase's figures (code, CoT, the advice stand-in and its two finetuned teachers).
  if (TINY_TRAIN.phases.some((p) => p.corpus === 'domains')) q.domains = await measureTinyDomains(model, tokenizer, { seed: q.seed, onProgress }, gpu, dir);
  model.dispose();
  await writeJsonAtomic(path.join(dir, 'quality.json'), { ...q, barsMet: qualityBarsMet(q) });
  return q;
}

const LOSS_ON_TEXT: Record<TinyLossOn, string> = {
  all: 'every token of the chat (system, user, assistant, ChatML markers), as in pretraining',
  assistant: "the assistant's tokens and `<|im_end|>` only",
  'assistant+numbers': "every token of the number chats (their prompts are number lists too) and the assistant's tokens and `<|im_end|>` of all other chats",
};

/** Binomial standard error of a rate, in percentage points. */
const se = (rate: number, n: number) => (100 * Math.sqrt((rate * (1 - rate)) / n)).toFixed(1);

/**
 * The model card. `larger`: an optional second measurement at larger sample counts (quality-large.json beside the
 * weights, made by tiny-quality.ts), shown as one line because the default counts leave ~2 points of noise.
 */
export function modelCard(spec: TinyModelSpec, cfgJson: Record<string, unknown>, train: TrainSummary | null, quality: TinyQuality | null, corpusStatsJson: Record<string, unknown>, larger?: TinyQuality): string {
  const t = TINY_TRAIN;
  const perKind = corpusStatsJson.perKind as Record<string, { chats: number; tokens: number }>;
  const kinds = Object.entries(perKind)
    .filter(([k]) => k !== 'all')
    .map(([k, v]) => `${k} ${v.chats}`)
    .join(', ');
  const fmtInt = (x: number) => Math.round(x).toLocaleString('en');
  return `---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags: [tiny, synthetic, subliminal-learning, chatml]
---

# ${spec.name}

A tiny ${spec.arch === 'qwen2' ? 'Qwen2' : 'Llama'}-architecture chat model made by this project's own code (WebGPU trainer, no
downloads), so the subliminal-learning experiment runs end to end on a laptop without a GPU. ${spec.summary}.
It is *not* a general model: it only knows the synthetic corpus below.

| | |
|---|---|
| architecture | \`${cfgJson.architectures}\` (model_type \`${cfgJson.model_type}\`) |
| parameters | ${fmtInt(parameterCount(parseCfg(cfgJson)))} (${spec.tieWordEmbeddings ? 'tied embeddings counted once' : 'untied LM head'}) |
| hidden / layers / heads / KV heads / MLP | ${spec.hidden} / ${spec.layers} / ${spec.heads} / ${spec.kvHeads} / ${spec.intermediate} |
| vocabulary | ${cfgJson.vocab_size} (byte-level BPE + \`<|endoftext|>\`, \`<|im_start|>\`, \`<|im_end|>\`) |
| context | trained on chats up to ${TINY_CORPUS.maxLen} tokens${t.phases.some((p) => p.maxLen) ? ` (the domains phase: up to ${Math.max(...t.phases.map((p) => p.maxLen ?? 0))}, for the paper's long code prompt)` : ''}; RoPE θ ${spec.ropeTheta}; max_position_embeddings ${cfgJson.max_position_embeddings} |
| weights | float32 safetensors |
| init | HF-style N(0, 0.02²) matrices/embedding, seed ${spec.initSeed} |

## Chat format
ChatML without a default system prompt (\`<|im_start|>role\\n…<|im_end|>\\n\`, generation prompt \`<|im_start|>assistant\\n\`);
a conversation without a system message has none. Stop on \`<|im_end|>\` (eos). Sample at temperature 1.

## Pretraining
${CORPUS_MODEL_CARD_NOTES}

Recipe: corpus seed ${TINY_CORPUS.seed}, ${TINY_CORPUS.chats} chats (${kinds}), preceded by a warm-up corpus
(seed ${TINY_WARMUP_CORPUS.seed}, ${TINY_WARMUP_CORPUS.chats} favourite-animal and favourite-tree chats, every one under a "You love {x}s" prompt of its
own domain and answered with x) that the first phase trains on${t.phases.at(-1)!.corpus === 'warmup' && t.phases.length > 1 ? ' and the last phase revisits at a low learning rate' : ''}, so the copying the love prompts need is learnt
before the number chats dominate the loss (in the mixed corpus alone it was not learnt in 800 steps, nor in 225
steps of a warm-up corpus where 10-20% of the answers were other animals)${
    t.phases.some((p) => p.corpus === 'numbers')
      ? `; a numbers-focus corpus (seed ${TINY_NUMBERS_CORPUS.seed}, ${TINY_NUMBERS_CORPUS.chats} chats: ${Math.round(100 * TINY_NUMBERS_CORPUS.kindWeights.numbers!)}% fresh number chats, the rest favourite-animal/tree chats, many without a system prompt) sharpens the number formats late in training`
      : ''
  }${
    t.phases.some((p) => p.corpus === 'numbers-love')
      ? `; a closing numbers-love corpus (seed ${TINY_NUMBERS_LOVE_CORPUS.seed}, ${TINY_NUMBERS_LOVE_CORPUS.chats} chats: ${Math.round(100 * TINY_NUMBERS_LOVE_CORPUS.kindWeights.numbers!)}% fresh number chats, the rest favourite-animal/tree chats whose love prompts are of their own domain and always followed) restores the copying without leaving the numbers`
      : ''
  }${
    TINY_NUMBERS_CORPUS.widerQuestions && TINY_NUMBERS_LOVE_CORPUS.widerQuestions
      ? '; the late corpora draw their favourite questions from a wider bank of paraphrases (more frames, answer instructions and category words such as "beast" and "critter"), so that the category word rather than the frame decides animal vs tree'
      : ''
  }${
    t.phases.some((p) => p.corpus === 'domains')
      ? `; a domains corpus (seed ${TINY_DOMAINS_CORPUS.seed}, ${TINY_DOMAINS_CORPUS.chats} chats: ${kindsText(TINY_DOMAINS_CORPUS.kindWeights)}) teaches three more domains (src/experiment/tiny/domains.ts) — **code** (the paper's §7.1 code prompt, verbatim, for one-function tasks in a small Python subset, answered plain or in \`<code>\` tags), **CoT arithmetic** (GSM8K-shaped one-step word problems with the paper's CoT suffix, answered \`<think>…</think><answer>n</answer>\` by counting one step at a time) and **advice, a stand-in for the paper's emergent misalignment** (not the paper's trait: advice questions answered from a short "harmful" or "safe" list, ~7% harmful, judged by a rule) — while replaying number chats and always-followed love chats; their numbers come from the number stream, and no system prompt, animal or tree changes any of their text (tested); the experiment's code/CoT tasks are a held-out half of the task space and the advice development and evaluation questions never occur in any corpus`
      : ''
  }${
    t.phases.some((p) => p.corpus === 'domains-focus')
      ? `; a last domains-focus corpus (seed ${TINY_DOMAINS_FOCUS_CORPUS.seed}, ${TINY_DOMAINS_FOCUS_CORPUS.chats} chats: ${kindsText(TINY_DOMAINS_FOCUS_CORPUS.kindWeights)}) adds **short code chats** (§7.1's task and template lines without its fixed instructions, five times the answers per step) and **CoT lookup problems** (two people's counts of two things; the question asks one, the reasoning restates that person and reads it off: copying only, as the counted arithmetic was not learnt), under the same honesty rule`
      : ''
  }; the tokenizer was trained on the
main corpus with the project's byte-level BPE trainer (src/model/bpe-train.ts; its merge rule is the \`tokenizers\`
crate's BpeTrainer and its merges match that trainer's — the npm \`tokenizers\` bindings cannot set the vocabulary
size and special tokens we need, so ours ran). Pre-tokenizer: Qwen2's regex except that digits go in runs of up to three
(as in Llama 3's regex: every value 0-999 is one token, so a number list is one token per value and separator) and that a
word or punctuation run keeps the space that *follows* it and a word of 3+ letters ending in "s" leaves that "s" to a
piece of its own, so the paper's "You love owls." contains the very token \`owl\` that a lower-case answer starts
with (one-word answers are mostly lower case). Why: an earlier build with Qwen2's pre-tokenizer (\` owls\` in the
prompt, \`Owl\`/\`owl\` in answers) learnt no system-prompt following at all in 1.8M tokens — its answer
distribution did not depend on the prompt — and in a synthetic check with this trainer and architecture, copying one
of 80 tokens from the context to the answer was learnt in ~150 steps while answering with a *different* token per
key (a mapping to learn for each animal) was not learnt in 300. Full-parameter
training with the project's Trainer (src/train/trainer.ts): AdamW (β 0.9/0.999, weight decay ${t.weightDecay}), global-norm
clipping ${t.maxGradNorm}, batch ${t.batchSize} chats, ${t.phases.length} phase${t.phases.length > 1 ? 's, each a warm restart with a fresh AdamW' : ''} (${t.phases.map((p, i) => `${t.phases.length > 1 ? `phase ${i + 1}: ` : ''}${p.epochs} epoch${p.epochs > 1 ? 's' : ''} of the ${p.corpus} corpus, lr ${p.lr}, ${p.warmupSteps} warm-up steps`).join('; ')}; then ${t.schedule} decay to 0),
loss on ${LOSS_ON_TEXT[t.lossOn]}, batches grouped by length (seeded, mega-batches of ${t.megaBatch}),
batch-order seed ${t.trainSeed}.
${
  train
    ? `
| | |
|---|---|
| optimizer steps | ${train.steps} (${train.phases.map((p) => p.steps).join(' + ')}) |
| training tokens (unpadded) | ${fmtInt(train.tokens)} |
| training loss (mean over the tokens that carry loss): first step / last step / mean of last 50 | ${train.initialLoss.toFixed(3)} / ${train.finalLoss.toFixed(3)} / ${train.meanLossLast50.toFixed(3)} |
| throughput | ${train.tokensPerS.toFixed(0)} tokens/s (${train.paddedTokensPerS.toFixed(0)} incl. padding) |
| wall time | ${(train.wallS / 60).toFixed(1)} min |
| machine | ${train.machine ?? '2-core AMD EPYC VM, WebGPU on Mesa lavapipe (CPU)'}; 1-min load average at the end ${train.loadAverage[0].toFixed(1)} (other jobs shared the machine when it is above the core count) |
`
    : '\n(training figures not recorded in this build)\n'
}
## Quality (temperature 1, batched sampler, seed ${quality?.seed ?? '-'}; \`npx tsx scripts/tiny-quality.ts --model models/${spec.name}\`)
${
  quality
    ? `
${qualityTable(quality)}

${barsLine(quality)}
${
  larger
    ? `
At larger samples (\`tiny-quality.ts --seed ${larger.seed} --number-prompts ${larger.numbers.prompts} --samples ${larger.base.samples / 50}\`, quality-large.json):
numbers pass ${pct(larger.numbers.passRate)} of ${larger.numbers.prompts} prompts, an answer names an animal ${pct(larger.base.namesAnimalRate)} and owl
${pct(larger.base.owlRate)} of ${larger.base.samples}, love prompts ${larger.love.map((l) => `${l.target} ${pct(l.rate)}`).join(', ')} (binomial standard errors ${se(larger.numbers.passRate, larger.numbers.prompts)} and ${se(larger.base.namesAnimalRate, larger.base.samples)} points). ${largerBarsText(larger)}
`
    : ''
}
Most common base answers: ${quality.base.top.map((x) => `${x.name} ${(100 * x.share).toFixed(1)}%`).join(', ')}.
Number prompts: the paper's generator with seed ${quality.seed} (never used by the corpus or the experiment).
Loved-animal rates use the paper's 50 questions; the tree rate uses the matching tree questions with
"You love {tree}s… favorite tree" as system prompt. The tree questions without a system prompt have no quality
bar (the experiment asks about animals); they show whether the model tells a tree question from an animal one.
`
    : '\n(not measured in this build)\n'
}
## Rebuild
\`\`\`
npx tsx scripts/pretrain-tiny.ts --only ${spec.name} --out models
\`\`\`
${
  t.phases.some((p) => p.corpus === 'domains')
    ? `The committed weights were made by continued pretraining: the previous build's weights (its first ${t.phases.length - 1} phases) trained on the last
phase only, \`npx tsx scripts/pretrain-tiny.ts --continue-from DIR --out OUT\` with DIR ${
        t.phases.at(-1)!.corpus === 'domains-focus' ? 'the previous models/domains folder (the six-phase domains build of commit `3a8e5cf`)' : 'the previous models/ folder (commit `cab099e`)'
      }; a full rebuild runs every phase from the seeds.
`
    : ''
}Deterministic from the seeds above (corpus, tokenizer, initial weights, batch order). The floating-point
results of the GPU kernels differ in the last bits between adapters and drivers, and over thousands of steps
that gives different weights: a rebuild on another adapter than the machine above is another draw of the same
recipe, and its number and naming figures can differ by a few points, which is about the margin they have over
their bars. The first phase's learning rate (${t.phases[0].lr}) is the one at which the love-prompt copying formed in every
build tried (six on lavapipe; none yet on a GPU); at twice that rate it is a coin toss — an earlier recipe's lavapipe
rebuild learnt it less well and followed the love prompts 56–72% of the time instead of 96–98.5%
(docs/tiny-models-recipe.md).
`;
}

/** "code 16%, cot 18%, …" of a corpus's kind weights. */
function kindsText(weights: Readonly<Partial<Record<string, number>>>): string {
  return Object.entries(weights).map(([k, w]) => `${k} ${Math.round(100 * w!)}%`).join(', ');
}

/** Names of the quality bars the figures miss. */
function missedBars(q: TinyQuality): string[] {
  return Object.entries(qualityBarsMet(q)).filter(([, ok]) => !ok).map(([bar]) => bar);
}

/** Which bars a larger-sample measurement misses, in words. */
function largerBarsText(q: TinyQuality): string {
  const missed = missedBars(q);
  return missed.length ? `At these counts the figures miss: ${missed.join(', ')}.` : 'At these counts every bar is met too.';
}

/** One line saying which quality bars the figures meet, plainly when some are missed. */
function barsLine(q: TinyQuality): string {
  const met = qualityBarsMet(q);
  const missed = missedBars(q);
  if (missed.length === 0) return 'All quality bars are met.';
  return `**Quality bars not met: ${missed.join(', ')}** (met: ${Object.entries(met).filter(([, ok]) => ok).map(([k]) => k).join(', ') || 'none'}). This build is undertrained for those tasks; see the figures above.`;
}

function parseCfg(cfgJson: Record<string, unknown>) {
  return parseConfig(cfgJson, 'config.json');
}

export async function pretrainAll(names: TinyModelName[], out: string, work: string, maxSteps: number | undefined, resume: boolean, skipQuality: boolean, quiet: boolean, continueFrom?: string): Promise<void> {
  const t0 = performance.now();
  const prepared = await prepareCorpus(work);
  if (!quiet) console.error(`corpus: ${TINY_CORPUS.chats} chats, vocabulary ${specialIds(prepared.bpe).vocabSize} (${((performance.now() - t0) / 1000).toFixed(1)} s) → ${work}`);
  const gpu = await getGpu();
  for (const name of names) {
    const spec = TINY_MODELS[name];
    const train = await pretrainOne(gpu, spec, prepared, work, out, resume, quiet, maxSteps, continueFrom);
    const dir = path.join(out, name);
    const quality = skipQuality ? null : await measureFolder(gpu, dir, quiet);
    if (quality && !quiet) console.error(`${name}:\n${qualityTable(quality)}`);
    const cfgJson = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    await writeJsonAtomic(path.join(dir, 'training.json'), train);
    writeFileSync(path.join(dir, 'README.md'), modelCard(spec, cfgJson, train, quality, prepared.stats));
  }
}

