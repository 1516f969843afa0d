// Elementwise and small reduction kernels of a Llama/Qwen block: SwiGLU (separate and concatenated
// gate|up), residual add / scale / bias-add, row gather and copy, and a deterministic
// sum-of-squares (gradient norm). Float64 CPU references (`...Ref`) live at the bottom.
//
// Layout: activations are [tokens, features] row-major. Kernels use vec4 loads whenever the
// element count (or row length) is a multiple of 4: llvmpipe turns every per-lane load into a
// scalar gather, so 4 elements per load is ~4× fewer load instructions; real GPUs like it too.

import { defineKernel, product } from '../gpu/kernel.ts';
import { cdiv, GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { expectTensor, outputTensor, overlaps, PCG_WGSL, rowGridMain, rowsCols, rowsGrid, sameStorage, shapeStr, spreadGrid, vecType, vecWidth } from './common.ts';
import { pcgHash } from '../util/rng.ts';

const ELEM_WG = 64;
/** Elements per lane (in units of the vector width) for streaming kernels: amortises per-lane setup. */
const ELEM_VECS_PER_LANE = 4;

type Vw = 1 | 4;
const VW: readonly Vw[] = [1, 4];

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

/** Uniforms of the streaming kernels (STREAM_HEADER). */
const STREAM_U = { n: 'u32', lanes: 'u32', nx: 'u32' } as const;
/** Uniforms of the row-grid kernels (ROW_HEADER). */
const ROW_U = { rows: 'u32', colsv: 'u32', ny: 'u32' } as const;

// ------------------------------------------------------------------------------------------------
// SwiGLU
// ------------------------------------------------------------------------------------------------

const SILU_FN = /* wgsl */ `
fn sigmoid4(g: vec4<f32>) -> vec4<f32> { return 1.0 / (1.0 + exp(-g)); }
fn sigmoid1(g: f32) -> f32 { return 1.0 / (1.0 + exp(-g)); }`;

// Row-grid kernel header: lane (row r, column vector c) of a [rows, colsv] output.
const ROW_HEADER = (wg: number) => rowGridMain(wg, 'r', 'c', 'rows', 'colsv');

const sig = (v: Vw) => (v === 4 ? 'sigmoid4' : 'sigmoid1');

const swigluKernel = defineKernel({
  name: 'swiglu',
  bindings: ({ v }: { v: Vw }) => [['gate', vecType(v), 'read'], ['upv', vecType(v), 'read'], ['y', vecType(v), 'read_write']],
  uniforms: STREAM_U,
  key: ({ v }) => `v${v}`,
  space: () => product({ v: VW }),
  body: ({ v }) => `${SILU_FN}${STREAM_HEADER(ELEM_WG)}
    let g = gate[i];
    y[i] = g * ${sig(v)}(g) * upv[i];
  }
}`,
});

// gu is [rows, 2·I] (gate | up), y [rows, I]; colsv = I / v.
const swigluFusedKernel = defineKernel({
  name: 'swiglu_fused',
  bindings: ({ v }: { v: Vw }) => [['gu', vecType(v), 'read'], ['y', vecType(v), 'read_write']],
  uniforms: ROW_U,
  key: ({ v }) => `v${v}`,
  space: () => product({ v: VW }),
  body: ({ v }) => `${SILU_FN}${ROW_HEADER(ELEM_WG)}
  let gi = r * 2u * u.colsv + c;
  let g = gu[gi];
  y[r * u.colsv + c] = g * ${sig(v)}(g) * gu[gi + u.colsv];
}`,
});

// d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g)))
const swigluGrad = (v: Vw) => `let s = ${sig(v)}(g);
    let dyv = dy[i];
    let dg = dyv * up * s * (1.0 + g * (1.0 - s));
    let du = dyv * g * s;`;

const swigluBackwardKernel = defineKernel({
  name: 'swiglu_backward',
  bindings: ({ v }: { v: Vw }) => [
    ['gate', vecType(v), 'read'],
    ['upv', vecType(v), 'read'],
    ['dy', vecType(v), 'read'],
    ['dgate', vecType(v), 'read_write'],
    ['dup', vecType(v), 'read_write'],
  ],
  uniforms: STREAM_U,
  key: ({ v }) => `v${v}`,
  space: () => product({ v: VW }),
  body: ({ v }) => `${SILU_FN}${STREAM_HEADER(ELEM_WG)}
    let g = gate[i]; let up = upv[i];
    ${swigluGrad(v)}
    dgate[i] = dg; dup[i] = du;
  }
}`,
});

const swigluFusedBackwardKernel = defineKernel({
  name: 'swiglu_fused_backward',
  bindings: ({ v }: { v: Vw }) => [['gu', vecType(v), 'read'], ['dy', vecType(v), 'read'], ['dgu', vecType(v), 'read_write']],
  uniforms: ROW_U,
  key: ({ v }) => `v${v}`,
  space: () => product({ v: VW }),
  body: ({ v }) => `${SILU_FN}${ROW_HEADER(ELEM_WG)}
  let gi = r * 2u * u.colsv + c;
  let g = gu[gi]; let up = gu[gi + u.colsv];
  let i = r * u.colsv + c;
  ${swigluGrad(v)}
  dgu[gi] = dg; dgu[gi + u.colsv] = du;
}`,
});

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
  swigluKernel.run(gpu, { v }, { gate, upv: up, y }, g.workgroups, { n: nv, lanes: g.lanes, nx: g.nx });
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
  swigluFusedKernel.run(gpu, { v }, { gu: gateUp, y }, g.workgroups, { rows, colsv: I / v, ny: g.ny });
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
  swigluBackwardKernel.run(gpu, { v }, { gate, upv: up, dy, dgate: dGate, dup: dUp }, g.workgroups, { n: nv, lanes: g.lanes, nx: g.nx });
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
  swigluFusedBackwardKernel.run(gpu, { v }, { gu: gateUp, dy, dgu }, g.workgroups, { rows, colsv: I / v, ny: g.ny });
  return dgu;
}

