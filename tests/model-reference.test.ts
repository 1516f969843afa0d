import { describe, expect, it } from 'vitest';
import { parseConfig, expectedTensors, type ModelConfig } from '../src/model/config.ts';
import {
  applyRope,
  attention,
  linear,
  matmul,
  referenceForward,
  rmsnorm,
  rope,
  ropeInvFreq,
  ropeTables,
  silu,
  swiglu,
  type Weights,
} from '../src/model/reference.ts';
import { SeedStreamRng } from '../src/util/rng.ts';
import { randomTensorValues } from '../src/model/init.ts';
import { tinyConfigJson } from './helpers/checkpoint.ts';

const arr = (a: ArrayLike<number>) => Array.from(a);
/** max |a-b| */
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function randomWeights(cfg: ModelConfig, seed: number): Weights {
  const w: Weights = new Map();
  for (const e of expectedTensors(cfg)) w.set(e.name, Float64Array.from(randomTensorValues(e.name, e.shape, seed)));
  return w;
}
function randVec(n: number, seed: number): Float64Array {
  return new SeedStreamRng(seed).fillNormal(new Float64Array(n)) as Float64Array;
}

describe('building blocks by hand', () => {
  it('matmul and linear (y = x Wᵀ + b)', () => {
    expect(arr(matmul([1, 2, 3, 4], [5, 6, 7, 8], 2, 2, 2))).toEqual([19, 22, 43, 50]);
    // W = [[1,0,2],[0,1,-1]] (out=2, in=3); x = [1,2,3]; b = [10,20]
    expect(arr(linear([1, 2, 3], 1, 3, [1, 0, 2, 0, 1, -1], 2, [10, 20]))).toEqual([17, 19]);
    expect(arr(linear([1, 2, 3, 0, 0, 1], 2, 3, [1, 0, 2, 0, 1, -1], 2))).toEqual([7, -1, 2, -1]);
  });
  it('rmsnorm: x · rsqrt(mean(x²)+eps) · w', () => {
    // mean([9,16]) = 12.5
    const y = rmsnorm([3, 4], 1, 2, [1, 2], 0);
    expect(y[0]).toBe(3 / Math.sqrt(12.5));
    expect(y[1]).toBe((4 / Math.sqrt(12.5)) * 2);
    const z = rmsnorm([3, 4, 0, 0.5], 2, 2, [1, 1], 0.125);
    expect(z[0]).toBeCloseTo(3 / Math.sqrt(12.625), 15);
    expect(z[3]).toBeCloseTo(0.5 / Math.sqrt(0.125 + 0.125), 15);
  });
  it('silu and swiglu: down(silu(gate x) · up x)', () => {
    expect(silu(0)).toBe(0);
    expect(silu(2)).toBeCloseTo(2 / (1 + Math.exp(-2)), 15);
    expect(swiglu([1], 1, 1, 1, { gate: [2], up: [3], down: [0.5] })[0]).toBeCloseTo(silu(2) * 3 * 0.5, 15);
    const y = swiglu([1, -1], 1, 2, 1, { gate: [1, 1], up: [1, 0], down: [1, 2], gateBias: [1], upBias: [0], downBias: [0, 1] });
    // gate = 0+1 = 1, up = 1, act = silu(1); out = [silu(1), 2 silu(1) + 1]
    expect(y[0]).toBeCloseTo(silu(1), 15);
    expect(y[1]).toBeCloseTo(2 * silu(1) + 1, 15);
  });
});

