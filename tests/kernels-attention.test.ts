import { describe, expect, it } from 'vitest';
import { getGpu, GpuError, type Tensor } from '../src/gpu/runtime.ts';
import {
  KvCache,
  attention,
  attentionBackward,
  attentionBackwardRef,
  attentionDecode,
  attentionDecodeRef,
  attentionRef,
  type AttentionDims,
  type DecodeVariant,
  type KernelConfig,
} from '../src/kernels/attention.ts';
import { llvmpipeSubgroupWidth } from '../src/kernels/norm.ts';
import { normalArray, rng } from './helpers/random.ts';


function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function inputs(d: AttentionDims, seed: number) {
  const r = rng(seed);
  const rows = d.batch * d.seqLen;
  return {
    q: normalArray(rows * d.heads * d.headDim, r),
    k: normalArray(rows * d.kvHeads * d.headDim, r),
    v: normalArray(rows * d.kvHeads * d.headDim, r),
    dOut: normalArray(rows * d.heads * d.headDim, r),
  };
}

// Awkward shapes: one token, non-multiples of the 8/64-row workgroups and the 8-key softmax block, primes,
// B=3, Qwen2.5's 14/2 heads at D=64, head dims 6 (vec2) and 7 (scalar), D=128 (Qwen3), MHA (G=1).
// Few distinct head dims on purpose: each one is three more pipelines to JIT on lavapipe.
const SHAPES: AttentionDims[] = [
  { batch: 1, seqLen: 1, heads: 4, kvHeads: 2, headDim: 6 },
  { batch: 3, seqLen: 17, heads: 4, kvHeads: 2, headDim: 6 },
  { batch: 2, seqLen: 67, heads: 4, kvHeads: 2, headDim: 64 },
  { batch: 1, seqLen: 67, heads: 14, kvHeads: 2, headDim: 64 },
  { batch: 2, seqLen: 13, heads: 3, kvHeads: 3, headDim: 6 },
  { batch: 1, seqLen: 29, heads: 2, kvHeads: 1, headDim: 7 },
  { batch: 1, seqLen: 40, heads: 4, kvHeads: 1, headDim: 128, scale: 0.3 },
];

const name = (d: AttentionDims) =>
  `B=${d.batch} T=${d.seqLen} H=${d.heads} KVH=${d.kvHeads} D=${d.headDim}${d.scale ? ` scale=${d.scale}` : ''}`;

describe('attention float64 reference', () => {
  it('backward matches central finite differences (h=1e-6)', () => {
    const d: AttentionDims = { batch: 2, seqLen: 4, heads: 4, kvHeads: 2, headDim: 3 };
    const x = inputs(d, 7);
    const q = Float64Array.from(x.q), k = Float64Array.from(x.k), v = Float64Array.from(x.v), w = Float64Array.from(x.dOut);
    // loss = Σ out ∘ w, so dLoss/dOut = w.
    const loss = () => {
      const { out } = attentionRef(q, k, v, d);
      let s = 0;
      for (let i = 0; i < out.length; i++) s += out[i] * w[i];
      return s;
    };
    const an = attentionBackwardRef(q, k, v, w, d);
    const h = 1e-6;
    for (const [p, g] of [[q, an.dq], [k, an.dk], [v, an.dv]] as const) {
      const scale = Math.max(1, maxAbs(g));
      for (let i = 0; i < p.length; i++) {
        const x0 = p[i];
        p[i] = x0 + h;
        const lp = loss();
        p[i] = x0 - h;
        const lm = loss();
        p[i] = x0;
        // Central differences: truncation O(h²) ≈ 1e-12 plus rounding ≈ eps64·|loss|/h ≈ 1e-9.
        expect(Math.abs((lp - lm) / (2 * h) - g[i])).toBeLessThan(1e-6 * scale);
      }
    }
  });

  it('real rows of a right-padded batch do not depend on the pad rows', () => {
    const d: AttentionDims = { batch: 1, seqLen: 9, heads: 2, kvHeads: 1, headDim: 4 };
    const a = inputs(d, 3);
    const b = inputs(d, 4);
    const len = 5; // rows ≥ len are pads: give them other values
    const mix = (x: Float32Array, y: Float32Array, w: number) => x.map((xi, i) => (Math.floor(i / w) < len ? xi : y[i]));
    const r1 = attentionRef(a.q, a.k, a.v, d).out;
    const r2 = attentionRef(mix(a.q, b.q, 8), mix(a.k, b.k, 4), mix(a.v, b.v, 4), d).out;
    expect(maxAbsDiff(r1.subarray(0, len * 8), r2.subarray(0, len * 8))).toBe(0);
  });
});

