// Joint training of K students: every student keeps its own data, order, seed, schedule, loss
// normalisation, gradient clipping by its own norm and optimizer state (one Trainer each), and one
// joint step advances every unfinished student by one optimizer step with one submit and one readback.
//
// Two engines:
//  - 'multilora': LoRA students of one frozen base with adapters of one shape. Their micro-batches are
//    concatenated into one joint batch (padded to a common length, a multiple of 8, so each student's
//    rows form whole 8-row tiles) and run through ONE base forward/backward; the LoRA branches are
//    segmented matmuls in which student k's rows use adapter k (MultiLora), and each student's
//    adapter gradients are summed over its own rows. Adapters live stacked ([K, r, in], [K, out, r]);
//    each student's Trainer works on views of them.
//  - 'interleaved': any other mix (full-parameter students, each training its own weight copy, or LoRA
//    students of different bases): each student's forward/backward is recorded in turn into the same
//    submit. On lavapipe, where the tiny students' matmuls (≈3,000 rows each) are already
//    throughput-bound, stacking K weight copies into batched matmuls would not change the per-FLOP
//    speed; what joint training saves there is the per-step wait, which this engine removes too.
//
// Joint equals separate up to float32 rounding: the real rows of a padded sequence never read pad
// rows (causal attention, row-wise norms and matmuls), and the multilora engine computes
// x·Wᵀ + s·(x·Aᵀ)·Bᵀ where a single Trainer uses x·(W + s·B·A)ᵀ.
import path from 'node:path';
import type { Gpu, Tensor } from '../gpu/runtime.ts';
import { copyRows, gatherRows } from '../kernels/elementwise.ts';
import { SEG_TILE } from '../kernels/matmul.ts';
import { loraDims, type HostLora } from '../model/adapter.ts';
import { disposeMultiLora, stackedGrads, stackHostLoras } from '../model/multilora.ts';
import { Transformer, type LoraWeights, type MultiLora } from '../model/transformer.ts';
import { UserError } from '../util/errors.ts';
import { modelBackward } from './backward.ts';
import type { TrainExample } from './data.ts';
import { initLoraHost } from './lora.ts';
import { hasCheckpoint } from './state.ts';
import { stepBatches, stepNormalisers, Trainer, type MicroBatch, type MicroLoss, type OnlineTeacher, type StepInfo, type StepRecord, type TrainConfig, type TrainResult } from './trainer.ts';


/** One student of a joint job. */
export interface JointStudent {
  /**
   * The student's model: LoRA — the frozen base (students given the same object share one base
   * forward); full — the weights this student trains in place (one object per student).
   */
  model: Transformer;
  examples: TrainExample[];
  config: TrainConfig;
  /** LoRA: the initial adapter (e.g. initLoraHost(model.cfg, config.lora, seed)). */
  initialLora?: HostLora | null;
  teacher?: OnlineTeacher | null;
}

/** A student during and after joint training. */
export interface StudentHandle {
  readonly index: number;
  /** Its Trainer: state, losses, saveState/loadState (resume), adapterHost. */
  readonly trainer: Trainer;
  /** Its weights (full) or its base (LoRA). */
  readonly model: Transformer;
  /** Its adapter (LoRA; a view of the stacked adapters with the multilora engine). */
  readonly lora: LoraWeights | null;
}

export interface JointHooks {
  onStep?: (student: number, info: StepInfo) => void;
  /** After a student's epoch (number of finished epochs), before its next step; awaited. */
  onEpochEnd?: (student: number, epoch: number, h: StudentHandle) => Promise<void>;
  /** Every saveEvery steps of a student (not after its last step); awaited. */
  save?: (student: number, h: StudentHandle) => Promise<void>;
  saveEvery?: number;
  /** When a student has taken its last step (its epoch-end hook has run); awaited. */
  onFinished?: (student: number, h: StudentHandle) => Promise<void>;
}