describe('RoPE', () => {
  it('position 0 is the identity (both precisions)', () => {
    const x = randVec(3 * 8, 1);
    for (const precision of ['f64', 'hf-f32'] as const) {
      const y = rope(x, 1, 3, 8, 10000, { precision });
      expect(arr(y)).toEqual(arr(x));
    }
  });
  it('rotate-half layout: pairs (i, i+d/2) rotate by pos·inv_freq_i', () => {
    // headDim 4, theta 100: inv_freq = [1, 0.1]; position 3
    const inv = ropeInvFreq(4, 100, null, 'f64');
    expect(inv[0]).toBe(1);
    expect(inv[1]).toBeCloseTo(0.1, 16);
    const x = [1, 2, 3, 4]; // pairs (x0, x2) = (1, 3) with angle 3; (x1, x3) = (2, 4) with angle 0.3
    const y = rope(x, 1, 1, 4, 100, { precision: 'f64', positions: [3] });
    const [c0, s0, c1, s1] = [Math.cos(3), Math.sin(3), Math.cos(0.3), Math.sin(0.3)];
    expect(y[0]).toBeCloseTo(1 * c0 - 3 * s0, 14);
    expect(y[2]).toBeCloseTo(3 * c0 + 1 * s0, 14);
    expect(y[1]).toBeCloseTo(2 * c1 - 4 * s1, 14);
    expect(y[3]).toBeCloseTo(4 * c1 + 2 * s1, 14);
  });
  it('dot products depend only on relative position (f64)', () => {
    const q = randVec(16, 2);
    const k = randVec(16, 3);
    const dot = (m: number, n: number) => {
      const a = rope(q, 1, 1, 16, 10000, { precision: 'f64', positions: [m] });
      const b = rope(k, 1, 1, 16, 10000, { precision: 'f64', positions: [n] });
      return a.reduce((s, v, i) => s + v * b[i], 0);
    };
    // 1e-12: a handful of float64 rounding steps on O(10) values
    expect(Math.abs(dot(7, 3) - dot(104, 100))).toBeLessThan(1e-12);
    expect(Math.abs(dot(7, 3) - dot(7, 4))).toBeGreaterThan(1e-3);
  });
  it('llama3 inv_freq matches hand-computed values (all three bands)', () => {
    // theta 10000, d 8 → inv = [1, 0.1, 0.01, 0.001]; old ctx 64, low 1, high 4, factor 8
    // wavelen = 2π/inv = [6.28, 62.8, 628, 6283]; high-freq band (< 16): unchanged; low band (> 64): /8
    // middle (62.8): s = (64/62.83 − 1)/3 = 0.0061972119…, v = (1−s)·0.1/8 + s·0.1
    const inv = ropeInvFreq(8, 10000, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 }, 'f64');
    expect(inv[0]).toBe(1);
    expect(inv[1]).toBeCloseTo(0.013042256043820465, 16);
    expect(inv[2]).toBeCloseTo(0.00125, 17);
    expect(inv[3]).toBeCloseTo(0.000125, 18);
  });
  it('hf-f32 tables equal f64 ones to float32 rounding, and are float32 values', () => {
    const sc = { type: 'llama3' as const, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const a = ropeInvFreq(64, 500000, sc, 'hf-f32');
    const b = ropeInvFreq(64, 500000, sc, 'f64');
    for (let i = 0; i < 32; i++) {
      expect(a[i]).toBe(Math.fround(a[i]));
      // a few float32 ops, each ≤ 2⁻²⁴ relative → 1e-6 relative is a safe bound
      expect(Math.abs(a[i] - b[i]) / b[i]).toBeLessThan(1e-6);
    }
    const { cos } = ropeTables([0, 1, 5000], a, 'hf-f32');
    for (const c of cos) expect(c).toBe(Math.fround(c));
  });
  it("hf-f32 inv_freq is bit-identical to HF's float32 buffer (Llama-3.2-1B llama3 scaling, Qwen3-0.6B)", () => {
    // LlamaRotaryEmbedding(config).inv_freq / Qwen3RotaryEmbedding, transformers 5.18 + torch 2.13
    // (CPU), printed as float64. Exact equality: the emulation reproduces every float32 rounding.
    const llama = [1.0, 0.663601279258728, 0.44036662578582764, 0.2922278344631195, 0.193922758102417, 0.12868738174438477, 0.08539710193872452, 0.05666961893439293, 0.03760603070259094, 0.02495540864765644, 0.016560440883040428, 0.010989529080688953, 0.00729266507551074, 0.00483942124992609, 0.0032114461064338684, 0.0012905480107292533, 0.000429556705057621, 9.708286233944818e-05, 1.9461638657958247e-05, 1.291476746700937e-05, 8.570255886297673e-06, 5.687232260243036e-06, 3.7740544485131977e-06, 2.504467147446121e-06, 1.6619674170215148e-06, 1.1028836297555245e-06, 7.318749339901842e-07, 4.856731266045244e-07, 3.2229328894572973e-07, 2.1387423032592778e-07, 1.4192720243499934e-07, 9.418306490260875e-08];
    const sc = { type: 'llama3' as const, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    expect(arr(ropeInvFreq(64, 500000, sc, 'hf-f32'))).toEqual(llama);
    const qwen3Every9th = [1.0, 0.14330126345157623, 0.02053525112569332, 0.002942727180197835, 0.00042169648804701865, 6.042963650543243e-05, 8.659643754072022e-06, 1.2409377632138785e-06];
    expect(arr(ropeInvFreq(128, 1000000, null, 'hf-f32')).filter((_, i) => i % 9 === 0)).toEqual(qwen3Every9th);
  });
  it('applyRope rejects a table of the wrong size', () => {
    const { cos, sin } = ropeTables([0], ropeInvFreq(4, 100), 'f64');
    expect(() => applyRope(new Float64Array(16), 2, 2, 4, cos, sin)).toThrow(/table/);
  });
});

describe('attention', () => {
  it('single token returns v; t=0 always returns v[0]', () => {
    const q = randVec(3 * 2 * 4, 4);
    const k = randVec(3 * 1 * 4, 5);
    const v = randVec(3 * 1 * 4, 6);
    const o = attention(q, k, v, 3, 2, 1, 4);
    expect(arr(o.subarray(0, 4))).toEqual(arr(v.subarray(0, 4)));
    expect(arr(o.subarray(4, 8))).toEqual(arr(v.subarray(0, 4)));
  });
  it('zero queries → uniform average over the causal prefix', () => {
    const v = Float64Array.from([1, 10, 3, 30, 8, 80]); // T=3, 1 head, D=2
    const o = attention(new Float64Array(6), randVec(6, 7), v, 3, 1, 1, 2);
    expect(o[2]).toBeCloseTo(2, 14);
    expect(o[3]).toBeCloseTo(20, 14);
    expect(o[4]).toBeCloseTo(4, 14);
    expect(o[5]).toBeCloseTo(40, 14);
  });
  it('causal: false attends to every position', () => {
    const v = Float64Array.from([1, 10, 3, 30, 8, 80]);
    const o = attention(new Float64Array(6), randVec(6, 7), v, 3, 1, 1, 2, { causal: false });
    expect(o[0]).toBeCloseTo(4, 14);
    expect(o[1]).toBeCloseTo(40, 14);
  });
  it('scale is 1/sqrt(headDim): probabilities by hand', () => {
    // D=4, t=1: q=[1,0,0,0], k0=0, k1=[2,0,0,0] → scores [0, 2/2=1] → probs [1/(1+e), e/(1+e)]
    const q = Float64Array.from([0, 0, 0, 0, 1, 0, 0, 0]);
    const k = Float64Array.from([0, 0, 0, 0, 2, 0, 0, 0]);
    const o = attention(q, k, new Float64Array(8), 2, 1, 1, 4, { probs: true });
    expect(o.probs![2]).toBeCloseTo(1 / (1 + Math.E), 15);
    expect(o.probs![3]).toBeCloseTo(Math.E / (1 + Math.E), 15);
    expect(o.probs![1]).toBe(0); // masked (future)
  });
  it('GQA equals MHA with kv heads repeated as repeat_interleave (head h uses kv h // group)', () => {
    const T = 5, H = 6, KV = 2, D = 4, G = H / KV;
    const q = randVec(T * H * D, 8);
    const k = randVec(T * KV * D, 9);
    const v = randVec(T * KV * D, 10);
    const kx = new Float64Array(T * H * D);
    const vx = new Float64Array(T * H * D);
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++)
        for (let d = 0; d < D; d++) {
          kx[(t * H + h) * D + d] = k[(t * KV + Math.floor(h / G)) * D + d];
          vx[(t * H + h) * D + d] = v[(t * KV + Math.floor(h / G)) * D + d];
        }
    expect(arr(attention(q, k, v, T, H, KV, D))).toEqual(arr(attention(q, kx, vx, T, H, H, D)));
  });
});