async function checkForwardBackward(d: AttentionDims, config?: Partial<KernelConfig>) {
  const gpu = await getGpu();
  const x = inputs(d, d.seqLen * 31 + d.headDim);
  const rows = d.batch * d.seqLen;
  const q = gpu.upload(x.q, [rows, d.heads * d.headDim]);
  const k = gpu.upload(x.k, [rows, d.kvHeads * d.headDim]);
  const v = gpu.upload(x.v, [rows, d.kvHeads * d.headDim]);
  const dOut = gpu.upload(x.dOut, [rows, d.heads * d.headDim]);
  const { out, lse } = attention(gpu, q, k, v, d, config);
  const g = attentionBackward(gpu, q, k, v, out, lse, dOut, d, config);
  const [o, l, dq, dk, dv] = await gpu.readMany([out, lse, g.dq, g.dk, g.dv]);
  const ref = attentionRef(x.q, x.k, x.v, d);
  const rb = attentionBackwardRef(x.q, x.k, x.v, x.dOut, d);
  // Forward: each score is a float32 dot over D ≤ 128 terms and each output a convex combination
  // of ≤ T values; error ≲ (D + T)·eps32·|values| ≈ 2e-5 worst case, observed ≤ 3e-7 relative.
  expect(maxAbsDiff(o, ref.out)).toBeLessThan(1e-5 * Math.max(1, maxAbs(ref.out)));
  expect(maxAbsDiff(l, ref.lse)).toBeLessThan(1e-5 * Math.max(1, maxAbs(ref.lse)));
  // Backward: dk/dv sum over K = T·G (≤ 470 here) float32 terms: K·eps32 ≈ 3e-5 (linear bound);
  // observed ≤ 1e-6 relative to the largest gradient.
  expect(maxAbsDiff(dq, rb.dq)).toBeLessThan(4e-5 * Math.max(1, maxAbs(rb.dq)));
  expect(maxAbsDiff(dk, rb.dk)).toBeLessThan(4e-5 * Math.max(1, maxAbs(rb.dk)));
  expect(maxAbsDiff(dv, rb.dv)).toBeLessThan(4e-5 * Math.max(1, maxAbs(rb.dv)));
  for (const t of [q, k, v, dOut, out, lse, g.dq, g.dk, g.dv]) t.dispose();
}

// The configuration real GPUs get (64-row workgroups, constant loop bounds, wide decode workgroups),
// run on whatever adapter this is: CI has no GPU, so this is how that code path is exercised. D=4
// (one vec4 per head) because constant-bound loops are slow to JIT on lavapipe.
const GPU_CONFIG: Partial<KernelConfig> = { rows: 64, dynamicNv: false, kb: 8, decodeLanes: 64, coop: 0 };
// The per-lane software kernels (the software default when coop is off or the head is too long).
const LANE_CONFIG: Partial<KernelConfig> = { rows: 8, dynamicNv: true, kb: 8, decodeLanes: 1, coop: 0 };

