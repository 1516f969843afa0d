/**
 * Float64 reference forward pass for qwen2 / qwen3 / llama, following HF transformers' modeling
 * code operation by operation. GPU kernels are tested against this.
 *
 * Layouts: all activations are row-major [rows, cols] Float64Arrays. Weights are HF layout:
 * Linear weight [out, in] (y = x Wᵀ + b), embedding [vocab, hidden].
 *
 * RoPE precision: HF builds inv_freq, the angles (inv_freq × position) and cos/sin in float32
 * regardless of model dtype. `ropePrecision: 'hf-f32'` (the default in referenceForward)
 * reproduces that rounding (to within the last-ulp differences of torch's powf/cosf), which
 * matters at large positions (angle error ≈ pos × 2⁻²⁴). `'f64'` computes everything exactly in
 * float64 (used for hand-checked tests and as the "mathematical" answer).
 */
import { UserError } from '../util/errors.ts';
import type { Llama3RopeScaling, ModelConfig } from './config.ts';

export type Vec = ArrayLike<number>;
export type WeightArray = Float64Array | Float32Array;
export type Weights = Map<string, WeightArray>;
export type RopePrecision = 'hf-f32' | 'f64';

// ------------------------------------------------------------------------------------------------
// building blocks
// ------------------------------------------------------------------------------------------------

/** C[m,n] = A[m,k] · B[k,n] (all row-major). */
export function matmul(a: Vec, b: Vec, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p];
      if (av === 0) continue;
      const bo = p * n;
      const co = i * n;
      for (let j = 0; j < n; j++) c[co + j] += av * b[bo + j];
    }
  }
  return c;
}

/** HF nn.Linear: y[rows, outDim] = x[rows, inDim] · Wᵀ + bias, W is [outDim, inDim]. */
export function linear(
  x: Vec,
  rows: number,
  inDim: number,
  w: Vec,
  outDim: number,
  bias?: Vec | null,
): Float64Array {
  if (x.length !== rows * inDim) throw new RangeError(`linear: x has ${x.length} values, expected ${rows}×${inDim}`);
  if (w.length !== outDim * inDim) throw new RangeError(`linear: W has ${w.length} values, expected ${outDim}×${inDim}`);
  if (bias && bias.length !== outDim) throw new RangeError(`linear: bias has ${bias.length} values, expected ${outDim}`);
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    const xo = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let s = 0;
      for (let i = 0; i < inDim; i++) s += x[xo + i] * w[wo + i];
      y[r * outDim + o] = bias ? s + bias[o] : s;
    }
  }
  return y;
}

/** HF RMSNorm per row: x · 1/sqrt(mean(x²) + eps) · weight. */
export function rmsnorm(x: Vec, rows: number, dim: number, weight: Vec, eps: number): Float64Array {
  if (x.length !== rows * dim) throw new RangeError(`rmsnorm: x has ${x.length} values, expected ${rows}×${dim}`);
  if (weight.length !== dim) throw new RangeError(`rmsnorm: weight has ${weight.length} values, expected ${dim}`);
  const y = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[o + i] = x[o + i] * inv * weight[i];
  }
  return y;
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** Numerically stable softmax of one row in place. */
export function softmaxInPlace(row: Float64Array, start = 0, end = row.length): void {
  let mx = -Infinity;
  for (let i = start; i < end; i++) if (row[i] > mx) mx = row[i];
  let s = 0;
  for (let i = start; i < end; i++) {
    const e = Math.exp(row[i] - mx);
    row[i] = e;
    s += e;
  }
  for (let i = start; i < end; i++) row[i] /= s;
}

export interface SwigluWeights {
  gate: Vec;
  up: Vec;
  down: Vec;
  gateBias?: Vec | null;
  upBias?: Vec | null;
  downBias?: Vec | null;
}

/** HF LlamaMLP / Qwen MLP: down(silu(gate(x)) * up(x)). Returns intermediates too. */
export function swigluParts(
  x: Vec,
  rows: number,
  hidden: number,
  intermediate: number,
  w: SwigluWeights,
): { gate: Float64Array; up: Float64Array; act: Float64Array; out: Float64Array } {
  const gate = linear(x, rows, hidden, w.gate, intermediate, w.gateBias);
  const up = linear(x, rows, hidden, w.up, intermediate, w.upBias);
  const act = new Float64Array(rows * intermediate);
  for (let i = 0; i < act.length; i++) act[i] = silu(gate[i]) * up[i];
  const out = linear(act, rows, intermediate, w.down, hidden, w.downBias);
  return { gate, up, act, out };
}

export function swiglu(x: Vec, rows: number, hidden: number, intermediate: number, w: SwigluWeights): Float64Array {
  return swigluParts(x, rows, hidden, intermediate, w).out;
}

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

const f32 = Math.fround;