// ------------------------------------------------------------------------------------------------
// add / scale / bias
// ------------------------------------------------------------------------------------------------

// out = a + alpha·b (hasB) or out = alpha·a; in place: a is read_write and is the output.
const axpbyKernel = defineKernel({
  name: 'axpby',
  bindings: ({ v, inPlace, hasB }: { v: Vw; inPlace: boolean; hasB: boolean }) => [
    ['a', vecType(v), inPlace ? 'read_write' : 'read'],
    ...(hasB ? [['b', vecType(v), 'read'] as const] : []),
    ...(inPlace ? [] : [['y', vecType(v), 'read_write'] as const]),
  ],
  uniforms: { ...STREAM_U, alpha: 'f32' },
  key: ({ v, inPlace, hasB }) => `${hasB ? 'add' : 'scale'}${inPlace ? '_inplace' : ''}_v${v}`,
  space: () => product({ v: VW, inPlace: [false, true], hasB: [false, true] }),
  body: ({ inPlace, hasB }) => `${STREAM_HEADER(ELEM_WG)}
    ${inPlace ? 'a' : 'y'}[i] = ${hasB ? 'a[i] + u.alpha * b[i]' : 'u.alpha * a[i]'};
  }
}`,
});

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
  const u = { n: nv, lanes: g.lanes, nx: g.nx, alpha: opts.alpha ?? 1 };
  axpbyKernel.run(gpu, { v, inPlace, hasB: true }, inPlace ? { a, b } : { a, b, y }, g.workgroups, u);
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
  const u = { n: nv, lanes: g.lanes, nx: g.nx, alpha: s };
  axpbyKernel.run(gpu, { v, inPlace, hasB: false }, inPlace ? { a: x } : { a: x, y }, g.workgroups, u);
  return y;
}

