// Rotary position embedding in HF's rotate-half layout on [tokens, heads·headDim]:
//   out[i]       = x[i]·cos(θ_i) − x[i + d/2]·sin(θ_i)
//   out[i + d/2] = x[i + d/2]·cos(θ_i) + x[i]·sin(θ_i),   θ_i = pos·inv_freq[i]
// with per-token positions from a u32 tensor (each sequence of a batch has its own positions).
// Backward is the rotation by −θ (the transpose of an orthogonal map).
//
// Precision (matches HF): inv_freq is computed on the CPU exactly as HF computes it (float32
// tensor ops; see `ropeInvFreq`), the angle is the float32 product f32(pos)·inv_freq and cos/sin
// of that float32 angle. cos/sin come from a table computed once on the CPU in float64 from those
// float32 angles (GPU sin/cos of large arguments — up to ~10⁵ rad — are too inaccurate on many GPUs:
// WGSL only bounds their error on [−π, π]). Positions beyond the table fall back to WGSL cos/sin.

import { defineKernel, product } from '../gpu/kernel.ts';
import { GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import type { Llama3RopeScaling } from '../model/config.ts';
import { expectTensor, outputTensor, overlaps, sameStorage, shapeStr, spreadGrid, vecType } from './common.ts';

export type { Llama3RopeScaling };

/**
 * 'hf-f32': every step rounded to float32 as HF's float32 tensor ops do (the default, what HF
 * models see); 'f64': the exact mathematical values (for references and tests).
 */
export type RopeFreqPrecision = 'hf-f32' | 'f64';

const f32 = Math.fround;

/**
 * inv_freq[i] = theta^(−2i/d) for i < d/2, then (for rope_type llama3) HF
 * `_compute_llama3_parameters`: wavelengths above original_max/low_freq_factor are divided by
 * factor, those below original_max/high_freq_factor kept, the band between smoothly interpolated.
 * Computed in float64 arithmetic; with 'hf-f32' each intermediate is rounded to float32 like HF.
 */
export function ropeInvFreq(
  headDim: number,
  theta: number,
  scaling: Llama3RopeScaling | null = null,
  precision: RopeFreqPrecision = 'hf-f32',
): Float64Array {
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) throw new GpuError(`ropeInvFreq: headDim ${headDim} must be a positive even integer`);
  if (!(theta > 0)) throw new GpuError(`ropeInvFreq: theta ${theta} must be positive`);
  const hf = precision === 'hf-f32';
  const r = hf ? f32 : (v: number) => v;
  const half = headDim / 2;
  const inv = new Float64Array(half);
  // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)) — float32 tensor, python-float base.
  for (let i = 0; i < half; i++) inv[i] = r(1 / r(Math.pow(theta, r((2 * i) / headDim))));
  if (!scaling) return inv;

  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldCtx } = scaling;
  // Python floats (double) in HF; they meet float32 tensors below and are then rounded to float32.
  const lowFreqWavelen = oldCtx / lowFreqFactor;
  const highFreqWavelen = oldCtx / highFreqFactor;
  const out = new Float64Array(half);
  // torch casts a python scalar meeting a float32 tensor to float32 first: r(scalar).
  for (let i = 0; i < half; i++) {
    // wavelen = 2 * math.pi / inv_freq
    const wavelen = r(r(2 * Math.PI) / inv[i]);
    // torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    let v = wavelen > r(lowFreqWavelen) ? r(inv[i] / r(factor)) : inv[i];
    // smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    const smooth = r(r(r(r(oldCtx) / wavelen) - r(lowFreqFactor)) / r(highFreqFactor - lowFreqFactor));
    // smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    const smoothed = r(r(r(r(1 - smooth) * v) / r(factor)) + r(smooth * v));
    const isMedium = !(wavelen < r(highFreqWavelen)) && !(wavelen > r(lowFreqWavelen));
    if (isMedium) v = smoothed;
    out[i] = v;
  }
  return out;
}

/** The cos/sin table of one rotary configuration, on the GPU. */
export class RopeTable {
  constructor(
    readonly headDim: number,
    /** Positions [0, maxPositions) come from the table; larger ones use WGSL cos/sin. */
    readonly maxPositions: number,
    readonly invFreq: Float64Array,
    /** [maxPositions, headDim]: cos(θ_0…θ_{d/2−1}) then sin(θ_0…θ_{d/2−1}) per position. */
    readonly table: Tensor,
    /** inv_freq as float32 [headDim/2] (for positions beyond the table). */
    readonly invFreqTensor: Tensor,
  ) {}
  dispose(): void {
    this.table.dispose();
    this.invFreqTensor.dispose();
  }
}