/**
 * inv_freq[i] for i in [0, headDim/2), as HF `_compute_default_rope_parameters` followed (if
 * scaling is llama3) by `_compute_llama3_parameters`.
 */
export function ropeInvFreq(
  headDim: number,
  theta: number,
  scaling: Llama3RopeScaling | null = null,
  precision: RopePrecision = 'hf-f32',
): Float64Array {
  if (headDim % 2 !== 0) throw new RangeError(`rope: headDim ${headDim} must be even`);
  const half = headDim / 2;
  const inv = new Float64Array(half);
  const hf = precision === 'hf-f32';
  for (let i = 0; i < half; i++) {
    if (hf) {
      const e = f32((2 * i) / headDim);
      inv[i] = f32(1 / f32(Math.pow(f32(theta), e)));
    } else {
      inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
    }
  }
  if (!scaling) return inv;

  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldCtx } = scaling;
  const lowFreqWavelen = oldCtx / lowFreqFactor; // python floats (double)
  const highFreqWavelen = oldCtx / highFreqFactor;
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    if (hf) {
      // float32 tensor ops with python-scalar operands (scalars cast to float32 first)
      const wavelen = f32(f32(2 * Math.PI) / inv[i]);
      const lowF = f32(lowFreqWavelen);
      const highF = f32(highFreqWavelen);
      let v = wavelen > lowF ? f32(inv[i] / f32(factor)) : inv[i];
      const smooth = f32(f32(f32(f32(oldCtx) / wavelen) - f32(lowFreqFactor)) / f32(highFreqFactor - lowFreqFactor));
      const smoothed = f32(f32(f32(f32(1 - smooth) * v) / f32(factor)) + f32(smooth * v));
      const medium = !(wavelen < highF) && !(wavelen > lowF);
      if (medium) v = smoothed;
      out[i] = v;
    } else {
      const wavelen = (2 * Math.PI) / inv[i];
      let v = wavelen > lowFreqWavelen ? inv[i] / factor : inv[i];
      if (!(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)) {
        const smooth = (oldCtx / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        v = ((1 - smooth) * v) / factor + smooth * v;
      }
      out[i] = v;
    }
  }
  return out;
}

/** cos/sin tables [positions.length, headDim/2] for the given inv_freq. */
export function ropeTables(
  positions: ArrayLike<number>,
  invFreq: Float64Array,
  precision: RopePrecision = 'hf-f32',
): { cos: Float64Array; sin: Float64Array } {
  const half = invFreq.length;
  const T = positions.length;
  const cos = new Float64Array(T * half);
  const sin = new Float64Array(T * half);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      if (precision === 'hf-f32') {
        const a = f32(invFreq[i] * f32(positions[t]));
        cos[t * half + i] = f32(Math.cos(a));
        sin[t * half + i] = f32(Math.sin(a));
      } else {
        const a = invFreq[i] * positions[t];
        cos[t * half + i] = Math.cos(a);
        sin[t * half + i] = Math.sin(a);
      }
    }
  }
  return { cos, sin };
}

/**
 * Apply RoPE (HF rotate-half layout) to x [T, nHeads*headDim] with tables [T, headDim/2]:
 *   out[i]      = x[i]·cos_i − x[i+d/2]·sin_i
 *   out[i+d/2]  = x[i+d/2]·cos_i + x[i]·sin_i
 */
export function applyRope(
  x: Vec,
  T: number,
  nHeads: number,
  headDim: number,
  cos: Float64Array,
  sin: Float64Array,
): Float64Array {
  const half = headDim / 2;
  if (x.length !== T * nHeads * headDim) throw new RangeError(`rope: x has ${x.length} values, expected ${T}×${nHeads}×${headDim}`);
  if (cos.length !== T * half) throw new RangeError(`rope: table has ${cos.length} values, expected ${T}×${half}`);
  const y = new Float64Array(x.length);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i];
        const s = sin[t * half + i];
        const x1 = x[o + i];
        const x2 = x[o + i + half];
        y[o + i] = x1 * c - x2 * s;
        y[o + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return y;
}

/** Convenience: RoPE at the given positions (default 0..T-1). */
export function rope(
  x: Vec,
  T: number,
  nHeads: number,
  headDim: number,
  theta: number,
  opts: { scaling?: Llama3RopeScaling | null; positions?: ArrayLike<number>; precision?: RopePrecision } = {},
): Float64Array {
  const precision = opts.precision ?? 'hf-f32';
  const positions = opts.positions ?? Array.from({ length: T }, (_, i) => i);
  const inv = ropeInvFreq(headDim, theta, opts.scaling ?? null, precision);
  const { cos, sin } = ropeTables(positions, inv, precision);
  return applyRope(x, T, nHeads, headDim, cos, sin);
}

// ------------------------------------------------------------------------------------------------
// attention
// ------------------------------------------------------------------------------------------------

