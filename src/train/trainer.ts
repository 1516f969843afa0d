// The training loop: LoRA or full finetuning on the GPU with completion-only cross-entropy and/or KL
// distillation (offline top-k or online teacher), gradient accumulation, AdamW/SGD with global-norm
// clipping, HF-style schedules, NaN/Inf guard, atomic checkpoints and exact resume.
//
// Semantics follow HF Trainer / PyTorch so another implementation can replay our steps:
//  - loss of an optimizer step = Σ token losses over all its micro-batches / number of trained tokens
//    in the whole step (transformers' num_items_in_batch normalisation);
//  - schedule factor of optimizer step k (0-based) is lambda(k) (the first step of a warmup runs at 0);
//  - AdamW as torch.optim.AdamW; clipping as torch.nn.utils.clip_grad_norm_ (eps 1e-6).
// Only the rows that carry a label go through the LM head (both losses); the rest get a zero gradient.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Gpu, Tensor } from '../gpu/runtime.ts';
import { addInPlace, gatherRows } from '../kernels/elementwise.ts';
import { buildEmbedGradIndex } from '../kernels/embedding.ts';
import { klDistillation, lmHeadCrossEntropy, TokenSubset, topKDistillation, type LossResult } from '../kernels/loss.ts';
import { AdamW, gradNorm, gradNormClip, SGD } from '../kernels/optimizer.ts';
import { loraToHost, uploadLora, type HostLora } from '../model/adapter.ts';
import { SeedStreamRng } from '../util/rng.ts';
import type { ChatTokenizer } from '../model/tokenizer.ts';
import type { LoraWeights, Transformer } from '../model/transformer.ts';
import { UserError } from '../util/errors.ts';
import { readControlJson } from '../util/fsatomic.ts';
import { modelBackward, type FullGrads, type LoraGrads } from './backward.ts';
import { examplesDigest, type TrainExample } from './data.ts';
import { createFullGrads, fullParamList, zeroGrads } from './full.ts';
import { createLoraGrads, loraGradList, loraParams, type LoraConfig } from './lora.ts';
import { configDiff, decodeState, encodeState, findCheckpoint, writeCheckpoint } from './state.ts';

export type Schedule = 'linear' | 'cosine' | 'constant';

export interface TrainConfig {
  mode: 'lora' | 'full';
  lora?: LoraConfig;
  lr: number;
  epochs: number;
  batchSize: number;
  gradAccum: number;
  warmupSteps: number;
  schedule: Schedule;
  /** Global-norm clipping; 0 or Infinity disables it. */
  maxGradNorm: number;
  weightDecay: number;
  optimizer: 'adamw' | 'sgd';
  seed: number;
  shuffle: boolean;
  maxSteps?: number;
  /** Gradient checkpointing (recompute layer activations in the backward). */
  checkpointing: boolean;
  /** Weight of the distillation loss (0 = CE only, 1 = KL only). */
  distillWeight: number;
}

export interface OnlineTeacher {
  model: Transformer;
  lora?: LoraWeights | null;
  /** System prompt the teacher sees (the student sees the rows as they are). */
  system?: string;
  tokenizer?: ChatTokenizer | null;
  /**
   * Restrict the KL to these token ids (u32): both distributions are renormalised over the set
   * (e.g. the number-format tokens). Absent = the full vocabulary.
   */
  tokenSet?: Tensor;
}

export interface StepInfo {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  ce?: number;
  kl?: number;
  gradNorm?: number;
  lr: number;
  tokens: number;
  elapsedS: number;
}

