// Elementwise and small reduction kernels of a Llama/Qwen block: SwiGLU (separate and concatenated
// gate|up), residual add / scale / bias-add, row gather and copy, and a deterministic
// sum-of-squares (gradient norm). Float64 CPU references (`...Ref`) live at the bottom.
//
// Layout: activations are [tokens, features] row-major. Kernels use vec4 loads whenever the
// element count (or row length) is a multiple of 4: llvmpipe turns every per-lane load into a
// scalar gather, so 4 elements per load is ~4× fewer load instructions; real GPUs like it too.
// Also holds the small helpers the other row-wise families (norm, rope, embedding) share.

import { cdiv, GpuError, Uniforms, type DType, type Gpu, type Program, type Tensor } from '../gpu/runtime.ts';

// ------------------------------------------------------------------------------------------------
// shared helpers
// ------------------------------------------------------------------------------------------------

const MAX_WG_PER_DIM = 65535;

/** Workgroups for a 1-D grid of `count` groups, spread over y when x would exceed the limit. */
export function spreadGrid(count: number): { workgroups: [number, number]; nx: number } {
  if (count <= MAX_WG_PER_DIM) return { workgroups: [Math.max(count, 0), 1], nx: Math.max(count, 1) };
  const ny = cdiv(count, MAX_WG_PER_DIM);
  const nx = cdiv(count, ny);
  return { workgroups: [nx, ny], nx };
}

/**
 * Grid for row-structured kernels: x spans a row's column vectors (`colGroups` workgroups), y and z
 * the rows (z only beyond 65535 rows). Avoids a per-lane integer division (scalar on CPUs).
 * Kernels compute row = wid.z · ny + wid.y.
 */
export function rowsGrid(rows: number, colGroups: number): { workgroups: [number, number, number]; ny: number } {
  if (rows === 0 || colGroups === 0) return { workgroups: [0, 1, 1], ny: 1 };
  const ny = Math.min(rows, MAX_WG_PER_DIM);
  return { workgroups: [colGroups, ny, cdiv(rows, ny)], ny };
}

export function shapeStr(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** Throws GpuError naming the kernel unless `t` has the dtype and (when given) the shape. */
export function expectTensor(kernel: string, what: string, t: Tensor, dtype: DType, shape?: readonly number[]): void {
  if (t.isDisposed) throw new GpuError(`${kernel}: ${what} is disposed`);
  if (t.dtype !== dtype) throw new GpuError(`${kernel}: ${what} must be ${dtype}, got ${t.dtype} ${shapeStr(t)}`);
  if (shape && (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i]))) {
    throw new GpuError(`${kernel}: ${what} must have shape [${shape.join(', ')}], got ${shapeStr(t)}`);
  }
}

/** [rows, cols] of a 2-D tensor (1-D tensors count as one row), or a GpuError naming the kernel. */
export function rowsCols(kernel: string, what: string, t: Tensor): [number, number] {
  if (t.shape.length === 2) return [t.shape[0], t.shape[1]];
  if (t.shape.length === 1) return [1, t.shape[0]];
  throw new GpuError(`${kernel}: ${what} must be 2-D [rows, cols], got ${shapeStr(t)}`);
}

/** Whether two tensors share bytes of one buffer (WebGPU rejects a writable binding that aliases another). */
export function overlaps(a: Tensor, b: Tensor): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.offset < b.offset + b.byteLength && b.offset < a.offset + a.byteLength;
}

export function sameStorage(a: Tensor, b: Tensor): boolean {
  return a.buffer === b.buffer && a.offset === b.offset && a.byteLength === b.byteLength;
}

/** An output tensor: the caller's (checked) or a new one. */
export function outputTensor(gpu: Gpu, kernel: string, out: Tensor | undefined, shape: readonly number[]): Tensor {
  if (!out) return gpu.empty(shape, 'f32', kernel);
  if (out.size !== shape.reduce((a, b) => a * b, 1) || out.dtype !== 'f32') {
    throw new GpuError(`${kernel}: out must be f32 with ${shape.join('×')} elements, got ${out.dtype} ${shapeStr(out)}`);
  }
  return out;
}

