// Matrix multiplication family: C = alpha·op(A)·op(B) (+ bias) (+ C when accumulating), batched.
//
// Layout conventions (row-major, 4-byte floats):
//   A: [batchA?, M, K]   (transA: stored [batchA?, K, M])
//   B: [batchB?, K, N]   (transB: stored [batchB?, N, K] — HF weight layout [out, in], so x·Wᵀ is transB)
//   C: [batch?, M, N]    batch = max(batchA, batchB); a batch of 1 (or a 2-D operand) broadcasts.
//   bias: [N] (every row of every batch) or [batch, N] (one row vector per batch matrix).
//
// Variants (all handle every form, any M/N/K ≥ 1, batching, bias, accumulate):
//   naive        one invocation per output, scalar loads. Reference-grade fallback.
//   rowcastTMxV[wW]  "subgroup-uniform" register tiling for software rasterizers (lavapipe): a
//                workgroup of W lanes (default 64) spans columns only; its TM rows of A depend only on
//                workgroup_id, so every lane reads the same A address (llvmpipe emits one broadcast
//                load instead of 8 gathers); each lane owns V vec4 groups of columns. Non-transposed B is read as vec4 rows (N % 4 == 0),
//                transposed B as vec4 runs along K (K % 4 == 0) with dot products; scalar fallbacks
//                otherwise.
//   tiledBM      classic shared-memory tiling (BM×BM output tile, BK = 16 deep, 4×4 outputs per
//                invocation, two barriers per K step). What pays on real GPUs; slow on lavapipe,
//                where barriers split the workgroup into coroutine switches.
//   gemv         small-M path (decode): the rowcast layout with TM = 4 (M ≤ 4) or 8 and 8 columns
//                per lane (for x·Wᵀ: 8 rows of W streamed as vec4 runs along K). A one-column-per-lane
//                GEMV measured 2–4× slower at M = 1 on lavapipe.
//   gemvsplit    small-M path for real GPUs: one workgroup per output column, 64 lanes stride K with
//                coalesced reads, tree reduction in workgroup memory.
//   coopTMxV     rowcast with cooperative A loads (llvmpipe with subgroups): lavapipe executes a load
//                whose address is the same in every lane through its per-lane path anyway (one load
//                and bounds check per lane and component), so rowcast's "broadcast" A loads cost as much
//                as 8 gathers. Here the workgroup is exactly one subgroup; lane i loads the A values of
//                row i of the tile (a vec4 along K, or one value per k for Aᵀ) and every lane gets row
//                i's with subgroupBroadcast. Needs the workgroup size to equal the subgroup width
//                (checked at dispatch); Aᵀ·Bᵀ falls back to rowcast.
//   coopskinny   skinny's layout (lane = output row, N ≤ 16) with B's values loaded one column per lane
//                and shared with subgroupBroadcast (LoRA's rank-8 products on lavapipe).
//
// Default choice: explicit, by adapter kind and shape class (chooseVariant, with the measured numbers).

import { defineKernel, type KernelProgram } from '../gpu/kernel.ts';
import { ChunkedMatrix, GpuError, Tensor, cdiv, type Gpu } from '../gpu/runtime.ts';
import { shapeStr as shp } from './common.ts';
import { llvmpipeSubgroupWidth } from './norm.ts';

export interface MatmulOptions {
  /** A stored as [batch?, K, M] and used transposed. */
  transA?: boolean;
  /** B stored as [batch?, N, K] and used transposed (x·Wᵀ with W in [out, in] layout). */
  transB?: boolean;
  /** [N] broadcast over rows, or [batch, N] per batch matrix. */
  bias?: Tensor;
  /** out += alpha·op(A)·op(B) (+bias); requires out. */
  accumulate?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Preallocated output [batch?, M, N]. */
  out?: Tensor;
  /** Force a variant (benchmarks/tests); default = chooseVariant(adapter, shape). */
  variant?: string;
}

// ------------------------------------------------------------------------------------------ variants

type Kind = 'naive' | 'rowcast' | 'tiled' | 'gemv' | 'gemvsplit' | 'skinny' | 'coop' | 'coopskinny';
interface VariantSpec {
  kind: Kind;
  /** rowcast: rows per workgroup; tiled: output tile edge. */
  tm: number;
  /** rowcast: vec4 column groups per lane. */
  vn: number;
  /** rowcast: lanes per workgroup. */
  wg: number;
  /** rowcast A·B: K-loop unroll factor (default 1; ×4 measured slower on lavapipe, so unused). */
  ku?: number;
}

const VARIANTS: Record<string, VariantSpec> = {
  naive: { kind: 'naive', tm: 1, vn: 1, wg: 64 },
  rowcast8x1: { kind: 'rowcast', tm: 8, vn: 1, wg: 8 },
  rowcast8x2: { kind: 'rowcast', tm: 8, vn: 2, wg: 8 },
  rowcast4x2: { kind: 'rowcast', tm: 4, vn: 2, wg: 8 },
  tiled32: { kind: 'tiled', tm: 32, vn: 1, wg: 64 },
  tiled64: { kind: 'tiled', tm: 64, vn: 1, wg: 256 },
  // Small-M variants: rows per workgroup (and gemv's columns per lane) are set from M in makePlan.
  gemv: { kind: 'gemv', tm: 8, vn: 2, wg: 8 },
  gemvsplit: { kind: 'gemvsplit', tm: 8, vn: 1, wg: 64 },
  // Tall-skinny outputs (N ≤ 16, e.g. LoRA's x·Aᵀ with rank r): one lane per output row, 16 columns
  // per lane; B loads are lane-uniform. Rowcast would leave most lanes of each 8-row workgroup idle.
  skinny: { kind: 'skinny', tm: 1, vn: 4, wg: 64 },
  // Cooperative A loads; wg = llvmpipe's subgroup width on 256-bit SIMD.
  coop8x1: { kind: 'coop', tm: 8, vn: 1, wg: 8 },
  coop16x1: { kind: 'coop', tm: 16, vn: 1, wg: 8 },
  // Tall-skinny with cooperative B loads: lane = output row, tm = columns per workgroup (8 or 16).
  coopskinny: { kind: 'coopskinny', tm: 16, vn: 1, wg: 8 },
};

export function listMatmulVariants(): string[] {
  return Object.keys(VARIANTS);
}

