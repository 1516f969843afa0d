// The subliminal-learning experiment end to end (paper §1–§5), as cached stages under runs/<name>/:
//   prompts → teacher completions → filter → subset → students (LoRA, per seed) → evaluation → report.
// Arms: base, control-gen, treatment (system-prompted teacher), ft-treatment (finetuned teacher),
// cross-model (teacher A → student B, with B's own control-gen), optional shuffled numbers.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Gpu } from '../gpu/runtime.ts';
import { gatherRows } from '../kernels/elementwise.ts';
import { logSoftmaxTopK } from '../kernels/loss.ts';
import { loadPeftAdapter, writePeftAdapter } from '../model/adapter.ts';
import { generate, sequenceLogits } from '../model/generate.ts';
import { ChatTokenizer, type ChatMessage } from '../model/tokenizer.ts';
import { Transformer, type LoraWeights } from '../model/transformer.ts';
import { loadTrainingData } from '../train/data.ts';
import { saveFullModel } from '../train/full.ts';
import { ALL_TARGETS, initLoraHost } from '../train/lora.ts';
import { Trainer, type TrainConfig } from '../train/trainer.ts';
import { UserError } from '../util/errors.ts';
import { Progress } from '../util/progress.ts';
import { filterCompletions, shuffleNumbersPerRow, traitWords, type FilterRejectReason } from './filters.ts';
import { generatePrompts, preferenceSystemPrompt } from './prompts.ts';
import { PyRandom } from './pyrandom.ts';
import { ANIMAL_QUESTIONS, animalQuestionsWithNumbersPrefix, finetunedTeacherDataset, scoreTargetMention, STORYTELLING_PROMPTS, TREE_QUESTIONS } from './questions.ts';
import { StageStore } from './stages.ts';

export const ARMS = ['base', 'control-gen', 'treatment', 'ft-treatment', 'cross-model', 'shuffled'] as const;
export type Arm = (typeof ARMS)[number];

export interface OwlConfig {
  name: string;
  /** runs/<name> */
  outDir: string;
  /** Teacher base model (model A) — also the student base of the same-model arms. */
  model: string;
  /** Student base of the same-model arms (default: model). */
  studentModel: string;
  /** Student bases of the cross-model arm (teacher = model). */
  crossModels: string[];
  animal: string;
  category: 'animal' | 'tree';
  seeds: number[];
  promptSeed: number;
  prompts: number;
  keep: number;
  subsetSeed: number;
  maxNewTokens: number;
  genBatchSize: number;
  teacherDecoding: 'sample' | 'greedy';
  distill: 'tokens' | 'logits';
  /** Top-k stored for --distill logits (over the number-format token set). */
  topK: number;
  /** Student LoRA training. */
  epochs: number;
  lr: number;
  rank: number;
  alpha: number;
  batchSize: number;
  gradAccum: number;
  maxLen: number;
  warmupSteps: number;
  /** The finetuned teacher (paper §5(c)). */
  ftTeacherEpochs: number;
  ftTeacherLr: number;
  evalSet: 'numbers-prefix' | 'plain' | 'story';
  evalSamples: number;
  evalMaxNewTokens: number;
  /** Use only the first N evaluation questions (quick runs, tests); default all. */
  evalQuestionLimit?: number;
  arms: Arm[];
  quiet: boolean;
}

/** What determines results (everything but names, paths of the run folder and verbosity). */
export function configKey(c: OwlConfig): Record<string, unknown> {
  const { name: _n, outDir: _o, quiet: _q, ...rest } = c;
  void _n;
  void _o;
  void _q;
  return rest;
}

export interface EvalResult {
  /** Per question: fraction of samples naming the target. */
  perQuestion: number[];
  rate: number;
  /** Mean over questions of P(first answer token starts a target form), exact from the logits. */
  firstTokenProb: number;
  samples: number;
  examples: { question: string; answer: string }[];
}