const ELEM_WG = 64;
/** Elements per lane (in units of the vector width) for streaming kernels: amortises per-lane setup. */
const ELEM_VECS_PER_LANE = 4;

/** Vector width usable for `n` contiguous floats. */
function vecWidth(n: number): 1 | 4 {
  return n % 4 === 0 ? 4 : 1;
}

function vtype(v: 1 | 4): string {
  return v === 4 ? 'vec4<f32>' : 'f32';
}

/** Grid for a streaming kernel over `nv` vectors, each lane doing ELEM_VECS_PER_LANE of them (strided by the grid). */
function streamGrid(nv: number): { workgroups: [number, number]; nx: number; lanes: number } {
  const lanesWanted = cdiv(nv, ELEM_VECS_PER_LANE);
  const g = spreadGrid(cdiv(lanesWanted, ELEM_WG));
  const lanes = g.workgroups[0] * g.workgroups[1] * ELEM_WG;
  return { ...g, lanes };
}

// Lane i handles vectors i, i + lanes, i + 2·lanes… (coalesced on GPUs, contiguous per SIMD row on llvmpipe).
const STREAM_HEADER = (wg: number) => /* wgsl */ `
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let lane = (wid.y * u.nx + wid.x) * ${wg}u + lid.x;
  for (var i = lane; i < u.n; i += u.lanes) {`;

// ------------------------------------------------------------------------------------------------
// SwiGLU
// ------------------------------------------------------------------------------------------------

const SILU_FN = /* wgsl */ `
fn sigmoid4(g: vec4<f32>) -> vec4<f32> { return 1.0 / (1.0 + exp(-g)); }
fn sigmoid1(g: f32) -> f32 { return 1.0 / (1.0 + exp(-g)); }`;

// Row-grid kernel header: lane (row r, column vector c) of a [rows, colsv] output.
const ROW_HEADER = (wg: number) => /* wgsl */ `
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = wid.z * u.ny + wid.y;
  let c = wid.x * ${wg}u + lid.x;
  if (r >= u.rows || c >= u.colsv) { return; }`;

function swigluProgram(v: 1 | 4, fused: boolean): Program {
  const T = vtype(v);
  const sig = v === 4 ? 'sigmoid4' : 'sigmoid1';
  if (fused) {
    // gu is [rows, 2·I] (gate | up), y [rows, I]; colsv = I / v.
    return {
      name: `swiglu_fused_v${v}`,
      code: `@group(0) @binding(0) var<storage, read> gu: array<${T}>;
@group(0) @binding(1) var<storage, read_write> y: array<${T}>;
struct U { rows: u32, colsv: u32, ny: u32 }
@group(0) @binding(2) var<uniform> u: U;${SILU_FN}${ROW_HEADER(ELEM_WG)}
  let gi = r * 2u * u.colsv + c;
  let g = gu[gi];
  y[r * u.colsv + c] = g * ${sig}(g) * gu[gi + u.colsv];
}`,
    };
  }
  return {
    name: `swiglu_v${v}`,
    code: `@group(0) @binding(0) var<storage, read> gate: array<${T}>;
@group(0) @binding(1) var<storage, read> upv: array<${T}>;
@group(0) @binding(2) var<storage, read_write> y: array<${T}>;
struct U { n: u32, lanes: u32, nx: u32 }
@group(0) @binding(3) var<uniform> u: U;${SILU_FN}${STREAM_HEADER(ELEM_WG)}
    let g = gate[i];
    y[i] = g * ${sig}(g) * upv[i];
  }
}`,
  };
}