/**
 * The default variant for an adapter and shape class (explicit table, not a guess).
 *
 * Software adapters (lavapipe, 2-core CI VM). Measured 2026-11 under heavy concurrent load (load
 * average 10–14 on 2 cores, so wall figures are unreliable); the comparison uses GFLOP per CPU-second
 * of this process, which is robust to other processes, N = 512 square:
 *   rowcast8x2 NN 5.9–6.4, TN 5.1–7.0 · rowcast8x1 (64 lanes) NN 3.7–5.0, NT 3.8–4.9 · rowcast4x2
 *   NN 4.9–5.3 · rowcast8x1 (8 lanes) NN 3.0–4.5 · tiled32 1.1–1.4 · naive 0.7–0.9 (GFLOP/cpu-s;
 *   ×~2 = wall GFLOP/s on an idle 2-core machine). Tried and dropped: 1 scalar column per lane with 8–24 rows (1.0–1.8: a
 *   lane-varying scalar load costs about as much as a vec4 one), K-loop unrolled ×4 (2.4–3.5: worse),
 *   16 rows × 1 vec4 (2.9–4.3). Rowcast workgroups are 8 lanes (one llvmpipe subgroup): speed is
 *   within noise of 64 lanes and LLVM compile time is lower.
 *   x·Wᵀ with W 4864×896 (GFLOP/cpu-s): M=1 gemv (4-row tile) 1.1–1.3 vs rowcast8x1 0.45–0.5 and a
 *   one-column-per-lane GEMV 0.6–0.9; M=8 gemv 2.7–4.7 ≈ rowcast8x1 3.1–3.7; M=32 rowcast8x1 4.2–4.4
 *   ≈ gemv 3.8–4.1. Quick bench (wall, same load): M=1 gemv-layout 2.9 GB/s of W vs 0.74 for the
 *   one-column GEMV. So: M ≤ 4 → gemv; x·Wᵀ → rowcast8x1; A·B and Aᵀ·B → rowcast8x2.
 *   With llvmpipe's subgroups (subgroup = 8) the cooperative variants replace rowcast: at the
 *   students' shapes (M = B·T ≈ 3,000 rows, K and N of 32/64/192, all four products of training;
 *   bench/matmul.ts) GFLOP per CPU-second, alternating 3 rounds on the loaded 2-core VM: coop16x1
 *   against the rowcast default 2.6–3.8× for x·Wᵀ, 1.2–2.8× for A·B, 1.3–1.7× for dY·W and 1.4–1.9×
 *   for dYᵀ·X. coop8x2, coop16x2, coop24x1 and coop32x1 were within noise of coop16x1 or slower.
 * Real GPUs (NVIDIA H100 figures in bench/results/h100/matmul.json): M ≤ 32 → gemvsplit for x·Wᵀ
 * (coalesced reads of W, tree reduction: 197 / 150 GB/s of W at M = 8 / 32 against 88–117 for the
 * rowcast layouts; at M = 1 it is the slower one, 53 against 109–120), tiled32 otherwise (8-lane rowcast
 * workgroups would leave most of a real GPU's SIMD width idle); large M → tiled64 (12–16 TFLOP/s on the
 * 0.5B projection shapes, 2–3× tiled32 and rowcast8x1; the exception is x·Wᵀ with W 896×896 at M = 2048,
 * 1.4 against 5.0 for rowcast8x1), or tiled32 when the output has fewer than 16 64×64 tiles (more
 * workgroups in flight).
 */
export function chooseVariant(isSoftware: boolean, M: number, N: number, batch: number, transB: boolean, subgroup: number | null = null): string {
  if (isSoftware) {
    if (M <= 4) return 'gemv';
    if (N <= 16 && M >= 64) return subgroup === 8 ? 'coopskinny' : 'skinny';
    if (subgroup === 8) return 'coop16x1';
    return transB ? 'rowcast8x1' : 'rowcast8x2';
  }
  if (M <= 32) return transB ? 'gemvsplit' : 'tiled32';
  return cdiv(M, 64) * cdiv(N, 64) * batch < 16 ? 'tiled32' : 'tiled64';
}

// ------------------------------------------------------------------------------------------ WGSL

// Bias and accumulate are runtime flags (uniform branch in the epilogue), not compile-time: every
// distinct pipeline costs 0.3–3 s of LLVM compile time on lavapipe, and the flags cost nothing
// measurable. Without a bias a 16-byte dummy tensor is bound.
interface Config {
  transA: boolean;
  transB: boolean;
  /** Segmented (matmulSegmented): row tile t of 8 rows uses B's batch Seg[t]; one output matrix. */
  seg?: boolean;
  /** Segmented per row (naive only): row m uses B's batch Seg[m]. */
  segRow?: boolean;
  /** rowcast/gemv: whether A / B are bound as vec4 arrays. */
  aVec: boolean;
  bVec: boolean;
}

// Epilogue: alpha scaling, bias, accumulate. Callers guarantee m < M and n < N.
const EPILOGUE = /* wgsl */ `
fn storeC(bz: u32, m: u32, n: u32, v: f32) {
  let idx = bz * u.sC + m * u.ldc + u.cOff + n;
  var r = u.alpha * v;
  if ((u.flags & 1u) != 0u) { r += Bias[bz * u.sBias + u.biasOff + n]; }
  if ((u.flags & 2u) != 0u) { r += C[idx]; }
  C[idx] = r;
}
`;

/** Scalar element loads of op(A)[m, k] and op(B)[k, n] (scalar-bound A/B only). */
function scalarLoaders(cfg: Config): string {
  return `
fn ldA(base: u32, m: u32, k: u32) -> f32 { return A[base + ${cfg.transA ? 'k * u.M + m' : 'm * u.K + k'}]; }
fn ldB(base: u32, k: u32, n: u32) -> f32 { return B[base + ${cfg.transB ? 'n * u.K + k' : 'k * u.N + n'}]; }
`;
}


/**
 * Epilogue over vec4 accumulators, emitted once inside loops with runtime trip counts: lavapipe's
 * compile time grows steeply with the number of inlined storeC copies (an unrolled 8×2 tile with bias
 * and accumulate took 15–30 s to compile), and LLVM fully unrolls loops with small constant trip
 * counts. So the accumulators are copied to a private array and stored by loops bounded by the rows
 * and columns left (also the bounds checks). rowBase: first row of the tile; colExpr: first column of
 * vec4 group \`j\`.
 */
function loopStore(tm: number, vn: number, accName: (i: number, j: number) => string, rowBase: string, colExpr: string): string {
  const L: string[] = [`  var res: array<vec4<f32>, ${tm * vn}>;`];
  for (let i = 0; i < tm; i++) for (let j = 0; j < vn; j++) L.push(`  res[${i * vn + j}] = ${accName(i, j)};`);
  L.push(`  let rowBase = ${rowBase};
  let rows = select(0u, min(${tm}u, u.M - rowBase), rowBase < u.M);
  for (var i = 0u; i < rows; i++) {
    for (var j = 0u; j < ${vn}u; j++) {
      let c = ${colExpr};
      if (c >= u.N) { break; }
      let v = res[i * ${vn}u + j];
      let cols = min(4u, u.N - c);
      for (var e = 0u; e < cols; e++) { storeC(bz, rowBase + i, c + e, v[e]); }
    }
  }`);
  return L.join('\n');
}

function genNaive(cfg: Config): string {
  return `${EPILOGUE}${scalarLoaders(cfg)}
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let n = g.x; let m = g.y; let bz = ${cfg.seg ? '0u' : 'wid.z'};
  if (m >= u.M || n >= u.N) { return; }
  let bA = bz * u.sA; let bB = ${cfg.seg ? (cfg.segRow ? 'Seg[m] * u.sB' : 'Seg[wid.y] * u.sB') : 'bz * u.sB'};
  var acc = 0.0;
  for (var k = 0u; k < u.K; k++) { acc = fma(ldA(bA, m, k), ldB(bB, k, n), acc); }
  storeC(bz, m, n, acc);
}`;
}

/**
 * Rowcast for non-transposed B: lane owns VN vec4 column groups; TM rows of A are uniform.
 * bVec: B bound as vec4 (N % 4 == 0); otherwise 4 scalar loads with clamped column indices.
 */
function genRowcastNN(cfg: Config, tm: number, vn: number, wg: number, ku: number): string {
  const L: string[] = [];
  for (let i = 0; i < tm; i++) L.push(`  let r${i} = min(row0 + ${i}u, u.M - 1u);`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < vn; j++) L.push(`  var acc${i}_${j} = vec4<f32>(0.0);`);
  const body: string[] = [];
  for (let j = 0; j < vn; j++) {
    if (cfg.bVec) body.push(`    let b${j} = B[(bB + k * u.N) / 4u + cv${j}];`);
    else
      body.push(
        `    let bk${j} = bB + k * u.N; let b${j} = vec4<f32>(B[bk${j} + cs${j}.x], B[bk${j} + cs${j}.y], B[bk${j} + cs${j}.z], B[bk${j} + cs${j}.w]);`,
      );
  }
  for (let i = 0; i < tm; i++) {
    body.push(`    let a${i} = vec4<f32>(A[bA + ${cfg.transA ? `k * u.M + r${i}` : `r${i} * u.K + k`}]);`);
    for (let j = 0; j < vn; j++) body.push(`    acc${i}_${j} = fma(a${i}, b${j}, acc${i}_${j});`);
  }
  const cols: string[] = [];
  for (let j = 0; j < vn; j++) {
    // Column group j of this lane starts at column c${j}; clamp loads, guard stores.
    cols.push(`  let c${j} = (lane * ${vn}u + ${j}u) * 4u;`);
    if (cfg.bVec) cols.push(`  let cv${j} = min(c${j} / 4u, u.N / 4u - 1u);`);
    else cols.push(`  let cs${j} = min(vec4<u32>(c${j}) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(u.N - 1u));`);
  }
  const store = [loopStore(tm, vn, (i, j) => `acc${i}_${j}`, 'row0', `(lane * ${vn}u + j) * 4u`)];
  return `${EPILOGUE}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let bz = ${cfg.seg ? '0u' : 'wid.z'};
  let bA = bz * u.sA; let bB = ${cfg.seg ? 'Seg[wid.y] * u.sB' : 'bz * u.sB'};
  let row0 = wid.y * ${tm}u;
  let lane = wid.x * ${wg}u + lid.x;
${cols.join('\n')}
${L.join('\n')}
${unrolledK(body.join('\n'), ku, 1)}
${store.join('\n')}
}`;
}