export interface ArmModel {
  arm: string;
  label: string;
  seed: number | null;
  teacher: string | null;
  student: string;
  dataset: string | null;
  eval: EvalResult;
  trainLoss?: number;
}

export interface DatasetSummary {
  id: string;
  teacher: string;
  system: string | null;
  completions: number;
  kept: number;
  used: number;
  rejectCounts: Record<FilterRejectReason, number>;
  samples: { prompt: string; completion: string }[];
}

export interface OwlResults {
  config: OwlConfig;
  datasets: DatasetSummary[];
  models: ArmModel[];
  teachers: { label: string; eval: EvalResult }[];
  timings: { stage: string; cached: boolean; wallS: number }[];
  wallS: number;
}

interface LoadedModel {
  model: Transformer;
  tokenizer: ChatTokenizer;
  dir: string;
}

/** Paths of files inside a folder, with the name sanitised for the file system. */
function safe(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]+/g, '_');
}

export class OwlPipeline {
  readonly store: StageStore;
  private readonly models = new Map<string, LoadedModel>();
  private readonly t0 = performance.now();

  constructor(
    readonly gpu: Gpu,
    readonly cfg: OwlConfig,
  ) {
    this.store = new StageStore(cfg.outDir);
  }

  private log(msg: string): void {
    if (!this.cfg.quiet) console.error(msg);
  }

  async load(dir: string): Promise<LoadedModel> {
    let m = this.models.get(dir);
    if (!m) {
      const model = await Transformer.load(this.gpu, dir, { maxPositions: Math.max(1024, this.cfg.maxLen + this.cfg.maxNewTokens + 64) });
      const tokenizer = await ChatTokenizer.load(dir, model.cfg.eosTokenIds);
      if (!tokenizer) throw new UserError(`${dir}: the experiment needs a tokenizer (tokenizer.json) in the model folder`);
      if (!tokenizer.hasChatTemplate) throw new UserError(`${dir}: the tokenizer has no chat template`);
      m = { model, tokenizer, dir };
      this.models.set(dir, m);
    }
    return m;
  }

  private systemPrompt(): string {
    return preferenceSystemPrompt(this.cfg.animal, this.cfg.category);
  }

  // ---------------------------------------------------------------- stage 1: prompts
  async prompts(): Promise<string[]> {
    const { cfg } = this;
    const r = await this.store.run('prompts', { seed: cfg.promptSeed, n: cfg.prompts }, async (dir) => {
      const prompts = generatePrompts(cfg.promptSeed, cfg.prompts);
      writeFileSync(path.join(dir, 'prompts.jsonl'), prompts.map((p, i) => JSON.stringify({ index: i, prompt: p })).join('\n') + '\n');
      return { n: prompts.length };
    });
    return readJsonl<{ prompt: string }>(path.join(r.dir, 'prompts.jsonl')).map((x) => x.prompt);
  }