export type JointEngine = 'multilora' | 'interleaved';

/**
 * Largest stacked merged copy of the base's projections (K adapters × W and, on software adapters, Wᵀ)
 * the multilora engine keeps. Merged, a joint step runs the products a single merged adapter runs (one
 * segmented matmul per projection and per input gradient); unmerged, the LoRA branch adds two thin
 * segmented products per projection and direction, which on lavapipe cost ~40% of a tiny student's step
 * (K = 1: 997 against ~600 ms; output-bound K = 8 products).
 */
const MERGED_MAX_BYTES = 512 * 2 ** 20;

/**
 * Rows of one joint forward/backward (the micro-batches of whole students; a student alone may exceed
 * it). On lavapipe a joint step's cost per token does not fall with size (the products of one tiny
 * student, ~3,000 rows, are already throughput-bound), and 16 students in one forward (45k rows, ~0.8 GB
 * of saved activations) ran at 0.46× the tokens/s of one student alone; so on software adapters the
 * joint batch is cut into forwards of about four students, all still in one submit.
 */
const JOINT_MAX_ROWS_SOFTWARE = 12_288;
const JOINT_MAX_ROWS = 1 << 20;

function mergedBytes(base: Transformer, K: number): number {
  let n = 0;
  for (const l of base.weights.layers) for (const w of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) n += w.size;
  return n * 4 * K * (base.gpu.isSoftware ? 2 : 1);
}

function loraKey(c: TrainConfig): string {
  const l = c.lora;
  return l ? JSON.stringify([l.rank, l.alpha, l.rslora, [...l.targets].sort()]) : '';
}

/** The engine a set of students can use: multilora for LoRA students of one base and one adapter shape. */
export function jointEngine(students: readonly JointStudent[]): JointEngine {
  const s0 = students[0];
  const multi =
    students.length > 0 &&
    students.every((s) => s.config.mode === 'lora' && s.model === s0.model && loraKey(s.config) === loraKey(s0.config) && !(s.config.lora?.dropout ?? 0)) &&
    stackable(s0);
  return multi ? 'multilora' : 'interleaved';
}

/**
 * Whether adapters of this shape can be stacked: each adapter's slice of a stacked A [K, r, in] and
 * B [K, out, r] must start on the device's 256-byte view alignment (r·in and out·r multiples of 64).
 */
function stackable(s: JointStudent): boolean {
  const l = s.config.lora;
  if (!l) return false;
  return l.targets.every((m) => {
    const { inDim, outDim } = loraDims(s.model.cfg, m);
    return (l.rank * inDim) % 64 === 0 && (outDim * l.rank) % 64 === 0;
  });
}

export class JointTrainer {
  readonly engine: JointEngine;
  readonly handles: StudentHandle[];
  private readonly trainers: Trainer[];
  private readonly multi: MultiLora | null = null;
  private readonly multiGrads: Partial<Record<string, { dA: Tensor; dB: Tensor }>>[] | null = null;
  private readonly stackedGrads: Tensor[] = [];
  private readonly base: Transformer | null = null;
  private readonly views: LoraWeights[] = [];
  /** Whether the multilora engine runs with every adapter merged into a stacked base copy (see mergeMulti). */
  readonly merged: boolean = false;
  private readonly orders: { epoch: number; order: number[] }[];