/**
 * The K loop with \`ku\` copies of the body per iteration (then a remainder loop): llvmpipe's per-
 * iteration overhead (exec masks, loop bookkeeping) is large next to one k step. \`step\` is how many
 * k one body consumes. Each copy runs in its own block with \`k\` rebound.
 */
function unrolledK(body: string, ku: number, step: number): string {
  if (ku <= 1) return `  for (var k = 0u; k < u.K; k += ${step}u) {\n${body}\n  }`;
  const copies: string[] = [];
  for (let c = 0; c < ku; c++) copies.push(`    {\n    let k = k0 + ${c * step}u;\n${body}\n    }`);
  return `  var k0 = 0u;
  for (; k0 + ${ku * step}u <= u.K; k0 += ${ku * step}u) {
${copies.join('\n')}
  }
  for (var k = k0; k < u.K; k += ${step}u) {\n${body}\n  }`;
}

/**
 * Rowcast for transposed B (x·Wᵀ): lane owns 4·VN columns, i.e. 4·VN rows of W. With K % 4 == 0
 * (aVec/bVec) both operands are read as vec4 runs along K and combined with dot products; otherwise
 * scalar loads. A rows are uniform (broadcast) loads.
 */
function genRowcastNT(cfg: Config, tm: number, vn: number, wg: number): string {
  const nc = 4 * vn;
  const vecK = cfg.bVec;
  const pre: string[] = [];
  for (let i = 0; i < tm; i++) pre.push(`  let r${i} = min(row0 + ${i}u, u.M - 1u);`);
  for (let c = 0; c < nc; c++) pre.push(`  let n${c} = min(col0 + ${c}u, u.N - 1u);`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < vn; j++) pre.push(`  var acc${i}_${j} = vec4<f32>(0.0);`);
  const body: string[] = [];
  if (vecK) {
    // Indices in vec4 units: bases and K are multiples of 4.
    for (let c = 0; c < nc; c++) body.push(`    let b${c} = B[(bB + n${c} * u.K + k) / 4u];`);
    for (let i = 0; i < tm; i++) {
      if (cfg.aVec) body.push(`    let a${i} = A[(bA + r${i} * u.K + k) / 4u];`);
      else
        body.push(
          `    let a${i} = vec4<f32>(A[bA + k * u.M + r${i}], A[bA + (k + 1u) * u.M + r${i}], A[bA + (k + 2u) * u.M + r${i}], A[bA + (k + 3u) * u.M + r${i}]);`,
        );
      for (let j = 0; j < vn; j++)
        body.push(
          `    acc${i}_${j} += vec4<f32>(dot(a${i}, b${4 * j}), dot(a${i}, b${4 * j + 1}), dot(a${i}, b${4 * j + 2}), dot(a${i}, b${4 * j + 3}));`,
        );
    }
  } else {
    for (let j = 0; j < vn; j++)
      body.push(
        `    let b${j} = vec4<f32>(B[bB + n${4 * j} * u.K + k], B[bB + n${4 * j + 1} * u.K + k], B[bB + n${4 * j + 2} * u.K + k], B[bB + n${4 * j + 3} * u.K + k]);`,
      );
    for (let i = 0; i < tm; i++) {
      body.push(`    let a${i} = vec4<f32>(A[bA + ${cfg.transA ? `k * u.M + r${i}` : `r${i} * u.K + k`}]);`);
      for (let j = 0; j < vn; j++) body.push(`    acc${i}_${j} = fma(a${i}, b${j}, acc${i}_${j});`);
    }
  }
  const store = [loopStore(tm, vn, (i, j) => `acc${i}_${j}`, 'row0', 'col0 + j * 4u')];
  return `${EPILOGUE}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let bz = wid.z;
  let bA = bz * u.sA; let bB = bz * u.sB;
  let row0 = wid.y * ${tm}u;
  let col0 = (wid.x * ${wg}u + lid.x) * ${nc}u;
${pre.join('\n')}
  for (var k = 0u; k < u.K; k += ${vecK ? 4 : 1}u) {
${body.join('\n')}
  }
${store.join('\n')}
}`;
}

/** Tall-skinny: lane = one output row m and 16 columns n0…n0+15 (B loads are lane-uniform broadcasts). */
function genSkinny(cfg: Config, wg: number): string {
  const body: string[] = [`    let a = vec4<f32>(ldA(bA, m, k));`];
  for (let j = 0; j < 4; j++) {
    body.push(`    acc${j} = fma(a, vec4<f32>(ldB(bB, k, c${j}.x), ldB(bB, k, c${j}.y), ldB(bB, k, c${j}.z), ldB(bB, k, c${j}.w)), acc${j});`);
  }
  const pre: string[] = [];
  for (let j = 0; j < 4; j++) {
    pre.push(`  let c${j} = min(vec4<u32>(n0 + ${4 * j}u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(u.N - 1u));`);
    pre.push(`  var acc${j} = vec4<f32>(0.0);`);
  }
  return `${EPILOGUE}${scalarLoaders(cfg)}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let bz = wid.z;
  let bA = bz * u.sA; let bB = bz * u.sB;
  let m = wid.x * ${wg}u + lid.x;
  let n0 = wid.y * 16u;
  if (m >= u.M) { return; }
${pre.join('\n')}
  for (var k = 0u; k < u.K; k++) {
${body.join('\n')}
  }
  var res = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  let cols = min(16u, u.N - n0);
  for (var c = 0u; c < cols; c++) { storeC(bz, m, n0 + c, res[c / 4u][c % 4u]); }
}`;
}

/**
 * Rowcast with cooperative A loads (see the variants list): TM rows (a multiple of the subgroup width
 * wg), VN vec4 column groups per lane. A·B: lane i loads row i of each wg-row sub-tile as vec4 runs
 * along K (aVec) or one value per k; Aᵀ·B: one value per k (A's rows are contiguous across lanes);
 * A·Bᵀ: vec4 runs along K of A and of the lane's 4·VN rows of B (bVec), dot products. Every row value
 * reaches all lanes through subgroupBroadcast with a constant lane, in subgroup-uniform control flow.
 */
