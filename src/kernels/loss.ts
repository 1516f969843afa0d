// Losses over (possibly huge) vocabularies: softmax cross-entropy with ignore-index, KL distillation
// against full teacher logits or stored teacher top-k log-probs (optionally restricted to a token
// set), and log-softmax top-k extraction. Float64 CPU references (`...Ref`) live at the bottom.
//
// Large vocabularies (Qwen2.5: 151,936 × 896) never materialise [M, vocab]: logits come from the LM
// head W (a ChunkedMatrix split by vocab rows) one chunk at a time, and tokens are processed in row
// blocks when [rows, rows_c] would exceed the binding limit / `maxLogitsBytes`.
//   pass 1 (forward):  chunk logits → online (max, Σexp) per row + the logits at the target ids
//   finalize:          one workgroup turns the row states into per-row losses, their weighted sum
//                      and the loss, plus per-row gradient coefficients (no readback, no await)
//   pass 2 (backward): recompute chunk logits (or reuse pass 1's, kept when all of them fit 64 MiB),
//                      dlogits = coefA·softmax − coefB·onehot(targets) in place, dx += dlogits·W_c,
//                      dW_c += dlogitsᵀ·x
// Cross-entropy is the sparse-target case with one target of probability 1 (a one-hot teacher), so
// CE and top-k KL share the kernels.
//
// Normalisation: loss = Σ_i w_i·loss_i / N, where w_i is the row weight (CE: 1 for labels ≥ 0, 0 for
// ignored labels (-100 or any negative); KL: the optional per-token mask/weight, default 1) and
// N = Σ_i w_i ('mean', HF semantics) or a number given by the caller (gradient accumulation over
// micro-batches normalised by the global token count), or 1 ('sum'). N = 0 (all rows masked) gives
// loss 0 and zero gradients, never NaN. `result` holds [loss, Σ w_i·loss_i, Σ w_i, N].