function swigluBackwardProgram(v: 1 | 4, fused: boolean): Program {
  const T = vtype(v);
  const sig = v === 4 ? 'sigmoid4' : 'sigmoid1';
  // d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g)))
  const body = `let s = ${sig}(g);
    let dyv = dy[i];
    let dg = dyv * up * s * (1.0 + g * (1.0 - s));
    let du = dyv * g * s;`;
  if (fused) {
    return {
      name: `swiglu_fused_backward_v${v}`,
      code: `@group(0) @binding(0) var<storage, read> gu: array<${T}>;
@group(0) @binding(1) var<storage, read> dy: array<${T}>;
@group(0) @binding(2) var<storage, read_write> dgu: array<${T}>;
struct U { rows: u32, colsv: u32, ny: u32 }
@group(0) @binding(3) var<uniform> u: U;${SILU_FN}${ROW_HEADER(ELEM_WG)}
  let gi = r * 2u * u.colsv + c;
  let g = gu[gi]; let up = gu[gi + u.colsv];
  let i = r * u.colsv + c;
  ${body}
  dgu[gi] = dg; dgu[gi + u.colsv] = du;
}`,
    };
  }
  return {
    name: `swiglu_backward_v${v}`,
    code: `@group(0) @binding(0) var<storage, read> gate: array<${T}>;
@group(0) @binding(1) var<storage, read> upv: array<${T}>;
@group(0) @binding(2) var<storage, read> dy: array<${T}>;
@group(0) @binding(3) var<storage, read_write> dgate: array<${T}>;
@group(0) @binding(4) var<storage, read_write> dup: array<${T}>;
struct U { n: u32, lanes: u32, nx: u32 }
@group(0) @binding(5) var<uniform> u: U;${SILU_FN}${STREAM_HEADER(ELEM_WG)}
    let g = gate[i]; let up = upv[i];
    ${body}
    dgate[i] = dg; dup[i] = du;
  }
}`,
  };
}

/** silu(gate) · up, elementwise; gate and up are [tokens, I]. */
export function swiglu(gpu: Gpu, gate: Tensor, up: Tensor, opts: { out?: Tensor } = {}): Tensor {
  const K = 'swiglu';
  expectTensor(K, 'gate', gate, 'f32');
  expectTensor(K, 'up', up, 'f32', gate.shape);
  const y = outputTensor(gpu, K, opts.out, gate.shape);
  if (overlaps(y, gate) || overlaps(y, up)) throw new GpuError(`${K}: out must not alias gate or up`);
  const v = vecWidth(gate.size);
  const nv = gate.size / v;
  const g = streamGrid(nv);
  gpu.run(swigluProgram(v, false), [gate, up, y], g.workgroups, new Uniforms().u32(nv, g.lanes, g.nx));
  return y;
}

/** silu(gate) · up reading one concatenated [tokens, 2·I] tensor (gate columns first, as a fused gate_up projection writes it). */
export function swigluFused(gpu: Gpu, gateUp: Tensor, opts: { out?: Tensor } = {}): Tensor {
  const K = 'swigluFused';
  expectTensor(K, 'gateUp', gateUp, 'f32');
  const [rows, cols2] = rowsCols(K, 'gateUp', gateUp);
  if (cols2 % 2 !== 0) throw new GpuError(`${K}: gateUp ${shapeStr(gateUp)} needs an even number of columns (gate | up)`);
  const I = cols2 / 2;
  const y = outputTensor(gpu, K, opts.out, [rows, I]);
  if (overlaps(y, gateUp)) throw new GpuError(`${K}: out must not alias gateUp`);
  const v = vecWidth(I);
  const g = rowsGrid(rows, cdiv(I / v, ELEM_WG));
  gpu.run(swigluProgram(v, true), [gateUp, y], g.workgroups, new Uniforms().u32(rows, I / v, g.ny));
  return y;
}

/** Gradients of y = silu(gate)·up: dGate = dy·up·silu'(gate), dUp = dy·silu(gate). */
export function swigluBackward(gpu: Gpu, gate: Tensor, up: Tensor, dy: Tensor): { dGate: Tensor; dUp: Tensor } {
  const K = 'swigluBackward';
  expectTensor(K, 'gate', gate, 'f32');
  expectTensor(K, 'up', up, 'f32', gate.shape);
  expectTensor(K, 'dy', dy, 'f32', gate.shape);
  const dGate = gpu.empty(gate.shape, 'f32', 'swiglu.dGate');
  const dUp = gpu.empty(gate.shape, 'f32', 'swiglu.dUp');
  const v = vecWidth(gate.size);
  const nv = gate.size / v;
  const g = streamGrid(nv);
  gpu.run(swigluBackwardProgram(v, false), [gate, up, dy, dGate, dUp], g.workgroups, new Uniforms().u32(nv, g.lanes, g.nx));
  return { dGate, dUp };
}