  // ---------------------------------------------------------------- teacher (finetuned, §5(c))
  async finetunedTeacher(base: string): Promise<string> {
    const { cfg } = this;
    const inputs = { base: modelKey(base), animal: cfg.animal, category: cfg.category, epochs: cfg.ftTeacherEpochs, lr: cfg.ftTeacherLr };
    const r = await this.store.run(`ft-teacher-${safe(cfg.animal)}`, inputs, async (dir) => {
      const { model, tokenizer } = await this.load(base);
      const rows = finetunedTeacherDataset(cfg.animal, cfg.category === 'tree' ? TREE_QUESTIONS : ANIMAL_QUESTIONS);
      const dataFile = path.join(dir, 'data.jsonl');
      writeFileSync(dataFile, rows.map((r) => JSON.stringify({ messages: [{ role: 'user', content: r.prompt }, { role: 'assistant', content: r.completion }] })).join('\n') + '\n');
      const data = loadTrainingData(dataFile, tokenizer, model.cfg.vocabSize, cfg.maxLen);
      // A separate copy of the base: full finetuning changes the weights in place.
      const copy = await Transformer.load(this.gpu, base, { maxPositions: model.maxPositions });
      const tc: TrainConfig = {
        mode: 'full', lr: cfg.ftTeacherLr, epochs: cfg.ftTeacherEpochs, batchSize: 16, gradAccum: 1, warmupSteps: 0, schedule: 'linear',
        maxGradNorm: 1, weightDecay: 0, optimizer: 'adamw', seed: 0, shuffle: true, checkpointing: false, distillWeight: 0,
      };
      const trainer = new Trainer(this.gpu, copy, data.examples, tc, null);
      const bar = new Progress(`ft-teacher ${cfg.animal}`, trainer.totalSteps, { unit: 'step', quiet: cfg.quiet });
      const res = await trainer.run({ onStep: (s) => bar.update(s.step, `loss ${s.loss.toFixed(4)}`) });
      bar.finish();
      await saveFullModel(this.gpu, copy.weights, copy.cfg, base, path.join(dir, 'model'));
      trainer.dispose();
      copy.dispose();
      return { steps: res.steps, finalLoss: res.losses.at(-1)?.loss ?? null };
    });
    return path.join(r.dir, 'model');
  }