function genCoop(cfg: Config, tm: number, vn: number, wg: number): string {
  const subs = tm / wg;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const pre: string[] = [];
  for (let s = 0; s < subs; s++) pre.push(`  let ar${s} = min(row0 + ${s * wg}u + lid.x, u.M - 1u);`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < vn; j++) pre.push(`  var acc${i}_${j} = vec4<f32>(0.0);`);
  const bcast = (i: number, comp: string) => `subgroupBroadcast(al${Math.floor(i / wg)}${comp}, ${i % wg}u)`;
  let loop: string;
  let colExpr: string;
  if (cfg.transB) {
    const nc = 4 * vn;
    pre.push(`  let col0 = (wid.x * ${wg}u + lid.x) * ${nc}u;`);
    for (let c = 0; c < nc; c++) pre.push(`  let n${c} = min(col0 + ${c}u, u.N - 1u);`);
    colExpr = 'col0 + j * 4u';
    const body: string[] = [];
    if (cfg.bVec) {
      // K % 4 == 0: vec4 runs along K of A (own row) and B (own columns).
      for (let s = 0; s < subs; s++) body.push(`    let al${s} = A[(bA + ar${s} * u.K + k) / 4u];`);
      for (let c = 0; c < nc; c++) body.push(`    let b${c} = B[(bB + n${c} * u.K + k) / 4u];`);
      for (let i = 0; i < tm; i++) {
        body.push(`    { let a = ${bcast(i, '')};`);
        for (let j = 0; j < vn; j++) body.push(`      acc${i}_${j} += vec4<f32>(dot(a, b${4 * j}), dot(a, b${4 * j + 1}), dot(a, b${4 * j + 2}), dot(a, b${4 * j + 3}));`);
        body.push(`    }`);
      }
      loop = `  for (var k = 0u; k < u.K; k += 4u) {\n${body.join('\n')}\n  }`;
    } else {
      for (let s = 0; s < subs; s++) body.push(`    let al${s} = A[bA + ar${s} * u.K + k];`);
      for (let j = 0; j < vn; j++) body.push(`    let b${j} = vec4<f32>(${range(4).map((e) => `B[bB + n${4 * j + e} * u.K + k]`).join(', ')});`);
      for (let i = 0; i < tm; i++) {
        body.push(`    { let a = vec4<f32>(${bcast(i, '')});`);
        for (let j = 0; j < vn; j++) body.push(`      acc${i}_${j} = fma(a, b${j}, acc${i}_${j});`);
        body.push(`    }`);
      }
      loop = `  for (var k = 0u; k < u.K; k++) {\n${body.join('\n')}\n  }`;
    }
  } else {
    for (let j = 0; j < vn; j++) {
      pre.push(`  let c${j} = (lane * ${vn}u + ${j}u) * 4u;`);
      if (cfg.bVec) pre.push(`  let cv${j} = min(c${j} / 4u, u.N / 4u - 1u);`);
      else pre.push(`  let cs${j} = min(vec4<u32>(c${j}) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(u.N - 1u));`);
    }
    colExpr = `(lane * ${vn}u + j) * 4u`;
    const loadB = (kx: string, tag: string) =>
      range(vn).map((j) =>
        cfg.bVec
          ? `    let b${tag}_${j} = B[(bB + (${kx}) * u.N) / 4u + cv${j}];`
          : `    let bk${tag}_${j} = bB + (${kx}) * u.N; let b${tag}_${j} = vec4<f32>(B[bk${tag}_${j} + cs${j}.x], B[bk${tag}_${j} + cs${j}.y], B[bk${tag}_${j} + cs${j}.z], B[bk${tag}_${j} + cs${j}.w]);`,
      );
    const step = (tag: string, comp: string): string[] => {
      const L: string[] = [];
      for (let i = 0; i < tm; i++) {
        L.push(`    { let a = vec4<f32>(${bcast(i, comp)});`);
        for (let j = 0; j < vn; j++) L.push(`      acc${i}_${j} = fma(a, b${tag}_${j}, acc${i}_${j});`);
        L.push(`    }`);
      }
      return L;
    };
    if (cfg.aVec) {
      // A·B with K % 4 == 0: own row's vec4 along K, four k steps per load.
      const body: string[] = [];
      for (let s = 0; s < subs; s++) body.push(`    let al${s} = A[(bA + ar${s} * u.K + k) / 4u];`);
      for (let e = 0; e < 4; e++) body.push(...loadB(`k + ${e}u`, `${e}`), ...step(`${e}`, `[${e}]`));
      loop = `  for (var k = 0u; k < u.K; k += 4u) {\n${body.join('\n')}\n  }`;
    } else {
      const body: string[] = [];
      for (let s = 0; s < subs; s++) body.push(`    let al${s} = A[bA + ${cfg.transA ? `k * u.M + ar${s}` : `ar${s} * u.K + k`}];`);
      body.push(...loadB('k', '0'), ...step('0', ''));
      loop = `  for (var k = 0u; k < u.K; k++) {\n${body.join('\n')}\n  }`;
    }
  }
  return `${EPILOGUE}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let bz = ${cfg.seg ? '0u' : 'wid.z'};
  let bA = bz * u.sA; let bB = ${cfg.seg ? 'Seg[wid.y] * u.sB' : 'bz * u.sB'};
  let row0 = wid.y * ${tm}u;
  let lane = wid.x * ${wg}u + lid.x;
${pre.join('\n')}
${loop}
${loopStore(tm, vn, (i, j) => `acc${i}_${j}`, 'row0', colExpr)}
}`;
}

/**
 * Tall-skinny with cooperative B loads: lane = output row m of the workgroup's 8 (wg) rows, tn
 * columns n0 … n0+tn-1 (tn = 8 or 16). Per k, lane i loads B's value for column n0 + i (and n0 + 8 +
 * i) and all lanes get them with subgroupBroadcast; A is the lane's own row (vec4 runs along K with
 * aVec). For Aᵀ the lanes' A values are contiguous.
 */
function genCoopSkinny(cfg: Config, tn: number, wg: number): string {
  const loads = tn / wg;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const pre: string[] = [];
  for (let h = 0; h < loads; h++) pre.push(`  let bn${h} = min(n0 + ${h * wg}u + lid.x, u.N - 1u);`);
  for (let j = 0; j < tn / 4; j++) pre.push(`  var acc${j} = vec4<f32>(0.0);`);
  // One k step: a (scalar) times the broadcast B values bv{h} (scalars, or component `comp` of vec4s).
  const step = (a: string, comp: string): string[] =>
    range(tn / 4).map((j) => {
      const b = range(4).map((e) => `subgroupBroadcast(bv${Math.floor((4 * j + e) / wg)}${comp}, ${(4 * j + e) % wg}u)`);
      return `    acc${j} = fma(vec4<f32>(${a}), vec4<f32>(${b.join(', ')}), acc${j});`;
    });
  const body: string[] = [];
  let stepK = 1;
  if (cfg.aVec) {
    stepK = 4;
    body.push(`    let a = A[(bA + m * u.K + k) / 4u];`);
    if (cfg.transB && cfg.bVec) {
      for (let h = 0; h < loads; h++) body.push(`    let bv${h} = B[(bB + bn${h} * u.K + k) / 4u];`);
      for (let e = 0; e < 4; e++) body.push(...step(`a[${e}]`, `[${e}]`));
    } else {
      for (let e = 0; e < 4; e++) {
        for (let h = 0; h < loads; h++) body.push(`    let bv${h}_${e} = B[bB + ${cfg.transB ? `bn${h} * u.K + k + ${e}u` : `(k + ${e}u) * u.N + bn${h}`}];`);
        body.push(...step(`a[${e}]`, `_${e}`));
      }
    }
  } else {
    body.push(`    let a = A[bA + ${cfg.transA ? 'k * u.M + m' : 'm * u.K + k'}];`);
    for (let h = 0; h < loads; h++) body.push(`    let bv${h} = B[bB + ${cfg.transB ? `bn${h} * u.K + k` : `k * u.N + bn${h}`}];`);
    body.push(...step('a', ''));
  }
  return `${EPILOGUE}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let bz = ${cfg.seg ? '0u' : 'wid.z'};
  let bA = bz * u.sA; let bB = ${cfg.seg ? 'Seg[wid.x] * u.sB' : 'bz * u.sB'};
  let mRaw = wid.x * ${wg}u + lid.x;
  let m = min(mRaw, u.M - 1u);
  let n0 = wid.y * ${tn}u;
${pre.join('\n')}
  for (var k = 0u; k < u.K; k += ${stepK}u) {
${body.join('\n')}
  }
  var res = array<vec4<f32>, ${tn / 4}>(${range(tn / 4).map((j) => `acc${j}`).join(', ')});
  if (mRaw < u.M) {
    let cols = min(${tn}u, u.N - n0);
    for (var c = 0u; c < cols; c++) { storeC(bz, m, n0 + c, res[c / 4u][c % 4u]); }
  }
}`;
}