/** Backward of swigluFused: d(gate|up) as one [tokens, 2·I] tensor. */
export function swigluFusedBackward(gpu: Gpu, gateUp: Tensor, dy: Tensor, opts: { out?: Tensor } = {}): Tensor {
  const K = 'swigluFusedBackward';
  expectTensor(K, 'gateUp', gateUp, 'f32');
  const [rows, cols2] = rowsCols(K, 'gateUp', gateUp);
  if (cols2 % 2 !== 0) throw new GpuError(`${K}: gateUp ${shapeStr(gateUp)} needs an even number of columns (gate | up)`);
  const I = cols2 / 2;
  expectTensor(K, 'dy', dy, 'f32');
  if (dy.size !== rows * I) throw new GpuError(`${K}: dy ${shapeStr(dy)} must be [${rows}, ${I}] for gateUp ${shapeStr(gateUp)}`);
  const dgu = outputTensor(gpu, K, opts.out, gateUp.shape);
  if (overlaps(dgu, gateUp) || overlaps(dgu, dy)) throw new GpuError(`${K}: out must not alias gateUp or dy`);
  const v = vecWidth(I);
  const g = rowsGrid(rows, cdiv(I / v, ELEM_WG));
  gpu.run(swigluBackwardProgram(v, true), [gateUp, dy, dgu], g.workgroups, new Uniforms().u32(rows, I / v, g.ny));
  return dgu;
}

// ------------------------------------------------------------------------------------------------
// add / scale / bias
// ------------------------------------------------------------------------------------------------

function axpbyProgram(v: 1 | 4, inPlace: boolean, hasB: boolean): Program {
  const T = vtype(v);
  // out = a + alpha·b (hasB) or out = alpha·a; in place: a is read_write and is the output.
  const bindings: string[] = [];
  bindings.push(`var<storage, ${inPlace ? 'read_write' : 'read'}> a: array<${T}>;`);
  if (hasB) bindings.push(`var<storage, read> b: array<${T}>;`);
  if (!inPlace) bindings.push(`var<storage, read_write> y: array<${T}>;`);
  const decl = bindings.map((b, i) => `@group(0) @binding(${i}) ${b}`).join('\n');
  const expr = hasB ? 'a[i] + u.alpha * b[i]' : 'u.alpha * a[i]';
  return {
    name: `${hasB ? 'add' : 'scale'}${inPlace ? '_inplace' : ''}_v${v}`,
    code: `${decl}
struct U { n: u32, lanes: u32, nx: u32, alpha: f32 }
@group(0) @binding(${bindings.length}) var<uniform> u: U;${STREAM_HEADER(ELEM_WG)}
    ${inPlace ? 'a' : 'y'}[i] = ${expr};
  }
}`,
  };
}

/** a + alpha·b (alpha defaults to 1). `out` may be `a` itself (in place); it must not alias b. */
export function add(gpu: Gpu, a: Tensor, b: Tensor, opts: { out?: Tensor; alpha?: number } = {}): Tensor {
  const K = 'add';
  expectTensor(K, 'a', a, 'f32');
  expectTensor(K, 'b', b, 'f32');
  if (a.size !== b.size) throw new GpuError(`${K}: a ${shapeStr(a)} and b ${shapeStr(b)} differ in size`);
  const inPlace = opts.out !== undefined && sameStorage(opts.out, a);
  const y = inPlace ? a : outputTensor(gpu, K, opts.out, a.shape);
  if (overlaps(y, b) || (!inPlace && overlaps(y, a))) throw new GpuError(`${K}: out must be a itself or not overlap a and b`);
  const v = vecWidth(a.size);
  const nv = a.size / v;
  const g = streamGrid(nv);
  const u = new Uniforms().u32(nv, g.lanes, g.nx).f32(opts.alpha ?? 1);
  gpu.run(axpbyProgram(v, inPlace, true), inPlace ? [a, b] : [a, b, y], g.workgroups, u);
  return y;
}