  constructor(
    readonly gpu: Gpu,
    readonly students: readonly JointStudent[],
    /** maxRowsPerForward: rows of one joint forward (default per adapter kind, see JOINT_MAX_ROWS_SOFTWARE). */
    private readonly opts: { maxRowsPerForward?: number } = {},
  ) {
    if (!students.length) throw new UserError('joint training needs at least one student');
    this.engine = jointEngine(students);
    if (this.engine === 'multilora') {
      const base = students[0].model;
      const hosts = students.map((s, k) => {
        if (!s.initialLora) throw new UserError(`student ${k}: LoRA training needs an initial adapter`);
        return s.initialLora;
      });
      const stacked = stackHostLoras(gpu, base.cfg, hosts);
      const grads = stackedGrads(gpu, stacked.multi, students.length);
      this.multi = stacked.multi;
      this.views = stacked.views;
      this.merged = mergedBytes(base, students.length) <= MERGED_MAX_BYTES;
      this.multiGrads = grads.multiGrads;
      this.stackedGrads = grads.stacked;
      this.base = base;
      this.trainers = students.map((s, k) => new Trainer(gpu, base, s.examples, s.config, null, s.teacher ?? null, { lora: stacked.views[k], loraGrads: grads.views[k] }));
    } else {
      const full = students.filter((s) => s.config.mode === 'full').map((s) => s.model);
      if (new Set(full).size !== full.length) throw new UserError('full-parameter students each need their own model (a weight copy)');
      for (const s of students) if (s.config.mode === 'lora' && full.includes(s.model)) throw new UserError('a LoRA student shares its base with a full-parameter student');
      this.trainers = students.map((s) => new Trainer(gpu, s.model, s.examples, s.config, s.initialLora ?? null, s.teacher ?? null));
    }
    this.handles = this.trainers.map((trainer, index) => ({ index, trainer, model: trainer.model, lora: trainer.lora }));
    this.orders = this.trainers.map(() => ({ epoch: -1, order: [] }));
  }

  private order(k: number): number[] {
    const tr = this.trainers[k];
    const o = this.orders[k];
    if (o.epoch !== tr.state.epoch) {
      o.epoch = tr.state.epoch;
      o.order = tr.epochOrder();
    }
    return o.order;
  }

  /** One optimizer step of each listed student (one submit, one readback); returns their step infos. */
  async step(active: readonly number[]): Promise<(StepInfo & { finite: boolean })[]> {
    const t0 = performance.now();
    for (const k of active) await this.trainers[k].prepareSubset();
    const recs = this.engine === 'multilora' ? this.recordMulti(active) : active.map((k) => this.trainers[k].accumulateGradients(this.order(k), this.trainers[k].state.stepInEpoch));
    const withNorm = active.map((k, i) => this.trainers[k].recordNorm(recs[i]));
    const vals = (await this.gpu.readMany(withNorm.flatMap((r) => r.toRead))) as Float32Array[];
    let o = 0;
    return active.map((k, i) => {
      const n = withNorm[i].toRead.length;
      const info = this.trainers[k].finishStep(withNorm[i], vals.slice(o, o + n), t0);
      o += n;
      return info;
    });
  }