/** WebGPU's guaranteed minimum of maxComputeWorkgroupsPerDimension; gemvsplit loops past it. */
const GEMVSPLIT_MAX_X = 65535;

/** Small-M x·Wᵀ for real GPUs: one workgroup per column n and TM rows; lanes stride K, tree reduce. */
function genGemvSplit(cfg: Config, tm: number, wg: number): string {
  const pre: string[] = [];
  for (let i = 0; i < tm; i++) pre.push(`  let r${i} = min(row0 + ${i}u, u.M - 1u);\n  var acc${i} = 0.0;`);
  const body: string[] = [`    let b = ldB(bB, k, n);`];
  for (let i = 0; i < tm; i++) body.push(`    acc${i} = fma(ldA(bA, r${i}, k), b, acc${i});`);
  const red: string[] = [];
  for (let i = 0; i < tm; i++) red.push(`  part[${i}u * ${wg}u + t] = acc${i};`);
  const sum: string[] = [];
  for (let i = 0; i < tm; i++) sum.push(`      part[${i}u * ${wg}u + t] += part[${i}u * ${wg}u + t + s];`);
  return `${EPILOGUE}${scalarLoaders(cfg)}
var<workgroup> part: array<f32, ${tm * wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let bz = wid.z; let t = lid.x;
  let bA = bz * u.sA; let bB = bz * u.sB;
  let row0 = wid.y * ${tm}u;
  // One column per workgroup; a workgroup takes columns wid.x, wid.x + nwg.x, … when N exceeds the
  // 65,535 workgroups one dimension may hold (a 151,936-row LM head in one binding on real GPUs).
  for (var n = wid.x; n < u.N; n += nwg.x) {
${pre.join('\n').replace(/^/gm, '  ')}
    for (var k = t; k < u.K; k += ${wg}u) {
${body.join('\n').replace(/^/gm, '  ')}
    }
${red.join('\n').replace(/^/gm, '  ')}
    workgroupBarrier();
    for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
      if (t < s) {
${sum.join('\n').replace(/^/gm, '  ')}
      }
      workgroupBarrier();
    }
    if (t < ${tm}u && row0 + t < u.M) { storeC(bz, row0 + t, n, part[t * ${wg}u]); }
    workgroupBarrier(); // part is reused by the next column
  }
}`;
}

/** Shared-memory tiling: BM×BM output tile, BK deep, 4×4 outputs per invocation. */
function genTiled(cfg: Config, bm: number): string {
  const bk = 16;
  const tx = bm / 4;
  const nt = tx * tx;
  // Cooperative loads: walk the tile so consecutive invocations read consecutive addresses.
  const loadA = cfg.transA
    ? `let kk = e / ${bm}u; let mm = e % ${bm}u;` // A stored [K, M]: contiguous along m
    : `let mm = e / ${bk}u; let kk = e % ${bk}u;`;
  const loadB = cfg.transB ? `let nn = e / ${bk}u; let kk = e % ${bk}u;` : `let kk = e / ${bm}u; let nn = e % ${bm}u;`;
  const acc: string[] = [];
  for (let i = 0; i < 4; i++) acc.push(`  var acc${i} = vec4<f32>(0.0);`);
  const inner: string[] = [];
  inner.push(`      let bv = vec4<f32>(Bs[kk * ${bm}u + tx * 4u], Bs[kk * ${bm}u + tx * 4u + 1u], Bs[kk * ${bm}u + tx * 4u + 2u], Bs[kk * ${bm}u + tx * 4u + 3u]);`);
  for (let i = 0; i < 4; i++) inner.push(`      acc${i} = fma(vec4<f32>(As[kk * ${bm}u + ty * 4u + ${i}u]), bv, acc${i});`);
  const store = [loopStore(4, 1, (i) => `acc${i}`, 'm0 + ty * 4u', 'n0 + tx * 4u')];
  return `${EPILOGUE}${scalarLoaders(cfg)}
var<workgroup> As: array<f32, ${bk * bm}>;
var<workgroup> Bs: array<f32, ${bk * bm}>;
@compute @workgroup_size(${nt})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let bz = wid.z;
  let bA = bz * u.sA; let bB = bz * u.sB;
  let m0 = wid.y * ${bm}u; let n0 = wid.x * ${bm}u;
  let tx = li % ${tx}u; let ty = li / ${tx}u;
${acc.join('\n')}
  for (var k0 = 0u; k0 < u.K; k0 += ${bk}u) {
    for (var e = li; e < ${bk * bm}u; e += ${nt}u) {
      ${loadA}
      var v = 0.0;
      if (m0 + mm < u.M && k0 + kk < u.K) { v = ldA(bA, m0 + mm, k0 + kk); }
      As[kk * ${bm}u + mm] = v;
    }
    for (var e = li; e < ${bk * bm}u; e += ${nt}u) {
      ${loadB}
      var v = 0.0;
      if (n0 + nn < u.N && k0 + kk < u.K) { v = ldB(bB, k0 + kk, n0 + nn); }
      Bs[kk * ${bm}u + nn] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${bk}u; kk++) {
${inner.join('\n')}
    }
    workgroupBarrier();
  }
${store.join('\n')}
}`;
}

// ------------------------------------------------------------------------------------------ dispatch

/** The code-generation parameters of one matmul program. */
interface MatmulParams extends Config {
  kind: Kind;
  tm: number;
  vn: number;
  wg: number;
  ku: number;
}

const matmulKernel = defineKernel({
  name: 'matmul',
  bindings: (p: MatmulParams) => [
    ['A', p.aVec ? 'vec4<f32>' : 'f32', 'read'],
    ['B', p.bVec ? 'vec4<f32>' : 'f32', 'read'],
    ['C', 'f32', 'read_write'],
    ['Bias', 'f32', 'read'],
    ...(p.seg ? [['Seg', 'u32', 'read'] as const] : []),
  ],
  // flags — bit 0: add bias; bit 1: accumulate into C.
  uniforms: {
    M: 'u32', N: 'u32', K: 'u32', batch: 'u32',
    sA: 'u32', sB: 'u32', sC: 'u32', ldc: 'u32',
    cOff: 'u32', sBias: 'u32', biasOff: 'u32', alpha: 'f32',
    flags: 'u32',
  },
  key: (p) => `${p.kind}_${p.tm}_${p.vn}_${p.wg}_${p.ku}_${+p.transA}${+p.transB}${+p.aVec}${+p.bVec}${p.seg ? '_seg' : ''}${p.segRow ? '_row' : ''}`,
  space: matmulSpace,
  enable: (p) => (p.kind === 'coop' || p.kind === 'coopskinny' ? ['subgroups'] : []),
  body: (p) => {
    if (p.kind === 'coop') return genCoop(p, p.tm, p.vn, p.wg);
    if (p.kind === 'coopskinny') return genCoopSkinny(p, p.tm, p.wg);
    if (p.kind === 'naive') return genNaive(p);
    if (p.kind === 'rowcast') return p.transB ? genRowcastNT(p, p.tm, p.vn, p.wg) : genRowcastNN(p, p.tm, p.vn, p.wg, p.ku);
    if (p.kind === 'gemvsplit') return genGemvSplit(p, p.tm, p.wg);
    if (p.kind === 'skinny') return genSkinny(p, p.wg);
    return genTiled(p, p.tm);
  },
});