describe('attention GPU vs reference', () => {
  for (const d of SHAPES) {
    it(`forward and backward, ${name(d)}`, async () => {
      await checkForwardBackward(d);
    });
  }

  it('forward and backward with the real-GPU kernel configuration, B=2 T=67 H=4 KVH=2 D=4', async () => {
    await checkForwardBackward({ batch: 2, seqLen: 67, heads: 4, kvHeads: 2, headDim: 4 }, GPU_CONFIG);
  });

  it('forward and backward with the per-lane software kernels (coop off), B=3 T=17 and B=2 T=67 D=16', async () => {
    await checkForwardBackward({ batch: 3, seqLen: 17, heads: 4, kvHeads: 2, headDim: 6 }, LANE_CONFIG);
    await checkForwardBackward({ batch: 2, seqLen: 67, heads: 4, kvHeads: 2, headDim: 16 }, LANE_CONFIG);
  });

  // The cooperative kernels (subgroup blocks of S rows): the student shape's head (D=16, G=2) with T
  // neither a multiple of S nor below it, a single token, and MHA with a scalar head (D=7). On
  // adapters without llvmpipe's subgroups these run the default kernels again.
  it('cooperative kernels: D=16 T=94/5/1, D=7 MHA', async () => {
    const gpu = await getGpu();
    const coop = llvmpipeSubgroupWidth(gpu) ?? 0;
    for (const d of [
      { batch: 3, seqLen: 94, heads: 4, kvHeads: 2, headDim: 16 },
      { batch: 2, seqLen: 5, heads: 4, kvHeads: 2, headDim: 16 },
      { batch: 1, seqLen: 1, heads: 4, kvHeads: 2, headDim: 16 },
      { batch: 2, seqLen: 23, heads: 3, kvHeads: 3, headDim: 7 },
    ]) await checkForwardBackward(d, { coop });
  });

  it('rejects mismatched shapes and dtypes with the kernel name', async () => {
    const gpu = await getGpu();
    const d: AttentionDims = { batch: 2, seqLen: 3, heads: 4, kvHeads: 2, headDim: 8 };
    const q = gpu.zeros([6, 32]);
    const k = gpu.zeros([6, 16]);
    const bad = gpu.zeros([6, 32]);
    expect(() => attention(gpu, q, bad, k, d)).toThrow(GpuError);
    expect(() => attention(gpu, q, bad, k, d)).toThrow(/attention: k must have shape \[6, 16\], got \[6, 32\]/);
    expect(() => attention(gpu, q, k, k, { ...d, kvHeads: 3 })).toThrow(/not a multiple of kvHeads/);
    const lens = gpu.zeros([2], 'f32');
    const cache = new KvCache(gpu, { layers: 1, batch: 2, maxLen: 4, kvHeads: 2, headDim: 8 });
    const qd = gpu.zeros([2, 32]);
    const qBad = gpu.zeros([2, 30]);
    expect(() => attentionDecode(gpu, qd, cache, 0, lens)).toThrow(/attentionDecode: lens must be u32/);
    expect(() => attentionDecode(gpu, qBad, cache, 0)).toThrow(/attentionDecode: q has shape/);
    expect(() => cache.append(gpu, 1, k, k)).toThrow(/layer 1 out of range/);
    for (const t of [q, k, bad, lens, qd, qBad]) t.dispose();
    cache.dispose();
  });
});

/**
 * Generation against the full forward: sequences with different prompt lengths, right-padded prompt
 * batch → GPU forward (prompt rows checked) → prefill into the cache → `steps` decode steps, each
 * output compared with the matching row of the float64 forward over the whole (prompt + generated)
 * sequence. The pads of the prompt batch hold other random values than the generated tokens.
 */