/** dst += alpha·src (in place). Returns dst. */
export function addInPlace(gpu: Gpu, dst: Tensor, src: Tensor, alpha = 1): Tensor {
  return add(gpu, dst, src, { out: dst, alpha });
}

/** s·x. `out` may be x itself. */
export function scale(gpu: Gpu, x: Tensor, s: number, opts: { out?: Tensor } = {}): Tensor {
  const K = 'scale';
  expectTensor(K, 'x', x, 'f32');
  const inPlace = opts.out !== undefined && sameStorage(opts.out, x);
  const y = inPlace ? x : outputTensor(gpu, K, opts.out, x.shape);
  if (!inPlace && overlaps(y, x)) throw new GpuError(`${K}: out must be x itself or not overlap it`);
  const v = vecWidth(x.size);
  const nv = x.size / v;
  const g = streamGrid(nv);
  const u = new Uniforms().u32(nv, g.lanes, g.nx).f32(s);
  gpu.run(axpbyProgram(v, inPlace, false), inPlace ? [x] : [x, y], g.workgroups, u);
  return y;
}

function biasAddProgram(v: 1 | 4, inPlace: boolean): Program {
  const T = vtype(v);
  const decl = inPlace
    ? `@group(0) @binding(0) var<storage, read_write> x: array<${T}>;
@group(0) @binding(1) var<storage, read> bias: array<${T}>;`
    : `@group(0) @binding(0) var<storage, read> x: array<${T}>;
@group(0) @binding(1) var<storage, read> bias: array<${T}>;
@group(0) @binding(2) var<storage, read_write> y: array<${T}>;`;
  return {
    name: `bias_add${inPlace ? '_inplace' : ''}_v${v}`,
    code: `${decl}
struct U { rows: u32, colsv: u32, ny: u32 }
@group(0) @binding(${inPlace ? 2 : 3}) var<uniform> u: U;${ROW_HEADER(ELEM_WG)}
  let i = r * u.colsv + c;
  ${inPlace ? 'x' : 'y'}[i] = x[i] + bias[c];
}`,
  };
}

/** x[r, :] + bias for every row r; x is [rows, N], bias [N]. `out` may be x itself. */
export function biasAdd(gpu: Gpu, x: Tensor, bias: Tensor, opts: { out?: Tensor } = {}): Tensor {
  const K = 'biasAdd';
  expectTensor(K, 'x', x, 'f32');
  const [rows, cols] = rowsCols(K, 'x', x);
  expectTensor(K, 'bias', bias, 'f32');
  if (bias.size !== cols) throw new GpuError(`${K}: bias ${shapeStr(bias)} must have ${cols} elements for x ${shapeStr(x)}`);
  const inPlace = opts.out !== undefined && sameStorage(opts.out, x);
  const y = inPlace ? x : outputTensor(gpu, K, opts.out, x.shape);
  if (overlaps(y, bias) || (!inPlace && overlaps(y, x))) throw new GpuError(`${K}: out must be x itself or not overlap x and bias`);
  const v = vecWidth(cols);
  const g = rowsGrid(rows, cdiv(cols / v, ELEM_WG));
  gpu.run(biasAddProgram(v, inPlace), inPlace ? [x, bias] : [x, bias, y], g.workgroups, new Uniforms().u32(rows, cols / v, g.ny));
  return y;
}

// ------------------------------------------------------------------------------------------------
// row gather / copy
// ------------------------------------------------------------------------------------------------

function gatherRowsProgram(v: 1 | 4): Program {
  const T = vtype(v);
  return {
    name: `gather_rows_v${v}`,
    // One lane per output vector; rows whose index is out of range are written as zeros.
    code: `@group(0) @binding(0) var<storage, read> x: array<${T}>;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<${T}>;
struct U { rows: u32, colsv: u32, ny: u32, srcRows: u32 }
@group(0) @binding(3) var<uniform> u: U;${ROW_HEADER(ELEM_WG)}
  let src = idx[r];
  let i = r * u.colsv + c;
  if (src < u.srcRows) { y[i] = x[src * u.colsv + c]; } else { y[i] = ${T}(0.0); }
}`,
  };
}