/**
 * Host values of the table: θ = f32(f32(pos)·f32(inv_freq)) as HF's float32 matmul computes it,
 * then cos/sin in float64 rounded to float32.
 */
export function ropeTableData(invFreq: ArrayLike<number>, maxPositions: number): Float32Array {
  const half = invFreq.length;
  const d = 2 * half;
  const data = new Float32Array(maxPositions * d);
  const inv32 = Float32Array.from(invFreq);
  for (let p = 0; p < maxPositions; p++) {
    const pf = f32(p);
    for (let i = 0; i < half; i++) {
      const a = f32(pf * inv32[i]);
      data[p * d + i] = Math.cos(a);
      data[p * d + half + i] = Math.sin(a);
    }
  }
  return data;
}

/** Uploads the cos/sin table for positions [0, maxPositions) (e.g. the model's context length). */
export function createRopeTable(gpu: Gpu, invFreq: Float64Array, maxPositions: number): RopeTable {
  const half = invFreq.length;
  if (half === 0) throw new GpuError('createRopeTable: empty inv_freq');
  if (!Number.isInteger(maxPositions) || maxPositions < 1) throw new GpuError(`createRopeTable: maxPositions ${maxPositions} must be a positive integer`);
  const table = gpu.upload(ropeTableData(invFreq, maxPositions), [maxPositions, 2 * half], 'f32', 'rope.table');
  const invT = gpu.upload(Float32Array.from(invFreq), [half], 'f32', 'rope.invFreq');
  return new RopeTable(2 * half, maxPositions, invFreq, table, invT);
}

const ROPE_WG = 64;

/** Vector width and pair vectors per head for `half` = headDim / 2 rotation pairs. */
function ropeVec(half: number): { v: 1 | 4; hv: number } {
  const v = half % 4 === 0 ? 4 : 1;
  return { v, hv: half / v };
}

// One lane per (token, vector of pairs); it loops over the heads so cos/sin are loaded once.
// HV (pair vectors per head) is a constant: the lane's token is g / HV, a division by a constant.
const ropeKernel = defineKernel({
  name: 'rope',
  bindings: ({ v, inPlace }: { v: 1 | 4; hv: number; inPlace: boolean }) => [
    ['x', vecType(v), inPlace ? 'read_write' : 'read'],
    ['pos', 'u32', 'read'],
    ['table', vecType(v), 'read'],
    ['invf', vecType(v), 'read'],
    ...(inPlace ? [] : [['y', vecType(v), 'read_write'] as const]),
  ],
  uniforms: { tokens: 'u32', heads: 'u32', nx: 'u32', maxPos: 'u32', rowHeads: 'u32', headStart: 'u32', sign: 'f32' },
  key: ({ v, hv, inPlace }) => `v${v}_hv${hv}${inPlace ? '_inplace' : ''}`,
  // The variants of every even head size up to 256 (see rope()).
  space: () => product({ half: Array.from({ length: 128 }, (_, i) => i + 1), inPlace: [false, true] }).map(({ half, inPlace }) => ({ ...ropeVec(half), inPlace })),
  body: ({ v, hv, inPlace }) => {
    const T = vecType(v);
    const dst = inPlace ? 'x' : 'y';
    return `
const HV = ${hv}u;
@compute @workgroup_size(${ROPE_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let g = (wid.y * u.nx + wid.x) * ${ROPE_WG}u + lid.x;
  let t = g / HV;
  let i = g % HV;
  if (t >= u.tokens) { return; }
  let p = pos[t];
  var c: ${T};
  var s: ${T};
  if (p < u.maxPos) {
    c = table[p * 2u * HV + i];
    s = table[p * 2u * HV + HV + i];
  } else {
    let a = f32(p) * invf[i];
    c = cos(a);
    s = sin(a);
  }
  s = s * u.sign;
  let rowBase = (t * u.rowHeads + u.headStart) * 2u * HV;
  for (var h = 0u; h < u.heads; h++) {
    let o = rowBase + h * 2u * HV + i;
    let x1 = x[o];
    let x2 = x[o + HV];
    ${dst}[o] = x1 * c - x2 * s;
    ${dst}[o + HV] = x2 * c + x1 * s;
  }
}`;
  },
});

export interface RopeOptions {
  /** Output [tokens, heads·headDim]; may be x itself (in place, also the default when `inPlace`). */
  out?: Tensor;
  /** Rotate x in place (same as out = x). */
  inPlace?: boolean;
  /** Rotate by −θ (the backward pass). */
  inverse?: boolean;
  /**
   * Rotate only heads [start, start + count) of each row, e.g. q = [0, H) and k = [H, H + KV) of
   * a packed [tokens, (H + 2·KV)·headDim] QKV projection. Other heads are not touched (nor copied
   * to `out`). Default: all heads.
   */
  headRange?: [start: number, count: number];
}