/**
 * Causal grouped-query attention. q [T, heads*D], k/v [T, kvHeads*D]; query head h uses kv head
 * floor(h / (heads/kvHeads)) (HF repeat_kv). Scale defaults to 1/sqrt(D). Returns [T, heads*D].
 * Optionally also returns the attention probabilities [heads, T, T].
 */
export function attention(
  q: Vec,
  k: Vec,
  v: Vec,
  T: number,
  heads: number,
  kvHeads: number,
  headDim: number,
  opts: { scale?: number; causal?: boolean; probs?: boolean } = {},
): Float64Array & { probs?: Float64Array } {
  if (heads % kvHeads !== 0) throw new RangeError(`attention: heads ${heads} not a multiple of kvHeads ${kvHeads}`);
  if (q.length !== T * heads * headDim) throw new RangeError(`attention: q has ${q.length} values`);
  if (k.length !== T * kvHeads * headDim || v.length !== T * kvHeads * headDim) throw new RangeError(`attention: k/v size mismatch`);
  const scale = opts.scale ?? 1 / Math.sqrt(headDim);
  const causal = opts.causal ?? true;
  const group = heads / kvHeads;
  const out = new Float64Array(T * heads * headDim) as Float64Array & { probs?: Float64Array };
  const probs = opts.probs ? new Float64Array(heads * T * T) : null;
  const row = new Float64Array(T);
  const qs = heads * headDim;
  const ks = kvHeads * headDim;
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      const n = causal ? t + 1 : T;
      const qo = t * qs + h * headDim;
      for (let s = 0; s < n; s++) {
        const ko = s * ks + kh * headDim;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qo + d] * k[ko + d];
        row[s] = dot * scale;
      }
      softmaxInPlace(row, 0, n);
      for (let s = 0; s < n; s++) {
        const p = row[s];
        if (probs) probs[(h * T + t) * T + s] = p;
        const vo = s * ks + kh * headDim;
        for (let d = 0; d < headDim; d++) out[qo + d] += p * v[vo + d];
      }
    }
  }
  if (probs) out.probs = probs;
  return out;
}

// ------------------------------------------------------------------------------------------------
// full model
// ------------------------------------------------------------------------------------------------

export interface LayerCapture {
  /** residual stream entering the layer [T, hidden] */
  input: Float64Array;
  /** input_layernorm output [T, hidden] */
  attnNorm: Float64Array;
  /** q/k/v projections incl. bias: [T, heads*D], [T, kvHeads*D], [T, kvHeads*D] */
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  /** qwen3 only: after q_norm / k_norm, before RoPE */
  qNormed?: Float64Array;
  kNormed?: Float64Array;
  /** after RoPE */
  qRope: Float64Array;
  kRope: Float64Array;
  /** attention probabilities [heads, T, T] (zeros above the diagonal) */
  probs: Float64Array;
  /** attention output before o_proj [T, heads*D] */
  attn: Float64Array;
  /** o_proj output [T, hidden] */
  attnOut: Float64Array;
  /** residual after attention [T, hidden] */
  afterAttn: Float64Array;
  /** post_attention_layernorm output [T, hidden] */
  mlpNorm: Float64Array;
  /** gate(x), up(x), silu(gate)*up: [T, intermediate] */
  gate: Float64Array;
  up: Float64Array;
  act: Float64Array;
  /** down_proj output [T, hidden] */
  mlpOut: Float64Array;
  /** residual after MLP = layer output [T, hidden] */
  afterMlp: Float64Array;
}

export interface ReferenceOutput {
  /** [T, vocab] */
  logits: Float64Array;
  /** present with capture: embeddings [T, hidden] */
  embeddings?: Float64Array;
  /** present with capture: final norm output [T, hidden] */
  finalNorm?: Float64Array;
  /** present with capture: cos/sin tables [T, headDim/2] used */
  ropeCos?: Float64Array;
  ropeSin?: Float64Array;
  layers?: LayerCapture[];
}

export interface ReferenceOptions {
  capture?: boolean;
  ropePrecision?: RopePrecision;
  /** positions for each token; default 0..T-1 */
  positions?: number[];
}

function getW(weights: Weights, name: string, len: number): WeightArray {
  const w = weights.get(name);
  if (!w) throw new UserError(`reference forward: missing weight ${name}`);
  if (w.length !== len) throw new UserError(`reference forward: weight ${name} has ${w.length} values, expected ${len}`);
  return w;
}

function optW(weights: Weights, on: boolean, name: string, len: number): WeightArray | null {
  return on ? getW(weights, name, len) : null;
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  const c = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) c[i] = a[i] + b[i];
  return c;
}