/**
 * out[i, :] = x[idx[i], :] for x [rows, D] and idx u32 [n] (e.g. the last token of each sequence
 * for decode logits). Indices ≥ rows produce zero rows (no error can be raised from the GPU).
 */
export function gatherRows(gpu: Gpu, x: Tensor, idx: Tensor, opts: { out?: Tensor } = {}): Tensor {
  const K = 'gatherRows';
  expectTensor(K, 'x', x, 'f32');
  const [rows, cols] = rowsCols(K, 'x', x);
  expectTensor(K, 'idx', idx, 'u32');
  if (idx.shape.length !== 1) throw new GpuError(`${K}: idx must be 1-D, got ${shapeStr(idx)}`);
  const n = idx.shape[0];
  const y = outputTensor(gpu, K, opts.out, [n, cols]);
  if (overlaps(y, x)) throw new GpuError(`${K}: out must not alias x`);
  const v = vecWidth(cols);
  const g = rowsGrid(n, cdiv(cols / v, ELEM_WG));
  gpu.run(gatherRowsProgram(v), [x, idx, y], g.workgroups, new Uniforms().u32(n, cols / v, g.ny, rows));
  return y;
}

/** Copies `count` contiguous rows src[srcRow…] → dst[dstRow…] (a recorded buffer copy). */
export function copyRows(gpu: Gpu, src: Tensor, dst: Tensor, srcRow: number, dstRow: number, count: number): void {
  const K = 'copyRows';
  expectTensor(K, 'src', src, src.dtype);
  const [srows, cols] = rowsCols(K, 'src', src);
  const [drows, dcols] = rowsCols(K, 'dst', dst);
  if (dst.dtype !== src.dtype) throw new GpuError(`${K}: dtype mismatch ${src.dtype} → ${dst.dtype}`);
  if (dcols !== cols) throw new GpuError(`${K}: src ${shapeStr(src)} and dst ${shapeStr(dst)} differ in columns`);
  if (srcRow < 0 || dstRow < 0 || srcRow + count > srows || dstRow + count > drows) {
    throw new GpuError(`${K}: rows ${srcRow}+${count} of ${shapeStr(src)} → ${dstRow}+${count} of ${shapeStr(dst)} out of range`);
  }
  if (count > 0) gpu.copy(src, dst, count * cols, srcRow * cols, dstRow * cols);
}

// ------------------------------------------------------------------------------------------------
// sum of squares (gradient norm), two passes, no float atomics
// ------------------------------------------------------------------------------------------------

const SS_WG = 64;
/** Vectors each lane of pass 1 sums: few partials, still enough lanes to fill a GPU. */
const SS_VECS_PER_LANE = 64;
const SS_FINAL_WG = 256;

function sumSquaresPartialProgram(v: 1 | 4): Program {
  const T = vtype(v);
  const sq = v === 4 ? 'dot(e, e)' : 'e * e';
  // Each lane writes its own partial: no workgroup barrier (slow on llvmpipe), fixed order.
  return {
    name: `sum_squares_partial_v${v}`,
    code: `@group(0) @binding(0) var<storage, read> x: array<${T}>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
struct U { n: u32, lanes: u32, nx: u32, base: u32 }
@group(0) @binding(2) var<uniform> u: U;
@compute @workgroup_size(${SS_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let lane = (wid.y * u.nx + wid.x) * ${SS_WG}u + lid.x;
  var s = 0.0;
  for (var i = lane; i < u.n; i += u.lanes) { let e = x[i]; s += ${sq}; }
  partial[u.base + lane] = s;
}`,
  };
}