import { defineKernel, product, type BindingDecl } from '../gpu/kernel.ts';
import { cdiv, ChunkedMatrix, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { check, MAX_WG_PER_DIM as MAX_ROWS_PER_DIM, NEG_WGSL as NEG, ORDER_KEY_WGSL, rowGrid, shapeStr as shp } from './common.ts';
import { copyRows, gatherRows, scatterAddRows } from './elementwise.ts';
import { matmul, matmulChunk } from './matmul.ts';

/** Threads per row-reduction workgroup (one workgroup per row). */
const RW = 64;
/** Threads of the single-workgroup reductions (normaliser, finalize). */
const FW = 256;

export type Normalizer = number | 'mean' | 'sum';

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/** Target ids: u32 ids are bound as array<i32> (ids < 2^31; 0xFFFFFFFF reads as -1 = none). */
const TGT: BindingDecl = ['tgt', 'i32', 'read', ['i32', 'u32']];
const SET_MASK: BindingDecl = ['setMask', 'u32', 'read'];
const BOOL = [false, true] as const;

/** Tree reduction of (max, Σexp) pairs held in shM/shS over RW threads (uniform control flow). */
const MERGE_TREE = /* wgsl */ `
  for (var st = ${RW / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) {
      let m1 = shM[lid]; let m2 = shM[lid + st];
      let mm = max(m1, m2);
      shS[lid] = shS[lid] * exp(m1 - mm) + shS[lid + st] * exp(m2 - mm);
      shM[lid] = mm;
    }
    workgroupBarrier();
  }`;

/** Sum tree over FW threads of `sh`. */
const SUM_TREE = /* wgsl */ `
  for (var st = ${FW / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) { sh[lid] = sh[lid] + sh[lid + st]; }
    workgroupBarrier();
  }`;

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

type WeightMode = 'labels' | 'mask' | 'none';

/** Row weights w_i and [0, 0, Σw, N] into result (single workgroup). */
const weightsKernel = defineKernel({
  name: 'loss_weights',
  bindings: ({ mode }: { mode: WeightMode }) => [
    ...(mode === 'labels' ? [['labels', 'i32', 'read'] as const] : []),
    ...(mode === 'mask' ? [['mask', 'f32', 'read'] as const] : []),
    ['rowW', 'f32', 'read_write'],
    ['result', 'f32', 'read_write'],
  ],
  uniforms: { M: 'u32', k: 'u32', normalizer: 'f32' },
  key: ({ mode }) => mode,
  space: () => product({ mode: ['labels', 'mask', 'none'] as const }),
  body: ({ mode }) => {
    const w = mode === 'labels' ? 'select(0.0, 1.0, labels[r * u.k] >= 0)' : mode === 'mask' ? 'mask[r]' : '1.0';
    return /* wgsl */ `
var<workgroup> sh: array<f32, ${FW}>;
@compute @workgroup_size(${FW})
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var r = lid; r < u.M; r += ${FW}u) { let w = ${w}; rowW[r] = w; acc += w; }
  sh[lid] = acc;
  workgroupBarrier();
  ${SUM_TREE}
  if (lid == 0u) {
    result[0] = 0.0; result[1] = 0.0; result[2] = sh[0];
    result[3] = select(sh[0], u.normalizer, u.normalizer > 0.0);
  }
}`;
  },
});

/**
 * Per chunk block: online (max, Σexp) per row over the block's columns (optionally only columns in
 * the token set), merged into state [M, 2]; and the logits at the target ids that fall in the block.
 */
const statsKernel = defineKernel({
  name: 'loss_stats',
  bindings: ({ gather, useSet }: { gather: boolean; useSet: boolean }) => [
    ['logits', 'f32', 'read'],
    ['state', 'f32', 'read_write'],
    ...(gather ? [TGT, ['gathered', 'f32', 'read_write'] as const] : []),
    ...(useSet ? [SET_MASK] : []),
  ],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', k: 'u32', first: 'u32' },
  key: ({ gather, useSet }) => `k${gather ? 'n' : '0'}${useSet ? '_set' : ''}`,
  space: () => product({ gather: BOOL, useSet: BOOL }),
  body: ({ gather, useSet }) => /* wgsl */ `
var<workgroup> shM: array<f32, ${RW}>;
var<workgroup> shS: array<f32, ${RW}>;
@compute @workgroup_size(${RW})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * ${MAX_ROWS_PER_DIM}u;
  if (r >= u.rows) { return; }
  let g = u.rowStart + r;
  let base = r * u.cols;
  var m = ${NEG};
  var s = 0.0;
  for (var c = lid; c < u.cols; c += ${RW}u) {
    ${useSet ? 'if (setMask[u.colStart + c] == 0u) { continue; }' : ''}
    let z = logits[base + c];
    if (z > m) { s = s * exp(m - z) + 1.0; m = z; } else { s += exp(z - m); }
  }
  shM[lid] = m; shS[lid] = s;
  workgroupBarrier();
  ${MERGE_TREE}
  if (lid == 0u) {
    var mm = shM[0]; var ss = shS[0];
    if (u.first == 0u) {
      let m0 = state[2u * g]; let s0 = state[2u * g + 1u];
      let mx = max(m0, mm);
      ss = s0 * exp(m0 - mx) + ss * exp(mm - mx);
      mm = mx;
    }
    state[2u * g] = mm; state[2u * g + 1u] = ss;
  }
  ${
    gather
      ? `for (var j = lid; j < u.k; j += ${RW}u) {
    let idx = tgt[g * u.k + j];
    if (idx >= 0 && u32(idx) >= u.colStart && u32(idx) < u.colStart + u.cols) {
      gathered[g * u.k + j] = logits[base + u32(idx) - u.colStart];
    }
  }`
      : ''
  }
}`,
});

/**
 * Sparse targets → per-row loss, lse, gradient coefficients and the reduced loss (one workgroup).
 * mode 0: one-hot target (CE); 1: teacher top-k renormalised over its valid entries; 2: raw top-k.
 */
const finalizeSparseKernel = defineKernel({
  name: 'loss_finalize_sparse',
  bindings: ({ withLogp, useSet }: { withLogp: boolean; useSet: boolean }) => [
    ['state', 'f32', 'read'],
    ['gathered', 'f32', 'read'],
    TGT,
    ['rowW', 'f32', 'read'],
    ...(withLogp ? [['logp', 'f32', 'read'] as const] : []),
    ...(useSet ? [SET_MASK] : []),
    ['lse', 'f32', 'read_write'],
    ['coefA', 'f32', 'read_write'],
    ['coefB', 'f32', 'read_write'],
    ['result', 'f32', 'read_write'],
  ],
  uniforms: { M: 'u32', k: 'u32', mode: 'u32' },
  key: ({ withLogp, useSet }) => `${withLogp ? 'topk' : 'ce'}${useSet ? '_set' : ''}`,
  space: () => product({ withLogp: BOOL, useSet: BOOL }),
  body: ({ withLogp, useSet }) => {
    const valid = (j: string) => `(tgt[o + ${j}] >= 0 ${useSet ? `&& setMask[u32(tgt[o + ${j}])] != 0u` : ''})`;
    return /* wgsl */ `
var<workgroup> sh: array<f32, ${FW}>;
@compute @workgroup_size(${FW})
fn main(@builtin(local_invocation_index) lid: u32) {
  let N = result[3];
  var acc = 0.0;
  for (var g = lid; g < u.M; g += ${FW}u) {
    let l = state[2u * g] + log(state[2u * g + 1u]);
    lse[g] = l;
    let w = rowW[g];
    let scale = select(0.0, w / N, N > 0.0 && w != 0.0);
    let o = g * u.k;
    var loss = 0.0;
    var a = 0.0;
    ${
      withLogp
        ? `var lmax = ${NEG};
    var any = false;
    for (var j = 0u; j < u.k; j++) { if ${valid('j')} { lmax = max(lmax, logp[o + j]); any = true; } }
    var P = 0.0;
    for (var j = 0u; j < u.k; j++) { if ${valid('j')} { P += exp(logp[o + j] - lmax); } }
    let logP = lmax + log(P);
    for (var j = 0u; j < u.k; j++) {
      var cb = 0.0;
      if (any && ${valid('j')}) {
        let lp = select(logp[o + j], logp[o + j] - logP, u.mode == 1u);
        let p = exp(lp);
        loss += p * (lp - gathered[o + j] + l);
        cb = scale * p;
      }
      coefB[o + j] = cb;
    }
    if (any) { a = scale * select(exp(logP), 1.0, u.mode == 1u); }`
        : `var cb = 0.0;
    if ${valid('0u')} { loss = l - gathered[o]; cb = scale; a = scale; }
    coefB[o] = cb;`
    }
    coefA[g] = a;
    if (w != 0.0) { acc += w * loss; }
  }
  sh[lid] = acc;
  workgroupBarrier();
  ${SUM_TREE}
  if (lid == 0u) {
    result[1] = sh[0];
    result[0] = select(0.0, sh[0] / N, N > 0.0);
  }
}`;
  },
});

/**
 * A kernel that writes one block of dlogits: one workgroup per block row r (global row g = rowStart + r),
 * its lanes striding over the columns c (element i); `element` sets v, which starts at 0, where the row's
 * coefficient a is not 0. One workgroup per row rather than per 256 elements: on lavapipe the per-workgroup
 * cost dominated the [2752, 2932] tiny head's pass (about 2× the row-reduction stats pass over the same
 * logits).
 */
function dlogitsRowMain(element: string): string {
  return /* wgsl */ `
@compute @workgroup_size(${RW})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * ${MAX_ROWS_PER_DIM}u;
  if (r >= u.rows) { return; }
  let g = u.rowStart + r;
  let a = coefA[g];
  for (var c = lid; c < u.cols; c += ${RW}u) {
    let i = r * u.cols + c;
    var v = 0.0;
${element}
    d[i] = v;
  }
}`;
}

/**
 * dlogits for sparse targets over a block: coefA·exp(z − lse) (in-set columns only) minus, when
 * inlineTarget (k = 1), coefB at the target column. In place over the logits unless `outOfPlace`.
 */
const denseSparseKernel = defineKernel({
  name: 'loss_dlogits_sparse',
  bindings: ({ inlineTarget, useSet, outOfPlace }: { inlineTarget: boolean; useSet: boolean; outOfPlace: boolean }) => [
    ...(outOfPlace ? [['zin', 'f32', 'read'] as const, ['d', 'f32', 'read_write'] as const] : [['d', 'f32', 'read_write'] as const]),
    ['lse', 'f32', 'read'],
    ['coefA', 'f32', 'read'],
    ...(inlineTarget ? [TGT, ['coefB', 'f32', 'read'] as const] : []),
    ...(useSet ? [SET_MASK] : []),
  ],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32' },
  key: ({ inlineTarget, useSet, outOfPlace }) => `${inlineTarget ? 'inline' : ''}${useSet ? '_set' : ''}${outOfPlace ? '_oop' : ''}`,
  space: () => product({ inlineTarget: BOOL, useSet: BOOL, outOfPlace: BOOL }),
  body: ({ inlineTarget, useSet, outOfPlace }) =>
    dlogitsRowMain(/* wgsl */ `
    if (a != 0.0 ${useSet ? '&& setMask[u.colStart + c] != 0u' : ''}) { v = a * exp(${outOfPlace ? 'zin' : 'd'}[i] - lse[g]); }
    ${inlineTarget ? 'if (tgt[g] == i32(u.colStart + c)) { v -= coefB[g]; }' : ''}`),
});

/** Subtracts coefB at the target columns that fall in the block (top-k targets: distinct per row). */
const scatterTargets = defineKernel({
  name: 'loss_dlogits_scatter',
  bindings: [['d', 'f32', 'read_write'], TGT, ['coefB', 'f32', 'read']],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', k: 'u32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let j = gid.x;
  let r = wid.y + wid.z * ${MAX_ROWS_PER_DIM}u;
  if (j >= u.k || r >= u.rows) { return; }
  let o = (u.rowStart + r) * u.k + j;
  let idx = tgt[o];
  let cb = coefB[o];
  if (cb != 0.0 && idx >= 0 && u32(idx) >= u.colStart && u32(idx) < u.colStart + u.cols) {
    let i = r * u.cols + u32(idx) - u.colStart;
    d[i] = d[i] - cb;
  }
}`,
});

/**
 * Dense teacher: per block, online student (m, s), teacher (mt, st) and A = Σ e^{t−mt}(t − z)
 * merged into state [M, 5].
 */
const stats2Kernel = defineKernel({
  name: 'kl_dense_stats',
  bindings: ({ useSet }: { useSet: boolean }) => [['zs', 'f32', 'read'], ['zt', 'f32', 'read'], ['state', 'f32', 'read_write'], ...(useSet ? [SET_MASK] : [])],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', first: 'u32' },
  key: ({ useSet }) => (useSet ? 'set' : ''),
  space: () => product({ useSet: BOOL }),
  body: ({ useSet }) => /* wgsl */ `
var<workgroup> shM: array<f32, ${RW}>;
var<workgroup> shS: array<f32, ${RW}>;
var<workgroup> shMt: array<f32, ${RW}>;
var<workgroup> shSt: array<f32, ${RW}>;
var<workgroup> shA: array<f32, ${RW}>;
@compute @workgroup_size(${RW})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * ${MAX_ROWS_PER_DIM}u;
  if (r >= u.rows) { return; }
  let g = u.rowStart + r;
  let base = r * u.cols;
  var m = ${NEG}; var s = 0.0; var mt = ${NEG}; var st = 0.0; var A = 0.0;
  for (var c = lid; c < u.cols; c += ${RW}u) {
    ${useSet ? 'if (setMask[u.colStart + c] == 0u) { continue; }' : ''}
    let z = zs[base + c];
    let t = zt[base + c];
    if (z > m) { s = s * exp(m - z) + 1.0; m = z; } else { s += exp(z - m); }
    if (t > mt) { let f = exp(mt - t); st = st * f + 1.0; A = A * f + (t - z); mt = t; }
    else { let e = exp(t - mt); st += e; A += e * (t - z); }
  }
  shM[lid] = m; shS[lid] = s; shMt[lid] = mt; shSt[lid] = st; shA[lid] = A;
  workgroupBarrier();
  for (var k = ${RW / 2}u; k > 0u; k = k >> 1u) {
    if (lid < k) {
      let m1 = shM[lid]; let m2 = shM[lid + k]; let mm = max(m1, m2);
      shS[lid] = shS[lid] * exp(m1 - mm) + shS[lid + k] * exp(m2 - mm); shM[lid] = mm;
      let t1 = shMt[lid]; let t2 = shMt[lid + k]; let tm = max(t1, t2);
      let f1 = exp(t1 - tm); let f2 = exp(t2 - tm);
      shSt[lid] = shSt[lid] * f1 + shSt[lid + k] * f2; shA[lid] = shA[lid] * f1 + shA[lid + k] * f2; shMt[lid] = tm;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    var mm = shM[0]; var ss = shS[0]; var tm = shMt[0]; var tt = shSt[0]; var aa = shA[0];
    if (u.first == 0u) {
      let o = 5u * g;
      let m0 = state[o]; let mx = max(m0, mm);
      ss = state[o + 1u] * exp(m0 - mx) + ss * exp(mm - mx); mm = mx;
      let t0 = state[o + 2u]; let tx = max(t0, tm);
      let f0 = exp(t0 - tx); let f1 = exp(tm - tx);
      tt = state[o + 3u] * f0 + tt * f1; aa = state[o + 4u] * f0 + aa * f1; tm = tx;
    }
    let o = 5u * g;
    state[o] = mm; state[o + 1u] = ss; state[o + 2u] = tm; state[o + 3u] = tt; state[o + 4u] = aa;
  }
}`,
});

/** Dense teacher: KL_i = A/st − lse_t + lse_s; lse pair per row [M, 2], coef = w/N; reduced loss. */
const finalizeDense = defineKernel({
  name: 'kl_dense_finalize',
  bindings: [['state', 'f32', 'read'], ['rowW', 'f32', 'read'], ['lse2', 'f32', 'read_write'], ['coefA', 'f32', 'read_write'], ['result', 'f32', 'read_write']],
  uniforms: { M: 'u32' },
  body: () => /* wgsl */ `
var<workgroup> sh: array<f32, ${FW}>;
@compute @workgroup_size(${FW})
fn main(@builtin(local_invocation_index) lid: u32) {
  let N = result[3];
  var acc = 0.0;
  for (var g = lid; g < u.M; g += ${FW}u) {
    let o = 5u * g;
    let ls = state[o] + log(state[o + 1u]);
    let lt = state[o + 2u] + log(state[o + 3u]);
    lse2[2u * g] = ls; lse2[2u * g + 1u] = lt;
    let w = rowW[g];
    coefA[g] = select(0.0, w / N, N > 0.0 && w != 0.0);
    if (w != 0.0) { acc += w * (state[o + 4u] / state[o + 3u] - lt + ls); }
  }
  sh[lid] = acc;
  workgroupBarrier();
  ${SUM_TREE}
  if (lid == 0u) { result[1] = sh[0]; result[0] = select(0.0, sh[0] / N, N > 0.0); }
}`,
});

/** Dense teacher dlogits: coef·(softmax(z) − softmax(t)), in place over zs unless outOfPlace. */
const dense2Kernel = defineKernel({
  name: 'kl_dense_dlogits',
  bindings: ({ useSet, outOfPlace }: { useSet: boolean; outOfPlace: boolean }) => [
    ...(outOfPlace ? [['zin', 'f32', 'read'] as const, ['d', 'f32', 'read_write'] as const] : [['d', 'f32', 'read_write'] as const]),
    ['zt', 'f32', 'read'],
    ['lse2', 'f32', 'read'],
    ['coefA', 'f32', 'read'],
    ...(useSet ? [SET_MASK] : []),
  ],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32' },
  key: ({ useSet, outOfPlace }) => `${useSet ? 'set' : ''}${outOfPlace ? '_oop' : ''}`,
  space: () => product({ useSet: BOOL, outOfPlace: BOOL }),
  body: ({ useSet, outOfPlace }) =>
    dlogitsRowMain(/* wgsl */ `
    if (a != 0.0 ${useSet ? '&& setMask[u.colStart + c] != 0u' : ''}) {
      v = a * (exp(${outOfPlace ? 'zin' : 'd'}[i] - lse2[2u * g]) - exp(zt[i] - lse2[2u * g + 1u]));
    }`),
});

/** setMask[v] = 1 for v in the token set (mask zeroed first). */
const buildSetMask = defineKernel({
  name: 'loss_set_mask',
  bindings: [['tokens', 'u32', 'read'], ['setMask', 'u32', 'read_write']],
  uniforms: { n: 'u32', V: 'u32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < u.n) { let t = tokens[gid.x]; if (t < u.V) { setMask[t] = 1u; } }
}`,
});