async function checkGeneration(
  variant: DecodeVariant,
  d: { heads: number; kvHeads: number; headDim: number },
  promptLens: number[],
  steps: number,
  maxLen: number,
  maxChunkBytes?: number,
  config?: Partial<KernelConfig>,
) {
  const gpu = await getGpu();
  const B = promptLens.length;
  const { heads: H, kvHeads: KVH, headDim: D } = d;
  const Tp = Math.max(...promptLens);
  const Tf = Tp + steps;
  const full: AttentionDims = { batch: B, seqLen: Tf, heads: H, kvHeads: KVH, headDim: D };
  const x = inputs(full, 99 + B);
  const pads = inputs(full, 1234);
  const ref = attentionRef(x.q, x.k, x.v, full).out;
  // Prompt batch [B·Tp]: row (b, t) is the sequence's own row when t < promptLen[b], else a pad.
  const promptRows = (src: Float32Array, padSrc: Float32Array, w: number) => {
    const outRows = new Float32Array(B * Tp * w);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < Tp; t++) {
        const from = t < promptLens[b] ? src : padSrc;
        outRows.set(from.subarray((b * Tf + t) * w, (b * Tf + t + 1) * w), (b * Tp + t) * w);
      }
    }
    return outRows;
  };
  const prompt: AttentionDims = { ...full, seqLen: Tp };
  const pq = gpu.upload(promptRows(x.q, pads.q, H * D), [B * Tp, H * D]);
  const pk = gpu.upload(promptRows(x.k, pads.k, KVH * D), [B * Tp, KVH * D]);
  const pv = gpu.upload(promptRows(x.v, pads.v, KVH * D), [B * Tp, KVH * D]);
  const { out: pOut, lse } = attention(gpu, pq, pk, pv, prompt, config);

  const layer = 1; // layer 0 stays untouched: checks that layers are separate buffers
  const cache = new KvCache(gpu, { layers: 2, batch: B, maxLen, kvHeads: KVH, headDim: D, maxChunkBytes });
  const promptLensT = gpu.upload(Uint32Array.from(promptLens), [B]);
  cache.prefill(gpu, layer, pk, pv, promptLensT, Tp);
  cache.setLens(gpu, promptLensT);

  const rowAt = (src: Float32Array, w: number, s: number) => {
    const r = new Float32Array(B * w);
    for (let b = 0; b < B; b++) r.set(src.subarray((b * Tf + promptLens[b] + s) * w, (b * Tf + promptLens[b] + s + 1) * w), b * w);
    return r;
  };
  const outs: Tensor[] = [];
  const temps: Tensor[] = [];
  for (let s = 0; s < steps; s++) {
    const q = gpu.upload(rowAt(x.q, H * D, s), [B, H * D]);
    const k = gpu.upload(rowAt(x.k, KVH * D, s), [B, KVH * D]);
    const v = gpu.upload(rowAt(x.v, KVH * D, s), [B, KVH * D]);
    cache.append(gpu, layer, k, v);
    outs.push(attentionDecode(gpu, q, cache, layer, cache.lens, { variant, maxAttendLen: Tp + s + 1, splitLen: variant === 'split' ? 16 : undefined, config }));
    cache.advance(gpu);
    temps.push(q, k, v);
  }
  const [pOutHost, lensHost, ...decoded] = await gpu.readMany([pOut, cache.lens, ...outs]);
  expect(Array.from(lensHost)).toEqual(promptLens.map((l) => l + steps));
  // Tolerances as for the forward above (same float32 dot/convex-combination error model).
  const tol = 1e-5 * Math.max(1, maxAbs(ref));
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < promptLens[b]; t++) {
      const w = H * D;
      expect(maxAbsDiff(pOutHost.subarray((b * Tp + t) * w, (b * Tp + t + 1) * w), ref.subarray((b * Tf + t) * w, (b * Tf + t + 1) * w))).toBeLessThan(tol);
    }
  }
  for (let s = 0; s < steps; s++) {
    const want = rowAt(Float32Array.from(ref), H * D, s);
    expect(maxAbsDiff(decoded[s], want)).toBeLessThan(tol);
  }
  for (const t of [pq, pk, pv, pOut, lse, promptLensT, ...outs, ...temps]) t.dispose();
  cache.dispose();
}

