// On-GPU token sampling from logits [B, V] or from x [B, H] · Wᵀ with a vocab-chunked LM head.
// Only the token ids (u32 [B]) ever need to come back to the CPU.
//
// Modes: greedy (argmax, lowest index on ties); temperature sampling by Gumbel-max
// (argmax_v z_v/T + G_v samples softmax(z/T) exactly, streaming over vocab chunks, no normalisation);
// top-p (nucleus) = Gumbel-max restricted to {v : z_v ≥ τ}, where τ is found without sorting by a
// radix search over the order-preserving u32 key of the f32 logit: 8 passes of 4 bits, each pass
// summing exp((z − max)/T) per 16 buckets of the keys still in range, so τ is exactly one of the
// logits (exact to float32 given the float32 masses). The nucleus is {z ≥ τ} with τ the largest
// value whose mass Σ_{z ≥ τ} p ≥ topP: the smallest set in probability order with cumulative mass
// ≥ topP (all tokens tied with the boundary token are included).
//
// Randomness: Philox-4x32-10 (Salmon et al. 2011, Random123) keyed by the 64-bit seed with counter
// (⌊v/4⌋, step, seqId, 0); word v mod 4 gives token v's uniform. A token therefore depends only on
// (seed, seqId, step, logits), never on the batch composition or vocab chunking.