/** A [V] u32 membership mask from a token-id list (ids ≥ V are ignored). */
export function tokenSetMask(gpu: Gpu, tokenSet: Tensor, vocab: number): Tensor {
  check(tokenSet.dtype === 'u32', 'tokenSetMask', `token set must be u32, got ${tokenSet.dtype} ${shp(tokenSet)}`);
  const mask = gpu.zeros([vocab], 'u32', 'set_mask');
  buildSetMask.run(gpu, {}, { tokens: tokenSet, setMask: mask }, cdiv(tokenSet.size, 64), { n: tokenSet.size, V: vocab });
  return mask;
}

// ---------------------------------------------------------------------------------------------
// Logit sources and block iteration
// ---------------------------------------------------------------------------------------------

/** Logits given directly ([M, V] ≤ binding limit) or as x [M, H] · Wᵀ with W a vocab-chunked [V, H]. */
export type LogitSource = { logits: Tensor } | { x: Tensor; w: ChunkedMatrix };

interface Block {
  logits: Tensor;
  rowStart: number;
  rows: number;
  colStart: number;
  cols: number;
  chunk: number;
  /** Row block of x (chunked sources). */
  xBlock?: Tensor;
}

function sourceDims(kernel: string, src: LogitSource): { M: number; V: number } {
  if ('logits' in src) {
    check(src.logits.shape.length === 2 && src.logits.dtype === 'f32', kernel, `logits must be f32 [M, V], got ${src.logits.dtype} ${shp(src.logits)}`);
    return { M: src.logits.shape[0], V: src.logits.shape[1] };
  }
  const { x, w } = src;
  check(x.shape.length === 2 && x.dtype === 'f32', kernel, `x must be f32 [M, H], got ${x.dtype} ${shp(x)}`);
  check(x.shape[1] === w.cols, kernel, `x ${shp(x)} does not match W [${w.rows}, ${w.cols}] (hidden sizes differ)`);
  return { M: x.shape[0], V: w.rows };
}

/**
 * Rows per block so that [rows, rowsPerChunk] fits maxBytes (and the binding limit). Blocks start at
 * multiples of 64 rows, so views of x / dx / labels at the block start stay 256-byte aligned.
 */
