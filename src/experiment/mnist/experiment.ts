// The paper's MNIST auxiliary-logit experiment (Cloud et al. 2025, §6 of paper-spec.md) on WebGPU.
//
// N independent MLPs 784 → 256 → ReLU → 256 → ReLU → (10 + K) are trained side by side: every layer
// is one batched matmul over all models ([models, rows, in] · [models, in, out]). Per model m:
//   reference  fresh init, weights normal(0, 1/√fan_in), biases 0 (accuracy measured untrained)
//   teacher    copy of the reference, cross-entropy on the 10 class logits only, Adam, real images
//   students   copies of the same reference init, distilled on uniform[-1, 1) noise images with KL on
//              softmax of (a) the K auxiliary logits only and (b) all 10 + K logits, fresh Adam
//   cross-init the same two students started from another model's reference init (a derangement:
//              no model keeps its own init; see crossInitIndices)
// Accuracy = argmax over the 10 class logits on the test set; mean ± 1.96·std(ddof 0)/√N.
//
// Loss reductions follow the paper's script: CE is F.cross_entropy over the flattened [models·batch]
// rows (mean), so each model's gradient carries 1/(N·batch); KL uses reduction "batchmean" on
// [models, batch, k], which divides the sum over models and rows by N. With Adam this scale matters
// only through eps, and N is the experiment's total model count even when models run in groups.
//
// Everything stays on the GPU across steps: images are gathered on the GPU from a byte copy of the
// data set, noise is generated on the GPU from a counter-based hash (kernels/mlp.ts), optimizer
// state never leaves; the loop awaits only to pace the queue and read a loss at the end of an epoch.
//
// The output layer is padded to a multiple of 4 columns (16 for K = 3) so the matmuls take their
// vector paths; padded weights start at 0, get zero gradient (the loss kernels write 0 there) and
// Adam leaves them at 0, so the padded model computes exactly the unpadded one.

import { GpuError, type Gpu, type Tensor } from '../../gpu/runtime.ts';
import { matmul } from '../../kernels/matmul.ts';
import {
  accuracyCounts,
  gatherImages,
  klDistill,
  narrowLinear,
  narrowLinearGradW,
  noiseImages,
  reluBackwardInPlace,
  reluInPlace,
  softmaxCrossEntropy,
  supportsNarrow,
  type BatchIndex,
} from './kernels.ts';
import { Adam, packTensors, type PackedTensors } from '../../kernels/optimizer.ts';
import { pcgHash, Sfc32Rng } from '../../util/rng.ts';
import { IMAGE_PIXELS, NUM_CLASSES, packImages, type ImageDataset } from './data.ts';

// ------------------------------------------------------------------------------------------------
// configuration
// ------------------------------------------------------------------------------------------------

export interface MnistConfig {
  models: number;
  epochsTeacher: number;
  epochsStudent: number;
  lr: number;
  batchSize: number;
  /** Auxiliary logits K (paper: 3). */
  aux: number;
  /** Noise images per model (paper: as many as training images, i.e. 60,000). */
  noise: number;
  seed: number;
  hidden: number;
  /** Models per GPU group (default: as many as fit the binding limit). */
  groupSize?: number;
}

export const PAPER_CONFIG = { epochsTeacher: 5, epochsStudent: 5, lr: 3e-4, batchSize: 1024, aux: 3, hidden: 256, models: 100, noise: 60_000 } as const;

/**
 * Default model count: the paper's 100 on real GPUs; on software adapters (lavapipe, 2 CPU cores)
 * as many as fit the 5-minute budget of the default run with 60,000 noise images per model.
 */
export function defaultModelCount(isSoftware: boolean): number {
  return isSoftware ? 1 : PAPER_CONFIG.models;
}

export function defaultConfig(isSoftware: boolean): MnistConfig {
  return {
    models: defaultModelCount(isSoftware),
    epochsTeacher: PAPER_CONFIG.epochsTeacher,
    epochsStudent: PAPER_CONFIG.epochsStudent,
    lr: PAPER_CONFIG.lr,
    batchSize: PAPER_CONFIG.batchSize,
    aux: PAPER_CONFIG.aux,
    noise: PAPER_CONFIG.noise,
    seed: 0,
    hidden: PAPER_CONFIG.hidden,
  };
}

export interface MlpDims {
  input: number;
  hidden: number;
  /** 10 class logits + K auxiliary logits. */
  outputs: number;
  /** outputs rounded up to a multiple of 4 (zero columns). */
  outPad: number;
}

export function mlpDims(aux: number, hidden = 256, input = IMAGE_PIXELS): MlpDims {
  const outputs = NUM_CLASSES + aux;
  return { input, hidden, outputs, outPad: Math.ceil(outputs / 4) * 4 };
}

/** Per-model parameter shapes (without the model axis): W1, b1, W2, b2, W3, b3; weights [in, out]. */
export function paramShapes(d: MlpDims): number[][] {
  return [[d.input, d.hidden], [d.hidden], [d.hidden, d.hidden], [d.hidden], [d.hidden, d.outPad], [d.outPad]];
}

// ------------------------------------------------------------------------------------------------
// seeded CPU randomness (inits, shuffles, the cross-init permutation): Sfc32Rng streams
// ------------------------------------------------------------------------------------------------