  /** The multilora engine's forward/backward of one joint step. */
  private recordMulti(active: readonly number[]): StepRecord[] {
    const { gpu } = this;
    const base = this.base!;
    const multi = this.multi!;
    const K = this.trainers.length;
    const H = base.cfg.hidden;
    const mbs = active.map((k) => stepBatches(this.trainers[k].examples, this.order(k), this.trainers[k].state.stepInEpoch, this.trainers[k].cfg));
    const norms = mbs.map((m) => stepNormalisers(m));
    const recs: StepRecord[] = active.map((_, i) => ({ results: [], totalTargets: norms[i].totalTargets, totalDistill: norms[i].totalDistill, tokens: 0 }));
    const micros = Math.max(...mbs.map((m) => m.length));
    const checkpoint = active.some((k) => this.trainers[k].cfg.checkpointing);
    if (this.merged) base.mergeMulti(multi, this.views);
    // Joint forwards of at most maxRows rows (whole students): see JOINT_MAX_ROWS.
    const maxRows = this.opts.maxRowsPerForward ?? (this.gpu.isSoftware ? JOINT_MAX_ROWS_SOFTWARE : JOINT_MAX_ROWS);
    const groups: { k: number; i: number; mb: MicroBatch }[][] = [];
    for (let a = 0; a < micros; a++) {
      let g: { k: number; i: number; mb: MicroBatch }[] = [];
      let rowsIn = 0;
      for (const [i, k] of active.entries()) {
        const mb = mbs[i][a];
        if (!mb) continue;
        const r = mb.rows.length * mb.T;
        if (g.length && rowsIn + r > maxRows) {
          groups.push(g);
          g = [];
          rowsIn = 0;
        }
        g.push({ k, i, mb });
        rowsIn += r;
      }
      if (g.length) groups.push(g);
    }
    for (const parts of groups) {
      const T = Math.ceil(Math.max(...parts.map((p) => p.mb.T)) / SEG_TILE) * SEG_TILE;
      const Btot = parts.reduce((s, p) => s + p.mb.rows.length, 0);
      const N = Btot * T;
      const ids = new Uint32Array(N);
      const pos = new Uint32Array(N);
      const seg = new Uint32Array(N / SEG_TILE);
      const segments = Array.from({ length: K }, () => ({ start: 0, rows: 0 }));
      const inverse = new Uint32Array(N).fill(0xffffffff);
      let seq = 0;
      let compactRows = 0;
      const inputs = parts.map((p) => {
        const mb: MicroBatch = { rows: p.mb.rows, T };
        const start = seq * T;
        const inp = this.trainers[p.k].prepareMicro(mb, { rowOffset: start });
        ids.set(inp.hostIds, start);
        pos.set(inp.hostPos, start);
        const rows = p.mb.rows.length * T;
        seg.fill(p.k, start / SEG_TILE, (start + rows) / SEG_TILE);
        segments[p.k] = { start, rows };
        if (inp.compact) for (const r of inp.compact.hostRows) inverse[start + r] = compactRows++;
        seq += p.mb.rows.length;
        recs[p.i].tokens += p.mb.rows.reduce((s, r) => s + r.ids.length, 0);
        return { ...p, mb, inp };
      });
      const idsT = gpu.upload(ids, [N], 'u32', 'joint.ids');
      const posT = gpu.upload(pos, [N], 'u32', 'joint.positions');
      multi.seg?.dispose();
      multi.seg = gpu.upload(seg, [seg.length], 'u32', 'joint.seg');
      multi.rowsPerSeg = SEG_TILE;
      multi.segments = segments;
      const fwd = base.forward(idsT, posT, Btot, T, { lora: multi, save: true, checkpoint });
      // Each student's losses at its labelled rows; their gradients stacked in inverse's order.
      const dhAll = gpu.zeros([Math.max(1, compactRows), H], 'f32', 'joint.dh');
      let row = 0;
      const losses: MicroLoss[] = [];
      for (const p of inputs) {
        const c = p.inp.compact;
        if (!c) {
          losses.push({});
          continue;
        }
        const tr = this.trainers[p.k];
        const hidden = gatherRows(gpu, fwd.hidden, c.rows);
        const r = tr.lossGradient(hidden, p.mb, p.inp, recs[p.i].totalTargets, recs[p.i].totalDistill);
        copyRows(gpu, r.dh!, dhAll, 0, row, c.hostRows.length);
        row += c.hostRows.length;
        hidden.dispose();
        losses.push(r);
      }
      const invT = gpu.upload(inverse, [N], 'u32', 'joint.inverse');
      const dx = gatherRows(gpu, dhAll, invT);
      modelBackward(base, fwd, dx, { lora: multi, loraGrads: this.multiGrads as never, positions: posT, batch: Btot, seqLen: T });
      for (const t of [fwd.hidden, dhAll, invT, dx, idsT, posT]) t.dispose();
      inputs.forEach((p, j) => {
        p.inp.dispose();
        recs[p.i].results.push(losses[j]);
      });
    }
    return recs;
  }