/** Every program the variants reach over the shape classes (M small or not, N and K multiples of 4 or not). */
function matmulSpace(): MatmulParams[] {
  const seen = new Map<string, MatmulParams>();
  for (const variant of listMatmulVariants()) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        for (const M of [1, 2, 3, 4, 5, 8, 64]) {
          for (const [N, K] of [[3, 3], [4, 3], [3, 4], [8, 8], [12, 8]]) {
            const p = planParams(variant, { transA, transB }, M, N, K);
            seen.set(JSON.stringify(p), p);
            // The segmented forms (matmulSegmented: no Aᵀ).
            if (!transA && SEG_VARIANTS.includes(variant)) {
              const q = { ...planParams(variant, { transA, transB }, M, N, K), seg: true };
              seen.set(JSON.stringify(q), q);
              if (variant === 'naive') {
                const r = { ...q, segRow: true };
                seen.set(JSON.stringify(r), r);
              }
            }
            // The K-loop unroll of the A·B rowcast form (no variant uses it by default).
            if (p.kind === 'rowcast' && !transB) {
              const u = { ...p, ku: 4 };
              seen.set(JSON.stringify(u), u);
            }
          }
        }
      }
    }
  }
  return [...seen.values()];
}

/** Variants with a segmented form: one workgroup's rows lie in one 8-row tile. */
const SEG_VARIANTS = ['naive', 'coop8x1', 'coopskinny'];

interface Plan {
  program: KernelProgram;
  workgroups: [number, number, number];
  params: MatmulParams;
}

function planParams(variant: string, cfg0: { transA: boolean; transB: boolean }, M: number, N: number, K: number): MatmulParams {
  const spec = VARIANTS[variant];
  if (!spec) throw new GpuError(`matmul: unknown variant '${variant}' (known: ${listMatmulVariants().join(', ')})`);
  let kind = spec.kind;
  let tm = spec.tm;
  let vn = spec.vn;
  // Small-M variants: rows per workgroup follow M. gemv is the rowcast layout with 8 columns per
  // lane and 4 rows up to M = 4 (at M = 1 the 4-row tile beat a 1-row tile: 1.1–1.3 vs 0.6–0.9
  // GFLOP/cpu-s, the loop body is otherwise too thin), else 8; gemvsplit is its own kernel for x·Wᵀ.
  if (kind === 'gemv' || kind === 'gemvsplit') {
    tm = kind === 'gemv' ? (M <= 4 ? 4 : 8) : M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8;
    if (kind === 'gemv' || !cfg0.transB) {
      kind = 'rowcast';
      vn = 2;
    }
  }
  // Cooperative loads need A's rows of the tile on separate lanes: Aᵀ·Bᵀ keeps the rowcast layout.
  if (kind === 'coop' && cfg0.transA && cfg0.transB) kind = 'rowcast';
  let aVec = false;
  let bVec = false;
  if (kind === 'coop') {
    bVec = cfg0.transB ? K % 4 === 0 : N % 4 === 0;
    aVec = !cfg0.transA && K % 4 === 0;
  }
  if (kind === 'coopskinny') {
    // Columns per workgroup: 8 when N fits (one B value per lane and k), else 16.
    tm = N <= 8 ? 8 : 16;
    aVec = !cfg0.transA && K % 4 === 0;
    bVec = cfg0.transB && aVec;
  }
  if (kind === 'rowcast' && !cfg0.transB) bVec = N % 4 === 0;
  if (kind === 'rowcast' && cfg0.transB) {
    bVec = K % 4 === 0;
    aVec = bVec && !cfg0.transA;
  }
  return { transA: cfg0.transA, transB: cfg0.transB, seg: false, segRow: false, aVec, bVec, kind, tm, vn, wg: spec.wg, ku: spec.ku ?? 1 };
}

function makePlan(variant: string, cfg0: { transA: boolean; transB: boolean }, M: number, N: number, K: number, batch: number): Plan {
  const p = planParams(variant, cfg0, M, N, K);
  const { kind, tm, vn } = p;
  const spec = { wg: p.wg };
  const program = matmulKernel.program(p);
  let wg: [number, number, number];
  if (kind === 'naive') wg = [cdiv(N, 8), cdiv(M, 8), batch];
  else if (kind === 'rowcast' || kind === 'coop') wg = [cdiv(N, 4 * vn * spec.wg), cdiv(M, tm), batch];
  else if (kind === 'gemvsplit') wg = [Math.min(N, GEMVSPLIT_MAX_X), cdiv(M, tm), batch];
  else if (kind === 'skinny') wg = [cdiv(M, spec.wg), cdiv(N, 16), batch];
  else if (kind === 'coopskinny') wg = [cdiv(M, spec.wg), cdiv(N, tm), batch];
  else wg = [cdiv(N, tm), cdiv(M, tm), batch];
  return { program, workgroups: wg, params: p };
}

interface Dims {
  M: number;
  N: number;
  K: number;
  batch: number;
  batchA: number;
  batchB: number;
  outShape: number[];
}

function resolveDims(a: Tensor, b: Tensor, opts: MatmulOptions, kernel: string): Dims {
  const transA = !!opts.transA;
  const transB = !!opts.transB;
  const desc = () => `${kernel}: A ${shp(a)}${transA ? 'ᵀ' : ''} · B ${shp(b)}${transB ? 'ᵀ' : ''}`;
  if (a.dtype !== 'f32' || b.dtype !== 'f32') throw new GpuError(`${desc()}: operands must be f32 (got ${a.dtype}, ${b.dtype})`);
  if (a.shape.length < 2 || a.shape.length > 3 || b.shape.length < 2 || b.shape.length > 3) {
    throw new GpuError(`${desc()}: operands must be 2-D [rows, cols] or 3-D [batch, rows, cols]`);
  }
  const batchA = a.shape.length === 3 ? a.shape[0] : 1;
  const batchB = b.shape.length === 3 ? b.shape[0] : 1;
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const M = transA ? ac : ar;
  const K = transA ? ar : ac;
  const Kb = transB ? bc : br;
  const N = transB ? br : bc;
  if (K !== Kb) throw new GpuError(`${desc()}: inner dimensions differ (${K} vs ${Kb})`);
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) throw new GpuError(`${desc()}: batch sizes ${batchA} and ${batchB} do not broadcast`);
  const batch = Math.max(batchA, batchB);
  if (M === 0 || N === 0 || K === 0 || batch === 0) throw new GpuError(`${desc()}: empty dimension`);
  const outShape = a.shape.length === 3 || b.shape.length === 3 ? [batch, M, N] : [M, N];
  return { M, N, K, batch, batchA, batchB, outShape };
}

function checkBias(bias: Tensor, N: number, batch: number, desc: string): boolean {
  if (bias.dtype !== 'f32') throw new GpuError(`${desc}: bias must be f32`);
  if (bias.size === N && (bias.shape.length === 1 || (bias.shape.length === 2 && bias.shape[0] === 1))) return false;
  if (bias.shape.length === 2 && bias.shape[0] === batch && bias.shape[1] === N) return batch > 1;
  throw new GpuError(`${desc}: bias ${shp(bias)} must be [${N}] or [${batch}, ${N}]`);
}

interface Epilogue {
  ldc: number;
  cOff: number;
  sC: number;
  biasOff: number;
  /** Length of the bias row the caller must pass (N, or the full width for matmulChunked). */
  biasN: number;
}

