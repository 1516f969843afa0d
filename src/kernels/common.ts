// Helpers every kernel family shares: dispatch grids within the per-dimension workgroup limit,
// vector widths, tensor checks that name the kernel in their errors, and small WGSL functions.

import { cdiv, GpuError, type DType, type Gpu, type Tensor } from '../gpu/runtime.ts';

/** WebGPU's guaranteed minimum of maxComputeWorkgroupsPerDimension. */
export const MAX_WG_PER_DIM = 65535;

/** Workgroups for a 1-D grid of `count` groups, spread over y when x would exceed the limit (kernels index wid.y · nx + wid.x). */
export function spreadGrid(count: number): { workgroups: [number, number]; nx: number } {
  if (count <= MAX_WG_PER_DIM) return { workgroups: [Math.max(count, 0), 1], nx: Math.max(count, 1) };
  const ny = cdiv(count, MAX_WG_PER_DIM);
  const nx = cdiv(count, ny);
  return { workgroups: [nx, ny], nx };
}

/**
 * The WGSL opening of a kernel on a rowsGrid: `row` = wid.z · u.ny + wid.y, `col` = wid.x · wg + lid.x,
 * returning past u.<rowsBound> or u.<colsBound>. The body follows inside main.
 */
export function rowGridMain(wg: number, row: string, col: string, rowsBound: string, colsBound: string): string {
  return /* wgsl */ `
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let ${row} = wid.z * u.ny + wid.y;
  let ${col} = wid.x * ${wg}u + lid.x;
  if (${row} >= u.${rowsBound} || ${col} >= u.${colsBound}) { return; }`;
}

/**
 * The WGSL opening of a kernel over a flat index on a spreadGrid: `index` = gid.x + gid.y · u.<stride>
 * (stride = nx · workgroup size), returning past u.<bound>. The body follows inside main.
 */
export function flatIndexMain(wg: number, index: string, bound: string, stride: string): string {
  return /* wgsl */ `
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let ${index} = gid.x + gid.y * u.${stride};
  if (${index} >= u.${bound}) { return; }`;
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

/** One workgroup per row: rows over x, then y (kernels index wid.x + wid.y · 65535). */
export function rowGrid(rows: number): [number, number] {
  return [Math.min(rows, MAX_WG_PER_DIM), cdiv(rows, MAX_WG_PER_DIM)];
}

/** Vector width usable for `n` contiguous floats. */
export function vecWidth(n: number): 1 | 4 {
  return n % 4 === 0 ? 4 : 1;
}

export function vecType(v: 1 | 4): string {
  return v === 4 ? 'vec4<f32>' : 'f32';
}

export function shapeStr(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** Throws GpuError `${kernel}: ${msg}` unless cond. */
export function check(cond: boolean, kernel: string, msg: string): void {
  if (!cond) throw new GpuError(`${kernel}: ${msg}`);
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

// ------------------------------------------------------------------------------------------------
// WGSL snippets (with their CPU twins where a reference needs them)
// ------------------------------------------------------------------------------------------------

/** Finite "minus infinity": exp(NEG - m) underflows to 0 without inf - inf NaNs. */
export const NEG_WGSL = '-3.0e38';

/** Monotone map of f32 bits to u32 (larger float → larger key). */
export const ORDER_KEY_WGSL = /* wgsl */ `
fn orderKey(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}`;

/**
 * The PCG-RXS-M-XS 32-bit hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", JCGT 2020)
 * as WGSL `pcg`; pcgHash in src/util/rng.ts is the same on the CPU.
 */
export const PCG_WGSL = /* wgsl */ `
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}`;