/**
 * An independent, deliberately literal transcription of HF's modeling code (tensors as nested
 * arrays, [heads][T][D] after transpose, explicit rotate_half via concatenation, repeat_kv,
 * additive -inf causal mask, full-row softmax), used to cross-check referenceForward.
 */
function hfLiteral(cfg: ModelConfig, w: Weights, ids: number[]): number[][] {
  const T = ids.length;
  const W = (n: string) => w.get(n)!;
  const lin = (x: number[][], name: string, out: number, inp: number, bias?: string): number[][] =>
    x.map((row) => Array.from({ length: out }, (_, o) => row.reduce((s, xi, i) => s + xi * W(name)[o * inp + i], 0) + (bias ? W(bias)[o] : 0)));
  const norm = (x: number[], wt: ArrayLike<number>) => {
    const v = x.reduce((s, a) => s + a * a, 0) / x.length;
    return x.map((a, i) => wt[i] * (a / Math.sqrt(v + cfg.rmsNormEps)));
  };
  const D = cfg.headDim, half = D / 2;
  const inv = ropeInvFreq(D, cfg.ropeTheta, cfg.ropeScaling, 'hf-f32');
  const emb = (t: number) => { const f = Array.from(inv, (x) => Math.fround(x * t)); return [...f, ...f]; };
  const cosT = Array.from({ length: T }, (_, t) => emb(t).map((a) => Math.fround(Math.cos(a))));
  const sinT = Array.from({ length: T }, (_, t) => emb(t).map((a) => Math.fround(Math.sin(a))));
  const rotateHalf = (x: number[]) => [...x.slice(half).map((a) => -a), ...x.slice(0, half)];
  const applyRot = (x: number[], t: number) => { const r = rotateHalf(x); return x.map((a, i) => a * cosT[t][i] + r[i] * sinT[t][i]); };
  const H = cfg.hidden;
  let h = ids.map((id) => arr(W('model.embed_tokens.weight').subarray(id * H, (id + 1) * H)));
  for (let l = 0; l < cfg.layers; l++) {
    const p = `model.layers.${l}.`;
    const a = h.map((r) => norm(r, W(`${p}input_layernorm.weight`)));
    const bias = (n: string) => (cfg.attentionBias ? `${p}self_attn.${n}_proj.bias` : undefined);
    const qf = lin(a, `${p}self_attn.q_proj.weight`, cfg.heads * D, H, bias('q'));
    const kf = lin(a, `${p}self_attn.k_proj.weight`, cfg.kvHeads * D, H, bias('k'));
    const vf = lin(a, `${p}self_attn.v_proj.weight`, cfg.kvHeads * D, H, bias('v'));
    // view(T, nh, D).transpose → [nh][T][D]
    const split = (x: number[][], nh: number) => Array.from({ length: nh }, (_, hh) => x.map((r) => r.slice(hh * D, (hh + 1) * D)));
    let qs = split(qf, cfg.heads), ks = split(kf, cfg.kvHeads);
    const vs = split(vf, cfg.kvHeads);
    if (cfg.qkNorm) {
      qs = qs.map((hd) => hd.map((r) => norm(r, W(`${p}self_attn.q_norm.weight`))));
      ks = ks.map((hd) => hd.map((r) => norm(r, W(`${p}self_attn.k_norm.weight`))));
    }
    qs = qs.map((hd) => hd.map((r, t) => applyRot(r, t)));
    ks = ks.map((hd) => hd.map((r, t) => applyRot(r, t)));
    const nrep = cfg.heads / cfg.kvHeads;
    const kr = ks.flatMap((x) => Array(nrep).fill(x) as number[][][]);
    const vr = vs.flatMap((x) => Array(nrep).fill(x) as number[][][]);
    const outHeads = qs.map((qh, hh) =>
      qh.map((qrow, t) => {
        const sc = kr[hh].map((krow, s) => qrow.reduce((acc, x, d) => acc + x * krow[d], 0) / Math.sqrt(D) + (s > t ? -Infinity : 0));
        const mx = Math.max(...sc);
        const e = sc.map((x) => Math.exp(x - mx));
        const z = e.reduce((x, y) => x + y, 0);
        return Array.from({ length: D }, (_, d) => e.reduce((acc, pr, s) => acc + (pr / z) * vr[hh][s][d], 0));
      }),
    );
    const attnOut = Array.from({ length: T }, (_, t) => outHeads.flatMap((hd) => hd[t]));
    const o = lin(attnOut, `${p}self_attn.o_proj.weight`, H, cfg.heads * D, cfg.oBias ? `${p}self_attn.o_proj.bias` : undefined);
    h = h.map((r, t) => r.map((x, i) => x + o[t][i]));
    const m = h.map((r) => norm(r, W(`${p}post_attention_layernorm.weight`)));
    const mb = (n: string) => (cfg.mlpBias ? `${p}mlp.${n}_proj.bias` : undefined);
    const g = lin(m, `${p}mlp.gate_proj.weight`, cfg.intermediate, H, mb('gate'));
    const u = lin(m, `${p}mlp.up_proj.weight`, cfg.intermediate, H, mb('up'));
    const act = g.map((r, t) => r.map((x, i) => (x / (1 + Math.exp(-x))) * u[t][i]));
    const dn = lin(act, `${p}mlp.down_proj.weight`, H, cfg.intermediate, mb('down'));
    h = h.map((r, t) => r.map((x, i) => x + dn[t][i]));
  }
  const f = h.map((r) => norm(r, W('model.norm.weight')));
  return lin(f, cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', cfg.vocabSize, H);
}

describe('referenceForward', () => {
  const families = {
    qwen2: parseConfig(tinyConfigJson('qwen2')),
    qwen3: parseConfig(tinyConfigJson('qwen3')),
    llama: parseConfig(tinyConfigJson('llama', { attention_bias: true, mlp_bias: true })),
  };
  const ids = [5, 17, 3, 90, 42, 42, 0, 63];

  for (const [name, cfg] of Object.entries(families)) {
    it(`${name}: matches a literal transcription of HF modeling code`, () => {
      const w = randomWeights(cfg, 11);
      const got = referenceForward(cfg, w, ids).logits;
      const want = hfLiteral(cfg, w, ids).flat();
      // same math, different summation order: float64 rounding on O(10) logits stays < 1e-11
      expect(maxAbsDiff(got, want)).toBeLessThan(1e-11);
    });
    it(`${name}: causal — logits at t do not depend on tokens after t`, () => {
      const w = randomWeights(cfg, 12);
      const a = referenceForward(cfg, w, ids).logits;
      const changed = ids.slice(0, 4).concat([1, 2, 3, 4]);
      const b = referenceForward(cfg, w, changed).logits;
      const V = cfg.vocabSize;
      expect(arr(b.subarray(0, 4 * V))).toEqual(arr(a.subarray(0, 4 * V))); // bit-identical: rows never mix
      expect(maxAbsDiff(b.subarray(4 * V), a.subarray(4 * V))).toBeGreaterThan(1e-3);
      // and a prefix run gives the same rows
      expect(arr(referenceForward(cfg, w, ids.slice(0, 4)).logits)).toEqual(arr(a.subarray(0, 4 * V)));
    });
  }

  it('1-layer model with zeroed attention/MLP and identity embeddings: logits by hand', () => {
    const cfg = { ...parseConfig({ model_type: 'llama', vocab_size: 4, hidden_size: 4, num_hidden_layers: 1, num_attention_heads: 1, intermediate_size: 2 }), rmsNormEps: 0 };
    const w: Weights = new Map();
    for (const e of expectedTensors(cfg)) w.set(e.name, new Float64Array(e.shape.reduce((a, b) => a * b, 1)));
    const eye = (s: number) => Float64Array.from({ length: 16 }, (_, i) => (i % 5 === 0 ? s : 0));
    w.set('model.embed_tokens.weight', eye(3));
    w.set('lm_head.weight', eye(1));
    for (const n of ['model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight']) w.set(n, Float64Array.from([1, 1, 1, 1]));
    w.set('model.norm.weight', Float64Array.from([1, 2, 3, 4]));
    // residual keeps 3·e_k; rmsnorm(3 e_k) = 3 e_k / sqrt(9/4) = 2 e_k; times norm weight; lm_head = I
    const { logits } = referenceForward(cfg, w, [2, 0, 3]);
    expect(arr(logits)).toEqual([0, 0, 6, 0, 2, 0, 0, 0, 0, 0, 0, 8]);
  });

  it('GQA model equals the MHA model with duplicated k/v projection rows', () => {
    const gqa = parseConfig(tinyConfigJson('llama', { num_attention_heads: 4, num_key_value_heads: 2 }));
    const mha = { ...gqa, kvHeads: 4 };
    const w = randomWeights(gqa, 13);
    const wm: Weights = new Map(w);
    const D = gqa.headDim, H = gqa.hidden;
    for (let l = 0; l < gqa.layers; l++) {
      for (const kv of ['k', 'v']) {
        const src = w.get(`model.layers.${l}.self_attn.${kv}_proj.weight`)!;
        const dst = new Float64Array(4 * D * H);
        for (let h = 0; h < 4; h++) dst.set(src.subarray(Math.floor(h / 2) * D * H, (Math.floor(h / 2) + 1) * D * H), h * D * H);
        wm.set(`model.layers.${l}.self_attn.${kv}_proj.weight`, dst);
      }
    }
    // identical arithmetic per element → bit-identical
    expect(arr(referenceForward(mha, wm, ids).logits)).toEqual(arr(referenceForward(gqa, w, ids).logits));
  });

  it('tied head equals an untied head holding a copy of the embedding', () => {
    const tied = families.qwen2;
    const w = randomWeights(tied, 14);
    const w2: Weights = new Map(w);
    w2.set('lm_head.weight', w.get('model.embed_tokens.weight')!);
    expect(arr(referenceForward({ ...tied, tieWordEmbeddings: false }, w2, ids).logits)).toEqual(arr(referenceForward(tied, w, ids).logits));
    // and the untied path really uses lm_head
    w2.set('lm_head.weight', new Float64Array(w.get('model.embed_tokens.weight')!.length));
    expect(referenceForward({ ...tied, tieWordEmbeddings: false }, w2, ids).logits.every((x) => x === 0)).toBe(true);
  });

  it('qwen3 q/k norm: scaling q_proj and k_proj does not change logits; without qk norm it does', () => {
    const cfg = families.qwen3;
    const w = randomWeights(cfg, 15);
    const ws: Weights = new Map(w);
    for (let l = 0; l < cfg.layers; l++)
      for (const kq of ['q', 'k']) ws.set(`model.layers.${l}.self_attn.${kq}_proj.weight`, w.get(`model.layers.${l}.self_attn.${kq}_proj.weight`)!.map((x) => x * 7));
    // rmsnorm is scale-invariant up to eps (1e-6 vs mean square ~1): relative effect ~1e-6
    expect(maxAbsDiff(referenceForward(cfg, ws, ids).logits, referenceForward(cfg, w, ids).logits)).toBeLessThan(1e-4);
    const noNorm = { ...cfg, qkNorm: false };
    expect(maxAbsDiff(referenceForward(noNorm, ws, ids).logits, referenceForward(noNorm, w, ids).logits)).toBeGreaterThan(1e-2);
  });

  it('shifting all positions leaves logits unchanged (RoPE is relative), f64', () => {
    const cfg = families.qwen2;
    const w = randomWeights(cfg, 16);
    const a = referenceForward(cfg, w, ids, { ropePrecision: 'f64' }).logits;
    const b = referenceForward(cfg, w, ids, { ropePrecision: 'f64', positions: ids.map((_, i) => i + 37) }).logits;
    // float64 rounding of cos/sin at positions < 50 plus downstream math: < 1e-10
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-10);
  });

  it('qwen2 biases are used (zeroing them changes logits)', () => {
    const cfg = families.qwen2;
    const w = randomWeights(cfg, 17);
    const wz: Weights = new Map(w);
    for (const k of w.keys()) if (k.endsWith('.bias')) wz.set(k, new Float64Array(w.get(k)!.length));
    expect(maxAbsDiff(referenceForward(cfg, wz, ids).logits, referenceForward(cfg, w, ids).logits)).toBeGreaterThan(1e-3);
  });

  it('capture: residual identities and shapes', () => {
    const cfg = families.qwen3;
    const w = randomWeights(cfg, 18);
    const out = referenceForward(cfg, w, ids, { capture: true });
    const T = ids.length;
    expect(out.layers).toHaveLength(cfg.layers);
    expect(arr(out.layers![0].input)).toEqual(arr(out.embeddings!));
    for (const [l, c] of out.layers!.entries()) {
      expect(c.q.length).toBe(T * cfg.heads * cfg.headDim);
      expect(c.k.length).toBe(T * cfg.kvHeads * cfg.headDim);
      expect(c.qNormed!.length).toBe(c.q.length);
      expect(c.probs.length).toBe(cfg.heads * T * T);
      expect(c.gate.length).toBe(T * cfg.intermediate);
      expect(arr(c.afterAttn)).toEqual(arr(c.input.map((x, i) => x + c.attnOut[i])));
      expect(arr(c.afterMlp)).toEqual(arr(c.afterAttn.map((x, i) => x + c.mlpOut[i])));
      if (l + 1 < cfg.layers) expect(out.layers![l + 1].input).toBe(c.afterMlp);
    }
    expect(arr(out.finalNorm!)).toEqual(arr(rmsnorm(out.layers!.at(-1)!.afterMlp, T, cfg.hidden, w.get('model.norm.weight')!, cfg.rmsNormEps)));
    expect(arr(out.logits)).toEqual(arr(referenceForward(cfg, w, ids).logits));
  });

  it('Float32Array weights give the same result as their Float64Array copies', () => {
    const cfg = families.llama;
    const w32: Weights = new Map();
    for (const e of expectedTensors(cfg)) w32.set(e.name, randomTensorValues(e.name, e.shape, 19));
    const w64: Weights = new Map([...w32].map(([k, v]) => [k, Float64Array.from(v)]));
    expect(arr(referenceForward(cfg, w32, ids).logits)).toEqual(arr(referenceForward(cfg, w64, ids).logits));
  });

  it('rejects bad token ids and missing weights', () => {
    const cfg = families.llama;
    const w = randomWeights(cfg, 20);
    expect(() => referenceForward(cfg, w, [cfg.vocabSize])).toThrow(/out of range/);
    w.delete('model.layers.1.mlp.up_proj.weight');
    expect(() => referenceForward(cfg, w, [1])).toThrow(/missing weight model\.layers\.1\.mlp\.up_proj\.weight/);
  });
});