function record(gpu: Gpu, a: Tensor, b: Tensor, out: Tensor, d: Dims, opts: MatmulOptions, ep: Epilogue, kernel: string): void {
  const transB = !!opts.transB;
  const desc = `${kernel}: A ${shp(a)} · B ${shp(b)}`;
  const biasPerBatch = opts.bias ? checkBias(opts.bias, ep.biasN, d.batch, desc) : false;
  const variant = opts.variant ?? chooseVariant(gpu.info.isSoftware, d.M, d.N, d.batch, transB, llvmpipeSubgroupWidth(gpu));
  const plan = makePlan(variant, { transA: !!opts.transA, transB }, d.M, d.N, d.K, d.batch);
  if ((plan.params.kind === 'coop' || plan.params.kind === 'coopskinny') && llvmpipeSubgroupWidth(gpu) !== plan.params.wg) {
    throw new GpuError(`${desc}: variant ${variant} needs llvmpipe with subgroups of ${plan.params.wg} lanes (adapter: ${gpu.info.adapterInfo.description})`);
  }
  const u = {
    M: d.M, N: d.N, K: d.K, batch: d.batch,
    sA: d.batchA === 1 ? 0 : d.M * d.K, sB: d.batchB === 1 ? 0 : d.K * d.N, sC: ep.sC, ldc: ep.ldc,
    cOff: ep.cOff, sBias: biasPerBatch ? ep.biasN : 0, biasOff: ep.biasOff, alpha: opts.alpha ?? 1,
    flags: (opts.bias ? 1 : 0) | (opts.accumulate ? 2 : 0),
  };
  gpu.run(plan.program, { A: a, B: b, C: out, Bias: opts.bias ?? dummyBias(gpu) }, plan.workgroups, u);
}

const dummies = new WeakMap<Gpu, Tensor>();
function dummyBias(gpu: Gpu): Tensor {
  let t = dummies.get(gpu);
  if (!t || t.isDisposed) {
    t = gpu.zeros([4], 'f32', 'matmul_nobias');
    dummies.set(gpu, t);
  }
  return t;
}

/** C = alpha·op(A)·op(B) (+bias) (+C if accumulate). Records one dispatch; returns C. */
export function matmul(gpu: Gpu, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const d = resolveDims(a, b, opts, 'matmul');
  const desc = `matmul: A ${shp(a)} · B ${shp(b)}`;
  if (opts.accumulate && !opts.out) throw new GpuError(`${desc}: accumulate requires out`);
  let out = opts.out;
  if (out) {
    const okShape = out.size === d.batch * d.M * d.N && out.shape[out.shape.length - 1] === d.N;
    if (!okShape || out.dtype !== 'f32') throw new GpuError(`${desc}: out ${shp(out)} (${out.dtype}) must be f32 [${d.outShape.join(', ')}]`);
  } else {
    out = gpu.empty(d.outShape, 'f32', 'matmul_out');
  }
  const splits = opts.variant ? 0 : splitKCount(gpu, d, opts);
  if (splits > 1) {
    splitK(gpu, a, b, out, d, opts, splits);
    return out;
  }
  record(gpu, a, b, out, d, opts, { ldc: d.N, cOff: 0, sC: d.M * d.N, biasOff: 0, biasN: d.N }, 'matmul');
  return out;
}

/** Rows per segment tile of matmulSegmented (a segment boundary must fall on a multiple of it). */
export const SEG_TILE = 8;

export interface SegmentedOptions {
  /** b stored [S, N, K] and used transposed (x·Wᵀ per segment). */
  transB?: boolean;
  /** [N], added to every row. */
  bias?: Tensor;
  accumulate?: boolean;
  alpha?: number;
  out?: Tensor;
  /** Force a variant (tests): naive, coop8x1 or coopskinny. */
  variant?: string;
  /**
   * Rows per segment entry: 8 (default; seg holds one entry per 8-row tile) or 1 (one per row, e.g.
   * decode steps where each row is a sequence with its own adapter; naive kernel).
   */
  rowsPerSeg?: 8 | 1;
}

/**
 * Segmented matmul (Punica/S-LoRA's segmented gather): C[M, N] (+)= alpha·A[M, K]·op(B[s]) where row
 * tile t (rows 8t … 8t+7) uses s = seg[t] of the stacked B [S, K, N] (transB: [S, N, K]). Rows of one
 * segment (e.g. one student's rows of a joint batch, each starting at a multiple of 8) share a matrix.
 * seg: u32 [ceil(M / 8)], values < S (unchecked on the GPU; a value ≥ S reads out of range, which
 * WebGPU clamps).
 */
export function matmulSegmented(gpu: Gpu, a: Tensor, b: Tensor, seg: Tensor, opts: SegmentedOptions = {}): Tensor {
  const kernel = 'matmulSegmented';
  const transB = !!opts.transB;
  const desc = `${kernel}: A ${shp(a)} · B ${shp(b)}${transB ? 'ᵀ' : ''}`;
  if (a.dtype !== 'f32' || b.dtype !== 'f32') throw new GpuError(`${desc}: operands must be f32`);
  if (a.shape.length !== 2 || b.shape.length !== 3) throw new GpuError(`${desc}: A must be [M, K] and B [segments, …]`);
  const [M, K] = a.shape;
  const [, br, bc] = b.shape;
  const Kb = transB ? bc : br;
  const N = transB ? br : bc;
  if (K !== Kb) throw new GpuError(`${desc}: inner dimensions differ (${K} vs ${Kb})`);
  const perRow = opts.rowsPerSeg === 1;
  const tile = perRow ? 1 : SEG_TILE;
  if (seg.dtype !== 'u32' || seg.size !== cdiv(M, tile)) throw new GpuError(`${desc}: seg must be u32 [${cdiv(M, tile)}] (one per ${tile}-row tile), got ${seg.dtype} ${shp(seg)}`);
  if (opts.accumulate && !opts.out) throw new GpuError(`${desc}: accumulate requires out`);
  let out = opts.out;
  if (out) {
    if (out.size !== M * N || out.dtype !== 'f32') throw new GpuError(`${desc}: out ${shp(out)} must be f32 [${M}, ${N}]`);
  } else out = gpu.empty([M, N], 'f32', 'matmul_seg_out');
  const sub = llvmpipeSubgroupWidth(gpu);
  const variant = opts.variant ?? (perRow ? 'naive' : gpu.info.isSoftware && sub === 8 ? (N <= 16 ? 'coopskinny' : 'coop8x1') : 'naive');
  if (!SEG_VARIANTS.includes(variant) || (perRow && variant !== 'naive')) throw new GpuError(`${desc}: variant ${variant} has no segmented form${perRow ? ' per row (naive only)' : ''}`);
  const cfg0 = { transA: false, transB };
  const p: MatmulParams = { ...planParams(variant, cfg0, M, N, K), seg: true, segRow: perRow };
  if ((p.kind === 'coop' || p.kind === 'coopskinny') && sub !== p.wg) {
    throw new GpuError(`${desc}: variant ${variant} needs llvmpipe with subgroups of ${p.wg} lanes (adapter: ${gpu.info.adapterInfo.description})`);
  }
  const plan = makePlan(variant, cfg0, M, N, K, 1);
  const u = {
    M, N, K, batch: 1, sA: 0, sB: K * N, sC: M * N, ldc: N, cOff: 0, sBias: 0, biasOff: 0,
    alpha: opts.alpha ?? 1, flags: (opts.bias ? 1 : 0) | (opts.accumulate ? 2 : 0),
  };
  if (opts.bias && (opts.bias.dtype !== 'f32' || opts.bias.size !== N)) throw new GpuError(`${desc}: bias ${shp(opts.bias)} must be f32 [${N}]`);
  gpu.run(matmulKernel.program(p), { A: a, B: b, C: out, Bias: opts.bias ?? dummyBias(gpu), Seg: seg }, plan.workgroups, u);
  return out;
}

/** Float64 reference of matmulSegmented: a [M, K], b [S, K, N] (transB: [S, N, K]), seg per tile of rowsPerSeg rows. */
export function matmulSegmentedRef(a: ArrayLike<number>, b: ArrayLike<number>, seg: ArrayLike<number>, M: number, N: number, K: number, transB = false, rowsPerSeg = SEG_TILE): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    const ob = seg[Math.floor(m / rowsPerSeg)] * K * N;
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[m * K + k] * b[ob + (transB ? n * K + k : k * N + n)];
      out[m * N + n] = s;
    }
  }
  return out;
}