const biasAddKernel = defineKernel({
  name: 'bias_add',
  bindings: ({ v, inPlace }: { v: Vw; inPlace: boolean }) => [
    ['x', vecType(v), inPlace ? 'read_write' : 'read'],
    ['bias', vecType(v), 'read'],
    ...(inPlace ? [] : [['y', vecType(v), 'read_write'] as const]),
  ],
  uniforms: ROW_U,
  key: ({ v, inPlace }) => `${inPlace ? 'inplace_' : ''}v${v}`,
  space: () => product({ v: VW, inPlace: [false, true] }),
  body: ({ inPlace }) => `${ROW_HEADER(ELEM_WG)}
  let i = r * u.colsv + c;
  ${inPlace ? 'x' : 'y'}[i] = x[i] + bias[c];
}`,
});

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
  biasAddKernel.run(gpu, { v, inPlace }, inPlace ? { x, bias } : { x, bias, y }, g.workgroups, { rows, colsv: cols / v, ny: g.ny });
  return y;
}

// ------------------------------------------------------------------------------------------------
// row gather / copy
// ------------------------------------------------------------------------------------------------

// One lane per output vector; rows whose index is out of range are written as zeros.
const gatherRowsKernel = defineKernel({
  name: 'gather_rows',
  bindings: ({ v }: { v: Vw }) => [['x', vecType(v), 'read'], ['idx', 'u32', 'read'], ['y', vecType(v), 'read_write']],
  uniforms: { ...ROW_U, srcRows: 'u32' },
  key: ({ v }) => `v${v}`,
  space: () => product({ v: VW }),
  body: ({ v }) => `${ROW_HEADER(ELEM_WG)}
  let src = idx[r];
  let i = r * u.colsv + c;
  if (src < u.srcRows) { y[i] = x[src * u.colsv + c]; } else { y[i] = ${vecType(v)}(0.0); }
}`,
});

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
  gatherRowsKernel.run(gpu, { v }, { x, idx, y }, g.workgroups, { rows: n, colsv: cols / v, ny: g.ny, srcRows: rows });
  return y;
}

const scatterAddRowsKernel = defineKernel({
  name: 'scatter_add_rows',
  bindings: ({ v }: { v: Vw }) => [['x', vecType(v), 'read'], ['idx', 'u32', 'read'], ['y', vecType(v), 'read_write']],
  uniforms: { ...ROW_U, dstRows: 'u32', srcRow0: 'u32', alpha: 'f32' },
  key: ({ v }) => `v${v}`,
  space: () => product({ v: VW }),
  body: () => `${ROW_HEADER(ELEM_WG)}
  let dst = idx[r];
  if (dst < u.dstRows) { let i = dst * u.colsv + c; y[i] = y[i] + u.alpha * x[(u.srcRow0 + r) * u.colsv + c]; }
}`,
});

/**
 * y[idx[i], :] += alpha·x[srcRow0 + i, :] for i < idx.length (the transpose of gatherRows: e.g. the
 * gradient of a token subset's LM-head rows into the full gradient). Indices must be distinct (each
 * output row has one writer); indices ≥ y's rows are skipped.
 */