function rowsPerBlock(gpu: Gpu, kernel: string, M: number, chunkRows: number, maxBytes?: number): number {
  const limit = Math.min(maxBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
  const fit = Math.floor(limit / (chunkRows * 4));
  if (fit >= M) return M;
  const rows = Math.floor(fit / 64) * 64;
  check(rows >= 64, kernel, `a [64, ${chunkRows}] logits block exceeds ${limit} B; use smaller vocab chunks`);
  return rows;
}

/**
 * Whether the backward pass can reuse the forward pass's logits instead of recomputing x·W_cᵀ: when all
 * `copies` × [M, V] logits of a chunked source fit KEEP_LOGITS_BYTES. That saves one LM-head matmul per
 * step (about 9% of a tiny student's step on lavapipe, bench/students.ts); a large head (0.5B at a
 * training batch: [1408, 151,936] = 856 MB) recomputes, as the module's opening describes.
 */
const KEEP_LOGITS_BYTES = 64 * 2 ** 20;
function keepsLogits(src: LogitSource, copies: number, opts: LossOptions): boolean {
  if ('logits' in src || !(opts.backward ?? true)) return false;
  return opts.keepLogits ?? src.x.shape[0] * src.w.rows * 4 * copies <= KEEP_LOGITS_BYTES;
}

/**
 * Block logits kept between the two passes: in the forward pass each block's logits are computed and kept
 * after use; after reuse(), the backward pass takes them back in the same order and frees each after use.
 * Without a KeptLogits (see take/release) every pass computes and frees its own.
 */
class KeptLogits {
  private readonly blocks: Tensor[] = [];
  private reusing = false;
  private next = 0;
  reuse(): void {
    this.reusing = true;
    this.next = 0;
  }
  take(compute: () => Tensor): Tensor {
    return this.reusing ? this.blocks[this.next++] : compute();
  }
  release(t: Tensor): void {
    if (this.reusing) t.dispose();
    else this.blocks.push(t);
  }
}

const take = (kept: KeptLogits | undefined, compute: () => Tensor) => (kept ? kept.take(compute) : compute());
const release = (kept: KeptLogits | undefined, t: Tensor) => (kept ? kept.release(t) : t.dispose());

/**
 * Calls fn for every (chunk, row block) of the source's logits, recording the chunk matmuls. The
 * block's logits tensor is disposed after fn (fn must only record work on it), unless `kept` stores it.
 */
function forEachBlock(gpu: Gpu, kernel: string, src: LogitSource, maxBytes: number | undefined, fn: (b: Block) => void, kept?: KeptLogits): void {
  if ('logits' in src) {
    const [M, V] = src.logits.shape;
    fn({ logits: src.logits, rowStart: 0, rows: M, colStart: 0, cols: V, chunk: 0 });
    return;
  }
  const { x, w } = src;
  const M = x.shape[0];
  const H = w.cols;
  const rpb = rowsPerBlock(gpu, kernel, M, Math.min(w.rowsPerChunk, w.rows), maxBytes);
  for (let c = 0; c < w.chunks.length; c++) {
    for (let r0 = 0; r0 < M; r0 += rpb) {
      const rows = Math.min(rpb, M - r0);
      const xBlock = rows === M ? x : x.view([rows, H], r0 * H);
      const logits = take(kept, () => matmulChunk(gpu, xBlock, w, c));
      fn({ logits, rowStart: r0, rows, colStart: c * w.rowsPerChunk, cols: w.chunkRows(c), chunk: c, xBlock });
      release(kept, logits);
    }
  }
}

/** Backward of the LM head for one block: dx_block += d·W_c, dW_c += dᵀ·x_block. */
function headBackward(gpu: Gpu, b: Block, w: ChunkedMatrix, dx: Tensor | undefined, dW: ChunkedMatrix | undefined): void {
  const H = w.cols;
  if (dx) {
    const dxBlock = b.rows === dx.shape[0] ? dx : dx.view([b.rows, H], b.rowStart * H);
    matmul(gpu, b.logits, w.chunks[b.chunk], { accumulate: true, out: dxBlock });
  }
  if (dW) matmul(gpu, b.logits, b.xBlock!, { transA: true, accumulate: true, out: dW.chunks[b.chunk] });
}

function zerosLike(gpu: Gpu, w: ChunkedMatrix, label: string): ChunkedMatrix {
  return new ChunkedMatrix(w.rows, w.cols, w.rowsPerChunk, w.chunks.map((c) => gpu.zeros(c.shape, 'f32', label)));
}

function normalizerValue(kernel: string, n: Normalizer | undefined): number {
  if (n === undefined || n === 'mean') return 0;
  if (n === 'sum') return 1;
  check(Number.isFinite(n) && n > 0, kernel, `normalizer must be a positive number, 'mean' or 'sum', got ${n}`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

export interface LossResult {
  /** [loss, Σ_i w_i·loss_i, Σ_i w_i (unmasked count for 0/1 weights), N (the normaliser used)]. */
  result: Tensor;
  /** Per-row log-sum-exp of the student logits (over the token set when restricted). */
  lse: Tensor;
  /** Gradient w.r.t. the logits (plain sources, when backward). */
  dlogits?: Tensor;
  /** Gradient w.r.t. x (chunked sources, when backward). */
  dx?: Tensor;
  /** Gradient w.r.t. W (chunked sources, when requested). */
  dW?: ChunkedMatrix;
  /** Disposes every tensor of the result. */
  dispose(): void;
}

export interface LossOptions {
  /** 'mean' (default): divide by Σ w_i; a number: divide by it (global token count); 'sum': by 1. */
  normalizer?: Normalizer;
  /** Also compute gradients (dlogits for plain logits, dx for chunked). Default true. */
  backward?: boolean;
  /** Chunked sources: also compute dW; pass a ChunkedMatrix to accumulate into it. */
  dW?: boolean | ChunkedMatrix;
  /** Largest logits block in bytes (defaults to the binding limit); smaller forces row blocks. */
  maxLogitsBytes?: number;
  /**
   * Chunked sources with backward: keep the forward pass's logits for the backward pass (true) or
   * recompute them (false). Default: keep when they fit KEEP_LOGITS_BYTES (64 MiB). Same results.
   */
  keepLogits?: boolean;
}

export interface SparseTargetOptions extends LossOptions {
  /** Per-token weight/mask f32 [M] (KL only; CE masks by label < 0). */
  mask?: Tensor;
  /** Restrict both distributions to this token set (u32 ids); see topKDistillation. */
  tokenSet?: Tensor;
  /** Top-k teacher: 'renormalize' (default) the stored probabilities over the valid entries, or 'raw'. */
  teacherNorm?: 'renormalize' | 'raw';
}

function makeResult(parts: Omit<LossResult, 'dispose'>, extra: Tensor[], callerDW?: unknown): LossResult {
  return {
    ...parts,
    dispose() {
      for (const t of [parts.result, parts.lse, parts.dlogits, parts.dx]) t?.dispose();
      // A dW the caller passed in to accumulate into is the caller's (e.g. a trainer's gradient buffer).
      if (parts.dW !== callerDW) parts.dW?.dispose();
      for (const t of extra) t.dispose();
    },
  };
}

/** Shared driver for CE (k = 1, no logp) and top-k KL. */
function sparseTargetLoss(
  gpu: Gpu,
  kernel: string,
  src: LogitSource,
  tgt: Tensor,
  k: number,
  logp: Tensor | undefined,
  opts: SparseTargetOptions,
): LossResult {
  const { M, V } = sourceDims(kernel, src);
  check(tgt.dtype === 'i32' || tgt.dtype === 'u32', kernel, `target ids must be i32/u32, got ${tgt.dtype} ${shp(tgt)}`);
  check(tgt.size === M * k, kernel, `target ids ${shp(tgt)} do not match ${M} rows × k=${k}`);
  if (logp) check(logp.dtype === 'f32' && logp.size === M * k, kernel, `teacher log-probs ${logp.dtype} ${shp(logp)} must be f32 [${M}, ${k}]`);
  if (opts.mask) check(opts.mask.dtype === 'f32' && opts.mask.size === M, kernel, `mask ${opts.mask.dtype} ${shp(opts.mask)} must be f32 [${M}]`);
  const backward = opts.backward ?? true;
  const chunked = !('logits' in src);
  const wantDW = chunked && backward && !!opts.dW;
  if (opts.dW instanceof ChunkedMatrix && chunked) {
    const w = (src as { w: ChunkedMatrix }).w;
    check(opts.dW.rows === w.rows && opts.dW.cols === w.cols && opts.dW.rowsPerChunk === w.rowsPerChunk, kernel, 'dW must be chunked like W');
  }
  const useSet = !!opts.tokenSet;
  const setMask = opts.tokenSet ? tokenSetMask(gpu, opts.tokenSet, V) : undefined;

  const rowW = gpu.empty([M], 'f32', 'loss_rowW');
  const result = gpu.empty([4], 'f32', 'loss_result');
  const mode: WeightMode = logp ? (opts.mask ? 'mask' : 'none') : 'labels';
  weightsKernel.run(
    gpu,
    { mode },
    { ...(mode === 'labels' ? { labels: tgt } : mode === 'mask' ? { mask: opts.mask! } : {}), rowW, result },
    1,
    { M, k, normalizer: normalizerValue(kernel, opts.normalizer) },
  );

  const state = gpu.empty([M, 2], 'f32', 'loss_state');
  const gathered = gpu.empty([M, k], 'f32', 'loss_gathered');
  const stats = statsKernel.program({ gather: true, useSet });
  const set = setMask ? { setMask } : {};
  const kept = keepsLogits(src, 1, opts) ? new KeptLogits() : undefined;
  // The first chunk initialises each row's state (chunk 0's row blocks cover every row once).
  forEachBlock(gpu, kernel, src, opts.maxLogitsBytes, (b) => {
    gpu.run(
      stats,
      { logits: b.logits, state, tgt, gathered, ...set },
      rowGrid(b.rows),
      { rows: b.rows, cols: b.cols, rowStart: b.rowStart, colStart: b.colStart, k, first: b.chunk === 0 ? 1 : 0 },
    );
  }, kept);
  kept?.reuse();

  const lse = gpu.empty([M], 'f32', 'loss_lse');
  const coefA = gpu.empty([M], 'f32', 'loss_coefA');
  const coefB = gpu.empty([M, k], 'f32', 'loss_coefB');
  finalizeSparseKernel.run(
    gpu,
    { withLogp: !!logp, useSet },
    { state, gathered, tgt, rowW, ...(logp ? { logp } : {}), ...set, lse, coefA, coefB, result },
    1,
    { M, k, mode: logp ? (opts.teacherNorm === 'raw' ? 2 : 1) : 0 },
  );

  let dlogits: Tensor | undefined;
  let dx: Tensor | undefined;
  let dW: ChunkedMatrix | undefined;
  if (backward) {
    const inline = k === 1;
    const w = chunked ? (src as { w: ChunkedMatrix }).w : undefined;
    if (chunked) {
      dx = gpu.zeros([M, w!.cols], 'f32', 'loss_dx');
      if (wantDW) dW = opts.dW instanceof ChunkedMatrix ? opts.dW : zerosLike(gpu, w!, 'loss_dW');
    } else dlogits = gpu.empty([M, V], 'f32', 'loss_dlogits');
    const dense = denseSparseKernel.program({ inlineTarget: inline, useSet, outOfPlace: !chunked });
    forEachBlock(gpu, kernel, src, opts.maxLogitsBytes, (b) => {
      const d = chunked ? b.logits : dlogits!;
      const u = { rows: b.rows, cols: b.cols, rowStart: b.rowStart, colStart: b.colStart };
      gpu.run(dense, { ...(chunked ? {} : { zin: b.logits }), d, lse, coefA, ...(inline ? { tgt, coefB } : {}), ...set }, rowGrid(b.rows), u);
      if (!inline) {
        scatterTargets.run(gpu, {}, { d, tgt, coefB }, [cdiv(k, 64), Math.min(b.rows, MAX_ROWS_PER_DIM), cdiv(b.rows, MAX_ROWS_PER_DIM)], { ...u, k });
      }
      if (chunked) headBackward(gpu, b, w!, dx, dW);
    }, kept);
  }
  for (const t of [rowW, state, gathered, coefA, coefB, setMask]) t?.dispose();
  return makeResult({ result, lse, dlogits, dx, dW }, [], opts.dW);
}

/**
 * Softmax cross-entropy over plain logits [M, V] (small vocabularies), labels i32 [M] with any
 * negative label (HF: -100) ignored. loss = Σ unmasked token losses / normalizer (default: the
 * number of unmasked tokens). Returns result [loss, sum, count, N], lse and dlogits [M, V].
 */
export function crossEntropy(gpu: Gpu, logits: Tensor, labels: Tensor, opts: LossOptions = {}): LossResult {
  check(labels.dtype === 'i32', 'crossEntropy', `labels must be i32, got ${labels.dtype} ${shp(labels)}`);
  return sparseTargetLoss(gpu, 'crossEntropy', { logits }, labels, 1, undefined, opts);
}

/**
 * Cross-entropy of x [M, H] · Wᵀ (W: the [vocab, H] LM head as a ChunkedMatrix) against labels i32
 * [M], never materialising [M, vocab]. Gradients: dx [M, H] (backward, default on) and dW (opts.dW).
 */
export function lmHeadCrossEntropy(gpu: Gpu, x: Tensor, w: ChunkedMatrix, labels: Tensor, opts: LossOptions = {}): LossResult {
  check(labels.dtype === 'i32', 'lmHeadCrossEntropy', `labels must be i32, got ${labels.dtype} ${shp(labels)}`);
  return sparseTargetLoss(gpu, 'lmHeadCrossEntropy', { x, w }, labels, 1, undefined, opts);
}

/**
 * KL(teacher‖student) per token against teacher top-k log-probs (indices u32/i32 [M, k], distinct
 * per row; logprobs f32 [M, k]), gradients w.r.t. the student logits (or x / W for chunked sources).
 *
 * Convention: the teacher distribution is the stored top-k probabilities renormalised to sum 1
 * ('renormalize', default; p̃_j = p_j / Σ_k p) or taken as stored ('raw'); the student's
 * log-probabilities are its log-softmax over the FULL vocabulary. Per token
 *   KL_i = Σ_j p̃_j (log p̃_j − log q_i(idx_j)),
 * which is ≥ 0 and 0 iff the student puts exactly p̃ on the k tokens (and nothing elsewhere).
 *
 * tokenSet (u32 ids): both distributions are renormalised over the set — teacher over its stored
 * entries that lie in the set, student log-softmax over the set's logits only (e.g. "KL restricted
 * to number tokens"). Rows with no valid teacher entry contribute 0 (but still count in 'mean').
 * mask: per-token weight f32 [M]; loss = Σ w_i KL_i / Σ w_i by default.
 */
export function topKDistillation(gpu: Gpu, student: LogitSource, indices: Tensor, logprobs: Tensor, opts: SparseTargetOptions = {}): LossResult {
  check(indices.shape.length === 2, 'topKDistillation', `indices must be [M, k], got ${shp(indices)}`);
  return sparseTargetLoss(gpu, 'topKDistillation', student, indices, indices.shape[1], logprobs, opts);
}

export interface DenseKLOptions extends LossOptions {
  mask?: Tensor;
  /** Restrict both softmaxes to this token set (u32 ids). */
  tokenSet?: Tensor;
  /**
   * The same set as a TokenSubset (chunked sources): the logits are computed for the set's rows of
   * the LM heads only ([M, |set|] instead of every vocabulary chunk), and dW is scattered back into
   * those rows. Same loss and gradients as `tokenSet`; replaces it when both are given.
   */
  tokenSubset?: TokenSubset;
}

/**
 * A token set as per-chunk row indices of a vocab-chunked LM head (ids sorted and distinct), for
 * KL over the set's rows only: gather(W) → [|set|, H]; scatterAdd(dWset, dW) adds the rows back.
 * Build once (uploads indices) and reuse for every step.
 */
export class TokenSubset {
  readonly ids: Uint32Array;
  /** Per chunk: the set's positions [p0, p1) in `ids` and the chunk-local row indices. */
  private readonly parts: { chunk: number; p0: number; p1: number; local: Tensor }[] = [];
  constructor(
    readonly gpu: Gpu,
    ids: ArrayLike<number>,
    readonly vocab: number,
    readonly rowsPerChunk: number,
  ) {
    const sorted = Uint32Array.from(new Set(Array.from(ids).filter((v) => v >= 0 && v < vocab))).sort();
    check(sorted.length > 0, 'TokenSubset', 'the token set has no id inside the vocabulary');
    this.ids = sorted;
    let p = 0;
    while (p < sorted.length) {
      const chunk = Math.floor(sorted[p] / rowsPerChunk);
      let q = p;
      while (q < sorted.length && Math.floor(sorted[q] / rowsPerChunk) === chunk) q++;
      const local = sorted.slice(p, q).map((v) => v - chunk * rowsPerChunk);
      this.parts.push({ chunk, p0: p, p1: q, local: gpu.upload(local, [q - p], 'u32', 'token_subset') });
      p = q;
    }
  }
  get size(): number {
    return this.ids.length;
  }
  private checkW(w: ChunkedMatrix, kernel: string): void {
    check(w.rows === this.vocab && w.rowsPerChunk === this.rowsPerChunk, kernel, `W [${w.rows}, ${w.cols}] in chunks of ${w.rowsPerChunk} rows does not match the subset's vocabulary ${this.vocab} / ${this.rowsPerChunk}`);
  }
  /** W's rows of the set, [|set|, H] (a new tensor). */
  gather(w: ChunkedMatrix): Tensor {
    this.checkW(w, 'TokenSubset.gather');
    const out = this.gpu.empty([this.size, w.cols], 'f32', 'token_subset.w');
    for (const part of this.parts) {
      if (this.parts.length === 1) gatherRows(this.gpu, w.chunks[part.chunk], part.local, { out });
      else {
        const tmp = gatherRows(this.gpu, w.chunks[part.chunk], part.local);
        copyRows(this.gpu, tmp, out, 0, part.p0, part.p1 - part.p0);
        tmp.dispose();
      }
    }
    return out;
  }
  /** dW[set rows] += rows [|set|, H]. */
  scatterAdd(rows: Tensor, dW: ChunkedMatrix): void {
    this.checkW(dW, 'TokenSubset.scatterAdd');
    for (const part of this.parts) scatterAddRows(this.gpu, rows, part.local, dW.chunks[part.chunk], { srcRow0: part.p0 });
  }
  dispose(): void {
    for (const p of this.parts) p.local.dispose();
  }
}

/** klDistillation over a TokenSubset: plain [M, |set|] logits of both models, gradients mapped back. */
function klOnSubset(gpu: Gpu, student: { x: Tensor; w: ChunkedMatrix }, teacher: { x: Tensor; w: ChunkedMatrix }, sub: TokenSubset, opts: DenseKLOptions): LossResult {
  const kernel = 'klDistillation';
  const M = student.x.shape[0];
  check(M * sub.size * 4 <= gpu.limits.maxStorageBufferBindingSize, kernel, `[${M}, ${sub.size}] subset logits exceed the binding limit`);
  const ws = sub.gather(student.w);
  const wt = teacher.w === student.w ? ws : sub.gather(teacher.w);
  const zs = matmul(gpu, student.x, ws, { transB: true });
  const zt = matmul(gpu, teacher.x, wt, { transB: true });
  const backward = opts.backward ?? true;
  const r = klDistillation(gpu, { logits: zs }, { logits: zt }, { mask: opts.mask, normalizer: opts.normalizer, backward });
  let dx: Tensor | undefined;
  let dW: ChunkedMatrix | undefined;
  if (backward) {
    dx = matmul(gpu, r.dlogits!, ws);
    if (opts.dW) {
      dW = opts.dW instanceof ChunkedMatrix ? opts.dW : zerosLike(gpu, student.w, 'kl_dW');
      const dWs = matmul(gpu, r.dlogits!, student.x, { transA: true });
      sub.scatterAdd(dWs, dW);
      dWs.dispose();
    }
  }
  r.dlogits?.dispose();
  for (const t of [zs, zt, ws]) t.dispose();
  if (wt !== ws) wt.dispose();
  return makeResult({ result: r.result, lse: r.lse, dx, dW }, [], opts.dW);
}

/**
 * KL(teacher‖student) per token against full teacher logits; both from plain [M, V] tensors or
 * both chunked (x·Wᵀ; teacher and student W must have the same vocab chunking). Gradients are
 * w.r.t. the student only.
 */
export function klDistillation(gpu: Gpu, student: LogitSource, teacher: LogitSource, opts: DenseKLOptions = {}): LossResult {
  const kernel = 'klDistillation';
  const { M, V } = sourceDims(kernel, student);
  const t = sourceDims(kernel, teacher);
  check(t.M === M && t.V === V, kernel, `teacher (${t.M} × ${t.V}) and student (${M} × ${V}) shapes differ`);
  const chunked = !('logits' in student);
  check(chunked === !('logits' in teacher), kernel, 'student and teacher must both be plain logits or both chunked');
  if (opts.mask) check(opts.mask.dtype === 'f32' && opts.mask.size === M, kernel, `mask ${opts.mask.dtype} ${shp(opts.mask)} must be f32 [${M}]`);
  if (opts.tokenSubset && chunked) return klOnSubset(gpu, student as { x: Tensor; w: ChunkedMatrix }, teacher as { x: Tensor; w: ChunkedMatrix }, opts.tokenSubset, opts);
  if (chunked) {
    const ws = (student as { w: ChunkedMatrix }).w;
    const wt = (teacher as { w: ChunkedMatrix }).w;
    check(ws.rowsPerChunk === wt.rowsPerChunk, kernel, `teacher W chunks of ${wt.rowsPerChunk} rows differ from student's ${ws.rowsPerChunk} (upload with the same maxChunkBytes)`);
  }
  if (opts.mask) check(opts.mask.dtype === 'f32' && opts.mask.size === M, kernel, `mask ${opts.mask.dtype} ${shp(opts.mask)} must be f32 [${M}]`);
  const backward = opts.backward ?? true;
  const useSet = !!opts.tokenSet;
  const setMask = opts.tokenSet ? tokenSetMask(gpu, opts.tokenSet, V) : undefined;

  const rowW = gpu.empty([M], 'f32', 'kl_rowW');
  const result = gpu.empty([4], 'f32', 'kl_result');
  weightsKernel.run(gpu, { mode: opts.mask ? 'mask' : 'none' }, { ...(opts.mask ? { mask: opts.mask } : {}), rowW, result }, 1, { M, k: 1, normalizer: normalizerValue(kernel, opts.normalizer) });

  // Teacher and student blocks are produced in the same order (same chunking and row blocks); with
  // `kept`, the forward pass keeps both models' block logits for the backward pass.
  const kept = keepsLogits(student, 2, opts) ? { student: new KeptLogits(), teacher: new KeptLogits() } : undefined;
  const pairBlocks = (fn: (s: Block, tb: Block) => void) => {
    if (!chunked) {
      forEachBlock(gpu, kernel, student, undefined, (s) => forEachBlock(gpu, kernel, teacher, undefined, (tb) => fn(s, tb)));
      return;
    }
    const wt = (teacher as { x: Tensor; w: ChunkedMatrix }).w;
    const xt = (teacher as { x: Tensor; w: ChunkedMatrix }).x;
    forEachBlock(gpu, kernel, student, opts.maxLogitsBytes, (s) => {
      const xtBlock = s.rows === M ? xt : xt.view([s.rows, wt.cols], s.rowStart * wt.cols);
      const tl = take(kept?.teacher, () => matmulChunk(gpu, xtBlock, wt, s.chunk));
      fn(s, { ...s, logits: tl });
      release(kept?.teacher, tl);
    }, kept?.student);
    kept?.student.reuse();
    kept?.teacher.reuse();
  };

  const state = gpu.empty([M, 5], 'f32', 'kl_state');
  const stats = stats2Kernel.program({ useSet });
  const set = setMask ? { setMask } : {};
  pairBlocks((s, tb) =>
    gpu.run(stats, { zs: s.logits, zt: tb.logits, state, ...set }, rowGrid(s.rows), { rows: s.rows, cols: s.cols, rowStart: s.rowStart, colStart: s.colStart, first: s.chunk === 0 ? 1 : 0 }),
  );
  const lse2 = gpu.empty([M, 2], 'f32', 'kl_lse2');
  const coefA = gpu.empty([M], 'f32', 'kl_coef');
  finalizeDense.run(gpu, {}, { state, rowW, lse2, coefA, result }, 1, { M });

  let dlogits: Tensor | undefined;
  let dx: Tensor | undefined;
  let dW: ChunkedMatrix | undefined;
  if (backward) {
    const w = chunked ? (student as { w: ChunkedMatrix }).w : undefined;
    if (chunked) {
      dx = gpu.zeros([M, w!.cols], 'f32', 'kl_dx');
      if (opts.dW) dW = opts.dW instanceof ChunkedMatrix ? opts.dW : zerosLike(gpu, w!, 'kl_dW');
    } else dlogits = gpu.empty([M, V], 'f32', 'kl_dlogits');
    const dense = dense2Kernel.program({ useSet, outOfPlace: !chunked });
    pairBlocks((s, tb) => {
      gpu.run(
        dense,
        { ...(chunked ? {} : { zin: s.logits }), d: chunked ? s.logits : dlogits!, zt: tb.logits, lse2, coefA, ...set },
        rowGrid(s.rows),
        { rows: s.rows, cols: s.cols, rowStart: s.rowStart, colStart: s.colStart },
      );
      if (chunked) headBackward(gpu, s, w!, dx, dW);
    });
  }
  // lse (student) is column 0 of lse2; return it as its own tensor for symmetry with the sparse path.
  const lse = gpu.empty([M], 'f32', 'kl_lse');
  copyColumn0.run(gpu, {}, { a: lse2, b: lse }, cdiv(M, 64), { M });
  for (const x of [rowW, state, lse2, coefA, setMask]) x?.dispose();
  return makeResult({ result, lse, dlogits, dx, dW }, [], opts.dW);
}

const copyColumn0 = defineKernel({
  name: 'kl_lse_column',
  bindings: [['a', 'f32', 'read'], ['b', 'f32', 'read_write']],
  uniforms: { M: 'u32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) { if (gid.x < u.M) { b[gid.x] = a[2u * gid.x]; } }`,
});

// ---------------------------------------------------------------------------------------------
// Log-softmax top-k (storing teacher top-k)
// ---------------------------------------------------------------------------------------------

/**
 * Per block row: the block-local top-k (k ≤ 64) by (value desc, index asc), written as candidates
 * (key, global index) into cand [M, nBlocksPerRow, k]. Radix select of the k-th largest key (8
 * passes of 4 bits over the row), then a deterministic compaction over contiguous column ranges:
 * everything above the threshold, then threshold ties lowest index first.
 */
const topkBlockKernel = defineKernel({
  name: 'topk_block',
  bindings: ({ useSet }: { useSet: boolean }) => [['logits', 'f32', 'read'], ['cand', 'u32', 'read_write'], ...(useSet ? [SET_MASK] : [])],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', k: 'u32', slot: 'u32', slots: 'u32' },
  key: ({ useSet }) => (useSet ? 'set' : ''),
  space: () => product({ useSet: BOOL }),
  body: ({ useSet }) => {
    const inSet = useSet ? 'setMask[u.colStart + c] != 0u' : 'true';
    return /* wgsl */ `
${ORDER_KEY_WGSL}
var<workgroup> hist: array<u32, ${16 * RW}>;
var<workgroup> shared_prefix: u32;
var<workgroup> shared_need: u32;
var<workgroup> shared_eq: u32;
var<workgroup> cntGt: array<u32, ${RW}>;
var<workgroup> cntEq: array<u32, ${RW}>;
@compute @workgroup_size(${RW})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * ${MAX_ROWS_PER_DIM}u;
  if (r >= u.rows) { return; }
  let base = r * u.cols;
  // Radix select: find the key of the k-th largest element (need = rank still to find below prefix).
  if (lid == 0u) { shared_prefix = 0u; shared_need = u.k; }
  workgroupBarrier();
  for (var ps = 0u; ps < 8u; ps++) {
    let shift = 28u - 4u * ps;
    let prefix = shared_prefix;
    var h: array<u32, 16>;
    for (var i = 0u; i < 16u; i++) { h[i] = 0u; }
    for (var c = lid; c < u.cols; c += ${RW}u) {
      if (!(${inSet})) { continue; }
      let key = orderKey(logits[base + c]);
      // Same higher digits as the prefix (pass 0: all keys).
      if (ps == 0u || (key >> (shift + 4u)) == (prefix >> (shift + 4u))) { h[(key >> shift) & 15u] += 1u; }
    }
    for (var i = 0u; i < 16u; i++) { hist[i * ${RW}u + lid] = h[i]; }
    workgroupBarrier();
    if (lid < 16u) {
      var t = 0u;
      for (var j = 0u; j < ${RW}u; j++) { t += hist[lid * ${RW}u + j]; }
      hist[lid * ${RW}u] = t;
    }
    workgroupBarrier();
    if (lid == 0u) {
      var need = shared_need;
      var digit = 0u;
      var found = false;
      for (var d = 15; d >= 0; d--) {
        let cnt = hist[u32(d) * ${RW}u];
        if (!found) {
          if (cnt >= need) { digit = u32(d); found = true; } else { need -= cnt; }
        }
      }
      // Fewer than k candidates in total: the threshold falls to the smallest key (take them all).
      if (!found) { digit = 0u; need = 1u; }
      shared_prefix = prefix | (digit << shift);
      shared_need = need;
    }
    workgroupBarrier();
  }
  let tau = shared_prefix;
  // Compaction over contiguous column ranges (deterministic, index order).
  let span = (u.cols + ${RW - 1}u) / ${RW}u;
  let c0 = min(lid * span, u.cols);
  let c1 = min(c0 + span, u.cols);
  var gt = 0u; var eq = 0u;
  for (var c = c0; c < c1; c++) {
    if (!(${inSet})) { continue; }
    let key = orderKey(logits[base + c]);
    if (key > tau) { gt += 1u; } else if (key == tau) { eq += 1u; }
  }
  cntGt[lid] = gt; cntEq[lid] = eq;
  workgroupBarrier();
  if (lid == 0u) {
    var a = 0u; var e = 0u;
    for (var j = 0u; j < ${RW}u; j++) { let x = cntGt[j]; cntGt[j] = a; a += x; let y = cntEq[j]; cntEq[j] = e; e += y; }
    shared_need = a; // number strictly above tau: ties fill the slots after them
    shared_eq = e;
  }
  workgroupBarrier();
  let nGt = shared_need;
  var pg = cntGt[lid];
  var pe = nGt + cntEq[lid];
  let out = ((u.rowStart + r) * u.slots + u.slot) * u.k;
  for (var c = c0; c < c1; c++) {
    if (!(${inSet})) { continue; }
    let key = orderKey(logits[base + c]);
    if (key > tau) { cand[2u * (out + pg)] = key; cand[2u * (out + pg) + 1u] = u.colStart + c; pg += 1u; }
    else if (key == tau) {
      if (pe < u.k) { cand[2u * (out + pe)] = key; cand[2u * (out + pe) + 1u] = u.colStart + c; }
      pe += 1u;
    }
  }
  // Unfilled slots (fewer than k in-set columns in the block): key 0 sorts last, index marks "none".
  let filled = min(nGt + shared_eq, u.k);
  for (var j = filled + lid; j < u.k; j += ${RW}u) { cand[2u * (out + j)] = 0u; cand[2u * (out + j) + 1u] = 0xffffffffu; }
}
`;
  },
});

/** Per row (one thread): merge the per-block candidates into the sorted top-k with log-probs. */
const topkMerge = defineKernel({
  name: 'topk_merge',
  bindings: [['cand', 'u32', 'read'], ['state', 'f32', 'read'], ['indices', 'u32', 'read_write'], ['logprobs', 'f32', 'read_write']],
  uniforms: { M: 'u32', k: 'u32', slots: 'u32', negInfBits: 'u32' },
  body: () => /* wgsl */ `
fn keyValue(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let g = gid.x + gid.y * nw.x * 64u;
  if (g >= u.M) { return; }
  let lse = state[2u * g] + log(state[2u * g + 1u]);
  let n = u.slots * u.k;
  let base = g * n;
  // Repeatedly take the best candidate ordered after the previous pick ((key desc, index asc)).
  var pk = 0xffffffffu; var pi = 0u; var started = false;
  for (var j = 0u; j < u.k; j++) {
    var bk = 0u; var bi = 0xffffffffu; var have = false;
    for (var c = 0u; c < n; c++) {
      let key = cand[2u * (base + c)];
      let idx = cand[2u * (base + c) + 1u];
      if (idx == 0xffffffffu) { continue; }
      let after = !started || key < pk || (key == pk && idx > pi);
      let better = !have || key > bk || (key == bk && idx < bi);
      if (after && better) { bk = key; bi = idx; have = true; }
    }
    let o = g * u.k + j;
    if (have) {
      indices[o] = bi; logprobs[o] = keyValue(bk) - lse;
      pk = bk; pi = bi; started = true;
    } else {
      indices[o] = 0xffffffffu; logprobs[o] = bitcast<f32>(u.negInfBits);
    }
  }
}`,
});

export interface TopKOptions {
  /** Restrict to these token ids (u32); log-probs are renormalised over the set. */
  tokenSet?: Tensor;
  maxLogitsBytes?: number;
}

/**
 * Top-k (k ≤ 64) of log-softmax per row, sorted by probability (ties: lowest index first):
 * indices u32 [M, k], logprobs f32 [M, k] (over the full vocab, or over tokenSet when given). When
 * fewer than k tokens are available (small set), the missing entries are index 0xFFFFFFFF (-1 as
 * i32, i.e. "ignored" by topKDistillation) with log-prob -inf.
 */
export function logSoftmaxTopK(gpu: Gpu, src: LogitSource, k: number, opts: TopKOptions = {}): { indices: Tensor; logprobs: Tensor } {
  const kernel = 'logSoftmaxTopK';
  const { M, V } = sourceDims(kernel, src);
  check(Number.isInteger(k) && k >= 1 && k <= 64, kernel, `k must be an integer in [1, 64], got ${k}`);
  const useSet = !!opts.tokenSet;
  const setMask = opts.tokenSet ? tokenSetMask(gpu, opts.tokenSet, V) : undefined;
  const slots = 'logits' in src ? 1 : src.w.chunks.length;
  const state = gpu.empty([M, 2], 'f32', 'topk_state');
  const cand = gpu.empty([M, slots, k, 2], 'u32', 'topk_cand');
  const stats = statsKernel.program({ gather: false, useSet });
  const select = topkBlockKernel.program({ useSet });
  const set = setMask ? { setMask } : {};
  forEachBlock(gpu, kernel, src, opts.maxLogitsBytes, (b) => {
    const u = { rows: b.rows, cols: b.cols, rowStart: b.rowStart, colStart: b.colStart };
    gpu.run(stats, { logits: b.logits, state, ...set }, rowGrid(b.rows), { ...u, k: 0, first: b.chunk === 0 ? 1 : 0 });
    gpu.run(select, { logits: b.logits, cand, ...set }, rowGrid(b.rows), { ...u, k, slot: b.chunk, slots });
  });
  const indices = gpu.empty([M, k], 'u32', 'topk_indices');
  const logprobs = gpu.empty([M, k], 'f32', 'topk_logprobs');
  const groups = cdiv(M, 64);
  // negInfBits: -inf (WGSL has no inf literals).
  topkMerge.run(gpu, {}, { cand, state, indices, logprobs }, [Math.min(groups, MAX_ROWS_PER_DIM), cdiv(groups, MAX_ROWS_PER_DIM)], { M, k, slots, negInfBits: 0xff800000 });
  for (const t of [state, cand, setMask]) t?.dispose();
  return { indices, logprobs };
}

// ---------------------------------------------------------------------------------------------
// Float64 CPU references
// ---------------------------------------------------------------------------------------------

/** logits = x [M, H] · Wᵀ with W [V, H]. */
export function headLogitsRef(x: ArrayLike<number>, w: ArrayLike<number>, M: number, H: number, V: number): Float64Array {
  const out = new Float64Array(M * V);
  for (let i = 0; i < M; i++) {
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let h = 0; h < H; h++) s += x[i * H + h] * w[v * H + h];
      out[i * V + v] = s;
    }
  }
  return out;
}

/** dx = d [M, V] · W [V, H]; dW = dᵀ · x. */
export function headBackwardRef(d: ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, M: number, H: number, V: number): { dx: Float64Array; dW: Float64Array } {
  const dx = new Float64Array(M * H);
  const dW = new Float64Array(V * H);
  for (let i = 0; i < M; i++) {
    for (let v = 0; v < V; v++) {
      const g = d[i * V + v];
      if (g === 0) continue;
      for (let h = 0; h < H; h++) {
        dx[i * H + h] += g * w[v * H + h];
        dW[v * H + h] += g * x[i * H + h];
      }
    }
  }
  return { dx, dW };
}

function rowLse(z: ArrayLike<number>, off: number, V: number, allowed?: (v: number) => boolean): number {
  let m = -Infinity;
  for (let v = 0; v < V; v++) if (!allowed || allowed(v)) m = Math.max(m, z[off + v]);
  let s = 0;
  for (let v = 0; v < V; v++) if (!allowed || allowed(v)) s += Math.exp(z[off + v] - m);
  return m + Math.log(s);
}

/** Membership of the references' token set (undefined: every token counts). */
function tokenFilter(tokenSet: ArrayLike<number> | undefined): ((v: number) => boolean) | undefined {
  if (!tokenSet) return undefined;
  const set = new Set(Array.from(tokenSet));
  return (v) => set.has(v);
}

/** Σ of the row weights: the mask, else 1 per row. */
function maskedCount(M: number, mask: ArrayLike<number> | undefined): number {
  let count = 0;
  for (let i = 0; i < M; i++) count += mask ? mask[i] : 1;
  return count;
}

function normOf(n: Normalizer | undefined, count: number): number {
  return n === undefined || n === 'mean' ? count : n === 'sum' ? 1 : n;
}

export interface LossRef {
  loss: number;
  sum: number;
  count: number;
  /** dloss/dlogits [M, V]. */
  dlogits: Float64Array;
}

/** Cross-entropy with ignore-index (labels < 0), loss = Σ token losses / normalizer. */
export function crossEntropyRef(logits: ArrayLike<number>, M: number, V: number, labels: ArrayLike<number>, normalizer?: Normalizer): LossRef {
  let count = 0;
  for (let i = 0; i < M; i++) if (labels[i] >= 0) count++;
  const N = normOf(normalizer, count);
  const d = new Float64Array(M * V);
  let sum = 0;
  for (let i = 0; i < M; i++) {
    const y = labels[i];
    if (y < 0) continue;
    const lse = rowLse(logits, i * V, V);
    sum += lse - logits[i * V + y];
    for (let v = 0; v < V; v++) d[i * V + v] = (Math.exp(logits[i * V + v] - lse) - (v === y ? 1 : 0)) / N;
  }
  return { loss: N > 0 ? sum / N : 0, sum, count, dlogits: d };
}

export interface TopKRefOptions {
  mask?: ArrayLike<number>;
  tokenSet?: ArrayLike<number>;
  teacherNorm?: 'renormalize' | 'raw';
  normalizer?: Normalizer;
}

/** Top-k KL (see topKDistillation for the convention). idx [M, k] (negative = none), logp [M, k]. */
export function topKDistillationRef(logits: ArrayLike<number>, M: number, V: number, idx: ArrayLike<number>, logp: ArrayLike<number>, k: number, opts: TopKRefOptions = {}): LossRef {
  const allowed = tokenFilter(opts.tokenSet);
  const count = maskedCount(M, opts.mask);
  const N = normOf(opts.normalizer, count);
  const d = new Float64Array(M * V);
  let sum = 0;
  for (let i = 0; i < M; i++) {
    const w = opts.mask ? opts.mask[i] : 1;
    if (w === 0 || N <= 0) continue;
    const lse = rowLse(logits, i * V, V, allowed);
    const valid: number[] = [];
    for (let j = 0; j < k; j++) {
      const t = idx[i * k + j];
      if (t >= 0 && t < V && (!allowed || allowed(t))) valid.push(j);
    }
    if (!valid.length) continue;
    let lmax = -Infinity;
    for (const j of valid) lmax = Math.max(lmax, logp[i * k + j]);
    let P = 0;
    for (const j of valid) P += Math.exp(logp[i * k + j] - lmax);
    const logP = lmax + Math.log(P);
    const renorm = opts.teacherNorm !== 'raw';
    let loss = 0;
    for (const j of valid) {
      const lp = renorm ? logp[i * k + j] - logP : logp[i * k + j];
      const t = idx[i * k + j];
      loss += Math.exp(lp) * (lp - logits[i * V + t] + lse);
      d[i * V + t] -= (w / N) * Math.exp(lp);
    }
    const mass = renorm ? 1 : Math.exp(logP);
    for (let v = 0; v < V; v++) if (!allowed || allowed(v)) d[i * V + v] += (w / N) * mass * Math.exp(logits[i * V + v] - lse);
    sum += w * loss;
  }
  return { loss: N > 0 ? sum / N : 0, sum, count, dlogits: d };
}

/** KL(teacher‖student) with full teacher logits; gradient w.r.t. the student logits. */
export function klDistillationRef(student: ArrayLike<number>, teacher: ArrayLike<number>, M: number, V: number, opts: { mask?: ArrayLike<number>; tokenSet?: ArrayLike<number>; normalizer?: Normalizer } = {}): LossRef {
  const allowed = tokenFilter(opts.tokenSet);
  const count = maskedCount(M, opts.mask);
  const N = normOf(opts.normalizer, count);
  const d = new Float64Array(M * V);
  let sum = 0;
  for (let i = 0; i < M; i++) {
    const w = opts.mask ? opts.mask[i] : 1;
    if (w === 0 || N <= 0) continue;
    const ls = rowLse(student, i * V, V, allowed);
    const lt = rowLse(teacher, i * V, V, allowed);
    let kl = 0;
    for (let v = 0; v < V; v++) {
      if (allowed && !allowed(v)) continue;
      const lpt = teacher[i * V + v] - lt;
      const lps = student[i * V + v] - ls;
      kl += Math.exp(lpt) * (lpt - lps);
      d[i * V + v] = (w / N) * (Math.exp(lps) - Math.exp(lpt));
    }
    sum += w * kl;
  }
  return { loss: N > 0 ? sum / N : 0, sum, count, dlogits: d };
}

/** Top-k of log-softmax per row (ties: lowest index), optionally over a token set. */
export function logSoftmaxTopKRef(logits: ArrayLike<number>, M: number, V: number, k: number, tokenSet?: ArrayLike<number>): { indices: number[][]; logprobs: number[][] } {
  const allowed = tokenFilter(tokenSet);
  const indices: number[][] = [];
  const logprobs: number[][] = [];
  for (let i = 0; i < M; i++) {
    const lse = rowLse(logits, i * V, V, allowed);
    const ids = [...Array(V).keys()].filter((v) => !allowed || allowed(v));
    ids.sort((a, b) => logits[i * V + b] - logits[i * V + a] || a - b);
    const top = ids.slice(0, k);
    indices.push(top);
    logprobs.push(top.map((v) => logits[i * V + v] - lse));
  }
  return { indices, logprobs };
}