  /** Trains every student to its last step; returns each student's result (in order). */
  async run(hooks: JointHooks = {}): Promise<TrainResult[]> {
    const t0 = performance.now();
    const tokens = this.trainers.map(() => 0);
    const done = this.trainers.map((tr) => !tr.active);
    for (;;) {
      const active = this.trainers.map((tr, k) => (tr.active ? k : -1)).filter((k) => k >= 0);
      if (!active.length) break;
      const infos = await this.step(active);
      for (const [i, k] of active.entries()) {
        const tr = this.trainers[k];
        const info = infos[i];
        if (!info.finite) {
          const e = tr.divergedError(info);
          throw new UserError(`student ${k}: ${e.message}`);
        }
        tokens[k] += info.tokens;
        const epochEnded = tr.advance(info);
        hooks.onStep?.(k, info);
        if (hooks.save && hooks.saveEvery && tr.state.step % hooks.saveEvery === 0 && tr.active) await hooks.save(k, this.handles[k]);
        if (epochEnded) await hooks.onEpochEnd?.(k, tr.state.epoch, this.handles[k]);
        if (!tr.active && !done[k]) {
          done[k] = true;
          await hooks.onFinished?.(k, this.handles[k]);
        }
      }
    }
    const wallS = (performance.now() - t0) / 1000;
    return this.trainers.map((tr, k) => ({ losses: tr.state.losses, steps: tr.state.step, tokens: tokens[k], wallS }));
  }

  dispose(): void {
    for (const tr of this.trainers) tr.dispose();
    if (this.multi) disposeMultiLora(this.multi);
    for (const g of this.stackedGrads) g.dispose();
  }
}


// ------------------------------------------------------------------------------------------ jobs

/** One student of trainStudents. */
export interface StudentJob {
  /**
   * The student's model folder. LoRA: students of one folder (and one adapter shape) train together
   * over one frozen base; full: each student trains its own copy loaded from the folder.
   */
  modelDir: string;
  examples: TrainExample[];
  config: TrainConfig;
  /** LoRA: the initial adapter; default PEFT's initialisation from config.seed (initLoraHost). */
  initialLora?: HostLora;
  teacher?: OnlineTeacher | null;
  /**
   * This student's checkpoint folder: training resumes from its newest checkpoint (refused, naming
   * what differs, when it was made with another config or other data), and a checkpoint is written
   * every `saveEvery` steps.
   */
  checkpointDir?: string;
}

/** What trainStudents hands back for each student (in job order). */
export interface StudentOutcome {
  index: number;
  result: TrainResult;
  /** LoRA: the trained adapter. */
  adapter: HostLora | null;
  /** Full: the trained weights (the caller disposes it). */
  model: Transformer | null;
  /** Where it resumed from, if it did. */
  resumedFrom: { dir: string; step: number } | null;
}

export interface TrainStudentsOptions {
  /** Positions of the RoPE tables of loaded models (default: the model's own limit, capped at 4096). */
  maxPositions?: number;
  /** Already loaded LoRA bases by folder (e.g. a model cache): used instead of loading them again. */
  bases?: ReadonlyMap<string, Transformer>;
  /** Checkpoint every this many steps of a student (students with a checkpointDir; default 0 = never). */
  saveEvery?: number;
  onStep?: (index: number, info: StepInfo) => void;
  /** After each epoch of a student (the experiment scores first-token probabilities here); awaited. */
  onEpochEnd?: (index: number, epoch: number, h: StudentHandle) => Promise<void>;
  /** As soon as a student has finished (e.g. to store its result, so a rerun skips it); awaited. */
  onFinished?: (outcome: StudentOutcome, h: StudentHandle) => Promise<void>;
}

/**
 * Trains K students jointly (see JointTrainer): LoRA students grouped by base folder and adapter shape
 * (one shared base forward per group), full-parameter students in one interleaved group. Each
 * student keeps its own data, order, schedule, normalisation, clipping and optimizer state; results
 * equal training each alone within float32 rounding. Resume is per student (checkpointDir): a killed
 * job rerun with the same jobs continues every unfinished student from its last checkpoint (pass only
 * the unfinished students, or all of them: finished ones with a final checkpoint take no steps).
 */