describe('KV cache decode', () => {
  it('single-pass decode equals the last row of the full forward at every step (D=6, G=2)', async () => {
    await checkGeneration('single', { heads: 4, kvHeads: 2, headDim: 6 }, [5, 2, 7], 4, 12);
  });

  it('split-K decode equals the full forward (Qwen2.5 heads, 3 splits, cache split by batch)', async () => {
    const maxLen = 40;
    // 2 sequences per cache buffer: B=3 spans two chunks.
    await checkGeneration('split', { heads: 14, kvHeads: 2, headDim: 64 }, [20, 3, 33], 3, maxLen, 2 * maxLen * 128 * 4);
  });

  it('split-K decode with the real-GPU configuration (several splits per workgroup), D=4', async () => {
    await checkGeneration('split', { heads: 4, kvHeads: 2, headDim: 4 }, [30, 3, 47], 3, 52, undefined, GPU_CONFIG);
  });

  it('single-pass decode across cache chunks, D=128 and MHA', async () => {
    await checkGeneration('single', { heads: 2, kvHeads: 2, headDim: 128 }, [1, 9, 4], 3, 16, 16 * 256 * 4);
  });

  it('copySequence forks one prefilled prompt into several slots', async () => {
    const gpu = await getGpu();
    const B = 4, H = 4, KVH = 2, D = 6, maxLen = 10, L = 6;
    const r = rng(5);
    const cache = new KvCache(gpu, { layers: 2, batch: B, maxLen, kvHeads: KVH, headDim: D, maxChunkBytes: 3 * maxLen * KVH * D * 4 });
    const pk = normalArray(B * L * KVH * D, r), pv = normalArray(B * L * KVH * D, r);
    const pkT = gpu.upload(pk, [B * L, KVH * D]), pvT = gpu.upload(pv, [B * L, KVH * D]);
    // Only sequence 2 holds the prompt (the others get length 0), then it is copied to 0, 1 and 3
    // (3 lives in the other chunk) in both layers.
    const lens0 = gpu.upload(new Uint32Array([0, 0, L, 0]), [B]);
    for (let l = 0; l < 2; l++) cache.prefill(gpu, l, pkT, pvT, lens0, L);
    cache.setLens(gpu, lens0);
    cache.copySequence(gpu, 2, [0, 1, 3], L);
    const qs = normalArray(B * H * D, r), kn = normalArray(B * KVH * D, r), vn = normalArray(B * KVH * D, r);
    const q = gpu.upload(qs, [B, H * D]), k = gpu.upload(kn, [B, KVH * D]), v = gpu.upload(vn, [B, KVH * D]);
    cache.append(gpu, 0, k, v);
    const out = attentionDecode(gpu, q, cache, 0, cache.lens, { variant: 'single' });
    const [o, lens] = await gpu.readMany([out, cache.lens]);
    expect(Array.from(lens)).toEqual([L, L, L, L]);
    // CPU cache: every sequence = sequence 2's prompt rows, then its own new token at position L.
    const w = KVH * D;
    const kc = new Float64Array(B * maxLen * w), vc = new Float64Array(B * maxLen * w);
    for (let b = 0; b < B; b++) {
      kc.set(pk.subarray(2 * L * w, 3 * L * w), b * maxLen * w);
      vc.set(pv.subarray(2 * L * w, 3 * L * w), b * maxLen * w);
      kc.set(kn.subarray(b * w, (b + 1) * w), (b * maxLen + L) * w);
      vc.set(vn.subarray(b * w, (b + 1) * w), (b * maxLen + L) * w);
    }
    const want = attentionDecodeRef(qs, kc, vc, [L + 1, L + 1, L + 1, L + 1], { batch: B, heads: H, kvHeads: KVH, headDim: D, maxLen });
    expect(maxAbsDiff(o, want)).toBeLessThan(1e-5 * Math.max(1, maxAbs(want)));
    for (const t of [pkT, pvT, lens0, q, k, v, out]) t.dispose();
    cache.dispose();
  });
});