/** HF schedule factor for optimizer step k (0-based). */
export function scheduleFactor(schedule: Schedule, k: number, warmup: number, total: number): number {
  if (k < warmup) return k / Math.max(1, warmup);
  if (schedule === 'constant') return 1;
  const progress = (k - warmup) / Math.max(1, total - warmup);
  if (schedule === 'linear') return Math.max(0, (total - k) / Math.max(1, total - warmup));
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** Row order of an epoch: a seeded Fisher–Yates permutation, or the file order with shuffle off. */
export function epochOrder(n: number, seed: number, epoch: number, shuffle: boolean): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  if (!shuffle) return order;
  const rng = new SeedStreamRng(seed, `epoch.${epoch}`);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

export function stepsPerEpoch(nExamples: number, batchSize: number, gradAccum: number): number {
  return Math.ceil(Math.ceil(nExamples / batchSize) / gradAccum);
}

/** One micro-batch: its rows and the padded length T (≥ the longest row). */
export interface MicroBatch {
  rows: TrainExample[];
  T: number;
}

/** The micro-batches of optimizer step `s` within an epoch's order. */
export function stepBatches(examples: TrainExample[], order: number[], s: number, cfg: TrainConfig): MicroBatch[] {
  const out: MicroBatch[] = [];
  for (let a = 0; a < cfg.gradAccum; a++) {
    const start = (s * cfg.gradAccum + a) * cfg.batchSize;
    if (start >= order.length) break;
    const rows = order.slice(start, start + cfg.batchSize).map((i) => examples[i]);
    out.push({ rows, T: Math.max(...rows.map((r) => r.ids.length)) });
  }
  return out;
}

/** Trained-position count of a micro-batch (targets = labels shifted left by one). */
function microTargets(mb: MicroBatch): number {
  let n = 0;
  for (const r of mb.rows) for (let t = 1; t < r.labels.length; t++) if (r.labels[t] !== -100) n++;
  return n;
}

/** Σ distillation weights over a micro-batch's trained positions (= microTargets without masks). */
function microDistillWeight(mb: MicroBatch): number {
  let n = 0;
  for (const r of mb.rows) {
    for (let t = 1; t < r.labels.length; t++) if (r.labels[t] !== -100) n += r.distillMask ? (r.distillMask[t - 1] ?? 0) : 1;
  }
  return n;
}

/** The loss results of one micro-batch and their gradient w.r.t. the LM-head rows. */
export interface MicroLoss {
  ce?: LossResult;
  kl?: LossResult;
  dh?: Tensor;
}

/** What accumulateGradients recorded: per-micro-batch losses and the step's normalisers. */
export interface StepRecord {
  results: MicroLoss[];
  totalTargets: number;
  totalDistill: number;
  tokens: number;
}

/** One micro-batch on the GPU (see Trainer.prepareMicro). */
export interface MicroInputs {
  hostIds: Uint32Array;
  hostPos: Uint32Array;
  /** Labelled positions. */
  targets: number;
  ids: Tensor | null;
  pos: Tensor | null;
  /** Shifted targets of every row (uncompacted). */
  tgt: Tensor | null;
  /** The labelled rows: host indices in the micro-batch, GPU rows to gather (offset in a joint batch), inverse map, targets. */
  compact: { hostRows: Uint32Array; rows: Tensor; inverse: Tensor | null; tgt: Tensor } | null;
  topk: { indices: Tensor; logprobs: Tensor; mask: Tensor } | null;
  dispose(): void;
}

/** One micro-batch packed on the host (packMicroBatch): what prepareMicro uploads. */
export interface PackedMicroBatch {
  /** Token ids [B·T], right-padded with 0. */
  ids: Uint32Array;
  /** Positions [B·T] (0..T-1 in every row). */
  pos: Uint32Array;
  /** Shifted targets [B·T]: labels[t+1], −100 where untrained or padding. */
  tgt: Int32Array;
  /** Number of labelled positions. */
  targets: number;
  /**
   * The labelled rows, when only they go through the LM head: their indices in the micro-batch (hostRows),
   * the same shifted by the joint row offset (rows), each row's compact row or 0xffffffff (inverse; null
   * in a joint batch) and their targets.
   */
  compact: { hostRows: Uint32Array; rows: Uint32Array; inverse: Uint32Array | null; tgt: Int32Array } | null;
  /** Stored teacher top-k, one row per LM-head row (the compact rows when compacting); padding lanes −∞. */
  topk: { rows: number; k: number; indices: Uint32Array; logprobs: Float32Array; mask: Float32Array } | null;
}

/**
 * Packs one micro-batch on the host (no GPU): padded ids and positions, shifted targets, the labelled rows
 * and, for offline distillation, the stored teacher top-k of those rows. `joint`: the micro-batch is one
 * student's block of a joint batch starting at row rowOffset (the labelled rows are then always listed).
 */
export function packMicroBatch(mb: MicroBatch, opts: { offlineTopK: boolean; joint?: { rowOffset: number } }): PackedMicroBatch {
  const { joint } = opts;
  const B = mb.rows.length;
  const T = mb.T;
  const ids = new Uint32Array(B * T);
  const pos = new Uint32Array(B * T);
  const tgt = new Int32Array(B * T).fill(-100);
  mb.rows.forEach((r, b) => {
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = t < r.ids.length ? r.ids[t] : 0;
      pos[b * T + t] = t;
      if (t + 1 < r.labels.length) tgt[b * T + t] = r.labels[t + 1];
    }
  });
  // Completion-only losses need the LM head only at rows that carry a label: gather them (prompt rows are
  // most of a chat) and scatter the gradient back. `inverse` maps each row to its compact row, or past the
  // end (gatherRows writes zeros there).
  let targets = 0;
  for (let i = 0; i < tgt.length; i++) if (tgt[i] !== -100) targets++;
  const useCompact = targets > 0 && (targets < B * T || !!joint);
  const rowList = new Uint32Array(useCompact ? targets : B * T);
  let compact: PackedMicroBatch['compact'] = null;
  if (useCompact) {
    const inverse = new Uint32Array(B * T).fill(0xffffffff);
    const ct = new Int32Array(targets);
    for (let i = 0, j = 0; i < tgt.length; i++) {
      if (tgt[i] === -100) continue;
      rowList[j] = i;
      inverse[i] = j;
      ct[j++] = tgt[i];
    }
    const off = joint?.rowOffset ?? 0;
    compact = { hostRows: rowList, rows: off ? rowList.map((r) => r + off) : rowList, inverse: joint ? null : inverse, tgt: ct };
  } else {
    for (let i = 0; i < rowList.length; i++) rowList[i] = i;
  }
  let topk: PackedMicroBatch['topk'] = null;
  if (opts.offlineTopK) {
    const k = Math.max(...mb.rows.map((r) => (r.teacherTopK ? Math.max(...r.teacherTopK.indices.map((x) => x.length)) : 0)));
    if (k === 0) throw new UserError('distillation from stored top-k needs "teacher_topk" on every row (or --distill-from a teacher model)');
    for (const r of mb.rows) if (!r.teacherTopK) throw new UserError('every row needs "teacher_topk" for offline distillation');
    const M = rowList.length;
    const indices = new Uint32Array(M * k).fill(0xffffffff);
    const logprobs = new Float32Array(M * k).fill(-Infinity);
    const mask = new Float32Array(M);
    rowList.forEach((flat, row) => {
      if (tgt[flat] === -100) return;
      const r = mb.rows[Math.floor(flat / T)];
      const t = flat % T;
      mask[row] = 1;
      const idx = r.teacherTopK!.indices[t];
      const lps = r.teacherTopK!.logprobs[t];
      for (let j = 0; j < idx.length; j++) {
        indices[row * k + j] = idx[j];
        logprobs[row * k + j] = lps[j];
      }
    });
    topk = { rows: M, k, indices, logprobs, mask };
  }
  return { ids, pos, tgt, targets, compact, topk };
}