/**
 * RoPE on x [tokens, heads·headDim] at positions u32 [tokens], using `table` (headDim from the
 * table). Returns the output (x itself when in place).
 */
export function rope(gpu: Gpu, x: Tensor, positions: Tensor, table: RopeTable, opts: RopeOptions = {}): Tensor {
  const K = opts.inverse ? 'ropeBackward' : 'rope';
  expectTensor(K, 'x', x, 'f32');
  if (x.shape.length !== 2) throw new GpuError(`${K}: x must be [tokens, heads·headDim], got ${shapeStr(x)}`);
  const [tokens, width] = x.shape;
  const D = table.headDim;
  if (width % D !== 0) throw new GpuError(`${K}: x ${shapeStr(x)} row length is not a multiple of headDim ${D}`);
  expectTensor(K, 'positions', positions, 'u32', [tokens]);
  if (table.table.isDisposed) throw new GpuError(`${K}: rope table is disposed`);
  const inPlace = opts.inPlace || (opts.out !== undefined && sameStorage(opts.out, x));
  const y = inPlace ? x : outputTensor(gpu, K, opts.out, x.shape);
  if (!inPlace && overlaps(y, x)) throw new GpuError(`${K}: out must be x itself or not overlap it`);
  for (const [name, t] of [['positions', positions], ['table', table.table], ['inv_freq', table.invFreqTensor]] as const) {
    if (overlaps(y, t)) throw new GpuError(`${K}: out must not alias ${name}`);
  }
  const rowHeads = width / D;
  const [headStart, heads] = opts.headRange ?? [0, rowHeads];
  if (!Number.isInteger(headStart) || !Number.isInteger(heads) || headStart < 0 || heads < 0 || headStart + heads > rowHeads) {
    throw new GpuError(`${K}: headRange [${headStart}, ${heads}] outside the ${rowHeads} heads of x ${shapeStr(x)}`);
  }
  const { v, hv } = ropeVec(D / 2);
  const grid = spreadGrid(Math.ceil((tokens * hv) / ROPE_WG));
  const u = { tokens, heads, nx: grid.nx, maxPos: table.maxPositions, rowHeads, headStart, sign: opts.inverse ? -1 : 1 };
  const buffers = { x, pos: positions, table: table.table, invf: table.invFreqTensor, ...(inPlace ? {} : { y }) };
  ropeKernel.run(gpu, { v, hv, inPlace }, buffers, grid.workgroups, u);
  return y;
}

/** Backward of rope: dx = rotation of dy by −θ. `out` may be dy itself. */
export function ropeBackward(gpu: Gpu, dy: Tensor, positions: Tensor, table: RopeTable, opts: Omit<RopeOptions, 'inverse'> = {}): Tensor {
  return rope(gpu, dy, positions, table, { ...opts, inverse: true });
}

// ------------------------------------------------------------------------------------------------
// float64 reference
// ------------------------------------------------------------------------------------------------

export interface RopeRefOptions {
  inverse?: boolean;
  /**
   * 'f64': θ = pos·inv_freq in float64 (the mathematical answer). 'hf-f32': θ = f32(f32(pos)·f32(inv_freq))
   * as HF computes it (cos/sin of that angle still in float64).
   */
  angles?: 'f64' | 'hf-f32';
}

/** RoPE in float64 on x [tokens, heads·headDim] (HF rotate-half layout). */
export function ropeRef(
  x: ArrayLike<number>,
  tokens: number,
  heads: number,
  headDim: number,
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  opts: RopeRefOptions = {},
): Float64Array {
  const half = headDim / 2;
  const y = new Float64Array(tokens * heads * headDim);
  const sign = opts.inverse ? -1 : 1;
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < half; i++) {
      const a = opts.angles === 'hf-f32' ? f32(f32(positions[t]) * f32(invFreq[i])) : positions[t] * invFreq[i];
      const c = Math.cos(a);
      const s = sign * Math.sin(a);
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * headDim;
        const x1 = x[o + i];
        const x2 = x[o + i + half];
        y[o + i] = x1 * c - x2 * s;
        y[o + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return y;
}

/** Gradient of Σ dy·rope(x) w.r.t. x: rotation of dy by −θ. */
export function ropeBackwardRef(
  dy: ArrayLike<number>,
  tokens: number,
  heads: number,
  headDim: number,
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  opts: Omit<RopeRefOptions, 'inverse'> = {},
): Float64Array {
  return ropeRef(dy, tokens, heads, headDim, positions, invFreq, { ...opts, inverse: true });
}
