// Optimizer kernels: AdamW / Adam (torch.optim semantics), SGD with momentum, and a deterministic
// global gradient norm whose clip coefficient stays on the GPU.
//
// Clipping without a CPU round trip: `gradNorm` reduces Σg² over every gradient tensor in two
// passes (per-workgroup partial sums at fixed offsets, then one workgroup sums the partials in a
// fixed order — no float atomics, so the result is bit-identical run to run) and writes
// [norm, clipCoef] into a 2-element buffer. The update kernels multiply each gradient by element 1
// of that buffer, so `step` records everything and never awaits. lr and the step counter t are
// uniforms (schedules and bias corrections are computed on the CPU in float64).
//
// Few dispatches: one update dispatch per parameter tensor; for one dispatch in all, allocate the
// parameters (and gradients) contiguously with `packTensors` and give the optimizer the flat tensor.

import { defineKernel } from '../gpu/kernel.ts';
import { cdiv, GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { expectTensor, flatIndexMain, spreadGrid } from './common.ts';

const WG = 256;
/** Elements each thread squares in the norm's first pass (a workgroup covers WG·NORM_ITEMS). */
const NORM_ITEMS = 16;
const NORM_BLOCK = WG * NORM_ITEMS;
/** torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6), clamped at 1. */
export const CLIP_EPS = 1e-6;


// ---------------------------------------------------------------------------------------------
// Global gradient norm
// ---------------------------------------------------------------------------------------------

const sumSquaresPartial = defineKernel({
  name: 'optim_sumsq_partial',
  bindings: [['g', 'f32', 'read'], ['partials', 'f32', 'read_write']],
  uniforms: { n: 'u32', partialOffset: 'u32', perRow: 'u32', blocks: 'u32' },
  body: () => /* wgsl */ `
var<workgroup> acc: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let block = wid.x + wid.y * u.perRow;
  if (block >= u.blocks) { return; }
  // Consecutive threads read consecutive elements (coalesced on GPUs, contiguous lanes on lavapipe).
  let base = block * ${NORM_BLOCK}u;
  var s = 0.0;
  for (var k = 0u; k < ${NORM_ITEMS}u; k++) {
    let i = base + k * ${WG}u + lid;
    if (i < u.n) { let x = g[i]; s = s + x * x; }
  }
  acc[lid] = s;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { acc[lid] = acc[lid] + acc[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { partials[u.partialOffset + block] = acc[0]; }
}`,
});

const normFinal = defineKernel({
  name: 'optim_norm_final',
  bindings: [['partials', 'f32', 'read'], ['out', 'f32', 'read_write']],
  uniforms: { count: 'u32', maxNorm: 'f32' },
  key: ({ withClip }: { withClip: boolean }) => (withClip ? 'clip' : ''),
  space: () => [{ withClip: false }, { withClip: true }],
  body: ({ withClip }) => /* wgsl */ `
var<workgroup> acc: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < u.count; i = i + ${WG}u) { s = s + partials[i]; }
  acc[lid] = s;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { acc[lid] = acc[lid] + acc[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let norm = sqrt(acc[0]);
    out[0] = norm;
    ${withClip ? `out[1] = min(1.0, u.maxNorm / (norm + ${CLIP_EPS}));` : ''}
  }
}`,
});

/** Records the global L2 norm of all gradients into out[0] (and the clip coefficient into out[1]). */
function recordGradNorm(gpu: Gpu, grads: readonly Tensor[], out: Tensor, maxNorm?: number): void {
  const blocks = grads.map((g) => cdiv(g.size, NORM_BLOCK));
  const total = blocks.reduce((a, b) => a + b, 0);
  const partials = gpu.empty([Math.max(1, total)], 'f32', 'optim_partials');
  if (total === 0) gpu.fill(partials, 0);
  let offset = 0;
  grads.forEach((g, i) => {
    expectTensor('gradNorm', `grads[${i}]`, g, 'f32');
    const { workgroups, nx } = spreadGrid(blocks[i]);
    sumSquaresPartial.run(gpu, {}, { g, partials }, workgroups, { n: g.size, partialOffset: offset, perRow: nx, blocks: blocks[i] });
    offset += blocks[i];
  });
  const withClip = maxNorm !== undefined;
  normFinal.run(gpu, { withClip }, { partials, out }, 1, { count: Math.max(1, total), maxNorm: maxNorm ?? 0 });
  partials.dispose();
}

/** The global L2 norm √(Σ over all tensors of Σg²) as a 1-element GPU tensor (recorded, not awaited). */
export function gradNorm(gpu: Gpu, grads: readonly Tensor[]): Tensor {
  const out = gpu.empty([1], 'f32', 'grad_norm');
  recordGradNorm(gpu, grads, out);
  return out;
}

/**
 * Records [norm, clipCoef] into a new 2-element tensor, clipCoef = min(1, maxNorm / (norm + 1e-6))
 * as torch.nn.utils.clip_grad_norm_. The gradients themselves are not modified: the update kernels
 * read clipCoef and scale each gradient as they load it.
 */
export function gradNormClip(gpu: Gpu, grads: readonly Tensor[], maxNorm: number): Tensor {
  if (!(maxNorm > 0)) throw new GpuError(`gradNormClip: maxNorm must be > 0, got ${maxNorm}`);
  const out = gpu.empty([2], 'f32', 'grad_norm_clip');
  recordGradNorm(gpu, grads, out, maxNorm);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Packing many tensors into one buffer
// ---------------------------------------------------------------------------------------------

export interface PackedTensors {
  /** The whole buffer (gaps between views are zero and stay zero under the update kernels). */
  flat: Tensor;
  /** One view per requested shape, each starting at an offset aligned for binding. */
  views: Tensor[];
}

/**
 * Allocates one zero-filled buffer holding tensors of the given shapes (offsets aligned to
 * minStorageBufferOffsetAlignment so each view can be bound on its own). Optimizers given `flat`
 * update every tensor with a single dispatch. Dispose `flat` only (views do not own storage).
 */
export function packTensors(gpu: Gpu, shapes: readonly (readonly number[])[], label = 'packed'): PackedTensors {
  const align = gpu.limits.minStorageBufferOffsetAlignment / 4;
  const offsets: number[] = [];
  let total = 0;
  for (const s of shapes) {
    offsets.push(total);
    const n = s.reduce((a, b) => a * b, 1);
    total += Math.ceil(n / align) * align;
  }
  const flat = gpu.zeros([Math.max(total, 1)], 'f32', label);
  return { flat, views: shapes.map((s, i) => flat.view(s, offsets[i])) };
}

// ---------------------------------------------------------------------------------------------
// AdamW / Adam
// ---------------------------------------------------------------------------------------------

const adamKernel = defineKernel({
  name: 'optim_adam_update',
  bindings: [['p', 'f32', 'read_write'], ['g', 'f32', 'read'], ['m', 'f32', 'read_write'], ['v', 'f32', 'read_write'], ['scale', 'f32', 'read']],
  uniforms: {
    n: 'u32', rowStride: 'u32',
    oneMinusBeta1: 'f32', beta2: 'f32', oneMinusBeta2: 'f32', eps: 'f32',
    decayFactor: 'f32', l2: 'f32', stepSize: 'f32', bc2Sqrt: 'f32',
  },
  body: () => /* wgsl */ `${flatIndexMain(WG, 'i', 'n', 'rowStride')}
  let p0 = p[i];
  // scale[1] = clip coefficient (1 when clipping is off); l2 = torch Adam's coupled weight decay.
  let grad = g[i] * scale[1] + u.l2 * p0;
  // torch: param.mul_(1 - lr·wd) (decoupled, AdamW); exp_avg.lerp_(grad, 1-β1); exp_avg_sq = β2·v + (1-β2)·g².
  let pd = p0 * u.decayFactor;
  let m1 = m[i] + u.oneMinusBeta1 * (grad - m[i]);
  let v1 = u.beta2 * v[i] + u.oneMinusBeta2 * grad * grad;
  m[i] = m1;
  v[i] = v1;
  // torch: denom = sqrt(v)/sqrt(1-β2^t) + eps; param -= (lr/(1-β1^t)) · m / denom.
  p[i] = pd - u.stepSize * (m1 / (sqrt(v1) / u.bc2Sqrt + u.eps));
}`,
});

export interface AdamOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled (AdamW) weight decay; torch's AdamW default is 0.01. */
  weightDecay?: number;
}

export interface StepOptions {
  lr: number;
  /** Clip the global gradient norm to this value (torch.nn.utils.clip_grad_norm_) before the update. */
  maxGradNorm?: number;
  /**
   * [norm, clipCoef] already recorded for these gradients (gradNormClip), used as it is instead of
   * maxGradNorm: a caller that needs the norm itself computes it once.
   */
  normClip?: Tensor;
}

export interface OptimizerStateData {
  step: number;
  /** Per-parameter state arrays, e.g. { m: [...], v: [...] } for Adam, { momentum: [...] } for SGD. */
  buffers: Record<string, Float32Array[]>;
}

abstract class OptimizerBase {
  /** Number of steps taken (torch's `state['step']`). */
  t = 0;
  /** [norm, clipCoef] the last step computed itself (maxGradNorm; GPU); null when it did not clip or was given normClip. */
  lastGradNorm: Tensor | null = null;
  protected readonly unitScale: Tensor;

  constructor(
    readonly gpu: Gpu,
    readonly params: readonly Tensor[],
    readonly kernel: string,
  ) {
    params.forEach((p, i) => expectTensor(kernel, `params[${i}]`, p, 'f32'));
    this.unitScale = gpu.upload(new Float32Array([0, 1]), [2], 'f32', `${kernel}_unit_scale`);
  }

  protected checkGrads(grads: readonly Tensor[]): void {
    if (grads.length !== this.params.length) {
      throw new GpuError(`${this.kernel}.step: ${grads.length} gradients for ${this.params.length} parameters`);
    }
    grads.forEach((g, i) => {
      expectTensor(this.kernel, `grads[${i}]`, g, 'f32');
      if (g.size !== this.params[i].size) {
        throw new GpuError(
          `${this.kernel}.step: grads[${i}] [${g.shape.join(', ')}] does not match params[${i}] [${this.params[i].shape.join(', ')}]`,
        );
      }
    });
  }

  /** The clip-coefficient buffer for this step: given, or recorded here when clipping, else 1. */
  protected scaleFor(grads: readonly Tensor[], opts: StepOptions): Tensor {
    this.lastGradNorm?.dispose();
    this.lastGradNorm = null;
    if (opts.normClip) {
      expectTensor(`${this.kernel}.step`, 'normClip', opts.normClip, 'f32', [2]);
      return opts.normClip;
    }
    const maxGradNorm = opts.maxGradNorm;
    if (maxGradNorm === undefined || maxGradNorm === Infinity) return this.unitScale;
    this.lastGradNorm = gradNormClip(this.gpu, grads, maxGradNorm);
    return this.lastGradNorm;
  }

  protected abstract stateTensors(): Record<string, Tensor[]>;

  /** Reads the optimizer state back (for checkpoints). */
  async exportState(): Promise<OptimizerStateData> {
    const named = this.stateTensors();
    const names = Object.keys(named);
    const flat = names.flatMap((k) => named[k]);
    const data = (await this.gpu.readMany(flat)) as Float32Array[];
    const buffers: Record<string, Float32Array[]> = {};
    let i = 0;
    for (const k of names) buffers[k] = named[k].map(() => data[i++]);
    return { step: this.t, buffers };
  }

  /** Restores state written by exportState (same parameter shapes). */
  importState(state: OptimizerStateData): void {
    const named = this.stateTensors();
    for (const k of Object.keys(named)) {
      const src = state.buffers[k];
      if (!src || src.length !== named[k].length) throw new GpuError(`${this.kernel}.importState: missing or wrong-length state '${k}'`);
      named[k].forEach((t, i) => {
        if (src[i].length !== t.size) {
          throw new GpuError(`${this.kernel}.importState: '${k}'[${i}] has ${src[i].length} elements, expected ${t.size}`);
        }
        this.gpu.write(t, src[i]);
      });
    }
    this.t = state.step;
  }

  dispose(): void {
    for (const list of Object.values(this.stateTensors())) for (const t of list) t.dispose();
    this.unitScale.dispose();
    this.lastGradNorm?.dispose();
    this.lastGradNorm = null;
  }
}

/**
 * torch.optim.AdamW (decoupled weight decay, bias correction with the step count t). Also plain
 * torch Adam via `Adam` below (coupled L2 weight decay, default 0).
 */
export class AdamW extends OptimizerBase {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** true: AdamW's p *= 1 - lr·wd; false: torch Adam's g += wd·p. */
  protected decoupled = true;
  /** First and second moments, one tensor per parameter (readable/writable for checkpoints). */
  readonly m: Tensor[];
  readonly v: Tensor[];

  constructor(gpu: Gpu, params: readonly Tensor[], opts: AdamOptions = {}, kernel = 'AdamW') {
    super(gpu, params, kernel);
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    this.m = params.map((p) => gpu.zeros([...p.shape], 'f32', `${kernel}_m`));
    this.v = params.map((p) => gpu.zeros([...p.shape], 'f32', `${kernel}_v`));
  }

  /** Records one optimizer step (t += 1). Nothing is awaited. */
  step(grads: readonly Tensor[], opts: StepOptions): void {
    this.checkGrads(grads);
    const scale = this.scaleFor(grads, opts);
    this.t++;
    const { lr } = opts;
    const bc1 = 1 - this.beta1 ** this.t;
    const bc2 = 1 - this.beta2 ** this.t;
    const wd = this.weightDecay;
    this.params.forEach((p, i) => {
      const { workgroups, nx } = spreadGrid(cdiv(p.size, WG));
      const u = {
        n: p.size, rowStride: nx * WG,
        oneMinusBeta1: 1 - this.beta1, beta2: this.beta2, oneMinusBeta2: 1 - this.beta2, eps: this.eps,
        decayFactor: this.decoupled ? 1 - lr * wd : 1, l2: this.decoupled ? 0 : wd, stepSize: lr / bc1, bc2Sqrt: Math.sqrt(bc2),
      };
      adamKernel.run(this.gpu, {}, { p, g: grads[i], m: this.m[i], v: this.v[i], scale }, workgroups, u);
    });
  }

  protected stateTensors(): Record<string, Tensor[]> {
    return { m: this.m, v: this.v };
  }
}

/** torch.optim.Adam: as AdamW but weight decay (default 0) is L2 added to the gradient. */
export class Adam extends AdamW {
  constructor(gpu: Gpu, params: readonly Tensor[], opts: AdamOptions = {}) {
    super(gpu, params, { ...opts, weightDecay: opts.weightDecay ?? 0 }, 'Adam');
    this.decoupled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// SGD
// ---------------------------------------------------------------------------------------------

const sgdKernel = defineKernel({
  name: 'optim_sgd_update',
  bindings: [['p', 'f32', 'read_write'], ['g', 'f32', 'read'], ['buf', 'f32', 'read_write'], ['scale', 'f32', 'read']],
  uniforms: { n: 'u32', rowStride: 'u32', hasMomentum: 'u32', first: 'u32', nesterov: 'u32', lr: 'f32', momentum: 'f32', oneMinusDampening: 'f32', wd: 'f32' },
  body: () => /* wgsl */ `${flatIndexMain(WG, 'i', 'n', 'rowStride')}
  let p0 = p[i];
  var d = g[i] * scale[1] + u.wd * p0;
  if (u.hasMomentum != 0u) {
    // torch: the first step sets buf = d (no dampening), later buf = μ·buf + (1-dampening)·d.
    var b = d;
    if (u.first == 0u) { b = u.momentum * buf[i] + u.oneMinusDampening * d; }
    buf[i] = b;
    if (u.nesterov != 0u) { d = d + u.momentum * b; } else { d = b; }
  }
  p[i] = p0 - u.lr * d;
}`,
});

export interface SgdOptions {
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  /** Coupled L2 weight decay (torch SGD). */
  weightDecay?: number;
}

/** torch.optim.SGD (momentum, dampening, nesterov, L2 weight decay). */
export class SGD extends OptimizerBase {
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  /** Momentum buffers (empty when momentum is 0). */
  readonly momentumBuffers: Tensor[];
  private readonly dummy: Tensor;

  constructor(gpu: Gpu, params: readonly Tensor[], opts: SgdOptions = {}) {
    super(gpu, params, 'SGD');
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.nesterov = opts.nesterov ?? false;
    this.weightDecay = opts.weightDecay ?? 0;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new GpuError('SGD: nesterov momentum requires a momentum and zero dampening');
    }
    this.momentumBuffers = this.momentum !== 0 ? params.map((p) => gpu.zeros([...p.shape], 'f32', 'SGD_momentum')) : [];
    this.dummy = gpu.zeros([1], 'f32', 'SGD_dummy');
  }

  step(grads: readonly Tensor[], opts: StepOptions): void {
    this.checkGrads(grads);
    const scale = this.scaleFor(grads, opts);
    const first = this.t === 0;
    this.t++;
    const hasMomentum = this.momentum !== 0;
    this.params.forEach((p, i) => {
      const { workgroups, nx } = spreadGrid(cdiv(p.size, WG));
      const u = {
        n: p.size, rowStride: nx * WG, hasMomentum: hasMomentum ? 1 : 0, first: first ? 1 : 0, nesterov: this.nesterov ? 1 : 0,
        lr: opts.lr, momentum: this.momentum, oneMinusDampening: 1 - this.dampening, wd: this.weightDecay,
      };
      const buf = hasMomentum ? this.momentumBuffers[i] : this.dummy;
      sgdKernel.run(this.gpu, {}, { p, g: grads[i], buf, scale }, workgroups, u);
    });
  }

  protected stateTensors(): Record<string, Tensor[]> {
    return { momentum: this.momentumBuffers };
  }

  override dispose(): void {
    super.dispose();
    this.dummy.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// float64 references (same formulas, same order of operations as torch's single-tensor path)
// ---------------------------------------------------------------------------------------------

export function gradNormRef(grads: readonly ArrayLike<number>[]): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return Math.sqrt(s);
}

export function clipCoefRef(norm: number, maxNorm: number): number {
  return Math.min(1, maxNorm / (norm + CLIP_EPS));
}

export interface AdamRefState {
  m: Float64Array[];
  v: Float64Array[];
  t: number;
}

/** One torch AdamW (decoupled) or Adam (coupled) step in float64, in place on params and state. */
export function adamStepRef(
  params: Float64Array[],
  grads: readonly ArrayLike<number>[],
  state: AdamRefState,
  opts: Required<AdamOptions> & { lr: number; decoupled: boolean; maxGradNorm?: number },
): void {
  const scale = opts.maxGradNorm === undefined ? 1 : clipCoefRef(gradNormRef(grads), opts.maxGradNorm);
  state.t++;
  const bc1 = 1 - opts.beta1 ** state.t;
  const bc2 = 1 - opts.beta2 ** state.t;
  params.forEach((p, k) => {
    const g = grads[k];
    const m = state.m[k];
    const v = state.v[k];
    for (let i = 0; i < p.length; i++) {
      const grad = g[i] * scale + (opts.decoupled ? 0 : opts.weightDecay * p[i]);
      if (opts.decoupled) p[i] *= 1 - opts.lr * opts.weightDecay;
      m[i] = m[i] + (1 - opts.beta1) * (grad - m[i]);
      v[i] = opts.beta2 * v[i] + (1 - opts.beta2) * grad * grad;
      p[i] -= (opts.lr / bc1) * (m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + opts.eps));
    }
  });
}

/** One torch SGD step in float64, in place. `buf` holds the momentum buffers (null before step 1). */
export function sgdStepRef(
  params: Float64Array[],
  grads: readonly ArrayLike<number>[],
  buf: (Float64Array | null)[],
  opts: Required<SgdOptions> & { lr: number; maxGradNorm?: number },
): void {
  const scale = opts.maxGradNorm === undefined ? 1 : clipCoefRef(gradNormRef(grads), opts.maxGradNorm);
  params.forEach((p, k) => {
    const g = grads[k];
    const first = buf[k] === null;
    if (opts.momentum !== 0 && first) buf[k] = new Float64Array(p.length);
    const b = buf[k];
    for (let i = 0; i < p.length; i++) {
      let d = g[i] * scale + opts.weightDecay * p[i];
      if (opts.momentum !== 0 && b) {
        b[i] = first ? d : opts.momentum * b[i] + (1 - opts.dampening) * d;
        d = opts.nesterov ? d + opts.momentum * b[i] : b[i];
      }
      p[i] -= opts.lr * d;
    }
  });
}