/** The full causal-LM forward for one sequence (positions start at 0). */
export function referenceForward(cfg: ModelConfig, weights: Weights, ids: number[], opts: ReferenceOptions = {}): ReferenceOutput {
  const T = ids.length;
  if (T === 0) throw new RangeError('referenceForward: empty sequence');
  const { hidden: H, heads, kvHeads, headDim: D, intermediate: I, vocabSize: V, rmsNormEps: eps } = cfg;
  const capture = opts.capture ?? false;
  const precision = opts.ropePrecision ?? 'hf-f32';
  const positions = opts.positions ?? Array.from({ length: T }, (_, i) => i);
  if (positions.length !== T) throw new RangeError('referenceForward: positions length must equal ids length');

  const emb = getW(weights, 'model.embed_tokens.weight', V * H);
  let x: Float64Array = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`referenceForward: token id ${id} out of range [0, ${V})`);
    for (let i = 0; i < H; i++) x[t * H + i] = emb[id * H + i];
  }
  const out: ReferenceOutput = { logits: new Float64Array(0) };
  if (capture) out.embeddings = x.slice();

  const inv = ropeInvFreq(D, cfg.ropeTheta, cfg.ropeScaling, precision);
  const { cos, sin } = ropeTables(positions, inv, precision);
  if (capture) {
    out.ropeCos = cos;
    out.ropeSin = sin;
    out.layers = [];
  }

  for (let l = 0; l < cfg.layers; l++) {
    const p = `model.layers.${l}.`;
    const input = x;
    const attnNorm = rmsnorm(x, T, H, getW(weights, `${p}input_layernorm.weight`, H), eps);
    const q = linear(attnNorm, T, H, getW(weights, `${p}self_attn.q_proj.weight`, heads * D * H), heads * D,
      optW(weights, cfg.attentionBias, `${p}self_attn.q_proj.bias`, heads * D));
    const k = linear(attnNorm, T, H, getW(weights, `${p}self_attn.k_proj.weight`, kvHeads * D * H), kvHeads * D,
      optW(weights, cfg.attentionBias, `${p}self_attn.k_proj.bias`, kvHeads * D));
    const v = linear(attnNorm, T, H, getW(weights, `${p}self_attn.v_proj.weight`, kvHeads * D * H), kvHeads * D,
      optW(weights, cfg.attentionBias, `${p}self_attn.v_proj.bias`, kvHeads * D));
    let qPre = q;
    let kPre = k;
    if (cfg.qkNorm) {
      qPre = rmsnorm(q, T * heads, D, getW(weights, `${p}self_attn.q_norm.weight`, D), eps);
      kPre = rmsnorm(k, T * kvHeads, D, getW(weights, `${p}self_attn.k_norm.weight`, D), eps);
    }
    const qRope = applyRope(qPre, T, heads, D, cos, sin);
    const kRope = applyRope(kPre, T, kvHeads, D, cos, sin);
    const attn = attention(qRope, kRope, v, T, heads, kvHeads, D, { probs: capture });
    const attnOut = linear(attn, T, heads * D, getW(weights, `${p}self_attn.o_proj.weight`, H * heads * D), H,
      optW(weights, cfg.oBias, `${p}self_attn.o_proj.bias`, H));
    const afterAttn = add(input, attnOut);
    const mlpNorm = rmsnorm(afterAttn, T, H, getW(weights, `${p}post_attention_layernorm.weight`, H), eps);
    const mlp = swigluParts(mlpNorm, T, H, I, {
      gate: getW(weights, `${p}mlp.gate_proj.weight`, I * H),
      up: getW(weights, `${p}mlp.up_proj.weight`, I * H),
      down: getW(weights, `${p}mlp.down_proj.weight`, H * I),
      gateBias: optW(weights, cfg.mlpBias, `${p}mlp.gate_proj.bias`, I),
      upBias: optW(weights, cfg.mlpBias, `${p}mlp.up_proj.bias`, I),
      downBias: optW(weights, cfg.mlpBias, `${p}mlp.down_proj.bias`, H),
    });
    const afterMlp = add(afterAttn, mlp.out);
    if (capture) {
      const cap: LayerCapture = {
        input, attnNorm, q, k, v, qRope, kRope,
        probs: attn.probs!,
        attn: Float64Array.from(attn),
        attnOut, afterAttn, mlpNorm,
        gate: mlp.gate, up: mlp.up, act: mlp.act, mlpOut: mlp.out, afterMlp,
      };
      if (cfg.qkNorm) {
        cap.qNormed = qPre;
        cap.kNormed = kPre;
      }
      out.layers!.push(cap);
    }
    x = afterMlp;
  }
  const finalNorm = rmsnorm(x, T, H, getW(weights, 'model.norm.weight', H), eps);
  if (capture) out.finalNorm = finalNorm;
  const head = cfg.tieWordEmbeddings ? emb : getW(weights, 'lm_head.weight', V * H);
  out.logits = linear(finalNorm, T, H, head, V);
  return out;
}