/** Σ trained positions and Σ distillation weights over a step's micro-batches (its loss normalisers). */
export function stepNormalisers(mbs: readonly MicroBatch[]): { totalTargets: number; totalDistill: number } {
  // The KL is normalised by its own weight (masked positions neither count nor contribute).
  return { totalTargets: mbs.reduce((a, mb) => a + microTargets(mb), 0), totalDistill: mbs.reduce((a, mb) => a + microDistillWeight(mb), 0) };
}

export interface TrainerState {
  step: number;
  epoch: number;
  stepInEpoch: number;
  losses: { step: number; loss: number; lr: number; gradNorm?: number }[];
  config: TrainConfig;
}

export interface TrainResult {
  losses: TrainerState['losses'];
  steps: number;
  tokens: number;
  wallS: number;
}

export class Trainer {
  readonly lora: LoraWeights | null;
  private readonly loraGrads: LoraGrads | null;
  private readonly fullGrads: FullGrads | null;
  private readonly params: Tensor[];
  private readonly grads: Tensor[];
  private readonly opt: AdamW | SGD;
  readonly totalSteps: number;
  state: TrainerState;
  /** The online teacher's token set as LM-head rows (built on the first step; see useSubset). */
  private subset: TokenSubset | null = null;
  private subsetChecked = false;
  private readonly ownsLora: boolean;