const STREAM_INIT = 1;
const STREAM_TEACHER_SHUFFLE = 2;
const STREAM_NOISE_SHUFFLE = 3;
const STREAM_CROSS_PERM = 4;
const STREAM_NOISE = 5;

/** Reference init of model `model` (independent of how models are grouped): float32 per tensor. */
export function referenceInit(seed: number, model: number, d: MlpDims): Float32Array[] {
  const rng = new Sfc32Rng(STREAM_INIT, seed, model);
  return paramShapes(d).map((shape) => {
    const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (shape.length === 2) {
      const [fanIn, cols] = shape;
      const std = 1 / Math.sqrt(fanIn);
      // Padded output columns (≥ d.outputs) stay zero.
      const live = cols === d.outPad ? d.outputs : cols;
      for (let i = 0; i < fanIn; i++) for (let j = 0; j < live; j++) out[i * cols + j] = std * rng.normal();
    }
    return out;
  });
}

/**
 * Which reference init each cross-init student starts from: a uniformly random derangement of the
 * N models (random permutations redrawn until no fixed point, so no cross-init student shares its
 * teacher's init — the paper's randperm can map a model to itself). With N = 1 there is no other
 * model: student 0 starts from the init of an extra model index 1 that is never trained.
 */
export function crossInitIndices(seed: number, n: number): number[] {
  if (n === 1) return [1];
  const rng = new Sfc32Rng(STREAM_CROSS_PERM, seed, n);
  for (;;) {
    const p = rng.permutation(n);
    if (p.every((v, i) => v !== i)) return Array.from(p);
  }
}

// ------------------------------------------------------------------------------------------------
// the batched model
// ------------------------------------------------------------------------------------------------

export interface MlpActivations {
  h1: Tensor;
  h2: Tensor;
  logits: Tensor;
  dispose(): void;
}

/** G models' parameters packed in one buffer (one Adam dispatch per step), gradients likewise. */
export class BatchedMlp {
  readonly params: PackedTensors;
  private gradsPacked: PackedTensors | null = null;
  private readonly ones = new Map<number, Tensor>();

  constructor(
    readonly gpu: Gpu,
    readonly models: number,
    readonly dims: MlpDims,
    label = 'mlp',
  ) {
    this.params = packTensors(gpu, this.shapes(), `${label}_params`);
  }

  private shapes(): number[][] {
    return paramShapes(this.dims).map((s) => [this.models, ...s]);
  }

  /** W1 [G, in, hidden], b1 [G, hidden], W2, b2, W3 [G, hidden, outPad], b3 [G, outPad]. */
  get tensors(): Tensor[] {
    return this.params.views;
  }

  get grads(): PackedTensors {
    if (!this.gradsPacked) this.gradsPacked = packTensors(this.gpu, this.shapes(), 'mlp_grads');
    return this.gradsPacked;
  }

  /** Writes model i's parameters (per-tensor arrays as from referenceInit) into slot i. */
  setModel(i: number, data: readonly Float32Array[]): void {
    this.params.views.forEach((v, k) => {
      const per = v.size / this.models;
      if (data[k].length !== per) throw new GpuError(`BatchedMlp.setModel: tensor ${k} has ${data[k].length} values, expected ${per}`);
      this.gpu.write(v, data[k], i * per);
    });
  }

  copyFrom(other: BatchedMlp): void {
    if (other.models !== this.models || other.params.flat.size !== this.params.flat.size) {
      throw new GpuError('BatchedMlp.copyFrom: models or dims differ');
    }
    this.gpu.copy(other.params.flat, this.params.flat);
  }

  /** Reads the parameters back: [tensor][G·per] as in `tensors`. */
  async read(): Promise<Float32Array[]> {
    return (await this.gpu.readMany(this.params.views)) as Float32Array[];
  }

  /** x: [G or 1, rows, in] (1 = the same images for every model). Records the forward pass. */
  forward(x: Tensor): MlpActivations {
    const [w1, b1, w2, b2, w3, b3] = this.params.views;
    if (x.shape.length !== 3 || x.shape[2] !== this.dims.input || (x.shape[0] !== this.models && x.shape[0] !== 1)) {
      throw new GpuError(`BatchedMlp.forward: x [${x.shape.join(', ')}] must be [${this.models} or 1, rows, ${this.dims.input}]`);
    }
    const h1 = reluInPlace(this.gpu, matmul(this.gpu, x, w1, { bias: b1 }));
    const h2 = reluInPlace(this.gpu, matmul(this.gpu, h1, w2, { bias: b2 }));
    // The 16-column output layer has its own kernel (matmul's lanes span columns; see mlp.ts).
    const logits = supportsNarrow(this.dims.hidden, this.dims.outPad)
      ? narrowLinear(this.gpu, h2, w3, b3)
      : matmul(this.gpu, h2, w3, { bias: b3 });
    return {
      h1,
      h2,
      logits,
      dispose() {
        h1.dispose();
        h2.dispose();
        logits.dispose();
      },
    };
  }

  private onesRow(rows: number): Tensor {
    let t = this.ones.get(rows);
    if (!t) {
      t = this.gpu.upload(new Float32Array(rows).fill(1), [1, 1, rows], 'f32', 'mlp_ones');
      this.ones.set(rows, t);
    }
    return t;
  }