const sumSquaresFinalProgram: Program = {
  name: 'sum_squares_final',
  code: `@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct U { n: u32 }
@group(0) @binding(2) var<uniform> u: U;
var<workgroup> red: array<f32, ${SS_FINAL_WG}>;
@compute @workgroup_size(${SS_FINAL_WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
  var s = 0.0;
  for (var i = lid.x; i < u.n; i += ${SS_FINAL_WG}u) { s += partial[i]; }
  red[lid.x] = s;
  workgroupBarrier();
  for (var k = ${SS_FINAL_WG / 2}u; k > 0u; k = k >> 1u) {
    if (lid.x < k) { red[lid.x] += red[lid.x + k]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { out[0] = red[0]; }
}`,
};

/**
 * Σ over all elements of all tensors of x², as a [1] tensor on the GPU (global gradient norm²).
 * Pass 1 writes one float32 partial per lane (one dispatch per tensor), pass 2 reduces them in one
 * workgroup in a fixed order: deterministic, no atomics.
 */
export function sumSquares(gpu: Gpu, tensors: readonly Tensor[], opts: { out?: Tensor } = {}): Tensor {
  const K = 'sumSquares';
  const plans = tensors.map((t, i) => {
    expectTensor(K, `tensors[${i}]`, t, 'f32');
    const v = vecWidth(t.size);
    const nv = t.size / v;
    const g = spreadGrid(Math.max(1, cdiv(nv, SS_VECS_PER_LANE * SS_WG)));
    return { t, v, nv, g, lanes: g.workgroups[0] * g.workgroups[1] * SS_WG };
  });
  const total = plans.reduce((s, p) => s + p.lanes, 0);
  const out = outputTensor(gpu, K, opts.out, [1]);
  const partial = gpu.empty([Math.max(1, total)], 'f32', 'sumSquares.partial');
  if (total === 0) gpu.fill(partial, 0);
  let base = 0;
  for (const p of plans) {
    gpu.run(sumSquaresPartialProgram(p.v), [p.t, partial], p.g.workgroups, new Uniforms().u32(p.nv, p.lanes, p.g.nx, base));
    base += p.lanes;
  }
  gpu.run(sumSquaresFinalProgram, [partial, out], 1, new Uniforms().u32(Math.max(1, total)));
  partial.dispose();
  return out;
}

// ------------------------------------------------------------------------------------------------
// float64 references
// ------------------------------------------------------------------------------------------------

type Vec = ArrayLike<number>;

function sigmoidRef(g: number): number {
  return 1 / (1 + Math.exp(-g));
}

export function swigluRef(gate: Vec, up: Vec): Float64Array {
  const y = new Float64Array(gate.length);
  for (let i = 0; i < y.length; i++) y[i] = gate[i] * sigmoidRef(gate[i]) * up[i];
  return y;
}

export function swigluBackwardRef(gate: Vec, up: Vec, dy: Vec): { dGate: Float64Array; dUp: Float64Array } {
  const dGate = new Float64Array(gate.length);
  const dUp = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const s = sigmoidRef(gate[i]);
    dGate[i] = dy[i] * up[i] * s * (1 + gate[i] * (1 - s));
    dUp[i] = dy[i] * gate[i] * s;
  }
  return { dGate, dUp };
}

/** Splits a [rows, 2·I] gate|up matrix into its halves. */
export function splitGateUpRef(gateUp: Vec, rows: number, I: number): { gate: Float64Array; up: Float64Array } {
  const gate = new Float64Array(rows * I);
  const up = new Float64Array(rows * I);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < I; c++) {
      gate[r * I + c] = gateUp[r * 2 * I + c];
      up[r * I + c] = gateUp[r * 2 * I + I + c];
    }
  }
  return { gate, up };
}

export function addRef(a: Vec, b: Vec, alpha = 1): Float64Array {
  const y = new Float64Array(a.length);
  for (let i = 0; i < y.length; i++) y[i] = a[i] + alpha * b[i];
  return y;
}

export function biasAddRef(x: Vec, rows: number, cols: number, bias: Vec): Float64Array {
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[r * cols + c] = x[r * cols + c] + bias[c];
  return y;
}

export function gatherRowsRef(x: Vec, rows: number, cols: number, idx: ArrayLike<number>): Float64Array {
  const y = new Float64Array(idx.length * cols);
  for (let i = 0; i < idx.length; i++) {
    if (idx[i] >= rows) continue;
    for (let c = 0; c < cols; c++) y[i * cols + c] = x[idx[i] * cols + c];
  }
  return y;
}

