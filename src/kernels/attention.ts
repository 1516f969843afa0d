// Causal grouped-query attention: flash-style forward, flash-attention-2 backward, and decode over a
// per-layer KV cache (single pass or split-K + reduce).
//
// Layout (shared with the rest of the model code): a batch of B sequences right-padded to T, flattened
// to B·T token rows. q is [B·T, H·D], k and v are [B·T, KVH·D] — per token HF's [heads, headDim]
// order, RoPE already applied. Query head h reads kv head floor(h / (H / KVH)). Scores are
// scale · q·k with scale = 1/sqrt(D) unless overridden.
//
// Padding: attention is causal within each sequence and prompts are right-padded, so a real token at
// position t only sees positions ≤ t, which are all real. Pad rows compute garbage-but-finite values
// that nothing real reads, so no length mask is needed for training or scoring; the loss must simply
// ignore pad positions (their dOut rows are then zero and nothing flows into real rows from them).
// Pad rows must hold finite numbers (any embedding does): masked keys get probability exactly 0, and
// 0 · NaN would still be NaN.
//
// Kernel shape (chosen for lavapipe first): one invocation owns one
// query row (forward, dq) or one key row (dk/dv) of one head and keeps its head vectors in private
// arrays. All lanes of a workgroup walk the same key (or query) index at the same time, so the loads of
// the other operand are workgroup-uniform: llvmpipe emits one broadcast load per subgroup and real GPUs
// serve them from L1. Loop bounds depend only on workgroup_id and uniforms (statically uniform), and the
// causal mask is applied per lane with select(). No workgroup memory and no barriers. The forward keeps
// only one kb-key block of scores (kb scalars) at a time (online softmax): no O(T²) buffer anywhere.
//
// Cooperative layout (software adapters with subgroups, KernelConfig.coop): lavapipe runs a load whose
// address is the same for every lane through its per-lane path anyway (each lane loads, with a bounds
// check per component), so the "broadcast" loads above cost as much as 8 gathers. In the coop kernels a
// workgroup is exactly one subgroup of S lanes and walks the other operand in blocks of S rows: lane i
// loads row i of the block (its own row, no waste), and every lane gets row i with subgroupBroadcast
// (a register shuffle). Measured on the 2-core lavapipe machine: a 16-float row costs ~4× less this way.
//
// Decode: `KvCache` (per-layer K/V [B, maxLen, KVH·D], u32 lengths on the GPU) + `attentionDecode`
// (split-K over key blocks, then a reduce pass; or a single pass). See the class comment for a step.