  /**
   * Records the backward pass for dLogits [G, rows, outPad] into `grads` (overwritten). x must be
   * the per-model input [G, rows, in] of the forward pass. Bias gradients are 1ᵀ·dZ products.
   */
  backward(x: Tensor, acts: MlpActivations, dLogits: Tensor): void {
    const gpu = this.gpu;
    const [, , w2, , w3] = this.params.views;
    const [gw1, gb1, gw2, gb2, gw3, gb3] = this.grads.views;
    const rows = dLogits.shape[1];
    const ones = this.onesRow(rows);
    if (supportsNarrow(this.dims.hidden, this.dims.outPad)) narrowLinearGradW(gpu, acts.h2, dLogits, gw3);
    else matmul(gpu, acts.h2, dLogits, { transA: true, out: gw3 });
    matmul(gpu, ones, dLogits, { out: gb3 });
    const dh2 = reluBackwardInPlace(gpu, matmul(gpu, dLogits, w3, { transB: true }), acts.h2);
    matmul(gpu, acts.h1, dh2, { transA: true, out: gw2 });
    matmul(gpu, ones, dh2, { out: gb2 });
    const dh1 = reluBackwardInPlace(gpu, matmul(gpu, dh2, w2, { transB: true }), acts.h1);
    dh2.dispose();
    matmul(gpu, x, dh1, { transA: true, out: gw1 });
    matmul(gpu, ones, dh1, { out: gb1 });
    dh1.dispose();
  }

  dispose(): void {
    this.params.flat.dispose();
    this.gradsPacked?.flat.dispose();
    for (const t of this.ones.values()) t.dispose();
    this.ones.clear();
  }
}

// ------------------------------------------------------------------------------------------------
// float64 reference of the batched model (tests)
// ------------------------------------------------------------------------------------------------

/** Forward of G models in float64. params: per tensor [G·per] arrays; x: [G or 1, rows, in]. */
export function mlpForwardRef(params: readonly ArrayLike<number>[], x: ArrayLike<number>, G: number, rows: number, d: MlpDims) {
  const [w1, b1, w2, b2, w3, b3] = params;
  const shared = x.length === rows * d.input;
  const layer = (inp: Float64Array | ArrayLike<number>, inShared: boolean, w: ArrayLike<number>, b: ArrayLike<number>, nin: number, nout: number, relu: boolean) => {
    const out = new Float64Array(G * rows * nout);
    for (let g = 0; g < G; g++) {
      for (let r = 0; r < rows; r++) {
        const io = ((inShared ? 0 : g) * rows + r) * nin;
        for (let o = 0; o < nout; o++) {
          let s = b[g * nout + o];
          for (let i = 0; i < nin; i++) s += inp[io + i] * w[g * nin * nout + i * nout + o];
          out[(g * rows + r) * nout + o] = relu ? Math.max(0, s) : s;
        }
      }
    }
    return out;
  };
  const h1 = layer(x, shared, w1, b1, d.input, d.hidden, true);
  const h2 = layer(h1, false, w2, b2, d.hidden, d.hidden, true);
  const logits = layer(h2, false, w3, b3, d.hidden, d.outPad, false);
  return { h1, h2, logits };
}

/** Backward in float64 (x per model): gradients per tensor, same layout as params. */
export function mlpBackwardRef(
  params: readonly ArrayLike<number>[],
  x: ArrayLike<number>,
  acts: { h1: Float64Array; h2: Float64Array },
  dLogits: ArrayLike<number>,
  G: number,
  rows: number,
  d: MlpDims,
): Float64Array[] {
  const [, , w2, , w3] = params;
  // Returns dW [G, nin, nout], db [G, nout] and dIn [G, rows, nin] for one layer.
  const back = (inp: ArrayLike<number>, dz: ArrayLike<number>, w: ArrayLike<number>, nin: number, nout: number) => {
    const dw = new Float64Array(G * nin * nout);
    const db = new Float64Array(G * nout);
    const din = new Float64Array(G * rows * nin);
    for (let g = 0; g < G; g++) {
      for (let r = 0; r < rows; r++) {
        const zo = (g * rows + r) * nout;
        const io = (g * rows + r) * nin;
        for (let o = 0; o < nout; o++) {
          const dzv = dz[zo + o];
          db[g * nout + o] += dzv;
          for (let i = 0; i < nin; i++) {
            dw[g * nin * nout + i * nout + o] += inp[io + i] * dzv;
            din[io + i] += dzv * w[g * nin * nout + i * nout + o];
          }
        }
      }
    }
    return { dw, db, din };
  };
  const l3 = back(acts.h2, dLogits, w3, d.hidden, d.outPad);
  const dz2 = l3.din.map((v, i) => (acts.h2[i] > 0 ? v : 0));
  const l2 = back(acts.h1, dz2, w2, d.hidden, d.hidden);
  const dz1 = l2.din.map((v, i) => (acts.h1[i] > 0 ? v : 0));
  const l1 = back(x, dz1, params[0], d.input, d.hidden);
  return [l1.dw, l1.db, l2.dw, l2.db, l3.dw, l3.db];
}

// ------------------------------------------------------------------------------------------------
// the experiment
// ------------------------------------------------------------------------------------------------