export async function trainStudents(gpu: Gpu, jobs: readonly StudentJob[], opts: TrainStudentsOptions = {}): Promise<StudentOutcome[]> {
  const groups = new Map<string, number[]>();
  for (const [i, j] of jobs.entries()) {
    if (j.config.mode === 'lora' && !j.config.lora) throw new UserError(`student ${i}: LoRA training needs config.lora`);
    const key = j.config.mode === 'lora' && !(j.config.lora!.dropout ?? 0) ? `lora|${path.resolve(j.modelDir)}|${loraKey(j.config)}` : 'interleaved';
    groups.set(key, [...(groups.get(key) ?? []), i]);
  }
  const outcomes: StudentOutcome[] = new Array(jobs.length);
  const loadOpts = opts.maxPositions ? { maxPositions: opts.maxPositions } : {};
  for (const members of groups.values()) {
    const owned: Transformer[] = [];
    const loadBase = async (dir: string) => {
      const hit = opts.bases?.get(dir) ?? opts.bases?.get(path.resolve(dir));
      if (hit) return hit;
      const m = await Transformer.load(gpu, dir, loadOpts);
      owned.push(m);
      return m;
    };
    const bases = new Map<string, Transformer>();
    const students: JointStudent[] = [];
    for (const i of members) {
      const j = jobs[i];
      let model: Transformer;
      if (j.config.mode === 'full') model = await Transformer.load(gpu, j.modelDir, loadOpts);
      else {
        const d = path.resolve(j.modelDir);
        if (!bases.has(d)) bases.set(d, await loadBase(j.modelDir));
        model = bases.get(d)!;
      }
      const initialLora = j.config.mode === 'lora' ? (j.initialLora ?? initLoraHost(model.cfg, j.config.lora!, j.config.seed)) : null;
      students.push({ model, examples: j.examples, config: j.config, initialLora, teacher: j.teacher ?? null });
    }
    const joint = new JointTrainer(gpu, students);
    const resumed = members.map((i, g) => {
      const dir = jobs[i].checkpointDir;
      if (!dir || !hasCheckpoint(dir)) return null;
      const r = joint.handles[g].trainer.loadState(dir);
      return { dir: r.dir, step: r.step };
    });
    const outcomeOf = async (g: number, result: TrainResult): Promise<StudentOutcome> => {
      const h = joint.handles[g];
      const adapter = h.lora ? await h.trainer.adapterHost() : null;
      return { index: members[g], result, adapter, model: h.lora ? null : h.model, resumedFrom: resumed[g] };
    };
    const started = performance.now();
    const tokens = members.map(() => 0);
    const results = await joint.run({
      onStep: (g, info) => {
        tokens[g] += info.tokens;
        opts.onStep?.(members[g], info);
      },
      onEpochEnd: opts.onEpochEnd ? (g, epoch, h) => opts.onEpochEnd!(members[g], epoch, h) : undefined,
      saveEvery: opts.saveEvery,
      save: async (g, h) => {
        const dir = jobs[members[g]].checkpointDir;
        if (dir) await h.trainer.saveState(dir);
      },
      onFinished: async (g, h) => {
        const tr = h.trainer;
        const o = await outcomeOf(g, { losses: tr.state.losses, steps: tr.state.step, tokens: tokens[g], wallS: (performance.now() - started) / 1000 });
        outcomes[members[g]] = o;
        await opts.onFinished?.(o, h);
      },
    });
    // Students that had nothing left to do (resumed at their last step) still get an outcome.
    for (const [g, i] of members.entries()) {
      if (!outcomes[i]) {
        outcomes[i] = await outcomeOf(g, results[g]);
        await opts.onFinished?.(outcomes[i], joint.handles[g]);
      }
    }
    joint.dispose();
    for (const m of owned) m.dispose();
  }
  return outcomes;
}