  constructor(
    readonly gpu: Gpu,
    readonly model: Transformer,
    readonly examples: TrainExample[],
    readonly cfg: TrainConfig,
    initialLora: HostLora | null,
    readonly teacher: OnlineTeacher | null = null,
    /** LoRA: adapter and gradient buffers owned elsewhere (views of a joint trainer's stacked ones). */
    external?: { lora: LoraWeights; loraGrads: LoraGrads },
  ) {
    this.ownsLora = !external;
    if (cfg.mode === 'lora') {
      if (!initialLora && !external) throw new UserError('LoRA training needs an initial adapter');
      this.lora = external ? external.lora : uploadLora(gpu, model.cfg, initialLora!);
      this.lora.dropout = cfg.lora?.dropout ?? 0;
      this.loraGrads = external ? external.loraGrads : createLoraGrads(gpu, this.lora);
      this.fullGrads = null;
      this.params = loraParams(this.lora).params;
      this.grads = loraGradList(this.lora, this.loraGrads);
    } else {
      this.lora = null;
      this.loraGrads = null;
      model.setWeightsMutable(true);
      this.fullGrads = createFullGrads(gpu, model.weights);
      this.params = fullParamList(model.weights).params;
      this.grads = fullParamList(this.fullGrads).params;
    }
    this.opt =
      cfg.optimizer === 'sgd'
        ? new SGD(gpu, this.params, { weightDecay: cfg.weightDecay })
        : new AdamW(gpu, this.params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: cfg.weightDecay });
    const perEpoch = stepsPerEpoch(examples.length, cfg.batchSize, cfg.gradAccum);
    this.totalSteps = Math.min(cfg.maxSteps ?? Infinity, perEpoch * cfg.epochs);
    this.state = { step: 0, epoch: 0, stepInEpoch: 0, losses: [], config: cfg };
  }

  get stepsPerEpoch(): number {
    return stepsPerEpoch(this.examples.length, this.cfg.batchSize, this.cfg.gradAccum);
  }

  /**
   * Uploads one micro-batch (packed by packMicroBatch): ids, positions, shifted targets (i32), the labelled
   * rows, teacher top-k if any. `joint`: the micro-batch is one student's block of a joint batch starting at
   * row rowOffset; then the labelled rows are always listed (rows tensor = joint rows) and ids/positions are
   * not uploaded.
   */
  prepareMicro(mb: MicroBatch, joint?: { rowOffset: number }): MicroInputs {
    const gpu = this.gpu;
    const h = packMicroBatch(mb, { offlineTopK: this.cfg.distillWeight > 0 && !this.teacher, joint });
    const n = h.ids.length;
    const c = h.compact;
    const compact: MicroInputs['compact'] = c && {
      hostRows: c.hostRows,
      rows: gpu.upload(c.rows, [c.rows.length], 'u32', 'target_rows'),
      inverse: c.inverse && gpu.upload(c.inverse, [n], 'u32', 'target_rows.inverse'),
      tgt: gpu.upload(c.tgt, [c.tgt.length], 'i32', 'targets'),
    };
    const topk: MicroInputs['topk'] = h.topk && {
      indices: gpu.upload(h.topk.indices, [h.topk.rows, h.topk.k], 'u32', 'teacher_topk.indices'),
      logprobs: gpu.upload(h.topk.logprobs, [h.topk.rows, h.topk.k], 'f32', 'teacher_topk.logprobs'),
      mask: gpu.upload(h.topk.mask, [h.topk.rows], 'f32', 'distill_mask'),
    };
    const inputs: MicroInputs = {
      hostIds: h.ids,
      hostPos: h.pos,
      targets: h.targets,
      ids: joint ? null : gpu.upload(h.ids, [n], 'u32', 'ids'),
      pos: joint ? null : gpu.upload(h.pos, [n], 'u32', 'positions'),
      tgt: compact || (h.targets === 0 && joint) ? null : gpu.upload(h.tgt, [n], 'i32', 'targets'),
      compact,
      topk,
      dispose: () => {
        for (const t of [inputs.ids, inputs.pos, inputs.tgt, compact?.rows, compact?.inverse, compact?.tgt, topk?.indices, topk?.logprobs, topk?.mask]) t?.dispose();
      },
    };
    return inputs;
  }

  /** Teacher hidden states aligned with the student's rows, or with `studentRows` only (then no mask is needed). */
  private teacherHidden(mb: MicroBatch, studentT: number, studentRows?: Uint32Array): { hidden: Tensor; mask: Tensor | null } {
    if (studentRows && mb.rows.every((r) => r.teacherRows)) return this.cachedTeacherHidden(mb, studentT, studentRows);
    const teacher = this.teacher!;
    const gpu = this.gpu;
    // Teacher sequences: the same conversation, with the teacher's system prompt when given.
    const tRows = mb.rows.map((r) => teacherSequence(teacher, r));
    const B = mb.rows.length;
    const T = Math.max(...tRows.map((r) => r.ids.length));
    const ids = new Uint32Array(B * T);
    const pos = new Uint32Array(B * T);
    const gather = new Uint32Array(B * studentT);
    const mask = new Float32Array(B * studentT);
    tRows.forEach((r, b) => {
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = t < r.ids.length ? r.ids[t] : 0;
        pos[b * T + t] = t;
      }
      // Match trained rows in order: student row t (target labels[t+1]) ↔ teacher row t'.
      const sRows: number[] = [];
      const sr = mb.rows[b];
      for (let t = 0; t + 1 < sr.labels.length; t++) if (sr.labels[t + 1] !== -100) sRows.push(t);
      const tr = r.trained;
      if (tr.length !== sRows.length) throw new UserError('teacher and student sequences train different numbers of tokens (the system prompt changed the assistant tokenization)');
      sRows.forEach((t, j) => {
        gather[b * studentT + t] = b * T + tr[j];
        mask[b * studentT + t] = 1;
      });
    });
    const idsT = gpu.upload(ids, [B * T], 'u32', 'teacher.ids');
    const posT = gpu.upload(pos, [B * T], 'u32', 'teacher.positions');
    const fwd = teacher.model.forward(idsT, posT, B, T, { lora: teacher.lora });
    // With studentRows (the labelled rows, all of mask 1) the teacher rows are gathered straight to those.
    const rows = studentRows ? studentRows.map((i) => gather[i]) : gather;
    const idx = gpu.upload(rows, [rows.length], 'u32', 'teacher.gather');
    const aligned = gatherRows(gpu, fwd.hidden, idx);
    fwd.hidden.dispose();
    idsT.dispose();
    posT.dispose();
    idx.dispose();
    // Per-position distillation weights of the student rows (divergence masking) multiply the mask.
    const weighted = mb.rows.some((r) => r.distillMask);
    if (weighted) {
      mb.rows.forEach((r, b) => {
        if (!r.distillMask) return;
        for (let t = 0; t < studentT; t++) mask[b * studentT + t] *= t < r.distillMask.length ? r.distillMask[t] : 0;
      });
    }
    if (studentRows && !weighted) return { hidden: aligned, mask: null };
    const rowMask = studentRows ? studentRows.map((i) => mask[i]) : mask;
    return { hidden: aligned, mask: gpu.upload(Float32Array.from(rowMask), [rowMask.length], 'f32', 'distill_mask') };
  }

  /** The precomputed teacher rows (TrainExample.teacherRows) gathered for the labelled student rows. */
  private cachedTeacherHidden(mb: MicroBatch, studentT: number, studentRows: Uint32Array): { hidden: Tensor; mask: Tensor | null } {
    const H = this.teacher!.model.cfg.hidden;
    const out = new Float32Array(studentRows.length * H);
    const mask = new Float32Array(studentRows.length);
    // Trained position t of row b is the j-th trained position of that row: count them in order.
    const ordinal = new Map<number, number>();
    mb.rows.forEach((r, b) => {
      let j = 0;
      for (let t = 0; t + 1 < r.labels.length; t++) if (r.labels[t + 1] !== -100) ordinal.set(b * studentT + t, j++);
      if (j * H !== r.teacherRows!.length) throw new UserError(`teacher rows hold ${r.teacherRows!.length / H} positions but the row trains ${j}`);
    });
    studentRows.forEach((flat, i) => {
      const b = Math.floor(flat / studentT);
      const r = mb.rows[b];
      const j = ordinal.get(flat)!;
      out.set(r.teacherRows!.subarray(j * H, (j + 1) * H), i * H);
      mask[i] = r.distillMask ? (r.distillMask[flat % studentT] ?? 0) : 1;
    });
    const weighted = mb.rows.some((r) => r.distillMask);
    return {
      hidden: this.gpu.upload(out, [studentRows.length, H], 'f32', 'teacher.cached'),
      mask: weighted ? this.gpu.upload(mask, [studentRows.length], 'f32', 'distill_mask') : null,
    };
  }

  /**
   * With a token set smaller than half the vocabulary, the KL computes logits of the set's LM-head rows
   * only (TokenSubset: the same loss and gradients, |set|/V of the head's work). Reads the set back
   * once.
   */
  async prepareSubset(): Promise<void> {
    if (this.subsetChecked) return;
    this.subsetChecked = true;
    const set = this.teacher?.tokenSet;
    if (!set || this.cfg.distillWeight <= 0) return;
    const w = this.model.lmHead;
    const wt = this.teacher!.model.lmHead;
    if (wt.rows !== w.rows || wt.rowsPerChunk !== w.rowsPerChunk) return;
    const [ids] = (await this.gpu.readMany([set])) as Uint32Array[];
    const sub = new TokenSubset(this.gpu, ids, w.rows, w.rowsPerChunk);
    const maxRows = this.cfg.batchSize * Math.max(...this.examples.map((r) => r.ids.length));
    if (sub.size * 2 > w.rows || maxRows * sub.size * 4 > this.gpu.limits.maxStorageBufferBindingSize) sub.dispose();
    else this.subset = sub;
  }

  /**
   * Forward and backward of every micro-batch of optimizer step `stepInEpoch` (in `order`), accumulating
   * the gradient buffers; returns the unread loss results and the step's normalisers.
   */
  accumulateGradients(order: number[], stepInEpoch: number): StepRecord {
    const { gpu, cfg, model } = this;
    const mbs = stepBatches(this.examples, order, stepInEpoch, cfg);
    const { totalTargets, totalDistill } = stepNormalisers(mbs);
    const results: MicroLoss[] = [];
    let tokens = 0;
    for (const [a, mb] of mbs.entries()) {
      const B = mb.rows.length;
      const train = { seed: cfg.seed, micro: this.state.step * cfg.gradAccum + a };
      tokens += mb.rows.reduce((a, r) => a + r.ids.length, 0);
      const inp = this.prepareMicro(mb);
      const fwd = model.forward(inp.ids!, inp.pos!, B, mb.T, { lora: this.lora, save: true, checkpoint: cfg.checkpointing, train });
      // Both losses read the LM head at the labelled rows only when compacting; dh is their gradient there.
      const c = inp.compact;
      const hidden = c ? gatherRows(gpu, fwd.hidden, c.rows) : fwd.hidden;
      const r = this.lossGradient(hidden, mb, inp, totalTargets, totalDistill);
      const dx = c ? gatherRows(gpu, r.dh!, c.inverse!) : r.dh!;
      modelBackward(model, fwd, dx, {
        lora: this.lora,
        loraGrads: this.loraGrads ?? undefined,
        fullGrads: this.fullGrads ?? undefined,
        embedIndex: this.fullGrads ? buildEmbedGradIndex(inp.hostIds, model.cfg.vocabSize) : undefined,
        train,
        positions: inp.pos!,
        batch: B,
        seqLen: mb.T,
      });
      fwd.hidden.dispose();
      if (c) {
        hidden.dispose();
        dx.dispose();
      }
      inp.dispose();
      results.push(r);
    }
    return { results, totalTargets, totalDistill, tokens };
  }

  /**
   * The losses of one micro-batch at its LM-head rows `hidden` (the labelled rows when compacted, else
   * every row): CE and/or KL with the step's normalisers (recorded, not read); dh is their summed gradient
   * w.r.t. hidden (owned by the loss results), the start of the backward.
   */
  lossGradient(hidden: Tensor, mb: MicroBatch, inp: MicroInputs, totalTargets: number, totalDistill: number): MicroLoss {
    const { gpu, cfg, model } = this;
    const wCe = 1 - cfg.distillWeight;
    const wKl = cfg.distillWeight;
    const r: MicroLoss = {};
    const norm = Math.max(1, totalTargets);
    const c = inp.compact;
    if (wCe > 0) {
      r.ce = lmHeadCrossEntropy(gpu, hidden, model.lmHead, c ? c.tgt : inp.tgt!, {
        normalizer: norm / wCe,
        dW: this.fullGrads ? this.fullGrads.lmHead : false,
      });
      r.dh = r.ce.dx;
    }
    if (wKl > 0) {
      const student = { x: hidden, w: model.lmHead };
      if (this.teacher) {
        const th = this.teacherHidden(mb, mb.T, c?.hostRows);
        r.kl = klDistillation(gpu, student, { x: th.hidden, w: this.teacher.model.lmHead }, {
          mask: th.mask ?? undefined,
          tokenSet: this.teacher.tokenSet,
          tokenSubset: this.subset ?? undefined,
          normalizer: Math.max(1e-9, totalDistill) / wKl,
          dW: this.fullGrads ? this.fullGrads.lmHead : false,
        });
        th.hidden.dispose();
        th.mask?.dispose();
      } else {
        r.kl = topKDistillation(gpu, student, inp.topk!.indices, inp.topk!.logprobs, {
          mask: inp.topk!.mask,
          normalizer: norm / wKl,
          dW: this.fullGrads ? this.fullGrads.lmHead : false,
        });
      }
      if (r.dh) addInPlace(gpu, r.dh, r.kl.dx!); // both losses: their input gradients add up
      else r.dh = r.kl.dx;
    }
    return r;
  }

  /**
   * The gradient of optimizer step `stepInEpoch` of epoch 0 at the current parameters, read back (one
   * array per parameter, in the optimizer's order) without updating anything; the buffers are zeroed again.
   */
  async gradientAt(stepInEpoch = 0): Promise<Float32Array[]> {
    await this.prepareSubset();
    const order = epochOrder(this.examples.length, this.cfg.seed, 0, this.cfg.shuffle);
    const { results } = this.accumulateGradients(order, stepInEpoch);
    for (const r of results) {
      r.ce?.dispose();
      r.kl?.dispose();
    }
    const g = (await this.gpu.readMany(this.grads)) as Float32Array[];
    zeroGrads(this.gpu, this.grads);
    return g;
  }

  /** The trained parameters in the optimizer's order (LoRA A/B pairs, or every model weight). */
  get parameters(): readonly Tensor[] {
    return this.params;
  }

  /** Runs one optimizer step (all micro-batches); returns the step's losses read back once. */
  async step(order: number[], stepInEpoch: number): Promise<StepInfo & { finite: boolean }> {
    const t0 = performance.now();
    await this.prepareSubset();
    const rec = this.recordNorm(this.accumulateGradients(order, stepInEpoch));
    const vals = (await this.gpu.readMany(rec.toRead)) as Float32Array[];
    return this.finishStep(rec, vals, t0);
  }

  /** Global-norm clipping threshold, or undefined when clipping is off. */
  private get clipNorm(): number | undefined {
    const c = this.cfg.maxGradNorm;
    return c > 0 && Number.isFinite(c) ? c : undefined;
  }

  /**
   * Records the gradient norm of an accumulated step, once: [norm, clipCoef] when clipping (the optimizer
   * step takes it as it is), else [norm]. Returns the tensors to read back (norm, then the losses' results).
   */
  recordNorm(rec: StepRecord): StepRecord & { normT: Tensor; toRead: Tensor[] } {
    // Loss and gradient norm are checked before the update is applied: record the norm first.
    const clip = this.clipNorm;
    const normT = clip === undefined ? gradNorm(this.gpu, this.grads) : gradNormClip(this.gpu, this.grads, clip);
    const toRead: Tensor[] = [normT];
    for (const r of rec.results) {
      if (r.ce) toRead.push(r.ce.result);
      if (r.kl) toRead.push(r.kl.result);
    }
    return { ...rec, normT, toRead };
  }

  /**
   * Given the values read back for `rec.toRead`: the step's loss and norm; when finite, records the
   * optimizer update (clipped by this student's norm, its schedule's lr). Zeroes the gradients.
   */
  finishStep(rec: StepRecord & { normT: Tensor }, vals: Float32Array[], t0: number): StepInfo & { finite: boolean } {
    const { gpu, cfg } = this;
    const { results, totalTargets, totalDistill, tokens } = rec;
    const wCe = 1 - cfg.distillWeight;
    const wKl = cfg.distillWeight;
    const k = this.state.step;
    const lr = cfg.lr * scheduleFactor(cfg.schedule, k, cfg.warmupSteps, this.totalSteps);
    const gn = vals[0][0];
    let ceSum = 0;
    let klSum = 0;
    let i = 1;
    for (const r of results) {
      if (r.ce) ceSum += vals[i++][1];
      if (r.kl) klSum += vals[i++][1];
      r.ce?.dispose();
      r.kl?.dispose();
    }
    const n = Math.max(1, totalTargets);
    const ce = ceSum / n;
    const kl = klSum / Math.max(1e-9, totalDistill);
    const loss = wCe * ce + wKl * kl;
    const finite = Number.isFinite(loss) && Number.isFinite(gn);
    if (finite) this.optimizerStep(rec.normT, lr);
    rec.normT.dispose();
    zeroGrads(gpu, this.grads);
    return {
      step: k + 1,
      totalSteps: this.totalSteps,
      epoch: this.state.epoch,
      loss,
      ce: wCe > 0 ? ce : undefined,
      kl: wKl > 0 ? kl : undefined,
      gradNorm: gn,
      lr,
      tokens,
      elapsedS: (performance.now() - t0) / 1000,
      finite,
    };
  }

  /**
   * Records the parameter update from the accumulated gradients, with the norm recordNorm computed
   * (normT: [norm, clipCoef] when clipping; the optimizer does not reduce the gradients again).
   */
  private optimizerStep(normT: Tensor, lr: number): void {
    this.opt.step(this.grads, { lr, normClip: this.clipNorm === undefined ? undefined : normT });
    if (this.lora) this.lora.version = (this.lora.version ?? 0) + 1; // merged weights are stale now
  }

  /** The error for a step whose loss or gradient norm is not finite. */
  divergedError(info: StepInfo): UserError {
    return new UserError(
      `training diverged at step ${info.step}: loss ${info.loss}, gradient norm ${info.gradNorm} (not finite); the last good checkpoint is kept — lower --lr or check the data`,
    );
  }

  /** Counts a finished step into the state; returns whether it ended an epoch (then epoch/stepInEpoch moved on). */
  advance(info: StepInfo): boolean {
    this.state.step++;
    this.state.stepInEpoch++;
    this.state.losses.push({ step: info.step, loss: info.loss, lr: info.lr, gradNorm: info.gradNorm });
    if (this.state.stepInEpoch < this.stepsPerEpoch) return false;
    this.state.epoch++;
    this.state.stepInEpoch = 0;
    return true;
  }

  /** Whether steps are left. */
  get active(): boolean {
    return this.state.step < this.totalSteps;
  }

  /** The row order of the current epoch. */
  epochOrder(): number[] {
    return epochOrder(this.examples.length, this.cfg.seed, this.state.epoch, this.cfg.shuffle);
  }

  /** Trains until totalSteps, calling onStep after each step and save() every saveEvery steps. */
  async run(hooks: { onStep?: (s: StepInfo) => void; onEpochEnd?: (epoch: number, t: Trainer) => Promise<void>; save?: (t: Trainer) => Promise<void>; saveEvery?: number } = {}): Promise<TrainResult> {
    const t0 = performance.now();
    let tokens = 0;
    const perEpoch = this.stepsPerEpoch;
    while (this.state.step < this.totalSteps) {
      const order = epochOrder(this.examples.length, this.cfg.seed, this.state.epoch, this.cfg.shuffle);
      while (this.state.stepInEpoch < perEpoch && this.state.step < this.totalSteps) {
        const info = await this.step(order, this.state.stepInEpoch);
        if (!info.finite) throw this.divergedError(info);
        tokens += info.tokens;
        const epochEnded = this.advance(info);
        hooks.onStep?.(info);
        if (hooks.save && hooks.saveEvery && this.state.step % hooks.saveEvery === 0 && this.state.step < this.totalSteps) await hooks.save(this);
        // Called with the number of finished epochs, before the next epoch's first step.
        if (epochEnded) {
          await hooks.onEpochEnd?.(this.state.epoch, this);
          break;
        }
      }
    }
    return { losses: this.state.losses, steps: this.state.step, tokens, wallS: (performance.now() - t0) / 1000 };
  }

  /** The trained adapter on the host (LoRA mode). */
  async adapterHost(): Promise<HostLora> {
    if (!this.lora || !this.cfg.lora) throw new Error('adapterHost: not LoRA training');
    return loraToHost(this.gpu, this.lora, this.cfg.lora.alpha, this.cfg.lora.rslora);
  }

  /**
   * Writes a checkpoint (params, optimizer moments, counters, the training config and a digest of the
   * data) as one atomic unit in `dir` (see writeCheckpoint); `extra(ckptDir)` may add files to it, such
   * as the weights in a user-facing format. Returns the checkpoint folder.
   */
  async saveState(dir: string, extra?: (ckptDir: string) => Promise<void>): Promise<string> {
    const params = (await this.gpu.readMany(this.params)) as Float32Array[];
    const opt = await this.opt.exportState();
    const json = { ...this.state, optimizerStep: opt.step, examples: this.examples.length, dataDigest: examplesDigest(this.examples), version: 2 };
    return writeCheckpoint(dir, { 'state.bin': encodeState(params, opt), 'state.json': JSON.stringify(json, null, 2) + '\n' }, { step: this.state.step, optimizerStep: opt.step }, extra);
  }

  /**
   * Restores the newest verified checkpoint in `dir` (falling back past damaged or interrupted ones, with
   * notes). Refuses, naming what differs, a checkpoint of another training config or other data.
   */
  loadState(dir: string): { dir: string; step: number; notes: string[] } {
    const found = findCheckpoint(dir);
    const jf = path.join(found.dir, 'state.json');
    const json = readControlJson(jf, 'training state') as (TrainerState & { optimizerStep: number; examples: number; dataDigest: string }) | null;
    if (!json || typeof json.step !== 'number' || !Array.isArray(json.losses) || typeof json.config !== 'object') throw new UserError(`${jf}: corrupt training state`);
    if (json.step !== found.manifest.step) throw new UserError(`${jf}: step ${json.step} but the manifest says ${found.manifest.step}`);
    const diff = configDiff(json.config as unknown as Record<string, unknown>, this.cfg as unknown as Record<string, unknown>);
    if (diff.length) throw new UserError(`${found.dir}: the checkpoint was made with another training config (${diff.join(', ')}); resume with the same settings or start over`);
    if (json.examples !== this.examples.length || json.dataDigest !== examplesDigest(this.examples)) {
      throw new UserError(`${found.dir}: the checkpoint was made on other training data (${json.examples} rows then, ${this.examples.length} now${json.examples === this.examples.length ? ', same count, different content' : ''}); resume with the same data or start over`);
    }
    const { params, opt } = decodeState(new Uint8Array(readFileSync(path.join(found.dir, 'state.bin'))), this.params.map((p) => p.size));
    if (opt.step !== found.manifest.optimizerStep) throw new UserError(`${path.join(found.dir, 'state.bin')}: optimizer step ${opt.step} but the manifest says ${found.manifest.optimizerStep}`);
    params.forEach((p, i) => this.gpu.write(this.params[i], p));
    if (this.lora) this.lora.version = (this.lora.version ?? 0) + 1;
    this.opt.importState(opt);
    this.state = { step: json.step, epoch: json.epoch, stepInEpoch: json.stepInEpoch, losses: json.losses, config: this.cfg };
    return { dir: found.dir, step: json.step, notes: found.notes };
  }

  dispose(): void {
    this.subset?.dispose();
    this.opt.dispose();
    if (this.loraGrads && this.ownsLora) for (const g of loraGradList(this.lora!, this.loraGrads)) g.dispose();
    if (this.lora && this.ownsLora) for (const p of loraParams(this.lora).params) p.dispose();
    if (this.fullGrads) for (const g of fullParamList(this.fullGrads).params) g.dispose();
  }
}