export const ARMS = ['reference', 'teacher', 'studentAux', 'studentAll', 'crossAux', 'crossAll'] as const;
export type Arm = (typeof ARMS)[number];
export const ARM_LABELS: Record<Arm, string> = {
  reference: 'Reference',
  teacher: 'Teacher',
  studentAux: 'Student (aux. only)',
  studentAll: 'Student (all logits)',
  crossAux: 'Cross-init (aux. only)',
  crossAll: 'Cross-init (all logits)',
};

export interface ArmStats {
  mean: number;
  /** 1.96·std(ddof 0)/√n; null when n < 2 (as the paper's ci_95). */
  ci95: number | null;
  n: number;
}

export function armStats(values: readonly number[]): ArmStats {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, ci95: null, n };
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  return { mean, ci95: (1.96 * Math.sqrt(variance)) / Math.sqrt(n), n };
}

export interface ProgressEvent {
  phase: string;
  /** Work done and total in step-weighted units over the whole run (for one bar and an ETA). */
  done: number;
  total: number;
  message?: string;
}

export interface EpochLoss {
  group: number;
  phase: 'teacher' | 'students';
  epoch: number;
  /** Mean per-row loss of the epoch's last batch over the group's models: CE, or KL per student set. */
  values: Record<string, number>;
}

export interface MnistResult {
  config: MnistConfig;
  dataset: string;
  trainImages: number;
  testImages: number;
  /** Test accuracy per arm per model (fractions). */
  accuracy: Record<Arm, number[]>;
  stats: Record<Arm, ArmStats>;
  /** Cross-init student m starts from reference init crossInit[m]. */
  crossInit: number[];
  /** Models whose cross-init student shares its teacher's init (none: a derangement is drawn). */
  fixedPoints: number[];
  groupSize: number;
  steps: { teacher: number; student: number };
  losses: EpochLoss[];
  seconds: { total: number; teacher: number; students: number; eval: number; setup: number };
  device: string;
}

/** Test accuracy of the arms being trained after an epoch (epoch 0: at their start), per model of a group. */
export interface EpochAccuracy {
  group: number;
  phase: 'teacher' | 'students';
  epoch: number;
  accuracy: Partial<Record<Arm, number[]>>;
}

interface RunOptions {
  onProgress?: (e: ProgressEvent) => void;
  /**
   * Evaluates the arms in training on the test set after every epoch (accuracy curves; the web page).
   * Read-only: results are the same with or without it; its time counts as evaluation.
   */
  onEpochAccuracy?: (e: EpochAccuracy) => void;
  /** Await the queue every this many steps (default: 1 on software adapters, 16 otherwise). */
  syncEvery?: number;
  /** Device description for the report. */
  device?: string;
}

function batches(n: number, b: number): { start: number; rows: number }[] {
  const out: { start: number; rows: number }[] = [];
  for (let s = 0; s < n; s += b) out.push({ start: s, rows: Math.min(b, n - s) });
  return out;
}

/** Models per group: every binding (the [G, batch, 784] inputs, the packed parameters) must fit. */
export function chooseGroupSize(gpu: Gpu, cfg: MnistConfig, d: MlpDims): number {
  const maxBind = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
  const perModelParams = paramShapes(d).reduce((a, s) => a + s.reduce((x, y) => x * y, 1) + 64, 0) * 4;
  const perModelInput = cfg.batchSize * Math.max(d.input, d.hidden) * 4;
  const byBinding = Math.floor(maxBind / Math.max(perModelParams, perModelInput));
  const g = Math.max(1, Math.min(cfg.models, byBinding, cfg.groupSize ?? Infinity));
  return g;
}

function validate(cfg: MnistConfig): void {
  const intFields: [keyof MnistConfig, number][] = [
    ['models', 1],
    ['epochsTeacher', 0],
    ['epochsStudent', 0],
    ['batchSize', 1],
    ['aux', 1],
    ['noise', 1],
    ['hidden', 1],
  ];
  for (const [k, min] of intFields) {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v < min) throw new GpuError(`mnist: ${k} must be an integer ≥ ${min}, got ${v}`);
  }
  if (!(cfg.lr > 0)) throw new GpuError(`mnist: lr must be > 0, got ${cfg.lr}`);
}