export function sumSquaresRef(arrays: readonly Vec[]): number {
  let s = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return s;
}

// ---------------------------------------------------------------------------------------------
// Dropout with a counter-based mask (LoRA dropout). The mask of element i is a pure function of
// (key0, key1, i), so the backward pass regenerates it instead of storing it.
// ---------------------------------------------------------------------------------------------

const DROPOUT_WG = 64;

const dropoutProgram: Program = {
  name: 'dropout',
  code: /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
struct U { n: u32, nx: u32, key0: u32, key1: u32, threshold: u32, scale: f32 }
@group(0) @binding(2) var<uniform> u: U;
// PCG-style 32-bit hash (one round of pcg_hash over a mixed key).
fn hash(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
@compute @workgroup_size(${DROPOUT_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * u.nx * ${DROPOUT_WG}u;
  if (i >= u.n) { return; }
  let r = hash(hash(i ^ u.key0) + u.key1);
  y[i] = select(0.0, x[i] * u.scale, r >= u.threshold);
}`,
};

/** Keep probability threshold as a u32: an element is dropped when hash < p·2^32. */
function dropoutThreshold(p: number): number {
  return Math.min(0xffffffff, Math.floor(p * 2 ** 32));
}

/** y = x ⊙ mask / (1 − p), mask_i = [hash(key, i) ≥ p·2^32]. Same key → same mask. */
export function dropout(gpu: Gpu, x: Tensor, p: number, key: readonly [number, number], opts: { out?: Tensor } = {}): Tensor {
  const K = 'dropout';
  expectTensor(K, 'x', x, 'f32');
  if (!(p >= 0 && p < 1)) throw new GpuError(`${K}: p must be in [0, 1), got ${p}`);
  const y = outputTensor(gpu, K, opts.out, x.shape);
  if (overlaps(y, x)) throw new GpuError(`${K}: out must not overlap x`);
  const g = spreadGrid(Math.ceil(x.size / DROPOUT_WG));
  const u = new Uniforms().u32(x.size, g.nx, key[0] >>> 0, key[1] >>> 0, dropoutThreshold(p)).f32(1 / (1 - p));
  gpu.run(dropoutProgram, [x, y], g.workgroups, u);
  return y;
}

function hashRef(v: number): number {
  const s = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
}

/** Reference dropout with the same mask as the kernel. */
export function dropoutRef(x: Vec, p: number, key: readonly [number, number]): Float64Array {
  const t = dropoutThreshold(p);
  return Float64Array.from(x, (v, i) => (hashRef((hashRef((i ^ key[0]) >>> 0) + key[1]) >>> 0) >= t ? v / (1 - p) : 0));
}

// ---------------------------------------------------------------------------------------------
// 2-D transpose (weight copies in [in, out] layout for the faster A·B matmul form on lavapipe)
// ---------------------------------------------------------------------------------------------

const transposeProgram: Program = {
  name: 'transpose2d',
  code: /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
struct U { R: u32, C: u32 }
@group(0) @binding(2) var<uniform> u: U;
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let c = g.x; let r = g.y;
  if (r >= u.R || c >= u.C) { return; }
  y[c * u.R + r] = x[r * u.C + c];
}`,
};

/** y [C, R] = xᵀ for x [R, C]. */
export function transpose2d(gpu: Gpu, x: Tensor, opts: { out?: Tensor } = {}): Tensor {
  const K = 'transpose2d';
  const [R, C] = rowsCols(K, 'x', x);
  const y = outputTensor(gpu, K, opts.out, [C, R]);
  if (overlaps(y, x)) throw new GpuError(`${K}: out must not overlap x`);
  if (Math.ceil(R / 8) > 65535 || Math.ceil(C / 8) > 65535) throw new GpuError(`${K}: x ${shapeStr(x)} is too large for one dispatch`);
  gpu.run(transposeProgram, [x, y], [cdiv(C, 8), cdiv(R, 8)], new Uniforms().u32(R, C));
  return y;
}