/**
 * The teacher's sequence of a training row and its trained positions (t whose next label is trained), in order:
 * the same conversation, with the teacher's system prompt when it has one. A row cut at maxLen keeps only its
 * first trained tokens, so the teacher's positions are its first as many (the system prompt only shifts them).
 */
export function teacherSequence(teacher: Pick<OnlineTeacher, 'system' | 'tokenizer'>, r: Pick<TrainExample, 'ids' | 'labels' | 'messages'>): { ids: readonly number[]; trained: number[] } {
  const trainedOf = (labels: readonly number[], limit: number) => {
    const out: number[] = [];
    for (let t = 0; t + 1 < labels.length && out.length < limit; t++) if (labels[t + 1] !== -100) out.push(t);
    return out;
  };
  if (!teacher.system) return { ids: r.ids, trained: trainedOf(r.labels, Infinity) };
  if (!r.messages || !teacher.tokenizer) throw new UserError('a teacher system prompt needs chat rows and a tokenizer');
  const own = trainedOf(r.labels, Infinity).length;
  const { ids, labels } = teacher.tokenizer.chatTrainingIds([{ role: 'system', content: teacher.system }, ...r.messages.filter((m) => m.role !== 'system')]);
  const trained = trainedOf(labels, own);
  return { ids: ids.slice(0, (trained.at(-1) ?? 0) + 1), trained };
}