import { defineKernel, product, type BindingDecl } from '../gpu/kernel.ts';
import { GpuError, cdiv, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { expectTensor, NEG_WGSL as NEG } from './common.ts';
import { llvmpipeSubgroupWidth } from './norm.ts';

export interface AttentionDims {
  batch: number;
  seqLen: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Score scale; default 1/sqrt(headDim). */
  scale?: number;
}


/** Vector width for head vectors: vec4 when D allows it, else vec2 or scalar (tiny test models: D = 6, 7, 10). */
function vecInfo(headDim: number): { vw: number; vt: string; nv: number; prelude: string } {
  const vw = headDim % 4 === 0 ? 4 : headDim % 2 === 0 ? 2 : 1;
  const vt = vw === 1 ? 'f32' : `vec${vw}<f32>`;
  const dotBody = vw === 1 ? 'a * b' : 'dot(a, b)';
  return {
    vw,
    vt,
    nv: headDim / vw,
    prelude: `alias VT = ${vt};\nfn vdot(a: VT, b: VT) -> f32 { return ${dotBody}; }\nconst NV = ${headDim / vw}u;\nconst NEG = ${NEG};\n`,
  };
}

/**
 * Code-generation choices, explicit per adapter class:
 * - rows: query (or key) rows per workgroup. lavapipe's subgroup is 8 lanes, so 8 keeps the masked
 *   tail of the causal loop to ≤ 7 rows; real GPUs want wider workgroups.
 * - dynamicNv: loop over the head vector with a trip count from a uniform instead of a constant. With
 *   constant bounds Mesa/LLVM fully unrolls every head-vector loop over the private arrays and a
 *   D=64 kernel takes 20–130 s to JIT on lavapipe; a uniform bound compiles in ~1 s and runs about as
 *   fast there (the arrays sit in L1 either way). Real GPU compilers want constant bounds so the
 *   arrays live in registers.
 * - kb: keys per online-softmax block (scores of a block are kb scalars, rescale once per block).
 * - decodeLanes: target invocations per split-K decode workgroup (a workgroup packs several splits of
 *   one GQA group); 1 keeps one split per workgroup so K/V loads stay workgroup-uniform on lavapipe.
 * - coop: subgroup width S for the cooperative forward/backward kernels (see the file comment), 0 =
 *   off. Used when the head vector has at most COOP_MAX_NV vectors: the block loops are unrolled
 *   over S rows × the head vector, and compile time grows with both.
 */
export interface KernelConfig {
  rows: number;
  dynamicNv: boolean;
  kb: number;
  decodeLanes: number;
  coop: number;
}

/**
 * Largest head vector (in VT vectors) of the coop kernels: D = 32 with vec4. Measured on lavapipe at
 * the students' shape (B=32, T=94, H=4, KVH=2, D=16; bench/attention.ts): forward 4.5×, dq 2.7×, dk/dv
 * 5× faster than the per-lane kernels. At D = 64 the unrolled kernels took ~60 s to JIT.
 */
const COOP_MAX_NV = 8;

/** The configuration for this adapter class, with optional overrides (benchmarks compare variants). */
export function attentionConfig(gpu: Gpu, override: Partial<KernelConfig> = {}): KernelConfig {
  const base = gpu.info.isSoftware
    ? { rows: 8, dynamicNv: true, kb: 8, decodeLanes: 1, coop: llvmpipeSubgroupWidth(gpu) ?? 0 }
    : { rows: 64, dynamicNv: false, kb: 8, decodeLanes: 64, coop: 0 };
  return { ...base, ...override };
}

/** The subgroup width the coop kernels use for this head size, or 0 for the per-lane kernels. */
function coopWidth(cfg: KernelConfig, headDim: number): number {
  return cfg.coop > 0 && vecInfo(headDim).nv <= COOP_MAX_NV ? cfg.coop : 0;
}

const nvBound = (cfg: { dynamicNv: boolean }) => (cfg.dynamicNv ? 'u.nv' : 'NV');

/**
 * One online-softmax step over keys j0 .. j0+kb-1 (rows r_i = kvBase + clamp(j_i)·kvStride of K and V,
 * masked with valid(j_i)): scores, block max, one rescale of (l, acc), kb axpys into acc. Expects
 * qr (pre-scaled), acc, m, l, kvBase, kvStride in scope.
 */
function softmaxBlock(cfg: { dynamicNv: boolean; kb: number }, kName: string, vName: string, clamp: (j: string) => string, valid: (j: string) => string): string {
  const ks = Array.from({ length: cfg.kb }, (_, i) => i);
  const nv = nvBound(cfg);
  const maxOf = (xs: string[]): string => (xs.length === 1 ? xs[0] : `max(${maxOf(xs.slice(0, xs.length >> 1))}, ${maxOf(xs.slice(xs.length >> 1))})`);
  return `
    ${ks.map((i) => `let j${i} = j0 + ${i}u;\n    let r${i} = kvBase + ${clamp(`j${i}`)} * kvStride;\n    var d${i} = 0.0;`).join('\n    ')}
    for (var e = 0u; e < ${nv}; e++) {
      let qe = qr[e];
      ${ks.map((i) => `d${i} += vdot(qe, ${kName}[r${i} + e]);`).join('\n      ')}
    }
    ${ks.map((i) => `let s${i} = select(NEG, d${i}, ${valid(`j${i}`)});`).join('\n    ')}
    let mNew = max(m, ${maxOf(ks.map((i) => `s${i}`))});
    let corr = exp(m - mNew);
    ${ks.map((i) => `let p${i} = exp(s${i} - mNew);`).join('\n    ')}
    l = l * corr + ${ks.map((i) => `p${i}`).join(' + ')};
    for (var e = 0u; e < ${nv}; e++) {
      acc[e] = acc[e] * corr + ${ks.map((i) => `p${i} * ${vName}[r${i} + e]`).join(' + ')};
    }
    m = mNew;`;
}

function checkDims(kernel: string, d: AttentionDims): void {
  const { batch, seqLen, heads, kvHeads, headDim } = d;
  for (const [n, v] of Object.entries({ batch, seqLen, heads, kvHeads, headDim })) {
    if (!Number.isInteger(v) || v < 1) throw new GpuError(`${kernel}: ${n} must be a positive integer, got ${v}`);
  }
  if (heads % kvHeads !== 0) throw new GpuError(`${kernel}: heads ${heads} is not a multiple of kvHeads ${kvHeads}`);
  if (headDim > 256) throw new GpuError(`${kernel}: headDim ${headDim} > 256 is not supported (head vectors live in registers)`);
}


function scaleOf(d: { headDim: number; scale?: number }): number {
  return d.scale ?? 1 / Math.sqrt(d.headDim);
}

// ------------------------------------------------------------------------------------------ forward

/** Code-generation parameters of the backward kernels (the forward adds kb). */
interface BwdParams {
  headDim: number;
  rows: number;
  dynamicNv: boolean;
}
interface FwdParams extends BwdParams {
  kb: number;
}

const ATTN_U = { T: 'u32', H: 'u32', KVH: 'u32', G: 'u32', nv: 'u32', scale: 'f32' } as const;

// The tensors of each pass; its register-tiled and subgroup kernels bind the same ones.
function forwardBindings(headDim: number): BindingDecl[] {
  const VT = vecInfo(headDim).vt;
  return [['q', VT, 'read'], ['k', VT, 'read'], ['v', VT, 'read'], ['o', VT, 'read_write'], ['lse', 'f32', 'read_write']];
}
function dqBindings(headDim: number): BindingDecl[] {
  const VT = vecInfo(headDim).vt;
  return [
    ['q', VT, 'read'], ['k', VT, 'read'], ['v', VT, 'read'], ['o', VT, 'read'], ['dO', VT, 'read'],
    ['lse', 'f32', 'read'], ['dq', VT, 'read_write'], ['delta', 'f32', 'read_write'],
  ];
}
function dkvBindings(headDim: number): BindingDecl[] {
  const VT = vecInfo(headDim).vt;
  return [
    ['q', VT, 'read'], ['k', VT, 'read'], ['v', VT, 'read'], ['dO', VT, 'read'],
    ['lse', 'f32', 'read'], ['delta', 'f32', 'read'], ['dk', VT, 'read_write'], ['dv', VT, 'read_write'],
  ];
}

/** Head sizes the identity tests walk (every vector width). */
const HEAD_DIMS = [6, 7, 8, 10, 16, 32, 64, 128];
const BOOL = [false, true] as const;

const forwardKernel = defineKernel({
  name: 'attention_fwd',
  bindings: (p: FwdParams) => forwardBindings(p.headDim),
  uniforms: ATTN_U,
  key: ({ headDim, rows, kb, dynamicNv }) => `d${headDim}_r${rows}_kb${kb}${dynamicNv ? '_dyn' : ''}`,
  space: () => product({ headDim: HEAD_DIMS, rows: [8, 64], dynamicNv: BOOL, kb: [4, 8] }),
  body: (cfg) => {
    const { headDim } = cfg;
    const { prelude } = vecInfo(headDim);
    const nv = nvBound(cfg);
    return /* wgsl */ `${prelude}
const TQ = ${cfg.rows}u;

@compute @workgroup_size(TQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let h = wg.y;
  let b = wg.z;
  let t0 = wg.x * TQ;
  let tRaw = t0 + li;
  let t = min(tRaw, u.T - 1u);               // lanes past T compute row T-1 and do not store
  let tLast = min(u.T - 1u, t0 + TQ - 1u);   // last key any lane needs (workgroup-uniform)
  let qRow = ((b * u.T + t) * u.H + h) * NV;
  let kvStride = u.KVH * NV;
  let kvBase = b * u.T * kvStride + (h / u.G) * NV;
  var qr: array<VT, NV>;
  for (var e = 0u; e < ${nv}; e++) { qr[e] = q[qRow + e] * u.scale; }
  var acc: array<VT, NV>;
  var m = NEG;
  var l = 0.0;
  for (var j0 = 0u; j0 <= tLast; j0 += ${cfg.kb}u) {${softmaxBlock(cfg, 'k', 'v', (j) => `min(${j}, tLast)`, (j) => `${j} <= t`)}
  }
  if (tRaw < u.T) {
    let inv = 1.0 / l;
    for (var e = 0u; e < ${nv}; e++) { o[qRow + e] = acc[e] * inv; }
    lse[(b * u.H + h) * u.T + t] = m + log(l);
  }
}`;
  },
});

/**
 * Causal GQA attention forward. Returns out [B·T, H·D] and lse [B·H·T] (natural-log log-sum-exp of
 * the scaled scores of each query row, indexed (b·H + h)·T + t), which the backward needs.
 */
export function attention(gpu: Gpu, q: Tensor, k: Tensor, v: Tensor, dims: AttentionDims, config?: Partial<KernelConfig>): { out: Tensor; lse: Tensor } {
  const kernel = 'attention';
  checkDims(kernel, dims);
  const { batch: B, seqLen: T, heads: H, kvHeads: KVH, headDim: D } = dims;
  expectTensor(kernel, 'q', q, 'f32', [B * T, H * D]);
  expectTensor(kernel, 'k', k, 'f32', [B * T, KVH * D]);
  expectTensor(kernel, 'v', v, 'f32', [B * T, KVH * D]);
  const cfg = attentionConfig(gpu, config);
  const out = gpu.empty([B * T, H * D], 'f32', 'attention.out');
  const lse = gpu.empty([B * H * T], 'f32', 'attention.lse');
  const u = { T, H, KVH, G: H / KVH, nv: vecInfo(D).nv, scale: scaleOf(dims) };
  const S = coopWidth(cfg, D);
  if (S) {
    coopForwardKernel.run(gpu, { headDim: D, lanes: S }, { q, k, v, o: out, lse }, [cdiv(T, S), H, B], u);
    return { out, lse };
  }
  const p = { headDim: D, rows: cfg.rows, dynamicNv: cfg.dynamicNv, kb: cfg.kb };
  forwardKernel.run(gpu, p, { q, k, v, o: out, lse }, [cdiv(T, cfg.rows), H, B], u);
  return { out, lse };
}

// ----------------------------------------------------------------------------------------- backward

// dq (and delta = rowsum(dOut ∘ out), stored for the dk/dv pass). One invocation per query row.
const bwdSpace = () => product({ headDim: HEAD_DIMS, rows: [8, 64], dynamicNv: BOOL });

const backwardDqKernel = defineKernel({
  name: 'attention_bwd_dq',
  bindings: (p: BwdParams) => dqBindings(p.headDim),
  uniforms: ATTN_U,
  key: ({ headDim, rows, dynamicNv }) => `d${headDim}_r${rows}${dynamicNv ? '_dyn' : ''}`,
  space: bwdSpace,
  body: (cfg) => {
    const { headDim } = cfg;
    const { prelude } = vecInfo(headDim);
    const nv = nvBound(cfg);
    return /* wgsl */ `${prelude}
const TQ = ${cfg.rows}u;

@compute @workgroup_size(TQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let h = wg.y;
  let b = wg.z;
  let t0 = wg.x * TQ;
  let tRaw = t0 + li;
  let t = min(tRaw, u.T - 1u);
  let tLast = min(u.T - 1u, t0 + TQ - 1u);
  let qRow = ((b * u.T + t) * u.H + h) * NV;
  let kvStride = u.KVH * NV;
  let kvBase = b * u.T * kvStride + (h / u.G) * NV;
  var qr: array<VT, NV>;
  var gr: array<VT, NV>;
  var dl = 0.0;
  for (var e = 0u; e < ${nv}; e++) {
    qr[e] = q[qRow + e] * u.scale;
    gr[e] = dO[qRow + e];
    dl += vdot(gr[e], o[qRow + e]);
  }
  let row = (b * u.H + h) * u.T + t;
  let L = lse[row];
  var acc: array<VT, NV>;
  for (var j = 0u; j <= tLast; j++) {
    let kr = kvBase + j * kvStride;
    var sc = 0.0;
    var dp = 0.0;
    for (var e = 0u; e < ${nv}; e++) {
      sc += vdot(qr[e], k[kr + e]);
      dp += vdot(gr[e], v[kr + e]);
    }
    let p = select(0.0, exp(sc - L), j <= t);
    let ds = p * (dp - dl);
    for (var e = 0u; e < ${nv}; e++) { acc[e] += ds * k[kr + e]; }
  }
  if (tRaw < u.T) {
    for (var e = 0u; e < ${nv}; e++) { dq[qRow + e] = acc[e] * u.scale; }
    delta[row] = dl;
  }
}`;
  },
});

// dk, dv: one invocation per key row of one kv head, summing over the G query heads of its group and
// over queries t ≥ j. Each output element has exactly one writer: deterministic, no atomics.
const backwardDkvKernel = defineKernel({
  name: 'attention_bwd_dkv',
  bindings: (p: BwdParams) => dkvBindings(p.headDim),
  uniforms: ATTN_U,
  key: ({ headDim, rows, dynamicNv }) => `d${headDim}_r${rows}${dynamicNv ? '_dyn' : ''}`,
  space: bwdSpace,
  body: (cfg) => {
    const { headDim } = cfg;
    const { prelude } = vecInfo(headDim);
    const nv = nvBound(cfg);
    return /* wgsl */ `${prelude}
const TK = ${cfg.rows}u;

@compute @workgroup_size(TK)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let kvh = wg.y;
  let b = wg.z;
  let j0 = wg.x * TK;                          // first query any lane needs (workgroup-uniform)
  let jRaw = j0 + li;
  let j = min(jRaw, u.T - 1u);
  let kvStride = u.KVH * NV;
  let kRow = (b * u.T + j) * kvStride + kvh * NV;
  var kr: array<VT, NV>;
  var vr: array<VT, NV>;
  for (var e = 0u; e < ${nv}; e++) { kr[e] = k[kRow + e] * u.scale; vr[e] = v[kRow + e]; }
  var dkAcc: array<VT, NV>;
  var dvAcc: array<VT, NV>;
  let qStride = u.H * NV;
  for (var g = 0u; g < u.G; g++) {
    let h = kvh * u.G + g;
    let rowBase = (b * u.H + h) * u.T;
    let qBase = b * u.T * qStride + h * NV;
    for (var t = j0; t < u.T; t++) {
      let qr = qBase + t * qStride;
      var sc = 0.0;
      var dp = 0.0;
      for (var e = 0u; e < ${nv}; e++) {
        sc += vdot(q[qr + e], kr[e]);
        dp += vdot(dO[qr + e], vr[e]);
      }
      let p = select(0.0, exp(sc - lse[rowBase + t]), t >= j);
      let ds = p * (dp - delta[rowBase + t]);
      for (var e = 0u; e < ${nv}; e++) {
        dvAcc[e] += p * dO[qr + e];
        dkAcc[e] += ds * q[qr + e];
      }
    }
  }
  if (jRaw < u.T) {
    for (var e = 0u; e < ${nv}; e++) {
      dk[kRow + e] = dkAcc[e] * u.scale;
      dv[kRow + e] = dvAcc[e];
    }
  }
}`;
  },
});


// -------------------------------------------------------------------------- cooperative (subgroup)

/** Code-generation parameters of the coop kernels: head size and subgroup width S (= workgroup size). */
interface CoopParams {
  headDim: number;
  lanes: number;
}

const coopSpace = () => product({ headDim: HEAD_DIMS.filter((d) => vecInfo(d).nv <= COOP_MAX_NV), lanes: [8, 16] });
const coopKey = ({ headDim, lanes }: CoopParams) => `d${headDim}_s${lanes}`;
/** What every subgroup kernel declares alike: uniforms, the subgroups feature, key and key space. */
const COOP_KERNEL = { uniforms: ATTN_U, enable: (): string[] => ['subgroups'], key: coopKey, space: coopSpace };
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** `let NAME0 = SRC[BASE + 0u]; …` for the NV vectors of one head row. */
function loadRow(name: string, src: string, base: string, nv: number, scale = ''): string {
  return range(nv).map((e) => `let ${name}${e} = ${src}[${base} + ${e}u]${scale};`).join('\n    ');
}

/** Σ_e vdot(a_e, b_e) over the head vector, a and b given as name builders. */
function rowDot(a: (e: number) => string, b: (e: number) => string, nv: number): string {
  return range(nv).map((e) => `vdot(${a(e)}, ${b(e)})`).join(' + ');
}

/**
 * The opening of the subgroup kernels with one query row per lane (forward, dq): workgroup (query block,
 * head, batch) of S lanes; lane li takes row t = t0 + li, and k/v rows are read in blocks of S up to tLast.
 */
function coopQueryMain(S: number): string {
  return /* wgsl */ `
const S = ${S}u;

@compute @workgroup_size(${S})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let h = wg.y;
  let b = wg.z;
  let t0 = wg.x * S;
  let tRaw = t0 + li;
  let t = min(tRaw, u.T - 1u);               // lanes past T compute row T-1 and do not store
  let tLast = min(u.T - 1u, t0 + S - 1u);    // last key any lane needs (workgroup-uniform)
  let qRow = ((b * u.T + t) * u.H + h) * NV;
  let kvStride = u.KVH * NV;
  let kvBase = b * u.T * kvStride + (h / u.G) * NV;`;
}

// Forward: lane = query row t of the workgroup's S rows; key blocks of S rows (lane i loads key row
// j0 + i), online softmax over each block.
const coopForwardKernel = defineKernel({
  name: 'attention_fwd_coop',
  bindings: (p: CoopParams) => forwardBindings(p.headDim),
  ...COOP_KERNEL,
  body: ({ headDim, lanes: S }) => {
    const { prelude, nv } = vecInfo(headDim);
    const E = range(nv);
    const I = range(S);
    const maxOf = (xs: string[]): string => (xs.length === 1 ? xs[0] : `max(${maxOf(xs.slice(0, xs.length >> 1))}, ${maxOf(xs.slice(xs.length >> 1))})`);
    return /* wgsl */ `${prelude}${coopQueryMain(S)}
  ${loadRow('q', 'q', 'qRow', nv, ' * u.scale')}
  ${E.map((e) => `var a${e} = VT(0.0);`).join(' ')}
  var m = NEG;
  var l = 0.0;
  for (var j0 = 0u; j0 <= tLast; j0 += S) {
    let jr = kvBase + min(j0 + li, tLast) * kvStride;
    ${loadRow('k', 'k', 'jr', nv)}
    ${loadRow('v', 'v', 'jr', nv)}
    ${I.map((i) => `let s${i} = select(NEG, ${rowDot((e) => `q${e}`, (e) => `subgroupBroadcast(k${e}, ${i}u)`, nv)}, j0 + ${i}u <= t);`).join('\n    ')}
    let mNew = max(m, ${maxOf(I.map((i) => `s${i}`))});
    let corr = exp(m - mNew);
    ${I.map((i) => `let p${i} = exp(s${i} - mNew);`).join('\n    ')}
    l = l * corr + ${I.map((i) => `p${i}`).join(' + ')};
    ${E.map((e) => `a${e} = a${e} * corr + ${I.map((i) => `p${i} * subgroupBroadcast(v${e}, ${i}u)`).join(' + ')};`).join('\n    ')}
    m = mNew;
  }
  if (tRaw < u.T) {
    let inv = 1.0 / l;
    ${E.map((e) => `o[qRow + ${e}u] = a${e} * inv;`).join('\n    ')}
    lse[(b * u.H + h) * u.T + t] = m + log(l);
  }
}`;
  },
});

// dq and delta: lane = query row; key blocks of S rows as in the forward.
const coopDqKernel = defineKernel({
  name: 'attention_bwd_dq_coop',
  bindings: (p: CoopParams) => dqBindings(p.headDim),
  ...COOP_KERNEL,
  body: ({ headDim, lanes: S }) => {
    const { prelude, nv } = vecInfo(headDim);
    const E = range(nv);
    const keyStep = (i: number) => `
    {
      ${E.map((e) => `let bk${e} = subgroupBroadcast(k${e}, ${i}u);`).join(' ')}
      let sc = ${rowDot((e) => `q${e}`, (e) => `bk${e}`, nv)};
      let dp = ${rowDot((e) => `g${e}`, (e) => `subgroupBroadcast(v${e}, ${i}u)`, nv)};
      let p = select(0.0, exp(sc - L), j0 + ${i}u <= t);
      let ds = p * (dp - dl);
      ${E.map((e) => `a${e} += ds * bk${e};`).join(' ')}
    }`;
    return /* wgsl */ `${prelude}${coopQueryMain(S)}
  ${loadRow('q', 'q', 'qRow', nv, ' * u.scale')}
  ${loadRow('g', 'dO', 'qRow', nv)}
  let dl = ${rowDot((e) => `g${e}`, (e) => `o[qRow + ${e}u]`, nv)};
  let row = (b * u.H + h) * u.T + t;
  let L = lse[row];
  ${E.map((e) => `var a${e} = VT(0.0);`).join(' ')}
  for (var j0 = 0u; j0 <= tLast; j0 += S) {
    let jr = kvBase + min(j0 + li, tLast) * kvStride;
    ${loadRow('k', 'k', 'jr', nv)}
    ${loadRow('v', 'v', 'jr', nv)}
    ${range(S).map(keyStep).join('')}
  }
  if (tRaw < u.T) {
    ${E.map((e) => `dq[qRow + ${e}u] = a${e} * u.scale;`).join('\n    ')}
    delta[row] = dl;
  }
}`;
  },
});

// dk, dv: lane = key row j of one kv head; for each query head of its group, query blocks of S rows
// from the workgroup's first key on (lane i loads query row t0 + i with its dO, lse and delta).
const coopDkvKernel = defineKernel({
  name: 'attention_bwd_dkv_coop',
  bindings: (p: CoopParams) => dkvBindings(p.headDim),
  ...COOP_KERNEL,
  body: ({ headDim, lanes: S }) => {
    const { prelude, nv } = vecInfo(headDim);
    const E = range(nv);
    const queryStep = (i: number) => `
      {
        ${E.map((e) => `let bq${e} = subgroupBroadcast(ql${e}, ${i}u);`).join(' ')}
        ${E.map((e) => `let bg${e} = subgroupBroadcast(gl${e}, ${i}u);`).join(' ')}
        let sc = ${rowDot((e) => `bq${e}`, (e) => `kr${e}`, nv)};
        let dp = ${rowDot((e) => `bg${e}`, (e) => `vr${e}`, nv)};
        let p = select(0.0, exp(sc - subgroupBroadcast(Ll, ${i}u)), t0 + ${i}u >= j && t0 + ${i}u < u.T);
        let ds = p * (dp - subgroupBroadcast(Dl, ${i}u));
        ${E.map((e) => `dv${e} += p * bg${e}; dk${e} += ds * bq${e};`).join(' ')}
      }`;
    return /* wgsl */ `${prelude}
const S = ${S}u;

@compute @workgroup_size(${S})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let kvh = wg.y;
  let b = wg.z;
  let j0 = wg.x * S;                           // first query any lane needs (workgroup-uniform)
  let jRaw = j0 + li;
  let j = min(jRaw, u.T - 1u);
  let kvStride = u.KVH * NV;
  let kRow = (b * u.T + j) * kvStride + kvh * NV;
  ${loadRow('kr', 'k', 'kRow', nv, ' * u.scale')}
  ${loadRow('vr', 'v', 'kRow', nv)}
  ${E.map((e) => `var dk${e} = VT(0.0); var dv${e} = VT(0.0);`).join(' ')}
  let qStride = u.H * NV;
  for (var g = 0u; g < u.G; g++) {
    let h = kvh * u.G + g;
    let rowBase = (b * u.H + h) * u.T;
    let qBase = b * u.T * qStride + h * NV;
    for (var t0 = j0; t0 < u.T; t0 += S) {
      let tl = min(t0 + li, u.T - 1u);
      let qr = qBase + tl * qStride;
      ${loadRow('ql', 'q', 'qr', nv)}
      ${loadRow('gl', 'dO', 'qr', nv)}
      let Ll = lse[rowBase + tl];
      let Dl = delta[rowBase + tl];
      ${range(S).map(queryStep).join('')}
    }
  }
  if (jRaw < u.T) {
    ${E.map((e) => `dk[kRow + ${e}u] = dk${e} * u.scale; dv[kRow + ${e}u] = dv${e};`).join('\n    ')}
  }
}`;
  },
});

/**
 * Flash-attention-2 backward. Recomputes probabilities from q, k and the saved lse; delta =
 * rowsum(dOut ∘ out) is computed by the dq pass and reused by the dk/dv pass (two dispatches).
 */
export function attentionBackward(
  gpu: Gpu,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  dims: AttentionDims,
  config?: Partial<KernelConfig>,
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const kernel = 'attentionBackward';
  checkDims(kernel, dims);
  const { batch: B, seqLen: T, heads: H, kvHeads: KVH, headDim: D } = dims;
  expectTensor(kernel, 'q', q, 'f32', [B * T, H * D]);
  expectTensor(kernel, 'k', k, 'f32', [B * T, KVH * D]);
  expectTensor(kernel, 'v', v, 'f32', [B * T, KVH * D]);
  expectTensor(kernel, 'out', out, 'f32', [B * T, H * D]);
  expectTensor(kernel, 'dOut', dOut, 'f32', [B * T, H * D]);
  expectTensor(kernel, 'lse', lse, 'f32', [B * H * T]);
  const cfg = attentionConfig(gpu, config);
  const u = { T, H, KVH, G: H / KVH, nv: vecInfo(D).nv, scale: scaleOf(dims) };
  const S = coopWidth(cfg, D);
  const rows = S || cfg.rows;
  const dq = gpu.empty([B * T, H * D], 'f32', 'attention.dq');
  const delta = gpu.empty([B * H * T], 'f32', 'attention.delta');
  const dk = gpu.empty([B * T, KVH * D], 'f32', 'attention.dk');
  const dv = gpu.empty([B * T, KVH * D], 'f32', 'attention.dv');
  if (S) {
    const p = { headDim: D, lanes: S };
    coopDqKernel.run(gpu, p, { q, k, v, o: out, dO: dOut, lse, dq, delta }, [cdiv(T, S), H, B], u);
    coopDkvKernel.run(gpu, p, { q, k, v, dO: dOut, lse, delta, dk, dv }, [cdiv(T, S), KVH, B], u);
  } else {
    const p = { headDim: D, rows, dynamicNv: cfg.dynamicNv };
    backwardDqKernel.run(gpu, p, { q, k, v, o: out, dO: dOut, lse, dq, delta }, [cdiv(T, rows), H, B], u);
    backwardDkvKernel.run(gpu, p, { q, k, v, dO: dOut, lse, delta, dk, dv }, [cdiv(T, rows), KVH, B], u);
  }
  delta.dispose();
  return { dq, dk, dv };
}

// ------------------------------------------------------------------------------------------ KV cache

export interface KvCacheOptions {
  layers: number;
  batch: number;
  /** Positions per sequence (prompt + generated tokens). */
  maxLen: number;
  kvHeads: number;
  headDim: number;
  /** Cap on one cache buffer (default: the device's storage binding limit); caches split by batch. */
  maxChunkBytes?: number;
}

// n new rows per sequence; row i of sequence b goes to position base + i where base = lens[b]
// (append) or 0 (prefill, where lens holds prompt lengths and only rows i < lens[b] are written).
const kvWriteKernel = defineKernel({
  name: 'kv_cache_write',
  bindings: [['kNew', 'f32', 'read'], ['vNew', 'f32', 'read'], ['kc', 'f32', 'read_write'], ['vc', 'f32', 'read_write'], ['lens', 'u32', 'read']],
  uniforms: { n: 'u32', rowLen: 'u32', maxLen: 'u32', batch0: 'u32', prefill: 'u32', wgX: 'u32' },
  body: () => /* wgsl */ `

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let idx = (wg.y * u.wgX + wg.x) * 64u + li;   // element within this sequence's n rows
  if (idx >= u.n * u.rowLen) { return; }
  let bl = wg.z;                                  // sequence within this cache chunk
  let b = u.batch0 + bl;
  let i = idx / u.rowLen;
  let c = idx % u.rowLen;
  var pos = lens[b] + i;
  var ok = pos < u.maxLen;
  if (u.prefill != 0u) { pos = i; ok = i < lens[b] && i < u.maxLen; }
  if (ok) {
    let src = (b * u.n + i) * u.rowLen + c;
    let dst = (bl * u.maxLen + pos) * u.rowLen + c;
    kc[dst] = kNew[src];
    vc[dst] = vNew[src];
  }
}`,
});

const lensAddKernel = defineKernel({
  name: 'kv_cache_advance',
  bindings: [['lens', 'u32', 'read_write']],
  uniforms: { n: 'u32', add: 'u32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < u.n) { lens[g.x] = lens[g.x] + u.add; }
}`,
});

/**
 * A per-layer K/V cache: layer l holds K and V as [B, maxLen, KVH·D], split by batch into chunks that
 * fit the storage binding limit (chunk c holds sequences [c·seqsPerChunk, …)). `lens` (u32 [B], on
 * the GPU) is the number of committed positions of each sequence.
 *
 * One decode step: for every layer, `append` the new token's k/v at position lens[b], then
 * `attentionDecode` (attends to positions ≤ lens[b]); after the last layer, `advance(gpu)` adds 1 to
 * every lens. Positions at or beyond maxLen are dropped (never written out of bounds): size maxLen ≥
 * longest prompt + new tokens.
 *
 * Prefill: run the normal `attention` forward on the right-padded prompt batch, `prefill` each layer's
 * k/v (rows t < promptLens[b] land at positions t) and `setLens(promptLens)`.
 *
 * n samples of one prompt: either prefill the prompt repeated n times (simplest; costs n× prefill
 * compute, which is one batched forward anyway), or prefill it once and `copySequence(src, dsts)`.
 */
export class KvCache {
  readonly layers: number;
  readonly batch: number;
  readonly maxLen: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly seqsPerChunk: number;
  /** k[layer][chunk], v[layer][chunk]: [seqsInChunk, maxLen, KVH·D]. */
  readonly k: Tensor[][];
  readonly v: Tensor[][];
  readonly lens: Tensor;

  constructor(
    readonly gpu: Gpu,
    opts: KvCacheOptions,
  ) {
    const { layers, batch, maxLen, kvHeads, headDim } = opts;
    for (const [n, x] of Object.entries({ layers, batch, maxLen, kvHeads, headDim })) {
      if (!Number.isInteger(x) || x < 1) throw new GpuError(`KvCache: ${n} must be a positive integer, got ${x}`);
    }
    this.layers = layers;
    this.batch = batch;
    this.maxLen = maxLen;
    this.kvHeads = kvHeads;
    this.headDim = headDim;
    const seqBytes = maxLen * kvHeads * headDim * 4;
    const limit = Math.min(opts.maxChunkBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
    if (seqBytes > limit) {
      throw new GpuError(`KvCache: one sequence (${maxLen} × ${kvHeads * headDim} floats = ${seqBytes} B) exceeds the binding limit ${limit} B`);
    }
    this.seqsPerChunk = Math.min(batch, Math.floor(limit / seqBytes));
    const nChunks = cdiv(batch, this.seqsPerChunk);
    const alloc = (kind: string, l: number) =>
      Array.from({ length: nChunks }, (_, c) => gpu.empty([this.chunkSeqs(c), maxLen, kvHeads * headDim], 'f32', `kv.${kind}[${l}][${c}]`));
    this.k = Array.from({ length: layers }, (_, l) => alloc('k', l));
    this.v = Array.from({ length: layers }, (_, l) => alloc('v', l));
    this.lens = gpu.zeros([batch], 'u32', 'kv.lens');
  }

  get chunks(): number {
    return this.k[0].length;
  }

  /** Number of sequences in chunk c. */
  chunkSeqs(c: number): number {
    return Math.min(this.seqsPerChunk, this.batch - c * this.seqsPerChunk);
  }

  private checkLayer(kernel: string, layer: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers) {
      throw new GpuError(`${kernel}: layer ${layer} out of range [0, ${this.layers})`);
    }
  }

  private write(gpu: Gpu, kernel: string, layer: number, k: Tensor, v: Tensor, lens: Tensor, n: number, prefill: boolean): void {
    this.checkLayer(kernel, layer);
    const rowLen = this.kvHeads * this.headDim;
    expectTensor(kernel, 'k', k, 'f32', [this.batch * n, rowLen]);
    expectTensor(kernel, 'v', v, 'f32', [this.batch * n, rowLen]);
    expectTensor(kernel, prefill ? 'promptLens' : 'lens', lens, 'u32', [this.batch]);
    const wgPerSeq = cdiv(n * rowLen, 64);
    const wgX = Math.min(wgPerSeq, 32768);
    const wgY = cdiv(wgPerSeq, wgX);
    for (let c = 0; c < this.chunks; c++) {
      const u = { n, rowLen, maxLen: this.maxLen, batch0: c * this.seqsPerChunk, prefill: prefill ? 1 : 0, wgX };
      kvWriteKernel.run(gpu, {}, { kNew: k, vNew: v, kc: this.k[layer][c], vc: this.v[layer][c], lens }, [wgX, wgY, this.chunkSeqs(c)], u);
    }
  }

  /** Writes n new tokens per sequence (k, v: [B·n, KVH·D], rows b·n + i) at positions lens[b] + i. */
  append(gpu: Gpu, layer: number, k: Tensor, v: Tensor, lens: Tensor = this.lens): void {
    const n = k.shape[0] / this.batch;
    if (!Number.isInteger(n) || n < 1) {
      throw new GpuError(`KvCache.append: k has ${k.shape[0]} rows, not a positive multiple of batch ${this.batch}`);
    }
    this.write(gpu, 'KvCache.append', layer, k, v, lens, n, false);
  }

  /** Writes a right-padded prompt batch's k/v ([B·T, KVH·D]): rows t < promptLens[b] to positions t. */
  prefill(gpu: Gpu, layer: number, k: Tensor, v: Tensor, promptLens: Tensor, seqLen: number): void {
    this.write(gpu, 'KvCache.prefill', layer, k, v, promptLens, seqLen, true);
  }

  /** lens ← promptLens (u32 [B]), recorded in order with the other commands. */
  setLens(gpu: Gpu, promptLens: Tensor): void {
    expectTensor('KvCache.setLens', 'promptLens', promptLens, 'u32', [this.batch]);
    gpu.copy(promptLens, this.lens, this.batch);
  }

  /** lens[b] += n for every sequence (after all layers of a decode step appended their tokens). */
  advance(gpu: Gpu, n = 1): void {
    lensAddKernel.run(gpu, {}, { lens: this.lens }, cdiv(this.batch, 64), { n: this.batch, add: n });
  }

  /**
   * Copies sequence src's rows (all layers, positions < rows, default maxLen) and its length into each
   * sequence of dsts — e.g. fork one prefilled prompt into n sample slots. Recorded copies; O(layers ×
   * dsts) copy commands, cheap next to a prefill.
   */
  copySequence(gpu: Gpu, src: number, dsts: readonly number[], rows = this.maxLen): void {
    const seqElems = this.maxLen * this.kvHeads * this.headDim;
    const n = Math.min(rows, this.maxLen) * this.kvHeads * this.headDim;
    const where = (s: number): [number, number] => {
      if (!Number.isInteger(s) || s < 0 || s >= this.batch) throw new GpuError(`KvCache.copySequence: sequence ${s} out of range [0, ${this.batch})`);
      return [Math.floor(s / this.seqsPerChunk), (s % this.seqsPerChunk) * seqElems];
    };
    const [sc, so] = where(src);
    const targets = dsts.filter((d) => where(d) && d !== src);
    if (!targets.length || n === 0) return;
    // copyBufferToBuffer may not have the same buffer as source and destination (src and dst in one
    // chunk), so every row block goes through a scratch tensor; copies execute in recording order.
    const scratch = gpu.empty([n], 'f32', 'kv.copy');
    const lensScratch = gpu.empty([1], 'u32', 'kv.copy.lens');
    for (const cache of [this.k, this.v]) {
      for (let l = 0; l < this.layers; l++) {
        gpu.copy(cache[l][sc], scratch, n, so, 0);
        for (const d of targets) {
          const [dc, dOff] = where(d);
          gpu.copy(scratch, cache[l][dc], n, 0, dOff);
        }
      }
    }
    gpu.copy(this.lens, lensScratch, 1, src, 0);
    for (const d of targets) gpu.copy(lensScratch, this.lens, 1, 0, d);
    scratch.dispose();
    lensScratch.dispose();
  }

  dispose(): void {
    for (const list of [...this.k, ...this.v]) for (const t of list) t.dispose();
    this.lens.dispose();
  }
}

// -------------------------------------------------------------------------------------------- decode

export type DecodeVariant = 'single' | 'split';

export interface DecodeOptions {
  scale?: number;
  /** 'split' (default): split-K over key blocks + a reduce pass — B·KVH·nSplits workgroups, the
   * known-good design for GPUs and measured faster on lavapipe too (B=64, cache 100: ~15 vs ~28 ms on a
   * loaded 2-core VM). 'single': one workgroup per (b, kv head) walks all keys, no reduce pass. */
  variant?: DecodeVariant;
  /** Upper bound on lens[b] + 1 over the batch, known on the CPU (longest prompt + steps so far);
   * bounds the split grid. Default: cache.maxLen. */
  maxAttendLen?: number;
  /** Code-generation overrides (benchmarks). */
  config?: Partial<KernelConfig>;
  /** Keys per split (split variant). Default: chosen from B·KVH and maxAttendLen. */
  splitLen?: number;
}

// One invocation per (query head g of a GQA group, key split). On software adapters a workgroup is
// exactly one group's G heads on one split, so K/V loads are workgroup-uniform; on GPUs it packs
// `spw` splits to fill a wider workgroup.
interface DecodeParams {
  headDim: number;
  groupSize: number;
  /** Splits per workgroup. */
  spw: number;
  /** Single pass (writes the output) or split-K (writes partials for the reduce pass). */
  final: boolean;
  kb: number;
  dynamicNv: boolean;
}

const decodeKernel = defineKernel({
  name: 'attention_decode',
  bindings: ({ headDim, final }: DecodeParams) => {
    const VT = vecInfo(headDim).vt;
    return [
      ['q', VT, 'read'], ['kc', VT, 'read'], ['vc', VT, 'read'], ['lens', 'u32', 'read'],
      ...(final ? [['o', VT, 'read_write'] as const] : [['pacc', VT, 'read_write'] as const, ['pml', 'f32', 'read_write'] as const]),
    ];
  },
  uniforms: { H: 'u32', KVH: 'u32', maxLen: 'u32', splitLen: 'u32', nSplits: 'u32', batch0: 'u32', nv: 'u32', scale: 'f32' },
  key: ({ headDim, groupSize, spw, final, kb, dynamicNv }) => `${final ? 'single' : 'split'}_d${headDim}_g${groupSize}_s${spw}_kb${kb}${dynamicNv ? '_dyn' : ''}`,
  space: () => product({ headDim: HEAD_DIMS, groupSize: [1, 2, 7], spw: [1, 4], final: BOOL, kb: [4, 8], dynamicNv: BOOL }),
  body: (p) => decodeBody(p),
});

function decodeBody(cfg: DecodeParams): string {
  const { headDim, groupSize, spw, final } = cfg;
  const { prelude } = vecInfo(headDim);
  const nv = nvBound(cfg);
  const store = final
    ? `let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var e = 0u; e < ${nv}; e++) { o[qRow + e] = acc[e] * inv; }`
    : `let part = (b * u.H + h) * u.nSplits + split;
    for (var e = 0u; e < ${nv}; e++) { pacc[part * NV + e] = acc[e]; }
    pml[2u * part] = m;
    pml[2u * part + 1u] = l;`;
  return /* wgsl */ `${prelude}
const G = ${groupSize}u;
const SPW = ${spw}u;

@compute @workgroup_size(${groupSize * spw})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let g = li % G;
  let split = ${spw === 1 ? 'wg.x; // statically workgroup-uniform, so K/V loads are broadcasts on lavapipe' : 'wg.x * SPW + li / G;'}
  let kvh = wg.y;
  let bl = wg.z;
  let b = u.batch0 + bl;
  let h = kvh * G + g;
  let klen = min(lens[b] + 1u, u.maxLen);
  let jStart = min(split * u.splitLen, klen);
  let jEnd = min(jStart + u.splitLen, klen);
  let qRow = (b * u.H + h) * NV;
  let kvStride = u.KVH * NV;
  let kvBase = bl * u.maxLen * kvStride + kvh * NV;
  var qr: array<VT, NV>;
  for (var e = 0u; e < ${nv}; e++) { qr[e] = q[qRow + e] * u.scale; }
  var acc: array<VT, NV>;
  var m = NEG;
  var l = 0.0;
  let jLast = max(jEnd, 1u) - 1u;
  for (var j0 = jStart; j0 < jEnd; j0 += ${cfg.kb}u) {${softmaxBlock(cfg, 'kc', 'vc', (j) => `min(${j}, jLast)`, (j) => `${j} < jEnd`)}
  }
  if (split < u.nSplits) {
    ${store}
  }
}`;
}

// Merges split partials: out = Σ_s e^{m_s - M} acc_s / Σ_s e^{m_s - M} l_s. One invocation per output vector.
const decodeReduceKernel = defineKernel({
  name: 'attention_decode_reduce',
  bindings: ({ headDim }: { headDim: number }) => {
    const VT = vecInfo(headDim).vt;
    return [['pacc', VT, 'read'], ['pml', 'f32', 'read'], ['o', VT, 'read_write']];
  },
  uniforms: { rows: 'u32', nSplits: 'u32' },
  key: ({ headDim }) => `d${headDim}`,
  space: () => product({ headDim: HEAD_DIMS }),
  body: ({ headDim }) => /* wgsl */ `${vecInfo(headDim).prelude}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let idx = wg.x * 64u + li;
  if (idx >= u.rows * NV) { return; }
  let row = idx / NV;              // (b·H + h)
  let e = idx % NV;
  let base = row * u.nSplits;
  var M = NEG;
  for (var s = 0u; s < u.nSplits; s++) { M = max(M, pml[2u * (base + s)]); }
  var L = 0.0;
  var acc = VT(0.0);
  for (var s = 0u; s < u.nSplits; s++) {
    let w = exp(pml[2u * (base + s)] - M);
    L += w * pml[2u * (base + s) + 1u];
    acc += w * pacc[(base + s) * NV + e];
  }
  o[idx] = acc / L;
}`,
});

/**
 * Decode attention for one new token per sequence: q [B, H·D] attends over cache positions
 * 0 ..= lens[b] (the committed prefix plus the token just appended at lens[b]) of `layer`.
 */
export function attentionDecode(gpu: Gpu, q: Tensor, cache: KvCache, layer: number, lens: Tensor = cache.lens, opts: DecodeOptions = {}): Tensor {
  const kernel = 'attentionDecode';
  const { batch: B, kvHeads: KVH, headDim: D, maxLen } = cache;
  if (q.shape.length !== 2 || q.shape[0] !== B || q.shape[1] % D !== 0 || (q.shape[1] / D) % KVH !== 0) {
    throw new GpuError(`${kernel}: q has shape [${q.shape.join(', ')}], expected [${B}, H·${D}] with H a multiple of kvHeads ${KVH}`);
  }
  if (q.dtype !== 'f32') throw new GpuError(`${kernel}: q must be f32, got ${q.dtype}`);
  expectTensor(kernel, 'lens', lens, 'u32', [B]);
  if (!Number.isInteger(layer) || layer < 0 || layer >= cache.layers) throw new GpuError(`${kernel}: layer ${layer} out of range [0, ${cache.layers})`);
  const H = q.shape[1] / D;
  const G = H / KVH;
  const scale = scaleOf({ headDim: D, scale: opts.scale });
  const variant: DecodeVariant = opts.variant ?? 'split';
  const attendLen = Math.min(maxLen, Math.max(1, opts.maxAttendLen ?? maxLen));
  const out = gpu.empty([B, H * D], 'f32', 'attention.decode.out');
  const cfg = attentionConfig(gpu, opts.config);
  const nv = vecInfo(D).nv;

  if (variant === 'single') {
    const prog = decodeKernel.program({ headDim: D, groupSize: G, spw: 1, final: true, kb: cfg.kb, dynamicNv: cfg.dynamicNv });
    for (let c = 0; c < cache.chunks; c++) {
      const u = { H, KVH, maxLen, splitLen: maxLen, nSplits: 1, batch0: c * cache.seqsPerChunk, nv, scale };
      gpu.run(prog, { q, kc: cache.k[layer][c], vc: cache.v[layer][c], lens, o: out }, [1, KVH, cache.chunkSeqs(c)], u);
    }
    return out;
  }

  // Split-K: enough workgroups to fill a GPU (≈ 1024 splits·groups), splits of at least 32 keys.
  let splitLen = opts.splitLen;
  if (splitLen === undefined) {
    const wantSplits = Math.max(1, Math.min(cdiv(attendLen, 32), Math.ceil(1024 / (B * KVH))));
    splitLen = Math.ceil(cdiv(attendLen, wantSplits) / 16) * 16;
  }
  if (!Number.isInteger(splitLen) || splitLen < 1) throw new GpuError(`${kernel}: bad splitLen ${splitLen}`);
  const nSplits = cdiv(attendLen, splitLen);
  const spw = Math.max(1, Math.min(nSplits, Math.floor(cfg.decodeLanes / G)));
  const pacc = gpu.empty([B * H * nSplits, D], 'f32', 'attention.decode.pacc');
  const pml = gpu.empty([B * H * nSplits, 2], 'f32', 'attention.decode.pml');
  const prog = decodeKernel.program({ headDim: D, groupSize: G, spw, final: false, kb: cfg.kb, dynamicNv: cfg.dynamicNv });
  for (let c = 0; c < cache.chunks; c++) {
    const u = { H, KVH, maxLen, splitLen, nSplits, batch0: c * cache.seqsPerChunk, nv, scale };
    gpu.run(prog, { q, kc: cache.k[layer][c], vc: cache.v[layer][c], lens, pacc, pml }, [cdiv(nSplits, spw), KVH, cache.chunkSeqs(c)], u);
  }
  const nvecs = B * H * nv;
  decodeReduceKernel.run(gpu, { headDim: D }, { pacc, pml, o: out }, cdiv(nvecs, 64), { rows: B * H, nSplits });
  pacc.dispose();
  pml.dispose();
  return out;
}

// ------------------------------------------------------------------------------ float64 references

type Num = ArrayLike<number>;

function refDims(d: AttentionDims) {
  const { batch: B, seqLen: T, heads: H, kvHeads: KVH, headDim: D } = d;
  return { B, T, H, KVH, D, G: H / KVH, scale: scaleOf(d) };
}

/** Standard causal GQA softmax attention in float64. Returns out [B·T, H·D] and lse [B·H·T]. */
export function attentionRef(q: Num, k: Num, v: Num, dims: AttentionDims): { out: Float64Array; lse: Float64Array } {
  const { B, T, H, KVH, D, G, scale } = refDims(dims);
  const out = new Float64Array(B * T * H * D);
  const lse = new Float64Array(B * H * T);
  const s = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / G);
      for (let t = 0; t < T; t++) {
        const qo = (b * T + t) * H * D + h * D;
        let m = -Infinity;
        for (let j = 0; j <= t; j++) {
          const ko = (b * T + j) * KVH * D + kvh * D;
          let d = 0;
          for (let e = 0; e < D; e++) d += q[qo + e] * k[ko + e];
          s[j] = d * scale;
          if (s[j] > m) m = s[j];
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += (s[j] = Math.exp(s[j] - m));
        for (let j = 0; j <= t; j++) {
          const p = s[j] / sum;
          const vo = (b * T + j) * KVH * D + kvh * D;
          for (let e = 0; e < D; e++) out[qo + e] += p * v[vo + e];
        }
        lse[(b * H + h) * T + t] = m + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

/** Analytic backward of attentionRef: dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = scale·dS·K, dK = scale·dSᵀ·Q, dV = Pᵀ·dO. */
export function attentionBackwardRef(q: Num, k: Num, v: Num, dOut: Num, dims: AttentionDims): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, T, H, KVH, D, G, scale } = refDims(dims);
  const dq = new Float64Array(B * T * H * D);
  const dk = new Float64Array(B * T * KVH * D);
  const dv = new Float64Array(B * T * KVH * D);
  const p = new Float64Array(T);
  const dp = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / G);
      for (let t = 0; t < T; t++) {
        const qo = (b * T + t) * H * D + h * D;
        let m = -Infinity;
        for (let j = 0; j <= t; j++) {
          const ko = (b * T + j) * KVH * D + kvh * D;
          let d = 0;
          let g = 0;
          for (let e = 0; e < D; e++) {
            d += q[qo + e] * k[ko + e];
            g += dOut[qo + e] * v[ko + e];
          }
          p[j] = d * scale;
          dp[j] = g;
          if (p[j] > m) m = p[j];
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += (p[j] = Math.exp(p[j] - m));
        let delta = 0;
        for (let j = 0; j <= t; j++) {
          p[j] /= sum;
          delta += p[j] * dp[j];
        }
        for (let j = 0; j <= t; j++) {
          const ko = (b * T + j) * KVH * D + kvh * D;
          const ds = p[j] * (dp[j] - delta);
          for (let e = 0; e < D; e++) {
            dq[qo + e] += scale * ds * k[ko + e];
            dk[ko + e] += scale * ds * q[qo + e];
            dv[ko + e] += p[j] * dOut[qo + e];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/**
 * Decode reference: q [B, H·D] against per-sequence caches kCache/vCache [B, maxLen, KVH·D], attending
 * to positions < attendLens[b].
 */
export function attentionDecodeRef(
  q: Num,
  kCache: Num,
  vCache: Num,
  attendLens: readonly number[],
  dims: { batch: number; heads: number; kvHeads: number; headDim: number; maxLen: number; scale?: number },
): Float64Array {
  const { batch: B, heads: H, kvHeads: KVH, headDim: D, maxLen } = dims;
  const G = H / KVH;
  const scale = scaleOf(dims);
  const out = new Float64Array(B * H * D);
  for (let b = 0; b < B; b++) {
    const n = attendLens[b];
    const s = new Float64Array(n);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / G);
      const qo = (b * H + h) * D;
      let m = -Infinity;
      for (let j = 0; j < n; j++) {
        const ko = (b * maxLen + j) * KVH * D + kvh * D;
        let d = 0;
        for (let e = 0; e < D; e++) d += q[qo + e] * kCache[ko + e];
        s[j] = d * scale;
        m = Math.max(m, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < n; j++) sum += (s[j] = Math.exp(s[j] - m));
      for (let j = 0; j < n; j++) {
        const vo = (b * maxLen + j) * KVH * D + kvh * D;
        for (let e = 0; e < D; e++) out[qo + e] += (s[j] / sum) * vCache[vo + e];
      }
    }
  }
  return out;
}

/** FLOPs of the causal forward (QKᵀ and PV, 2 per multiply-add), for benchmarks. */
export function attentionForwardFlops(d: AttentionDims): number {
  const pairs = (d.seqLen * (d.seqLen + 1)) / 2;
  return 4 * d.batch * d.heads * d.headDim * pairs;
}

/** FLOPs of the backward as implemented (dq pass: QKᵀ, dO·Vᵀ, dS·K; dk/dv pass: QKᵀ, dO·Vᵀ, Pᵀ·dO, dSᵀ·Q). */
export function attentionBackwardFlops(d: AttentionDims): number {
  const pairs = (d.seqLen * (d.seqLen + 1)) / 2;
  return 14 * d.batch * d.heads * d.headDim * pairs;
}