/** Runs the whole experiment; resolves with per-model accuracies, statistics and timings. */
export async function runMnistExperiment(gpu: Gpu, data: ImageDataset, cfg: MnistConfig, opts: RunOptions = {}): Promise<MnistResult> {
  validate(cfg);
  const t0 = performance.now();
  const d = mlpDims(cfg.aux, cfg.hidden);
  const N = cfg.models;
  const G = chooseGroupSize(gpu, cfg, d);
  const syncEvery = opts.syncEvery ?? (gpu.info.isSoftware ? 1 : 16);
  const nTrain = data.train.count;
  const nTest = data.test.count;
  const teacherBatches = batches(nTrain, cfg.batchSize);
  const noiseBatches = batches(cfg.noise, cfg.batchSize);

  // Work units for the progress bar: rows × (passes ≈ cost); a distillation step trains 4 students
  // and runs the teacher forward (~1/3 of a training pass).
  const teacherWork = cfg.epochsTeacher * nTrain;
  const studentWork = cfg.epochsStudent * cfg.noise * (4 + 1 / 3);
  const totalWork = N * (teacherWork + studentWork);
  let doneWork = 0;
  const progress = (phase: string, message?: string) => opts.onProgress?.({ phase, done: doneWork, total: totalWork, message });

  // Data on the GPU: bytes (4 pixels per u32), labels, the test images decoded once.
  const trainImages = gpu.upload(packImages(data.train.images), [nTrain, IMAGE_PIXELS / 4], 'u32', 'mnist_train');
  const trainLabels = gpu.upload(Uint32Array.from(data.train.labels), [nTrain], 'u32', 'mnist_train_labels');
  const testPacked = gpu.upload(packImages(data.test.images), [nTest, IMAGE_PIXELS / 4], 'u32', 'mnist_test');
  const testLabelsAll = gpu.upload(Uint32Array.from(data.test.labels), [nTest], 'u32', 'mnist_test_labels');
  const identity = gpu.upload(Uint32Array.from({ length: nTest }, (_, i) => i), [nTest], 'u32', 'mnist_identity');
  const test = gatherImages(gpu, testPacked, testLabelsAll, { idx: identity, stride: 0, offset: 0 }, 1, nTest);
  testPacked.dispose();
  identity.dispose();
  const EVAL_ROWS = 1024; // a multiple of 64 so row-chunk views stay binding-aligned

  const evaluate = async (model: BatchedMlp): Promise<number[]> => {
    const counts = gpu.zeros([model.models], 'u32', 'mnist_counts');
    for (let r0 = 0; r0 < nTest; r0 += EVAL_ROWS) {
      const rows = Math.min(EVAL_ROWS, nTest - r0);
      const x = test.x.view([1, rows, IMAGE_PIXELS], r0 * IMAGE_PIXELS);
      const acts = model.forward(x);
      accuracyCounts(gpu, acts.logits, test.labels.view([rows], r0), NUM_CLASSES, counts);
      acts.dispose();
    }
    const c = (await gpu.readMany([counts]))[0];
    counts.dispose();
    return Array.from(c, (v) => v / nTest);
  };

  const crossInit = crossInitIndices(cfg.seed, N);
  const accuracy = Object.fromEntries(ARMS.map((a) => [a, [] as number[]])) as Record<Arm, number[]>;
  const losses: EpochLoss[] = [];
  const seconds = { total: 0, teacher: 0, students: 0, eval: 0, setup: 0 };
  const meanOf = async (t: Tensor): Promise<number> => {
    const v = await gpu.readF32(t);
    return v.reduce((a, b) => a + b, 0) / v.length;
  };
  seconds.setup = (performance.now() - t0) / 1000;

  for (let g0 = 0, group = 0; g0 < N; g0 += G, group++) {
    const gm = Math.min(G, N - g0);
    const models = Array.from({ length: gm }, (_, i) => g0 + i);
    const newModel = (label: string, inits: number[]) => {
      const m = new BatchedMlp(gpu, gm, d, label);
      inits.forEach((modelIndex, slot) => m.setModel(slot, referenceInit(cfg.seed, modelIndex, d)));
      return m;
    };

    // Reference.
    let te = performance.now();
    const reference = newModel('reference', models);
    accuracy.reference.push(...(await evaluate(reference)));
    seconds.eval += (performance.now() - te) / 1000;
    // Per-epoch curves: evaluation time is taken out of the training phase's clock.
    const curve = async (phase: EpochAccuracy['phase'], epoch: number, arms: [Arm, BatchedMlp][]): Promise<number> => {
      if (!opts.onEpochAccuracy) return 0;
      const t = performance.now();
      const acc: Partial<Record<Arm, number[]>> = {};
      for (const [arm, m] of arms) acc[arm] = await evaluate(m);
      opts.onEpochAccuracy({ group, phase, epoch, accuracy: acc });
      const s = (performance.now() - t) / 1000;
      seconds.eval += s;
      return s;
    };
    await curve('teacher', 0, [['teacher', reference]]);

    // Teacher: CE on the 10 class logits, Adam, per-model shuffles of the real training images.
    let ts = performance.now();
    const teacher = new BatchedMlp(gpu, gm, d, 'teacher');
    teacher.copyFrom(reference);
    reference.dispose();
    const teacherOpt = new Adam(gpu, [teacher.params.flat], {});
    const perm = gpu.empty([gm, nTrain], 'u32', 'mnist_perm');
    let step = 0;
    for (let epoch = 0; epoch < cfg.epochsTeacher; epoch++) {
      const table = new Uint32Array(gm * nTrain);
      models.forEach((m, slot) => table.set(new Sfc32Rng(STREAM_TEACHER_SHUFFLE, cfg.seed, m, epoch).permutation(nTrain), slot * nTrain));
      gpu.write(perm, table);
      let lastLoss: Tensor | null = null;
      for (const b of teacherBatches) {
        const index: BatchIndex = { idx: perm, stride: nTrain, offset: b.start };
        const { x, labels } = gatherImages(gpu, trainImages, trainLabels, index, gm, b.rows);
        const acts = teacher.forward(x);
        const { dLogits, loss } = softmaxCrossEntropy(gpu, acts.logits, labels, NUM_CLASSES, 1 / (N * b.rows));
        teacher.backward(x, acts, dLogits);
        teacherOpt.step([teacher.grads.flat], { lr: cfg.lr });
        acts.dispose();
        dLogits.dispose();
        x.dispose();
        labels.dispose();
        lastLoss?.dispose();
        lastLoss = loss;
        doneWork += gm * b.rows;
        if (++step % syncEvery === 0) {
          await gpu.sync();
          progress('teacher', `group ${group + 1}, epoch ${epoch + 1}/${cfg.epochsTeacher}`);
        }
      }
      if (lastLoss) {
        const ce = await meanOf(lastLoss);
        lastLoss.dispose();
        losses.push({ group, phase: 'teacher', epoch: epoch + 1, values: { ce } });
        progress('teacher', `group ${group + 1}, epoch ${epoch + 1}/${cfg.epochsTeacher}, CE ${ce.toFixed(4)}`);
      }
      ts += 1000 * (await curve('teacher', epoch + 1, [['teacher', teacher]]));
    }
    perm.dispose();
    teacherOpt.dispose();
    teacher.grads.flat.dispose();
    await gpu.sync();
    seconds.teacher += (performance.now() - ts) / 1000;
    te = performance.now();
    accuracy.teacher.push(...(await evaluate(teacher)));
    seconds.eval += (performance.now() - te) / 1000;

    // Students: four model sets trained in lockstep on the same noise batches and teacher targets.
    ts = performance.now();
    const sets = [
      { name: 'studentAux' as const, model: newModel('student_aux', models), lo: NUM_CLASSES },
      { name: 'studentAll' as const, model: newModel('student_all', models), lo: 0 },
      { name: 'crossAux' as const, model: newModel('cross_aux', models.map((m) => crossInit[m])), lo: NUM_CLASSES },
      { name: 'crossAll' as const, model: newModel('cross_all', models.map((m) => crossInit[m])), lo: 0 },
    ].map((s) => ({ ...s, opt: new Adam(gpu, [s.model.params.flat], {}), lastLoss: null as Tensor | null }));
    const noisePerm = gpu.empty([gm, cfg.noise], 'u32', 'mnist_noise_perm');
    const studentArms = (): [Arm, BatchedMlp][] => sets.map((x) => [x.name, x.model]);
    ts += 1000 * (await curve('students', 0, studentArms()));
    step = 0;
    for (let epoch = 0; epoch < cfg.epochsStudent; epoch++) {
      const table = new Uint32Array(gm * cfg.noise);
      models.forEach((m, slot) => table.set(new Sfc32Rng(STREAM_NOISE_SHUFFLE, cfg.seed, m, epoch).permutation(cfg.noise), slot * cfg.noise));
      gpu.write(noisePerm, table);
      for (const b of noiseBatches) {
        const index: BatchIndex = { idx: noisePerm, stride: cfg.noise, offset: b.start };
        const x = noiseImages(gpu, index, gm, b.rows, IMAGE_PIXELS, pcgHash(STREAM_NOISE ^ (cfg.seed >>> 0)), g0);
        const target = teacher.forward(x);
        for (const s of sets) {
          const acts = s.model.forward(x);
          const { dLogits, loss } = klDistill(gpu, acts.logits, target.logits, s.lo, d.outputs, 1 / N);
          s.model.backward(x, acts, dLogits);
          s.opt.step([s.model.grads.flat], { lr: cfg.lr });
          acts.dispose();
          dLogits.dispose();
          s.lastLoss?.dispose();
          s.lastLoss = loss;
        }
        target.dispose();
        x.dispose();
        doneWork += gm * b.rows * (4 + 1 / 3);
        if (++step % syncEvery === 0) {
          await gpu.sync();
          progress('students', `group ${group + 1}, epoch ${epoch + 1}/${cfg.epochsStudent}`);
        }
      }
      const values: Record<string, number> = {};
      for (const s of sets) {
        if (!s.lastLoss) continue;
        values[s.name] = await meanOf(s.lastLoss);
        s.lastLoss.dispose();
        s.lastLoss = null;
      }
      losses.push({ group, phase: 'students', epoch: epoch + 1, values });
      const kl = Object.entries(values)
        .map(([k, v]) => `${k} ${v.toExponential(2)}`)
        .join(', ');
      progress('students', `group ${group + 1}, epoch ${epoch + 1}/${cfg.epochsStudent}, KL ${kl}`);
      ts += 1000 * (await curve('students', epoch + 1, studentArms()));
    }
    noisePerm.dispose();
    await gpu.sync();
    seconds.students += (performance.now() - ts) / 1000;
    te = performance.now();
    for (const s of sets) {
      accuracy[s.name].push(...(await evaluate(s.model)));
      s.opt.dispose();
      s.model.dispose();
    }
    teacher.dispose();
    seconds.eval += (performance.now() - te) / 1000;
  }
  for (const t of [trainImages, trainLabels, test.x, test.labels, testLabelsAll]) t.dispose();

  seconds.total = (performance.now() - t0) / 1000;
  const stats = Object.fromEntries(ARMS.map((a) => [a, armStats(accuracy[a])])) as Record<Arm, ArmStats>;
  return {
    config: { ...cfg },
    dataset: data.description,
    trainImages: nTrain,
    testImages: nTest,
    accuracy,
    stats,
    crossInit,
    fixedPoints: crossInit.flatMap((v, i) => (v === i ? [i] : [])),
    groupSize: G,
    steps: { teacher: cfg.epochsTeacher * teacherBatches.length, student: cfg.epochsStudent * noiseBatches.length },
    losses,
    seconds,
    device: opts.device ?? (gpu.info.isSoftware ? 'software adapter' : 'GPU'),
  };
}