/**
 * The online teacher's final hidden states at every trained position of every example (in order), for
 * TrainExample.teacherRows: one batched teacher forward over the dataset instead of one per student step.
 * The teacher sees the same conversation, with its system prompt when it has one.
 */
export async function computeTeacherRows(gpu: Gpu, teacher: OnlineTeacher, examples: readonly TrainExample[], batchSize = 32): Promise<Float32Array[]> {
  const H = teacher.model.cfg.hidden;
  const out: Float32Array[] = [];
  for (let b0 = 0; b0 < examples.length; b0 += batchSize) {
    const batch = examples.slice(b0, b0 + batchSize).map((r) => teacherSequence(teacher, r));
    const T = Math.max(...batch.map((r) => r.ids.length));
    const ids = new Uint32Array(batch.length * T);
    const pos = new Uint32Array(batch.length * T);
    const rows: number[] = [];
    const counts: number[] = [];
    batch.forEach((r, b) => {
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = t < r.ids.length ? r.ids[t] : 0;
        pos[b * T + t] = t;
      }
      for (const t of r.trained) rows.push(b * T + t);
      counts.push(r.trained.length);
    });
    const idsT = gpu.upload(ids, [ids.length], 'u32', 'teacher.ids');
    const posT = gpu.upload(pos, [pos.length], 'u32', 'teacher.positions');
    const fwd = teacher.model.forward(idsT, posT, batch.length, T, { lora: teacher.lora });
    const idx = gpu.upload(Uint32Array.from(rows), [rows.length], 'u32', 'teacher.gather');
    const g = gatherRows(gpu, fwd.hidden, idx);
    const [host] = (await gpu.readMany([g])) as Float32Array[];
    for (const t of [idsT, posT, fwd.hidden, idx, g]) t.dispose();
    let o = 0;
    for (const n of counts) {
      out.push(host.slice(o * H, (o + n) * H));
      o += n;
    }
  }
  return out;
}