export function scatterAddRows(gpu: Gpu, x: Tensor, idx: Tensor, y: Tensor, opts: { srcRow0?: number; alpha?: number } = {}): Tensor {
  const K = 'scatterAddRows';
  expectTensor(K, 'x', x, 'f32');
  expectTensor(K, 'y', y, 'f32');
  expectTensor(K, 'idx', idx, 'u32');
  const [srows, cols] = rowsCols(K, 'x', x);
  const [drows, dcols] = rowsCols(K, 'y', y);
  if (dcols !== cols) throw new GpuError(`${K}: x ${shapeStr(x)} and y ${shapeStr(y)} differ in columns`);
  if (idx.shape.length !== 1) throw new GpuError(`${K}: idx must be 1-D, got ${shapeStr(idx)}`);
  const n = idx.shape[0];
  const srcRow0 = opts.srcRow0 ?? 0;
  if (srcRow0 < 0 || srcRow0 + n > srows) throw new GpuError(`${K}: rows ${srcRow0}+${n} of x ${shapeStr(x)} out of range`);
  if (sameStorage(x, y)) throw new GpuError(`${K}: y must not alias x`);
  const v = vecWidth(cols);
  const g = rowsGrid(n, cdiv(cols / v, ELEM_WG));
  scatterAddRowsKernel.run(gpu, { v }, { x, idx, y }, g.workgroups, { rows: n, colsv: cols / v, ny: g.ny, dstRows: drows, srcRow0, alpha: opts.alpha ?? 1 });
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

export function scatterAddRowsRef(x: Vec, cols: number, idx: ArrayLike<number>, y: Vec, dstRows: number, srcRow0 = 0, alpha = 1): Float64Array {
  const out = Float64Array.from(y);
  for (let i = 0; i < idx.length; i++) {
    if (idx[i] >= dstRows) continue;
    for (let c = 0; c < cols; c++) out[idx[i] * cols + c] += alpha * x[(srcRow0 + i) * cols + c];
  }
  return out;
}



// ---------------------------------------------------------------------------------------------
// Dropout with a counter-based mask (LoRA dropout). The mask of element i is a pure function of
// (key0, key1, i), so the backward pass regenerates it instead of storing it.
// ---------------------------------------------------------------------------------------------

const DROPOUT_WG = 64;

const dropoutKernel = defineKernel({
  name: 'dropout',
  bindings: [['x', 'f32', 'read'], ['y', 'f32', 'read_write']],
  uniforms: { n: 'u32', nx: 'u32', key0: 'u32', key1: 'u32', threshold: 'u32', scale: 'f32' },
  body: () => /* wgsl */ `
${PCG_WGSL}
@compute @workgroup_size(${DROPOUT_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * u.nx * ${DROPOUT_WG}u;
  if (i >= u.n) { return; }
  let r = pcg(pcg(i ^ u.key0) + u.key1);
  y[i] = select(0.0, x[i] * u.scale, r >= u.threshold);
}`,
});

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
  const u = { n: x.size, nx: g.nx, key0: key[0] >>> 0, key1: key[1] >>> 0, threshold: dropoutThreshold(p), scale: 1 / (1 - p) };
  dropoutKernel.run(gpu, {}, { x, y }, g.workgroups, u);
  return y;
}

/** Reference dropout with the same mask as the kernel. */
export function dropoutRef(x: Vec, p: number, key: readonly [number, number]): Float64Array {
  const t = dropoutThreshold(p);
  return Float64Array.from(x, (v, i) => (pcgHash((pcgHash((i ^ key[0]) >>> 0) + key[1]) >>> 0) >= t ? v / (1 - p) : 0));
}


// ---------------------------------------------------------------------------------------------
// 2-D transpose (weight copies in [in, out] layout for the faster A·B matmul form on lavapipe)
// ---------------------------------------------------------------------------------------------

const transposeKernel = defineKernel({
  name: 'transpose2d',
  bindings: [['x', 'f32', 'read'], ['y', 'f32', 'read_write']],
  uniforms: { R: 'u32', C: 'u32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let c = g.x; let r = g.y;
  if (r >= u.R || c >= u.C) { return; }
  y[c * u.R + r] = x[r * u.C + c];
}`,
});

/** y [C, R] = xᵀ for x [R, C]. */
export function transpose2d(gpu: Gpu, x: Tensor, opts: { out?: Tensor } = {}): Tensor {
  const K = 'transpose2d';
  const [R, C] = rowsCols(K, 'x', x);
  const y = outputTensor(gpu, K, opts.out, [C, R]);
  if (overlaps(y, x)) throw new GpuError(`${K}: out must not overlap x`);
  if (Math.ceil(R / 8) > 65535 || Math.ceil(C / 8) > 65535) throw new GpuError(`${K}: x ${shapeStr(x)} is too large for one dispatch`);
  transposeKernel.run(gpu, {}, { x, y }, [cdiv(C, 8), cdiv(R, 8)], { R, C });
  return y;
}