/**
 * Split-K for Aᵀ·B with a long K and a small output (weight gradients: dW = dyᵀ·x over thousands of
 * tokens, LoRA's dA/dB): the K range is cut into S slices computed as one batched matmul into
 * [S, M, N] partials, then summed by one reduction (plus alpha, bias, accumulate). Both operands are
 * K-major, so slices are plain views (slice length a multiple of 64 rows keeps offsets aligned).
 * Software adapters only: there a rowcast grid of a few workgroups leaves a CPU thread idle for the
 * whole reduction over K. Returns S, or 0 to use the plain kernel.
 */
function splitKCount(gpu: Gpu, d: Dims, opts: MatmulOptions): number {
  if (!gpu.info.isSoftware || !opts.transA || opts.transB || d.batch !== 1 || d.K < 1024) return 0;
  const workgroups = cdiv(d.M, 8) * cdiv(d.N, 64);
  if (workgroups >= 64) return 0;
  const S = Math.min(16, Math.floor(d.K / 256), Math.max(2, Math.floor(128 / workgroups)));
  return S >= 2 ? S : 0;
}

const splitKReduceKernel = defineKernel({
  name: 'matmul_splitk_reduce',
  bindings: [['P', 'f32', 'read'], ['C', 'f32', 'read_write'], ['Bias', 'f32', 'read']],
  uniforms: { MN: 'u32', N: 'u32', S: 'u32', flags: 'u32', nx: 'u32', alpha: 'f32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * u.nx * 64u;
  if (i >= u.MN) { return; }
  var s = 0.0;
  for (var j = 0u; j < u.S; j++) { s += P[j * u.MN + i]; }
  var r = u.alpha * s;
  if ((u.flags & 1u) != 0u) { r += Bias[i % u.N]; }
  if ((u.flags & 2u) != 0u) { r += C[i]; }
  C[i] = r;
}`,
});

function splitK(gpu: Gpu, a: Tensor, b: Tensor, out: Tensor, d: Dims, opts: MatmulOptions, S: number): void {
  const { M, N, K } = d;
  const Kc = Math.floor(K / S / 64) * 64;
  const Ks = Kc * S;
  const part = matmul(gpu, a.view([S, Kc, M]), b.view([S, Kc, N]), { transA: true, variant: chooseVariant(true, M, N, S, false, llvmpipeSubgroupWidth(gpu)) });
  const MN = M * N;
  const wgs = cdiv(MN, 64);
  const nx = Math.min(wgs, 65535);
  const u = { MN, N, S, flags: (opts.bias ? 1 : 0) | (opts.accumulate ? 2 : 0), nx, alpha: opts.alpha ?? 1 };
  splitKReduceKernel.run(gpu, {}, { P: part, C: out, Bias: opts.bias ?? dummyBias(gpu) }, [nx, cdiv(wgs, nx)], u);
  part.dispose();
  if (Ks < K) {
    // The remaining rows of K (fewer than S·64): one plain accumulate.
    const R = K - Ks;
    const rest = { ...d, K: R };
    record(gpu, a.view([R, M], Ks * M), b.view([R, N], Ks * N), out, rest, { ...opts, bias: undefined, accumulate: true }, { ldc: N, cOff: 0, sC: MN, biasOff: 0, biasN: N }, 'matmul');
  }
}

/**
 * One chunk of x·Wᵀ for a row-chunked W [N, K]: x [M, K] · W_cᵀ → [M, rows_c] (opts.out, when given,
 * must be [M, rows_c]; opts.bias, when given, is this chunk's [rows_c] slice).
 */
export function matmulChunk(gpu: Gpu, x: Tensor, w: ChunkedMatrix, chunk: number, opts: Omit<MatmulOptions, 'transB' | 'transA'> = {}): Tensor {
  if (!Number.isInteger(chunk) || chunk < 0 || chunk >= w.chunks.length) {
    throw new GpuError(`matmulChunk: chunk ${chunk} out of range (matrix has ${w.chunks.length} chunks)`);
  }
  if (x.shape.length !== 2) throw new GpuError(`matmulChunk: x ${shp(x)} must be 2-D [M, ${w.cols}]`);
  return matmul(gpu, x, w.chunks[chunk], { ...opts, transB: true });
}

/**
 * x [M, K] · Wᵀ for a row-chunked W [N, K] into one out [M, N] (one dispatch per chunk, each writing
 * its column range). Only possible when out fits the binding limit; otherwise loop matmulChunk.
 * bias, when given, is the full [N].
 */
export function matmulChunked(gpu: Gpu, x: Tensor, w: ChunkedMatrix, opts: Omit<MatmulOptions, 'transB' | 'transA'> = {}): Tensor {
  const M = x.shape[0];
  const desc = `matmulChunked: x ${shp(x)} · W [${w.rows}, ${w.cols}]ᵀ`;
  if (x.shape.length !== 2 || x.shape[1] !== w.cols) throw new GpuError(`${desc}: x must be [M, ${w.cols}]`);
  if (M * w.rows * 4 > gpu.limits.maxStorageBufferBindingSize) {
    throw new GpuError(`${desc}: output [${M}, ${w.rows}] exceeds the binding limit; use matmulChunk per chunk`);
  }
  if (opts.accumulate && !opts.out) throw new GpuError(`${desc}: accumulate requires out`);
  if (opts.bias && (opts.bias.size !== w.rows || opts.bias.dtype !== 'f32')) throw new GpuError(`${desc}: bias ${shp(opts.bias)} must be [${w.rows}]`);
  let out = opts.out;
  if (out) {
    if (out.size !== M * w.rows || out.dtype !== 'f32') throw new GpuError(`${desc}: out ${shp(out)} must be f32 [${M}, ${w.rows}]`);
  } else out = gpu.empty([M, w.rows], 'f32', 'matmul_out');
  for (let c = 0; c < w.chunks.length; c++) {
    const wc = w.chunks[c];
    const d = resolveDims(x, wc, { transB: true }, 'matmulChunked');
    const r0 = c * w.rowsPerChunk;
    const chunkOpts: MatmulOptions = { ...opts, transB: true, bias: opts.bias?.reshape([w.rows]) };
    record(gpu, x, wc, out, d, chunkOpts, { ldc: w.rows, cOff: r0, sC: 0, biasOff: r0, biasN: w.rows }, 'matmulChunked');
  }
  return out;
}

// ------------------------------------------------------------------------------------------ reference

/**
 * Float64 reference. a holds batchA matrices (batchA = a.length / (M·K), 1 or batch), b holds batchB
 * (opts.batchB, default b.length / (K·N)). bias: [N], or [batch, N] with biasPerBatch. Returns
 * [batch, M, N].
 */
export function matmulRef(
  a: Float64Array,
  b: Float64Array,
  M: number,
  N: number,
  K: number,
  opts: { transA?: boolean; transB?: boolean; batch?: number; batchB?: number; bias?: Float64Array; biasPerBatch?: boolean } = {},
): Float64Array {
  const batch = opts.batch ?? 1;
  const batchA = a.length / (M * K);
  const batchB = opts.batchB ?? b.length / (K * N);
  if (!(batchA === 1 || batchA === batch) || !(batchB === 1 || batchB === batch)) {
    throw new Error(`matmulRef: batch sizes A ${batchA}, B ${batchB} do not fit batch ${batch}`);
  }
  const out = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const oa = batchA === 1 ? 0 : z * M * K;
    const ob = batchB === 1 ? 0 : z * K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = opts.transA ? a[oa + k * M + m] : a[oa + m * K + k];
          const bv = opts.transB ? b[ob + n * K + k] : b[ob + k * N + n];
          s += av * bv;
        }
        if (opts.bias) s += opts.bias[(opts.biasPerBatch ? z * N : 0) + n];
        out[z * M * N + m * N + n] = s;
      }
    }
  }
  return out;
}
