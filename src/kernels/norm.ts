// RMSNorm (HF LlamaRMSNorm / Qwen2RMSNorm): y = x · rsqrt(mean(x²) + eps) · weight, float32
// accumulation, forward + backward + fused residual-add variant. Float64 references at the bottom.
//
// Three row layouts (chosen by `rmsnormVariant`, measured by bench/rowwise.ts):
//  - 'workgroup': one workgroup per row, lanes stride the row, tree reduction in workgroup memory.
//  - 'lane': one lane per row, no barriers (llvmpipe runs barriers as coroutine switches).
//  - 'subgroup' (llvmpipe only): one SIMD row of lanes per row, reduced with subgroupAdd.
// Qwen3's per-head q/k norm is the same kernel on x.reshape([tokens·heads, headDim]).
//
// Backward: dx = r·w·dy − x·r³/D · Σ_k(dy·w·x)_k (per row), dWeight = Σ_rows dy·x·r. dWeight is
// a column reduction done in two deterministic passes (per-row-block partials, then a fixed-order
// sum), never with float atomics.

import { defineKernel, product } from '../gpu/kernel.ts';
import { cdiv, GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { expectTensor, outputTensor, overlaps, rowsCols, sameStorage, shapeStr, spreadGrid, vecType } from './common.ts';

export type RmsnormVariant = 'workgroup' | 'lane' | 'subgroup';

export interface RmsnormOptions {
  /** Output tensor [R, D] (must not alias x). */
  out?: Tensor;
  /** Also return rstd [R] = rsqrt(mean(x²) + eps), needed by rmsnormBackward. */
  saveRstd?: boolean;
  /** Row layout; default chosen per adapter by `rmsnormVariant`. */
  variant?: RmsnormVariant;
}

/**
 * Default row layout, explicit per adapter class and shape (figures: bench/rowwise.ts, lavapipe):
 *  - real GPUs: one workgroup per row (coalesced loads, many rows in flight).
 *  - llvmpipe: workgroup barriers are very slow (2048×896: 16 ms 'workgroup' vs 7 ms 'lane' vs
 *    3.8 ms 'subgroup'; 28672×64 q-norm rows: 148 / 6 / 8 ms). 'subgroup' (one SIMD row of lanes per
 *    row, subgroupAdd) wins for long rows, 'lane' (a lane per row, no cross-lane work) for short
 *    rows or few rows.
 */
export function rmsnormVariant(gpu: Gpu, rows: number, dim: number): RmsnormVariant {
  if (!gpu.info.isSoftware) return 'workgroup';
  const dv = dim % 4 === 0 ? dim / 4 : dim;
  if (llvmpipeSubgroupWidth(gpu) !== null && dv >= 64 && rows >= 256) return 'subgroup';
  return 'lane';
}

/**
 * llvmpipe's subgroup width (its SIMD width in f32 lanes: "256 bits" → 8), or null when the
 * adapter is not llvmpipe or has no subgroups. The 'subgroup' layout relies on llvmpipe packing
 * consecutive local invocation ids into one subgroup of exactly this width, so it is only used there.
 */
export function llvmpipeSubgroupWidth(gpu: Gpu): number | null {
  if (!gpu.info.hasSubgroups) return null;
  const a = gpu.info.adapterInfo;
  const text = `${a.device} ${a.description}`.toLowerCase();
  if (!text.includes('llvmpipe')) return null;
  const m = /(\d+)[- ]bits/.exec(text);
  const width = m ? Number(m[1]) / 32 : 0;
  return width === 4 || width === 8 || width === 16 ? width : null;
}

/** 'workgroup' layout size: a power of two (tree reduction), on GPUs about one lane per vector up to 256. */
function wgSize(gpu: Gpu, dv: number): number {
  if (gpu.info.isSoftware) return 64;
  let w = 32;
  while (w < 256 && w < dv) w *= 2;
  return w;
}
const LANE_WG = 64;

/** Workgroup size (for 'subgroup': lanes per row) and rows per workgroup of a layout. */
function layout(gpu: Gpu, K: string, variant: RmsnormVariant, dv: number): { wg: number; rowsPerWg: number } {
  if (variant === 'lane') return { wg: LANE_WG, rowsPerWg: LANE_WG };
  if (variant === 'workgroup') return { wg: wgSize(gpu, dv), rowsPerWg: 1 };
  const S = llvmpipeSubgroupWidth(gpu);
  if (S === null) throw new GpuError(`${K}: the 'subgroup' layout needs llvmpipe with subgroups (adapter: ${gpu.info.adapterInfo.description})`);
  return { wg: S, rowsPerWg: 64 / S };
}

interface RowKernelSpec {
  variant: RmsnormVariant;
  v: 1 | 4;
  wg: number;
  /** Forward: write rstd; fused add: residual + x (sumMode 'out' writes a new tensor, 'inplace' writes residual). */
  saveRstd: boolean;
  sumMode: 'none' | 'out' | 'inplace';
}

function sq(v: 1 | 4, e: string): string {
  return v === 4 ? `dot(${e}, ${e})` : `${e} * ${e}`;
}

/**
 * Row-program skeleton shared by the forward and backward kernels. `pass1(j)` accumulates into
 * `acc` for element j of the row; `pass2(j)` writes outputs with `total` (the row's sum) known.
 */
function rowKernel(variant: RmsnormVariant, wg: number, pass1: string, between: string, pass2: string): string {
  if (variant === 'lane') {
    return `@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = (wid.y * u.nx + wid.x) * ${wg}u + lid.x;
  if (row >= u.rows) { return; }
  let base = row * u.dv;
  let leader = true;
  var acc = 0.0;
  for (var j = 0u; j < u.dv; j++) { ${pass1} }
  let total = acc;
  ${between}
  for (var j = 0u; j < u.dv; j++) { ${pass2} }
}`;
  }
  if (variant === 'subgroup') {
    // S = wg here is the subgroup width; a 64-lane workgroup holds 64/S rows.
    const S = wg;
    return `@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = (wid.y * u.nx + wid.x) * ${64 / S}u + lid.x / ${S}u;
  let l = lid.x % ${S}u;
  let ok = row < u.rows;
  let base = row * u.dv;
  let leader = l == 0u;
  var acc = 0.0;
  if (ok) { for (var j = l; j < u.dv; j += ${S}u) { ${pass1} } }
  let total = subgroupAdd(acc);
  if (!ok) { return; }
  ${between}
  for (var j = l; j < u.dv; j += ${S}u) { ${pass2} }
}`;
  }
  return `var<workgroup> red: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * u.nx + wid.x;
  if (row >= u.rows) { return; }
  let base = row * u.dv;
  let leader = lid.x == 0u;
  var acc = 0.0;
  for (var j = lid.x; j < u.dv; j += ${wg}u) { ${pass1} }
  red[lid.x] = acc;
  workgroupBarrier();
  for (var k = ${wg / 2}u; k > 0u; k = k >> 1u) {
    if (lid.x < k) { red[lid.x] += red[lid.x + k]; }
    workgroupBarrier();
  }
  let total = red[0];
  ${between}
  for (var j = lid.x; j < u.dv; j += ${wg}u) { ${pass2} }
}`;
}

const enableFor = ({ variant }: { variant: RmsnormVariant }) => (variant === 'subgroup' ? ['subgroups'] : []);

/** 'workgroup': its size (a power of two); 'subgroup': llvmpipe's subgroup width; 'lane': 64. */
const ROW_LAYOUTS: readonly { variant: RmsnormVariant; wg: number }[] = [
  ...[32, 64, 128, 256].map((wg) => ({ variant: 'workgroup' as const, wg })),
  { variant: 'lane', wg: LANE_WG },
  ...[4, 8, 16].map((wg) => ({ variant: 'subgroup' as const, wg })),
];

const forwardKernel = defineKernel({
  name: 'rmsnorm',
  bindings: (s: RowKernelSpec) => {
    const T = vecType(s.v);
    return [
      ...(s.sumMode === 'none' ? [] : [['res', T, s.sumMode === 'inplace' ? 'read_write' : 'read'] as const]),
      ['x', T, 'read'],
      ['w', T, 'read'],
      ['y', T, 'read_write'],
      ...(s.sumMode === 'out' ? [['sum', T, 'read_write'] as const] : []),
      ...(s.saveRstd ? [['rstd', 'f32', 'read_write'] as const] : []),
    ];
  },
  uniforms: { rows: 'u32', dv: 'u32', nx: 'u32', d: 'f32', eps: 'f32' },
  enable: enableFor,
  key: (s) => `${s.variant}${s.wg}_v${s.v}${s.sumMode === 'none' ? '' : `_add_${s.sumMode}`}${s.saveRstd ? '_rstd' : ''}`,
  space: () =>
    ROW_LAYOUTS.flatMap((l) =>
      ([1, 4] as const).flatMap((v) =>
        (['none', 'out', 'inplace'] as const).flatMap((sumMode) => [false, true].map((saveRstd) => ({ ...l, v, sumMode, saveRstd }))),
      ),
    ),
  body: (s) => {
    // Value of the (summed) input at j; the fused variant writes the sum in pass 1 and re-reads it in
    // pass 2 from the same lane (no cross-lane dependency).
    const sumStore = s.sumMode === 'inplace' ? 'res' : 'sum';
    const pass1 =
      s.sumMode === 'none'
        ? `let e = x[base + j]; acc += ${sq(s.v, 'e')};`
        : `let e = res[base + j] + x[base + j]; ${sumStore}[base + j] = e; acc += ${sq(s.v, 'e')};`;
    const src = s.sumMode === 'none' ? 'x' : sumStore;
    const between = `let r = 1.0 / sqrt(total / u.d + u.eps);${s.saveRstd ? ' if (leader) { rstd[row] = r; }' : ''}`;
    const pass2 = `y[base + j] = (${src}[base + j] * r) * w[j];`;
    return rowKernel(s.variant, s.wg, pass1, between, pass2);
  },
});

function checkRowsInput(K: string, x: Tensor, weight: Tensor): [number, number] {
  expectTensor(K, 'x', x, 'f32');
  const [R, D] = rowsCols(K, 'x', x);
  expectTensor(K, 'weight', weight, 'f32');
  if (weight.size !== D) throw new GpuError(`${K}: weight ${shapeStr(weight)} must have ${D} elements for x ${shapeStr(x)}`);
  return [R, D];
}

function runForward(
  gpu: Gpu,
  K: string,
  R: number,
  D: number,
  eps: number,
  variant: RmsnormVariant,
  sumMode: RowKernelSpec['sumMode'],
  saveRstd: boolean,
  buffers: Readonly<Record<string, Tensor>>,
): void {
  const v: 1 | 4 = D % 4 === 0 ? 4 : 1;
  const { wg, rowsPerWg } = layout(gpu, K, variant, D / v);
  const grid = spreadGrid(cdiv(R, rowsPerWg));
  forwardKernel.run(gpu, { variant, v, wg, saveRstd, sumMode }, buffers, grid.workgroups, { rows: R, dv: D / v, nx: grid.nx, d: D, eps });
}

/** HF RMSNorm over the rows of x [R, D]: returns y [R, D] and, with saveRstd, rstd [R]. */
export function rmsnorm(gpu: Gpu, x: Tensor, weight: Tensor, eps: number, opts: RmsnormOptions = {}): { y: Tensor; rstd?: Tensor } {
  const K = 'rmsnorm';
  const [R, D] = checkRowsInput(K, x, weight);
  const y = outputTensor(gpu, K, opts.out, x.shape);
  if (overlaps(y, x) || overlaps(y, weight)) throw new GpuError(`${K}: out must not alias x or weight`);
  const rstd = opts.saveRstd ? gpu.empty([R], 'f32', 'rmsnorm.rstd') : undefined;
  const variant = opts.variant ?? rmsnormVariant(gpu, R, D);
  runForward(gpu, K, R, D, eps, variant, 'none', !!rstd, rstd ? { x, w: weight, y, rstd } : { x, w: weight, y });
  return rstd ? { y, rstd } : { y };
}

export interface AddRmsnormOptions extends RmsnormOptions {
  /** Where the sum residual + x goes; may be `residual` itself (in place). Default: a new tensor. */
  sumOut?: Tensor;
}

/**
 * Fused residual add + RMSNorm: sum = residual + x, y = rmsnorm(sum). One dispatch instead of two.
 * Backward: rmsnormBackward(sum, weight, rstd, dy, { dx: dSum }) accumulates into the residual grad.
 */
export function addRmsnorm(
  gpu: Gpu,
  residual: Tensor,
  x: Tensor,
  weight: Tensor,
  eps: number,
  opts: AddRmsnormOptions = {},
): { sum: Tensor; y: Tensor; rstd?: Tensor } {
  const K = 'addRmsnorm';
  const [R, D] = checkRowsInput(K, x, weight);
  expectTensor(K, 'residual', residual, 'f32');
  if (residual.size !== x.size) throw new GpuError(`${K}: residual ${shapeStr(residual)} and x ${shapeStr(x)} differ in size`);
  const inPlace = opts.sumOut !== undefined && sameStorage(opts.sumOut, residual);
  const sum = inPlace ? residual : outputTensor(gpu, K, opts.sumOut, x.shape);
  const y = outputTensor(gpu, K, opts.out, x.shape);
  for (const [name, t] of [['residual', residual], ['x', x], ['weight', weight]] as const) {
    if (overlaps(y, t)) throw new GpuError(`${K}: out must not alias ${name}`);
    if (!inPlace && overlaps(sum, t)) throw new GpuError(`${K}: sumOut must be residual itself or not alias ${name}`);
  }
  if (inPlace && (overlaps(residual, x) || overlaps(residual, weight))) throw new GpuError(`${K}: residual must not alias x or weight`);
  if (overlaps(sum, y)) throw new GpuError(`${K}: sumOut and out must not alias`);
  const rstd = opts.saveRstd ? gpu.empty([R], 'f32', 'addRmsnorm.rstd') : undefined;
  const variant = opts.variant ?? rmsnormVariant(gpu, R, D);
  const buffers: Record<string, Tensor> = inPlace ? { res: residual, x, w: weight, y } : { res: residual, x, w: weight, y, sum };
  if (rstd) buffers.rstd = rstd;
  runForward(gpu, K, R, D, eps, variant, inPlace ? 'inplace' : 'out', !!rstd, buffers);
  return rstd ? { sum, y, rstd } : { sum, y };
}

// ------------------------------------------------------------------------------------------------
// backward
// ------------------------------------------------------------------------------------------------

const backwardDxKernel = defineKernel({
  name: 'rmsnorm_backward_dx',
  bindings: ({ v }: { variant: RmsnormVariant; v: 1 | 4; wg: number; accumulate: boolean }) => [
    ['x', vecType(v), 'read'],
    ['w', vecType(v), 'read'],
    ['rstd', 'f32', 'read'],
    ['dy', vecType(v), 'read'],
    ['dx', vecType(v), 'read_write'],
  ],
  uniforms: { rows: 'u32', dv: 'u32', nx: 'u32', d: 'f32' },
  enable: enableFor,
  key: ({ variant, v, wg, accumulate }) => `${variant}${wg}_v${v}${accumulate ? '_acc' : ''}`,
  space: () => ROW_LAYOUTS.flatMap((l) => ([1, 4] as const).flatMap((v) => [false, true].map((accumulate) => ({ ...l, v, accumulate })))),
  body: ({ variant, v, wg, accumulate }) => {
    const pass1 = `let a = dy[base + j] * w[j]; let b = x[base + j]; acc += ${v === 4 ? 'dot(a, b)' : 'a * b'};`;
    const between = `let r = rstd[row]; let c = total * r * r * r / u.d;`;
    const val = `r * w[j] * dy[base + j] - c * x[base + j]`;
    const pass2 = accumulate ? `dx[base + j] += ${val};` : `dx[base + j] = ${val};`;
    return rowKernel(variant, wg, pass1, between, pass2);
  },
});

const DW_WG = 64;

// Lanes over columns, one row block per y: rstd[r] is the same address for all lanes (broadcast load).
const dWeightPartialKernel = defineKernel({
  name: 'rmsnorm_backward_dw_partial',
  bindings: ({ v }: { v: 1 | 4 }) => [['x', vecType(v), 'read'], ['rstd', 'f32', 'read'], ['dy', vecType(v), 'read'], ['partial', vecType(v), 'read_write']],
  uniforms: { rows: 'u32', dv: 'u32', rowsPerBlock: 'u32' },
  key: ({ v }) => `v${v}`,
  space: () => product({ v: [1, 4] as const }),
  body: ({ v }) => `
@compute @workgroup_size(${DW_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let j = wid.x * ${DW_WG}u + lid.x;
  if (j >= u.dv) { return; }
  let r0 = wid.y * u.rowsPerBlock;
  let r1 = min(u.rows, r0 + u.rowsPerBlock);
  var acc = ${vecType(v)}(0.0);
  for (var r = r0; r < r1; r++) { acc += dy[r * u.dv + j] * x[r * u.dv + j] * rstd[r]; }
  partial[wid.y * u.dv + j] = acc;
}`,
});

const dWeightFinalKernel = defineKernel({
  name: 'rmsnorm_backward_dw_final',
  bindings: ({ v }: { v: 1 | 4; accumulate: boolean }) => [['partial', vecType(v), 'read'], ['dw', vecType(v), 'read_write']],
  uniforms: { dv: 'u32', blocks: 'u32' },
  key: ({ v, accumulate }) => `v${v}${accumulate ? '_acc' : ''}`,
  space: () => ([1, 4] as const).flatMap((v) => [false, true].map((accumulate) => ({ v, accumulate }))),
  body: ({ v, accumulate }) => `
@compute @workgroup_size(${DW_WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let j = g.x;
  if (j >= u.dv) { return; }
  var acc = ${vecType(v)}(0.0);
  for (var b = 0u; b < u.blocks; b++) { acc += partial[b * u.dv + j]; }
  ${accumulate ? 'dw[j] += acc;' : 'dw[j] = acc;'}
}`,
});

export interface RmsnormBackwardOptions {
  /** Accumulate dx into this existing tensor (e.g. the residual-stream gradient) instead of a new one. */
  dx?: Tensor;
  /** Accumulate dWeight into this existing tensor [D]. Default: a new tensor. */
  dWeight?: Tensor;
  /** Skip dWeight (frozen norm weights, e.g. LoRA training). */
  skipDWeight?: boolean;
  variant?: RmsnormVariant;
}

/** Rows per dWeight partial block: ≤ ~128 blocks, each at least 8 rows. */
function dWeightRowsPerBlock(R: number): number {
  return Math.max(8, cdiv(R, 128));
}

/**
 * Backward of y = rmsnorm(x) · weight given rstd from the forward. Returns dx (a new tensor, or
 * opts.dx with the gradient added) and dWeight (new, or opts.dWeight with the gradient added).
 */
export function rmsnormBackward(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  rstd: Tensor,
  dy: Tensor,
  opts: RmsnormBackwardOptions = {},
): { dx: Tensor; dWeight: Tensor | undefined } {
  const K = 'rmsnormBackward';
  const [R, D] = checkRowsInput(K, x, weight);
  expectTensor(K, 'rstd', rstd, 'f32');
  if (rstd.size !== R) throw new GpuError(`${K}: rstd ${shapeStr(rstd)} must have ${R} elements for x ${shapeStr(x)}`);
  expectTensor(K, 'dy', dy, 'f32');
  if (dy.size !== x.size) throw new GpuError(`${K}: dy ${shapeStr(dy)} and x ${shapeStr(x)} differ in size`);
  const accumulate = opts.dx !== undefined;
  const dx = outputTensor(gpu, K, opts.dx, x.shape);
  for (const [name, t] of [['x', x], ['weight', weight], ['rstd', rstd], ['dy', dy]] as const) {
    if (overlaps(dx, t)) throw new GpuError(`${K}: dx must not alias ${name}`);
  }
  const v: 1 | 4 = D % 4 === 0 ? 4 : 1;
  const dv = D / v;
  const variant = opts.variant ?? rmsnormVariant(gpu, R, D);
  const { wg, rowsPerWg } = layout(gpu, K, variant, dv);
  const grid = spreadGrid(cdiv(R, rowsPerWg));
  backwardDxKernel.run(gpu, { variant, v, wg, accumulate }, { x, w: weight, rstd, dy, dx }, grid.workgroups, { rows: R, dv, nx: grid.nx, d: D });

  if (opts.skipDWeight) return { dx, dWeight: undefined };
  const accW = opts.dWeight !== undefined;
  const dWeight = accW ? opts.dWeight! : gpu.empty([D], 'f32', 'rmsnorm.dWeight');
  expectTensor(K, 'dWeight', dWeight, 'f32');
  if (dWeight.size !== D) throw new GpuError(`${K}: dWeight ${shapeStr(dWeight)} must have ${D} elements`);
  const rpb = dWeightRowsPerBlock(R);
  const blocks = Math.max(1, cdiv(R, rpb));
  if (blocks > 65535) throw new GpuError(`${K}: ${R} rows need ${blocks} row blocks (max 65535)`);
  const partial = gpu.empty([blocks, D], 'f32', 'rmsnorm.dWeight.partial');
  dWeightPartialKernel.run(gpu, { v }, { x, rstd, dy, partial }, [cdiv(dv, DW_WG), blocks], { rows: R, dv, rowsPerBlock: rpb });
  dWeightFinalKernel.run(gpu, { v, accumulate: accW }, { partial, dw: dWeight }, cdiv(dv, DW_WG), { dv, blocks });
  partial.dispose();
  return { dx, dWeight };
}

// ------------------------------------------------------------------------------------------------
// float64 references
// ------------------------------------------------------------------------------------------------

type Vec = ArrayLike<number>;

/** HF RMSNorm in float64: y [R·D] and rstd [R]. */
export function rmsnormRef(x: Vec, rows: number, dim: number, weight: Vec, eps: number): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(rows * dim);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    rstd[r] = inv;
    for (let j = 0; j < dim; j++) y[o + j] = x[o + j] * inv * weight[j];
  }
  return { y, rstd };
}

/** sum = residual + x; y = rmsnorm(sum). */
export function addRmsnormRef(residual: Vec, x: Vec, rows: number, dim: number, weight: Vec, eps: number) {
  const sum = new Float64Array(rows * dim);
  for (let i = 0; i < sum.length; i++) sum[i] = residual[i] + x[i];
  return { sum, ...rmsnormRef(sum, rows, dim, weight, eps) };
}

/** Gradients of Σ dy·rmsnorm(x, weight) w.r.t. x and weight (rstd recomputed in float64). */
export function rmsnormBackwardRef(
  x: Vec,
  rows: number,
  dim: number,
  weight: Vec,
  dy: Vec,
  eps: number,
): { dx: Float64Array; dWeight: Float64Array } {
  const dx = new Float64Array(rows * dim);
  const dWeight = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    let dot = 0;
    for (let j = 0; j < dim; j++) dot += dy[o + j] * weight[j] * x[o + j];
    const c = (dot * inv * inv * inv) / dim;
    for (let j = 0; j < dim; j++) {
      dx[o + j] = inv * weight[j] * dy[o + j] - c * x[o + j];
      dWeight[j] += dy[o + j] * x[o + j] * inv;
    }
  }
  return { dx, dWeight };
}