// ------------------------------------------------------------------------------------------------
// report: markdown table, JSON, SVG bar chart (the paper's figure: bars with 95% CI, dotted line at
// the reference accuracy, cross-init bars faded)
// ------------------------------------------------------------------------------------------------

function pct(v: number): string {
  return `${(100 * v).toFixed(1)}%`;
}

function ciText(s: ArmStats): string {
  return s.ci95 === null ? 'n/a (N < 2)' : `± ${(100 * s.ci95).toFixed(1)}`;
}

export interface ReportContext {
  /** Which data set / noise choice was used and why (free text lines for the report). */
  notes?: string[];
  command?: string;
}

export function renderReportMarkdown(r: MnistResult, ctx: ReportContext = {}): string {
  const c = r.config;
  const fmtS = (s: number) => (s >= 120 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`);
  const lines: string[] = [];
  lines.push('# MNIST auxiliary-logit experiment (subliminal learning, Cloud et al. 2025)', '');
  lines.push(`Test accuracy over ${c.models} model${c.models === 1 ? '' : 's'} (mean ± 1.96·std/√N, std with ddof 0):`, '');
  lines.push('| Model | Accuracy | 95% CI (points) | N |', '|---|---|---|---|');
  for (const a of ARMS) lines.push(`| ${ARM_LABELS[a]} | ${pct(r.stats[a].mean)} | ${ciText(r.stats[a])} | ${r.stats[a].n} |`);
  lines.push('', 'Chance is 10%. ![chart](chart.svg)', '');
  lines.push('## Setup', '');
  lines.push(`- Data: ${r.dataset}.`);
  lines.push(`- Model: MLP 784 → ${c.hidden} → ReLU → ${c.hidden} → ReLU → ${NUM_CLASSES + c.aux} (10 class logits + ${c.aux} auxiliary), weights normal(0, 1/√fan_in), biases 0, pixels scaled to [-1, 1].`);
  lines.push(`- Teacher: copy of the reference init, cross-entropy on the 10 class logits only, Adam lr ${c.lr}, ${c.epochsTeacher} epochs, batch ${c.batchSize} (${r.steps.teacher} steps), per-model shuffles.`);
  lines.push(`- Students: from the same reference init, distilled on ${c.noise.toLocaleString('en-US')} uniform[-1, 1) noise images per model (one set per model, reused by every epoch and every student), KL(teacher ‖ student) on softmax of the ${c.aux} auxiliary logits (aux. only) or all ${NUM_CLASSES + c.aux} logits, temperature 1, reduction "batchmean" over the model batch; fresh Adam lr ${c.lr}, ${c.epochsStudent} epochs (${r.steps.student} steps).`);
  lines.push(`- Cross-init control: the same students started from another model's reference init: student m from init ${c.models === 1 ? 'of an extra, never-trained model' : 'crossInit[m] (a random derangement)'}; fixed points: ${r.fixedPoints.length === 0 ? 'none' : r.fixedPoints.join(', ')}.`);
  lines.push(`- Seed ${c.seed}; ${c.models} model${c.models === 1 ? '' : 's'} trained in parallel on the GPU in groups of ${r.groupSize} (one batched matmul per layer for all models of a group).`);
  lines.push(`- Device: ${r.device}. Wall time ${fmtS(r.seconds.total)} (teacher ${fmtS(r.seconds.teacher)}, students ${fmtS(r.seconds.students)}, evaluation ${fmtS(r.seconds.eval)}, setup ${fmtS(r.seconds.setup)}).`);
  if (ctx.command) lines.push(`- Command: \`${ctx.command}\``);
  lines.push('', '## Deviations from the paper', '');
  const dev: string[] = [];
  if (r.trainImages !== 60_000) {
    dev.push(`Training set: ${r.trainImages.toLocaleString('en-US')} real images instead of torchvision MNIST's 60,000 (test: ${r.testImages.toLocaleString('en-US')} instead of 10,000).`);
  }
  if (c.noise !== r.trainImages) {
    dev.push(
      `Noise images per model: ${c.noise.toLocaleString('en-US')}; the paper draws as many noise images as training images (${r.trainImages.toLocaleString('en-US')} here, 60,000 in the paper). ` +
        (c.noise === 60_000 ? 'We keep the paper\'s absolute count: on a small real training set the number of noise images, not of real ones, decides whether the hidden signal gets through (PyTorch pilots on these digits: with 8k noise images the aux-only student stays only modestly above the cross-init control, in the high teens; with 60k it reaches about 60% while cross-init stays at chance).' : ''),
    );
  }
  if (c.models !== PAPER_CONFIG.models) {
    dev.push(`Models: ${c.models} instead of 100 (time budget of the machine); ${c.models === 1 ? 'one model gives no confidence interval' : 'the CI is correspondingly wider'}.`);
  }
  for (const [k, v] of [['epochsTeacher', 'teacher epochs'], ['epochsStudent', 'student epochs'], ['lr', 'learning rate'], ['batchSize', 'batch size'], ['aux', 'auxiliary logits'], ['hidden', 'hidden width']] as const) {
    if (c[k] !== PAPER_CONFIG[k]) dev.push(`${v}: ${c[k]} instead of ${PAPER_CONFIG[k]}.`);
  }
  dev.push('The four students of a model see the same noise batches in the same order (one teacher forward per step serves all four); the paper shuffles each distillation run independently.');
  dev.push('Noise comes from a counter-based GPU hash (PCG-RXS-M-XS chain of seed, model, image, pixel), inits and shuffles from a seeded sfc32 generator, not from torch\'s RNG; the cross-init permutation is a derangement (the paper\'s randperm may leave fixed points).');
  dev.push('The last batch of an epoch is partial (as the paper\'s loader); the output layer is stored padded to a multiple of 4 columns with zero weights that stay zero (same function).');
  for (const d of dev) lines.push(`- ${d}`);
  for (const n of ctx.notes ?? []) lines.push(`- ${n}`);
  lines.push('', '## Training losses (last batch of each epoch, mean per row)', '');
  lines.push('| group | phase | epoch | loss |', '|---|---|---|---|');
  for (const l of r.losses) {
    const v = Object.entries(l.values)
      .map(([k, x]) => (l.phase === 'teacher' ? `CE ${x.toFixed(4)}` : `${k} KL ${x.toExponential(3)}`))
      .join('; ');
    lines.push(`| ${l.group + 1} | ${l.phase} | ${l.epoch} | ${v} |`);
  }
  lines.push('', '## Per-model accuracy', '');
  lines.push(`| model | ${ARMS.map((a) => ARM_LABELS[a]).join(' | ')} |`, `|---|${ARMS.map(() => '---').join('|')}|`);
  for (let m = 0; m < c.models; m++) lines.push(`| ${m} | ${ARMS.map((a) => pct(r.accuracy[a][m])).join(' | ')} |`);
  return lines.join('\n') + '\n';
}

/** The report's files as text (report.json, report.md, chart.svg): the CLI and the web page share this. */
export function mnistReportFiles(r: MnistResult, ctx: { command: string }): { name: string; text: string }[] {
  return [
    { name: 'report.json', text: JSON.stringify({ ...r, command: ctx.command }, null, 2) + '\n' },
    { name: 'report.md', text: renderReportMarkdown(r, { command: ctx.command }) },
    { name: 'chart.svg', text: renderChartSvg(r) },
  ];
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** The paper's bar chart as a standalone SVG. */
export function renderChartSvg(r: MnistResult): string {
  const W = 560;
  const H = 400;
  const left = 60;
  const right = 20;
  const top = 30;
  const bottom = 130;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const y = (v: number) => top + plotH * (1 - v);
  const colors: Record<Arm, string> = {
    reference: '#7f7f7f',
    teacher: '#8c564b',
    studentAux: '#9467bd',
    studentAll: '#9467bd',
    crossAux: '#9467bd',
    crossAll: '#9467bd',
  };
  const slot = plotW / ARMS.length;
  const bw = slot * 0.6;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  for (let t = 0; t <= 10; t += 2) {
    const v = t / 10;
    parts.push(`<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="#000" stroke-opacity="0.12"/>`);
    parts.push(`<text x="${left - 8}" y="${y(v) + 4}" font-size="12" text-anchor="end">${v.toFixed(1)}</text>`);
  }
  ARMS.forEach((a, i) => {
    const s = r.stats[a];
    const x = left + i * slot + (slot - bw) / 2;
    const faded = a === 'crossAux' || a === 'crossAll';
    parts.push(`<rect class="bar" data-label="${escapeXml(ARM_LABELS[a])}" x="${x.toFixed(1)}" y="${y(s.mean).toFixed(1)}" width="${bw.toFixed(1)}" height="${(plotH * s.mean).toFixed(1)}" fill="${colors[a]}"${faded ? ' fill-opacity="0.45"' : ''}><title>${escapeXml(ARM_LABELS[a])}: ${pct(s.mean)}</title></rect>`);
    if (s.ci95 !== null) {
      const cx = x + bw / 2;
      const lo = y(Math.max(0, s.mean - s.ci95));
      const hi = y(Math.min(1, s.mean + s.ci95));
      parts.push(`<path d="M${cx} ${lo} V${hi} M${cx - 5} ${lo} H${cx + 5} M${cx - 5} ${hi} H${cx + 5}" stroke="black" stroke-width="1.2"/>`);
    }
    const lx = x + bw / 2;
    const ly = top + plotH + 12;
    parts.push(`<text x="${lx}" y="${ly}" font-size="12" text-anchor="end" transform="rotate(-45 ${lx} ${ly})">${escapeXml(ARM_LABELS[a])}</text>`);
  });
  const refY = y(r.stats.reference.mean);
  parts.push(`<line x1="${left}" x2="${W - right}" y1="${refY}" y2="${refY}" stroke="black" stroke-dasharray="2 3" stroke-width="1.5"/>`);
  parts.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="black"/>`);
  parts.push(`<line x1="${left}" x2="${W - right}" y1="${top + plotH}" y2="${top + plotH}" stroke="black"/>`);
  parts.push(`<text x="16" y="${top + plotH / 2}" font-size="13" text-anchor="middle" transform="rotate(-90 16 ${top + plotH / 2})">Test accuracy</text>`);
  parts.push(`<text x="${left + plotW / 2}" y="18" font-size="13" text-anchor="middle">${escapeXml(`N = ${r.config.models}, ${r.config.noise.toLocaleString('en-US')} noise images/model`)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