import { defineKernel } from '../gpu/kernel.ts';
import { cdiv, GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { MAX_WG_PER_DIM as MAXD, NEG_WGSL as NEG, ORDER_KEY_WGSL, rowGrid } from './common.ts';
import type { LogitSource } from './loss.ts';
import { matmulChunk } from './matmul.ts';

const RW = 64;

export interface SampleOptions {
  /** Softmax temperature (default 1). 0 means greedy. */
  temperature?: number;
  /** Nucleus mass in (0, 1]; 1 (default) disables top-p. */
  topP?: number;
  /** Argmax (lowest index on ties). */
  greedy?: boolean;
  /** RNG seed (integer, 0 ≤ seed < 2^53). */
  seed: number;
  /** Decode step (u32): part of the RNG counter. */
  step: number;
  /** Sequence ids u32 [B] (default 0..B-1): part of the RNG counter. */
  seqIds?: Tensor;
  /** Per-row seeds u32 [B, 2] (low, high 32 bits), used instead of `seed` (e.g. students with their own seeds in one batch). */
  rowSeeds?: Tensor;
  /** Largest logits block in bytes for chunked sources (defaults to the binding limit). */
  maxLogitsBytes?: number;
  /** u32 [B]: when given, row b is set to 1 if any of its logits is NaN or ±Inf, else 0. */
  nonFinite?: Tensor;
}

const PHILOX = /* wgsl */ `
fn mulhi(a: u32, b: u32) -> u32 {
  let al = a & 0xffffu; let ah = a >> 16u; let bl = b & 0xffffu; let bh = b >> 16u;
  let ll = al * bl; let lh = al * bh; let hl = ah * bl; let hh = ah * bh;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}
fn philox(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr; var k = key;
  for (var i = 0u; i < 10u; i++) {
    let hi0 = mulhi(0xD2511F53u, c.x); let lo0 = 0xD2511F53u * c.x;
    let hi1 = mulhi(0xCD9E8D57u, c.z); let lo1 = 0xCD9E8D57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}
fn gumbel(x: u32) -> f32 {
  let uf = (f32(x >> 8u) + 0.5) * (1.0 / 16777216.0);
  return -log(-log(uf));
}${ORDER_KEY_WGSL}`;

/** Row state (u32 [B, 8], floats bitcast): 0 m, 1 s, 2 argmax value, 3 argmax idx, 4 τ prefix, 5 mass above, 6 best, 7 best idx. */
const STATE = 8;

/**
 * The opening of the kernels with one workgroup of RW lanes per row r of a logits block (global row
 * g = rowStart + r, the row's first element base); lanes stride over its columns.
 */
const BLOCK_ROW_MAIN = /* wgsl */ `@compute @workgroup_size(${RW})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * ${MAXD}u;
  if (r >= u.rows) { return; }
  let g = u.rowStart + r;
  let base = r * u.cols;`;

/** Per block row: max and Σexp of z/T, and argmax of z; last chunk writes the argmax token. */
const statsKernel = defineKernel({
  name: 'sample_stats',
  bindings: [['logits', 'f32', 'read'], ['state', 'u32', 'read_write'], ['tokens', 'u32', 'read_write']],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', first: 'u32', last: 'u32', invT: 'f32' },
  body: () => /* wgsl */ `
var<workgroup> shM: array<f32, ${RW}>;
var<workgroup> shS: array<f32, ${RW}>;
var<workgroup> shV: array<f32, ${RW}>;
var<workgroup> shI: array<u32, ${RW}>;
${BLOCK_ROW_MAIN}
  var m = ${NEG}; var s = 0.0; var bv = ${NEG}; var bi = 0xffffffffu;
  for (var c = lid; c < u.cols; c += ${RW}u) {
    let z = logits[base + c];
    let y = z * u.invT;
    if (y > m) { s = s * exp(m - y) + 1.0; m = y; } else { s += exp(y - m); }
    if (z > bv || bi == 0xffffffffu) { bv = z; bi = u.colStart + c; }
  }
  shM[lid] = m; shS[lid] = s; shV[lid] = bv; shI[lid] = bi;
  workgroupBarrier();
  for (var st = ${RW / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) {
      let m1 = shM[lid]; let m2 = shM[lid + st]; let mm = max(m1, m2);
      shS[lid] = shS[lid] * exp(m1 - mm) + shS[lid + st] * exp(m2 - mm); shM[lid] = mm;
      let v2 = shV[lid + st]; let i2 = shI[lid + st];
      if (i2 != 0xffffffffu && (shI[lid] == 0xffffffffu || v2 > shV[lid] || (v2 == shV[lid] && i2 < shI[lid]))) { shV[lid] = v2; shI[lid] = i2; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let o = g * ${STATE}u;
    var mm = shM[0]; var ss = shS[0]; var v = shV[0]; var i = shI[0];
    if (u.first == 0u) {
      let m0 = bitcast<f32>(state[o]); let mx = max(m0, mm);
      ss = bitcast<f32>(state[o + 1u]) * exp(m0 - mx) + ss * exp(mm - mx); mm = mx;
      let v0 = bitcast<f32>(state[o + 2u]);
      // Earlier chunks hold lower indices: they win ties.
      if (!(v > v0)) { v = v0; i = state[o + 3u]; }
    }
    state[o] = bitcast<u32>(mm); state[o + 1u] = bitcast<u32>(ss);
    state[o + 2u] = bitcast<u32>(v); state[o + 3u] = i;
    state[o + 4u] = 0u; state[o + 5u] = 0u;
    if (u.last != 0u) { tokens[g] = i; }
  }
}`,
});

/** Top-p pass: per block row, the mass exp(z/T − m) of in-range keys per 16 digit buckets → hist [B, 16]. */
const nucleusHistKernel = defineKernel({
  name: 'sample_nucleus_hist',
  bindings: [['logits', 'f32', 'read'], ['state', 'u32', 'read'], ['hist', 'f32', 'read_write']],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', first: 'u32', ps: 'u32', invT: 'f32' },
  body: () => /* wgsl */ `
${PHILOX}
var<workgroup> sh: array<f32, ${16 * RW}>;
${BLOCK_ROW_MAIN}
  let m = bitcast<f32>(state[g * ${STATE}u]);
  let prefix = state[g * ${STATE}u + 4u];
  let shift = 28u - 4u * u.ps;
  var h: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { h[i] = 0.0; }
  for (var c = lid; c < u.cols; c += ${RW}u) {
    let z = logits[base + c];
    let key = orderKey(z);
    if (u.ps == 0u || (key >> (shift + 4u)) == (prefix >> (shift + 4u))) {
      let d = (key >> shift) & 15u;
      h[d] += exp(z * u.invT - m);
    }
  }
  for (var i = 0u; i < 16u; i++) { sh[i * ${RW}u + lid] = h[i]; }
  workgroupBarrier();
  if (lid < 16u) {
    var t = 0.0;
    for (var j = 0u; j < ${RW}u; j++) { t += sh[lid * ${RW}u + j]; }
    let o = g * 16u + lid;
    hist[o] = select(hist[o] + t, t, u.first != 0u);
  }
}`,
});

/** Top-p pass combine (thread per row): pick the digit where the cumulative mass from the top crosses topP·s. */
const nucleusCombineKernel = defineKernel({
  name: 'sample_nucleus_combine',
  bindings: [['state', 'u32', 'read_write'], ['hist', 'f32', 'read']],
  uniforms: { B: 'u32', ps: 'u32', topP: 'f32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let g = gid.x;
  if (g >= u.B) { return; }
  let o = g * ${STATE}u;
  let goal = u.topP * bitcast<f32>(state[o + 1u]);
  let above = bitcast<f32>(state[o + 5u]);
  let shift = 28u - 4u * u.ps;
  var cum = above;
  var digit = 0u;
  var found = false;
  var lowest = 16u;
  for (var d = 15; d >= 0; d--) {
    let h = hist[g * 16u + u32(d)];
    if (h > 0.0) { lowest = u32(d); }
    if (!found) {
      if (cum + h >= goal) { digit = u32(d); found = true; } else { cum += h; }
    }
  }
  // Rounding left the total below topP·s: keep every remaining key (lowest non-empty bucket).
  if (!found) {
    digit = select(lowest, 0u, lowest == 16u);
    cum = above;
    for (var d = 15u; d > digit; d--) { cum += hist[g * 16u + d]; }
  }
  state[o + 4u] = state[o + 4u] | (digit << shift);
  state[o + 5u] = bitcast<u32>(cum);
}`,
});

/** Gumbel-max over the block (keys ≥ τ when top-p); last chunk writes the token. */
const gumbelKernel = defineKernel({
  name: 'sample_gumbel',
  bindings: ({ rowSeeds }: { rowSeeds: boolean }) => [
    ['logits', 'f32', 'read'], ['state', 'u32', 'read_write'], ['seqIds', 'u32', 'read'], ['tokens', 'u32', 'read_write'],
    ...(rowSeeds ? [['seeds', 'u32', 'read'] as const] : []),
  ],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', first: 'u32', last: 'u32', invT: 'f32', useTau: 'u32', seedLo: 'u32', seedHi: 'u32', step: 'u32' },
  // rowSeeds: each row's Philox key from seeds [B, 2] (lo, hi) instead of the uniform seed.
  key: ({ rowSeeds }) => (rowSeeds ? 'rowseeds' : ''),
  space: () => [{ rowSeeds: false }, { rowSeeds: true }],
  body: ({ rowSeeds }) => /* wgsl */ `
${PHILOX}
var<workgroup> shV: array<f32, ${RW}>;
var<workgroup> shI: array<u32, ${RW}>;
${BLOCK_ROW_MAIN}
  let tau = state[g * ${STATE}u + 4u];
  let seq = seqIds[g];
  let key = ${rowSeeds ? 'vec2<u32>(seeds[2u * g], seeds[2u * g + 1u])' : 'vec2<u32>(u.seedLo, u.seedHi)'};
  let q0 = u.colStart / 4u;
  let q1 = (u.colStart + u.cols + 3u) / 4u;
  var bv = ${NEG}; var bi = 0xffffffffu;
  // Four consecutive tokens share one Philox call (one word each).
  for (var q = q0 + lid; q < q1; q += ${RW}u) {
    let rnd = philox(vec4<u32>(q, u.step, seq, 0u), key);
    for (var j = 0u; j < 4u; j++) {
      let v = 4u * q + j;
      if (v < u.colStart || v >= u.colStart + u.cols) { continue; }
      let z = logits[base + v - u.colStart];
      if (u.useTau != 0u && orderKey(z) < tau) { continue; }
      let y = z * u.invT + gumbel(rnd[j]);
      if (y > bv || bi == 0xffffffffu) { bv = y; bi = v; }
    }
  }
  shV[lid] = bv; shI[lid] = bi;
  workgroupBarrier();
  for (var st = ${RW / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) {
      let v2 = shV[lid + st]; let i2 = shI[lid + st];
      if (i2 != 0xffffffffu && (shI[lid] == 0xffffffffu || v2 > shV[lid] || (v2 == shV[lid] && i2 < shI[lid]))) { shV[lid] = v2; shI[lid] = i2; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let o = g * ${STATE}u;
    var v = shV[0]; var i = shI[0];
    if (u.first == 0u) {
      let i0 = state[o + 7u]; let v0 = bitcast<f32>(state[o + 6u]);
      if (i == 0xffffffffu || (i0 != 0xffffffffu && !(v > v0))) { v = v0; i = i0; }
    }
    state[o + 6u] = bitcast<u32>(v); state[o + 7u] = i;
    if (u.last != 0u) { tokens[g] = i; }
  }
}`,
});

/** Per block row: 1 if any logit is NaN or ±Inf (exponent bits all set), OR-ed over the vocab chunks. */
const finiteKernel = defineKernel({
  name: 'sample_nonfinite',
  bindings: [['logits', 'f32', 'read'], ['flags', 'u32', 'read_write']],
  uniforms: { rows: 'u32', cols: 'u32', rowStart: 'u32', colStart: 'u32', first: 'u32' },
  body: () => /* wgsl */ `
var<workgroup> sh: array<u32, ${RW}>;
@compute @workgroup_size(${RW})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * ${MAXD}u;
  if (r >= u.rows) { return; }
  let base = r * u.cols;
  var bad = 0u;
  for (var c = lid; c < u.cols; c += ${RW}u) {
    // Bit test, not x != x: compilers may fold NaN comparisons away.
    if ((bitcast<u32>(logits[base + c]) & 0x7f800000u) == 0x7f800000u) { bad = 1u; }
  }
  sh[lid] = bad;
  workgroupBarrier();
  for (var st = ${RW / 2}u; st > 0u; st = st >> 1u) {
    if (lid < st) { sh[lid] = max(sh[lid], sh[lid + st]); }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let g = u.rowStart + r;
    flags[g] = select(flags[g] | sh[0], sh[0], u.first != 0u);
  }
}`,
});

const iotaKernel = defineKernel({
  name: 'sample_iota',
  bindings: [['out', 'u32', 'read_write']],
  uniforms: { n: 'u32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) { if (gid.x < u.n) { out[gid.x] = gid.x; } }`,
});

interface SBlock {
  logits: Tensor;
  rowStart: number;
  rows: number;
  colStart: number;
  cols: number;
  first: boolean;
  last: boolean;
}

/**
 * Samples one token per row. Records the work and returns tokens u32 [B] (read it back with
 * gpu.read). For chunked sources with top-p, the logits of all chunks are kept for the passes
 * (B × V floats in total, split per chunk).
 */
export function sampleTokens(gpu: Gpu, src: LogitSource, opts: SampleOptions): Tensor {
  const kernel = 'sampleTokens';
  const plain = 'logits' in src;
  let B: number;
  if (plain) {
    const l = src.logits;
    if (l.shape.length !== 2 || l.dtype !== 'f32') throw new GpuError(`${kernel}: logits must be f32 [B, V], got ${l.dtype} [${l.shape.join(', ')}]`);
    B = l.shape[0];
  } else {
    if (src.x.shape.length !== 2 || src.x.shape[1] !== src.w.cols || src.x.dtype !== 'f32') {
      throw new GpuError(`${kernel}: x ${src.x.dtype} [${src.x.shape.join(', ')}] does not match W [${src.w.rows}, ${src.w.cols}]`);
    }
    B = src.x.shape[0];
  }
  const T = opts.temperature ?? 1;
  const topP = opts.topP ?? 1;
  const greedy = !!opts.greedy || T === 0;
  if (!(T >= 0) || !Number.isFinite(T)) throw new GpuError(`${kernel}: temperature must be ≥ 0, got ${T}`);
  if (!(topP > 0 && topP <= 1)) throw new GpuError(`${kernel}: topP must be in (0, 1], got ${topP}`);
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed >= 2 ** 53) throw new GpuError(`${kernel}: seed must be an integer in [0, 2^53), got ${opts.seed}`);
  if (!Number.isInteger(opts.step) || opts.step < 0 || opts.step > 0xffffffff) throw new GpuError(`${kernel}: step must be a u32, got ${opts.step}`);
  if (opts.seqIds && (opts.seqIds.dtype !== 'u32' || opts.seqIds.size !== B)) {
    throw new GpuError(`${kernel}: seqIds must be u32 [${B}], got ${opts.seqIds.dtype} [${opts.seqIds.shape.join(', ')}]`);
  }
  if (opts.rowSeeds && (opts.rowSeeds.dtype !== 'u32' || opts.rowSeeds.size !== 2 * B)) {
    throw new GpuError(`${kernel}: rowSeeds must be u32 [${B}, 2], got ${opts.rowSeeds.dtype} [${opts.rowSeeds.shape.join(', ')}]`);
  }
  if (opts.nonFinite && (opts.nonFinite.dtype !== 'u32' || opts.nonFinite.size !== B)) {
    throw new GpuError(`${kernel}: nonFinite must be u32 [${B}], got ${opts.nonFinite.dtype} [${opts.nonFinite.shape.join(', ')}]`);
  }
  const useTopP = !greedy && topP < 1;
  const invT = greedy ? 1 : 1 / T;

  const blockU = (b: SBlock) => ({ rows: b.rows, cols: b.cols, rowStart: b.rowStart, colStart: b.colStart, first: b.first ? 1 : 0 });
  // The non-finite check rides on the first pass over the logits (top-p replays plain logits).
  let checked = false;
  const check = (b: SBlock) => {
    if (opts.nonFinite && !checked) finiteKernel.run(gpu, {}, { logits: b.logits, flags: opts.nonFinite }, rowGrid(b.rows), blockU(b));
  };
  // Blocks: kept when top-p needs several passes; otherwise produced and consumed one at a time.
  const blocks: SBlock[] = [];
  const forEach = (fn: (b: SBlock) => void, keep: boolean) => {
    if (plain) {
      const V = src.logits.shape[1];
      const b = { logits: src.logits, rowStart: 0, rows: B, colStart: 0, cols: V, first: true, last: true };
      check(b);
      checked = true;
      fn(b);
      return;
    }
    const { x, w } = src;
    const H = w.cols;
    const limit = Math.min(opts.maxLogitsBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
    // The widest real chunk (a small vocabulary is one chunk far narrower than rowsPerChunk).
    const fit = Math.floor(limit / (w.chunkRows(0) * 4));
    const rpb = fit >= B ? B : Math.floor(fit / 64) * 64;
    if (rpb < 1) throw new GpuError(`${kernel}: a logits block of 64 rows exceeds ${limit} B`);
    for (let c = 0; c < w.chunks.length; c++) {
      for (let r0 = 0; r0 < B; r0 += rpb) {
        const rows = Math.min(rpb, B - r0);
        const logits = matmulChunk(gpu, rows === B ? x : x.view([rows, H], r0 * H), w, c);
        const b = { logits, rowStart: r0, rows, colStart: c * w.rowsPerChunk, cols: w.chunkRows(c), first: c === 0, last: c === w.chunks.length - 1 };
        check(b);
        fn(b);
        if (keep) blocks.push(b);
        else logits.dispose();
      }
    }
    checked = true;
  };
  const replay = (fn: (b: SBlock) => void) => {
    if (plain) forEach(fn, false);
    else blocks.forEach(fn);
  };

  const tokens = gpu.empty([B], 'u32', 'sample_tokens');
  const state = gpu.empty([B, STATE], 'u32', 'sample_state');
  if (greedy || useTopP) {
    forEach((b) => statsKernel.run(gpu, {}, { logits: b.logits, state, tokens }, rowGrid(b.rows), { ...blockU(b), last: b.last ? 1 : 0, invT }), useTopP);
  }
  if (greedy) {
    state.dispose();
    return tokens;
  }
  let seqIds = opts.seqIds;
  if (!seqIds) {
    seqIds = gpu.empty([B], 'u32', 'sample_seq');
    iotaKernel.run(gpu, {}, { out: seqIds }, cdiv(B, 64), { n: B });
  }
  if (useTopP) {
    const hist = gpu.empty([B, 16], 'f32', 'sample_hist');
    for (let pass = 0; pass < 8; pass++) {
      replay((b) => nucleusHistKernel.run(gpu, {}, { logits: b.logits, state, hist }, rowGrid(b.rows), { ...blockU(b), ps: pass, invT }));
      nucleusCombineKernel.run(gpu, {}, { state, hist }, cdiv(B, 64), { B, ps: pass, topP });
    }
    hist.dispose();
  }
  const seedLo = opts.seed >>> 0;
  const seedHi = Math.floor(opts.seed / 2 ** 32) >>> 0;
  const rowSeeds = !!opts.rowSeeds;
  const gumbel = (b: SBlock) =>
    gumbelKernel.run(gpu, { rowSeeds }, { logits: b.logits, state, seqIds, tokens, ...(rowSeeds ? { seeds: opts.rowSeeds } : {}) }, rowGrid(b.rows), {
      ...blockU(b), last: b.last ? 1 : 0, invT, useTau: useTopP ? 1 : 0, seedLo, seedHi, step: opts.step,
    });
  if (useTopP) replay(gumbel);
  else forEach(gumbel, false);
  for (const b of blocks) b.logits.dispose();
  if (!opts.seqIds) seqIds.dispose();
  state.dispose();
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// CPU references (float64 probabilities; the same Philox stream as the GPU)
// ---------------------------------------------------------------------------------------------

function mulhi32(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  const ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (hh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
}

/** Philox-4x32-10 (Random123): counter [4] u32, key [2] u32 → 4 u32 words. */
export function philox4x32(ctr: readonly number[], key: readonly number[]): number[] {
  let [c0, c1, c2, c3] = ctr.map((x) => x >>> 0);
  let [k0, k1] = key.map((x) => x >>> 0);
  for (let i = 0; i < 10; i++) {
    const hi0 = mulhi32(0xd2511f53, c0), lo0 = Math.imul(0xd2511f53, c0) >>> 0;
    const hi1 = mulhi32(0xcd9e8d57, c2), lo1 = Math.imul(0xcd9e8d57, c2) >>> 0;
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** Gumbel noise of token v for (seed, seqId, step), as on the GPU (computed in float64). */
export function gumbelRef(seed: number, seqId: number, step: number, v: number): number {
  const w = philox4x32([Math.floor(v / 4), step, seqId, 0], [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0])[v % 4];
  const u = (Math.floor(w / 256) + 0.5) / 16777216;
  return -Math.log(-Math.log(u));
}

/** The nucleus of one row: every token with z ≥ τ (see the file comment), as a sorted id list. */
export function nucleusRef(z: ArrayLike<number>, temperature: number, topP: number): number[] {
  const V = z.length;
  let m = -Infinity;
  for (let v = 0; v < V; v++) m = Math.max(m, z[v] / temperature);
  const p = Array.from({ length: V }, (_, v) => Math.exp(z[v] / temperature - m));
  const s = p.reduce((a, b) => a + b, 0);
  const order = [...Array(V).keys()].sort((a, b) => z[b] - z[a] || a - b);
  let cum = 0;
  let tau = z[order[V - 1]];
  for (const v of order) {
    cum += p[v] / s;
    if (cum >= topP) {
      tau = z[v];
      break;
    }
  }
  return [...Array(V).keys()].filter((v) => z[v] >= tau);
}

/** Reference sampler for logits [B, V] (row b uses seqIds[b], default b). */
export function sampleTokensRef(logits: ArrayLike<number>, B: number, V: number, opts: Omit<SampleOptions, 'seqIds'> & { seqIds?: ArrayLike<number> }): number[] {
  const T = opts.temperature ?? 1;
  const greedy = !!opts.greedy || T === 0;
  const out: number[] = [];
  for (let b = 0; b < B; b++) {
    const z = Array.from({ length: V }, (_, v) => logits[b * V + v]);
    if (greedy) {
      let bi = 0;
      for (let v = 1; v < V; v++) if (z[v] > z[bi]) bi = v;
      out.push(bi);
      continue;
    }
    const allowed = (opts.topP ?? 1) < 1 ? nucleusRef(z, T, opts.topP!) : [...Array(V).keys()];
    const seq = opts.seqIds ? opts.seqIds[b] : b;
    let best = -Infinity;
    let bi = -1;
    for (const v of allowed) {
      const y = z[v] / T + gumbelRef(opts.seed, seq, opts.step, v);
      if (y > best) {
        best = y;
        bi = v;
      }
    }
    out.push(bi);
  }
  return out;
}