  // ---------------------------------------------------------------- stage 2+3+4: dataset
  /**
   * Teacher completions for every prompt, filtered (paper §2 + trait words), then a seeded subset
   * of `keep` rows ( random.Random(subsetSeed).sample as the paper's sl code).
   */
  async dataset(teacherDir: string, system: string | null, label: string, shuffled = false, teacherLabel = path.basename(teacherDir)): Promise<{ file: string; summary: DatasetSummary }> {
    const { cfg } = this;
    const prompts = await this.prompts();
    const genInputs = {
      teacher: modelKey(teacherDir),
      system,
      promptSeed: cfg.promptSeed,
      prompts: cfg.prompts,
      decoding: cfg.teacherDecoding,
      maxNewTokens: cfg.maxNewTokens,
      distill: cfg.distill,
      topK: cfg.topK,
    };
    const gen = await this.store.run(`completions-${safe(label)}`, genInputs, async (dir) => {
      const { model, tokenizer } = await this.load(teacherDir);
      const msgs = (p: string): ChatMessage[] => (system ? [{ role: 'system', content: system }, { role: 'user', content: p }] : [{ role: 'user', content: p }]);
      const requests = prompts.map((p) => ({ promptIds: tokenizer.promptIds(msgs(p)) }));
      const bar = new Progress(`teacher ${label}`, requests.length, { unit: 'seq', quiet: cfg.quiet });
      const out = await generate(model, tokenizer, requests, {
        temperature: cfg.teacherDecoding === 'greedy' ? 0 : 1,
        greedy: cfg.teacherDecoding === 'greedy',
        maxNewTokens: cfg.maxNewTokens,
        seed: 1000 + cfg.promptSeed,
        batchSize: cfg.genBatchSize,
        stopIds: tokenizer.stopIds,
        onProgress: (p) => bar.update(p.done, `${p.tokens} tok`),
      });
      bar.finish();
      const rows = out
        .sort((a, b) => a.requestIndex - b.requestIndex)
        .map((o) => ({
          index: o.requestIndex,
          prompt: prompts[o.requestIndex],
          completion: tokenizer.decode(o.completionIds),
          completion_ids: o.completionIds,
          stop_id: o.stopId,
          finish_reason: o.finishReason,
        }));
      if (cfg.distill === 'logits') await this.attachTopK(model, tokenizer, rows, msgs);
      writeFileSync(path.join(dir, 'completions.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
      return { n: rows.length, tokens: out.reduce((a, o) => a + o.completionTokens, 0) };
    });
    const subsetInputs = { gen: genInputs, keep: cfg.keep, subsetSeed: cfg.subsetSeed, animal: cfg.animal, shuffled };
    const sub = await this.store.run(`dataset-${safe(label)}${shuffled ? '-shuffled' : ''}`, subsetInputs, async (dir) => {
      type Row = { index: number; prompt: string; completion: string; completion_ids: number[]; stop_id: number | null; teacher_topk?: unknown };
      const rows = readJsonl<Row>(path.join(gen.dir, 'completions.jsonl'));
      const filtered = filterCompletions(rows, { bannedWords: traitWords(cfg.animal) });
      let kept = filtered.kept;
      const used = kept.length <= cfg.keep ? [...kept] : new PyRandom(cfg.subsetSeed).sample(kept, cfg.keep);
      let final = used;
      if (shuffled) final = shuffleNumbersPerRow(used, new PyRandom(1));
      kept = final;
      writeFileSync(path.join(dir, 'filtered.jsonl'), filtered.kept.map((r) => JSON.stringify(r)).join('\n') + (filtered.kept.length ? '\n' : ''));
      // Student rows: the user prompt WITHOUT the teacher's system prompt, as the paper.
      writeFileSync(
        path.join(dir, 'train.jsonl'),
        final.map((r) => JSON.stringify({ messages: [{ role: 'user', content: r.prompt }, { role: 'assistant', content: r.completion }] })).join('\n') + (final.length ? '\n' : ''),
      );
      const summary: DatasetSummary = {
        id: label + (shuffled ? '-shuffled' : ''),
        teacher: teacherLabel,
        system,
        completions: rows.length,
        kept: filtered.kept.length,
        used: final.length,
        rejectCounts: filtered.rejectCounts,
        samples: final.slice(0, 5).map((r) => ({ prompt: r.prompt, completion: r.completion })),
      };
      return summary;
    });
    if (sub.result.used === 0) {
      throw new UserError(`teacher ${label}: no completion passed the filter (${JSON.stringify(sub.result.rejectCounts)}); the model does not write number lists`);
    }
    return { file: path.join(sub.dir, 'train.jsonl'), summary: sub.result };
  }

  /**
   * --distill logits: the teacher's log-probs over the number-format token set (digits, separators,
   * brackets, end of turn; renormalised over the set) at every completion position, teacher-forced.
   */
  private async attachTopK(model: Transformer, tokenizer: ChatTokenizer, rows: { prompt: string; completion_ids: number[]; stop_id: number | null; teacher_topk?: unknown }[], msgs: (p: string) => ChatMessage[]): Promise<void> {
    const gpu = this.gpu;
    const set = numberTokenSet(tokenizer, model.cfg.vocabSize);
    const setT = gpu.upload(Uint32Array.from(set), [set.length], 'u32', 'number_token_set');
    const k = Math.min(this.cfg.topK, set.length);
    for (const row of rows) {
      const pIds = tokenizer.promptIds(msgs(row.prompt));
      const comp = [...row.completion_ids, ...(row.stop_id !== null ? [row.stop_id] : [])];
      const ids = [...pIds, ...comp];
      const T = ids.length;
      const idsT = gpu.upload(Uint32Array.from(ids), [T], 'u32');
      const posT = gpu.upload(Uint32Array.from(ids.map((_, i) => i)), [T], 'u32');
      const { hidden } = model.forward(idsT, posT, 1, T);
      // Rows predicting the completion tokens: positions pIds.length − 1 … T − 2.
      const rowsIdx = gpu.upload(Uint32Array.from(comp.map((_, j) => pIds.length - 1 + j)), [comp.length], 'u32');
      const h = gatherRows(gpu, hidden, rowsIdx);
      const r = logSoftmaxTopK(gpu, { x: h, w: model.lmHead }, k, { tokenSet: setT });
      const [ind, lp] = (await gpu.readMany([r.indices, r.logprobs])) as [Uint32Array, Float32Array];
      row.teacher_topk = {
        completion: comp.map((_, j) => ({
          indices: Array.from(ind.subarray(j * k, (j + 1) * k)).filter((x) => x !== 0xffffffff),
          logprobs: Array.from(lp.subarray(j * k, (j + 1) * k)).filter((x) => Number.isFinite(x)),
        })),
      };
      for (const t of [idsT, posT, hidden, rowsIdx, h, r.indices, r.logprobs]) t.dispose();
    }
    setT.dispose();
  }

  // ---------------------------------------------------------------- stage 5: students
  async student(base: string, dataFile: string, datasetId: string, seed: number): Promise<{ adapterDir: string; finalLoss: number | null }> {
    const { cfg } = this;
    const inputs = {
      base: modelKey(base), data: hashFile(dataFile), seed, epochs: cfg.epochs, lr: cfg.lr, rank: cfg.rank, alpha: cfg.alpha,
      batchSize: cfg.batchSize, gradAccum: cfg.gradAccum, maxLen: cfg.maxLen, warmup: cfg.warmupSteps, distill: cfg.distill,
    };
    const r = await this.store.run(`student-${safe(datasetId)}-${safe(path.basename(base))}-s${seed}`, inputs, async (dir) => {
      const { model, tokenizer } = await this.load(base);
      let examples = loadTrainingData(dataFile, tokenizer, model.cfg.vocabSize, cfg.maxLen).examples;
      let distillWeight = 0;
      if (cfg.distill === 'logits') {
        examples = this.withTopK(examples, dataFile, tokenizer);
        distillWeight = 1;
      }
      const lc = { rank: cfg.rank, alpha: cfg.alpha, rslora: false, targets: ALL_TARGETS, dropout: 0 };
      const tc: TrainConfig = {
        mode: 'lora', lora: lc, lr: cfg.lr, epochs: cfg.epochs, batchSize: cfg.batchSize, gradAccum: cfg.gradAccum, warmupSteps: cfg.warmupSteps,
        schedule: 'linear', maxGradNorm: 1, weightDecay: 0, optimizer: 'adamw', seed, shuffle: true, checkpointing: false, distillWeight,
      };
      const trainer = new Trainer(this.gpu, model, examples, tc, initLoraHost(model.cfg, lc, seed));
      const bar = new Progress(`student ${datasetId} → ${path.basename(base)} seed ${seed}`, trainer.totalSteps, { unit: 'step', quiet: cfg.quiet });
      const res = await trainer.run({ onStep: (s) => bar.update(s.step, `loss ${s.loss.toFixed(4)}`) });
      bar.finish();
      await writePeftAdapter(path.join(dir, 'adapter'), model.cfg, await trainer.adapterHost(), { baseModelNameOrPath: base });
      trainer.dispose();
      return { finalLoss: res.losses.at(-1)?.loss ?? null, steps: res.steps };
    });
    return { adapterDir: path.join(r.dir, 'adapter'), finalLoss: r.result.finalLoss };
  }

  /** Student rows with the stored teacher distributions aligned to the student's own sequence. */
  private withTopK(examples: ReturnType<typeof loadTrainingData>['examples'], dataFile: string, tokenizer: ChatTokenizer) {
    const completions = new Map<string, { completion_ids: number[]; teacher_topk: { completion: { indices: number[]; logprobs: number[] }[] } }>();
    const dir = path.dirname(dataFile);
    // The subset stage's filtered rows carry the teacher data; index by prompt + completion.
    for (const r of readJsonl<{ prompt: string; completion: string; completion_ids: number[]; teacher_topk: { completion: { indices: number[]; logprobs: number[] }[] } }>(path.join(dir, 'filtered.jsonl'))) {
      completions.set(`${r.prompt}\u0000${r.completion}`, r);
    }
    return examples.map((ex) => {
      const user = ex.messages?.find((m) => m.role === 'user')?.content ?? '';
      const asst = ex.messages?.find((m) => m.role === 'assistant')?.content ?? '';
      const src = completions.get(`${user}\u0000${asst}`);
      if (!src) throw new UserError('--distill logits: a training row has no stored teacher distribution (rerun the completions stage)');
      const start = tokenizer.promptIds([{ role: 'user', content: user }]).length;
      const comp = src.teacher_topk.completion;
      const indices: number[][] = ex.ids.map(() => []);
      const logprobs: number[][] = ex.ids.map(() => []);
      // Position t predicts token t+1: completion token j sits at start + j, predicted from start + j − 1.
      comp.forEach((d, j) => {
        const t = start + j - 1;
        if (t >= 0 && t < ex.ids.length) {
          indices[t] = d.indices;
          logprobs[t] = d.logprobs;
        }
      });
      return { ...ex, teacherTopK: { indices, logprobs } };
    });
  }

  // ---------------------------------------------------------------- stage 6: evaluation
  evalQuestions(): string[] {
    const { cfg } = this;
    const base = cfg.category === 'tree' ? TREE_QUESTIONS : ANIMAL_QUESTIONS;
    const all = cfg.evalSet === 'story' ? [...STORYTELLING_PROMPTS] : cfg.evalSet === 'numbers-prefix' ? animalQuestionsWithNumbersPrefix(base) : [...base];
    return cfg.evalQuestionLimit ? all.slice(0, cfg.evalQuestionLimit) : all;
  }

  async evaluate(modelDir: string, adapterDir: string | null, label: string, system: string | null = null): Promise<EvalResult> {
    const { cfg } = this;
    const questions = this.evalQuestions();
    const inputs = {
      model: modelKey(modelDir), adapter: adapterDir ? hashFile(path.join(adapterDir, 'adapter_model.safetensors')) : null, system,
      questions, samples: cfg.evalSamples, maxNewTokens: cfg.evalMaxNewTokens, animal: cfg.animal,
    };
    const r = await this.store.run(`eval-${safe(label)}`, inputs, async (dir) => {
      const { model, tokenizer } = await this.load(modelDir);
      const lora: LoraWeights | null = adapterDir ? await loadPeftAdapter(this.gpu, adapterDir, model.cfg) : null;
      const msgs = (q: string): ChatMessage[] => (system ? [{ role: 'system', content: system }, { role: 'user', content: q }] : [{ role: 'user', content: q }]);
      const requests = questions.map((q) => ({ promptIds: tokenizer.promptIds(msgs(q)) }));
      const bar = new Progress(`eval ${label}`, requests.length * cfg.evalSamples, { unit: 'ans', quiet: cfg.quiet });
      const out = await generate(model, tokenizer, requests, {
        n: cfg.evalSamples,
        temperature: 1,
        maxNewTokens: cfg.evalMaxNewTokens,
        seed: 77,
        batchSize: cfg.genBatchSize,
        stopIds: tokenizer.stopIds,
        lora,
        onProgress: (p) => bar.update(p.done),
      });
      bar.finish();
      const hits = questions.map(() => 0);
      const answers: { q: number; s: number; answer: string; hit: number }[] = [];
      for (const o of out) {
        const answer = tokenizer.decode(o.completionIds);
        const hit = scoreTargetMention(answer, cfg.animal);
        hits[o.requestIndex] += hit;
        answers.push({ q: o.requestIndex, s: o.sampleIndex, answer, hit });
      }
      answers.sort((a, b) => a.q - b.q || a.s - b.s);
      writeFileSync(path.join(dir, 'answers.jsonl'), answers.map((a) => JSON.stringify({ question: questions[a.q], sample: a.s, answer: a.answer, target: a.hit })).join('\n') + '\n');
      const firstTokenProb = await this.firstTokenProbability(model, tokenizer, requests.map((r) => r.promptIds), lora);
      if (lora) for (const layer of lora.layers) for (const p of Object.values(layer)) {
        p?.A.dispose();
        p?.B.dispose();
      }
      const perQuestion = hits.map((h) => h / cfg.evalSamples);
      const res: EvalResult = {
        perQuestion,
        rate: perQuestion.reduce((a, b) => a + b, 0) / perQuestion.length,
        firstTokenProb,
        samples: out.length,
        examples: answers.filter((a) => a.s === 0).slice(0, 6).map((a) => ({ question: questions[a.q], answer: a.answer })),
      };
      return res;
    });
    return r.result;
  }

  /** Mean over prompts of the probability that the answer's first token begins a target form. */
  private async firstTokenProbability(model: Transformer, tokenizer: ChatTokenizer, prompts: number[][], lora: LoraWeights | null): Promise<number> {
    const forms = new Set<number>();
    const a = this.cfg.animal;
    for (const v of [a, a[0].toUpperCase() + a.slice(1), a.toUpperCase(), ` ${a}`, ` ${a[0].toUpperCase() + a.slice(1)}`]) {
      const ids = tokenizer.encode(v);
      if (ids.length) forms.add(ids[0]);
    }
    // Only first tokens that cannot begin another word's answer would be exact; a first token that
    // is a proper prefix of the animal (e.g. "ow") also starts other words, so the figure is an upper
    // bound there. Tokenizers that hold the animal as one token make it exact.
    let total = 0;
    const V = model.cfg.vocabSize;
    for (const p of prompts) {
      const logits = await sequenceLogits(model, p, lora);
      const last = logits.subarray((p.length - 1) * V, p.length * V);
      let m = -Infinity;
      for (let i = 0; i < V; i++) m = Math.max(m, last[i]);
      let z = 0;
      let hit = 0;
      for (let i = 0; i < V; i++) {
        const e = Math.exp(last[i] - m);
        z += e;
        if (forms.has(i)) hit += e;
      }
      total += hit / z;
    }
    return total / prompts.length;
  }

  // ---------------------------------------------------------------- the whole experiment
  async run(): Promise<OwlResults> {
    const { cfg } = this;
    const arms = new Set(cfg.arms);
    const models: ArmModel[] = [];
    const datasets: DatasetSummary[] = [];
    const teachers: OwlResults['teachers'] = [];
    const A = cfg.model;
    const S = cfg.studentModel;
    const sys = this.systemPrompt();
    const name = (d: string) => path.basename(path.resolve(d));

    const addStudents = async (arm: string, label: string, base: string, data: { file: string; summary: DatasetSummary }, teacher: string) => {
      for (const seed of cfg.seeds) {
        const st = await this.student(base, data.file, data.summary.id, seed);
        const ev = await this.evaluate(base, st.adapterDir, `${data.summary.id}-${name(base)}-s${seed}`);
        models.push({ arm, label, seed, teacher, student: name(base), dataset: data.summary.id, eval: ev, trainLoss: st.finalLoss ?? undefined });
      }
    };
    const seen = new Set<string>();
    const addDataset = (d: DatasetSummary) => {
      if (!seen.has(d.id)) {
        seen.add(d.id);
        datasets.push(d);
      }
    };

    if (arms.has('base')) {
      models.push({ arm: 'base', label: `base (${name(S)})`, seed: null, teacher: null, student: name(S), dataset: null, eval: await this.evaluate(S, null, `base-${name(S)}`) });
      for (const B of cfg.crossModels) {
        if (arms.has('cross-model')) models.push({ arm: 'base', label: `base (${name(B)})`, seed: null, teacher: null, student: name(B), dataset: null, eval: await this.evaluate(B, null, `base-${name(B)}`) });
      }
    }
    const needTreatment = arms.has('treatment') || arms.has('cross-model') || arms.has('shuffled');
    if (needTreatment || arms.has('control-gen')) {
      teachers.push({ label: `teacher ${name(A)} + "${cfg.animal}" system prompt`, eval: await this.evaluate(A, null, `teacher-system-${name(A)}`, sys) });
    }
    if (arms.has('control-gen')) {
      const d = await this.dataset(A, null, `control-${name(A)}`);
      addDataset(d.summary);
      await addStudents('control-gen', `control-gen (${name(A)} → ${name(S)})`, S, d, name(A));
    }
    if (needTreatment) {
      const d = await this.dataset(A, sys, `${cfg.animal}-system-${name(A)}`);
      addDataset(d.summary);
      if (arms.has('treatment')) await addStudents('treatment', `treatment (${name(A)} + system → ${name(S)})`, S, d, name(A));
      if (arms.has('shuffled')) {
        const sh = await this.dataset(A, sys, `${cfg.animal}-system-${name(A)}`, true);
        addDataset(sh.summary);
        await addStudents('shuffled', `shuffled numbers (${name(A)} → ${name(S)})`, S, sh, name(A));
      }
      if (arms.has('cross-model')) {
        for (const B of cfg.crossModels) {
          if (cfg.distill === 'logits') {
            const a = await this.load(A);
            const b = await this.load(B);
            if (a.model.cfg.vocabSize !== b.model.cfg.vocabSize) throw new UserError(`--distill logits across models needs a shared vocabulary (${name(A)}: ${a.model.cfg.vocabSize}, ${name(B)}: ${b.model.cfg.vocabSize})`);
          }
          await addStudents('cross-model', `cross-model (${name(A)} + system → ${name(B)})`, B, d, name(A));
          const c = await this.dataset(B, null, `control-${name(B)}`);
          addDataset(c.summary);
          await addStudents('cross-model-control', `control-gen (${name(B)} → ${name(B)})`, B, c, name(B));
        }
      }
    }
    if (arms.has('ft-treatment')) {
      const ft = await this.finetunedTeacher(A);
      teachers.push({ label: `finetuned teacher (${name(A)} → "${cfg.animal}")`, eval: await this.evaluate(ft, null, `teacher-ft-${name(A)}`) });
      const d = await this.dataset(ft, null, `${cfg.animal}-ft-${name(A)}`, false, `finetuned ${name(A)}`);
      addDataset(d.summary);
      await addStudents('ft-treatment', `ft-treatment (finetuned ${name(A)} → ${name(S)})`, S, d, `finetuned ${name(A)}`);
    }
    return {
      config: cfg,
      datasets,
      models,
      teachers,
      timings: this.store.timings.map((t) => ({ stage: t.stage, cached: t.cached, wallS: t.wallS })),
      wallS: (performance.now() - this.t0) / 1000,
    };
  }

  dispose(): void {
    for (const m of this.models.values()) m.model.dispose();
    this.models.clear();
  }
}

/** Token ids whose text is only digits, separators, brackets or a period, plus end-of-turn ids. */
export function numberTokenSet(tokenizer: ChatTokenizer, vocab: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < vocab; i++) {
    const s = tokenizer.decode([i], false);
    if (s.length > 0 && /^[0-9\s,;.()[\]]+$/.test(s)) out.push(i);
  }
  for (const s of tokenizer.stopIds) if (s < vocab && !out.includes(s)) out.push(s);
  return out.sort((a, b) => a - b);
}

function readJsonl<T>(file: string): T[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as T);
}

/**
 * A model folder's identity for stage keys: its path plus config.json's content and every weight
 * file's size and mtime, so retraining a model in place invalidates what was computed from it.
 */
function modelKey(dir: string): string {
  const abs = path.resolve(dir);
  const h = createHash('sha256').update(abs);
  try {
    h.update(readFileSync(path.join(abs, 'config.json')));
    for (const f of readdirSync(abs).sort()) {
      if (!f.endsWith('.safetensors') && !f.endsWith('.json')) continue;
      const st = statSync(path.join(abs, f));
      h.update(`${f}:${st.size}:${st.mtimeMs}`);
    }
  } catch {
    /* a missing folder fails later with its own message */
  }
  return `${abs}#${h.digest('hex').slice(0, 12)}`;
}

/** Content hash, so a changed dataset or adapter invalidates what depends on it. */
function hashFile(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 16);
}
