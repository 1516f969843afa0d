import { describe, expect, it } from 'vitest';
import { getGpu, GpuError, type Gpu, type Tensor } from '../src/gpu/runtime.ts';
import { listMatmulVariants, matmul, matmulChunk, matmulChunked, matmulRef, matmulSegmented, matmulSegmentedRef, type MatmulOptions } from '../src/kernels/matmul.ts';
import { llvmpipeSubgroupWidth } from '../src/kernels/norm.ts';
import { rng, uniformArray } from './helpers/random.ts';

// Tolerance. Float32 dot products of K terms satisfy |fl(s) − s| ≤ γ_K · Σ_k |a_k||b_k| with
// γ_K ≈ K·u, u = 2⁻²⁴ (Higham, summation in any order; fma only tightens it). The epilogue adds a
// few more roundings (alpha, bias, accumulate), each ≤ u relative to the magnitudes involved. So per
// element we allow (K + 4)·u·(|alpha|·Σ|a||b| + |bias| + |C_old|), computed in float64 from the same
// float32-rounded inputs the GPU saw — a rigorous worst-case bound, not a fitted number.
const U32 = 2 ** -24;

// One stream for the whole file: each randF32 call continues it.
const stream = rng(12345);
const randF32 = (n: number): Float32Array => uniformArray(n, stream);
const f64 = (a: Float32Array) => Float64Array.from(a);
const abs64 = (a: Float32Array) => Float64Array.from(a, Math.abs);

interface Case {
  M: number;
  N: number;
  K: number;
  batchA?: number;
  batchB?: number;
  transA?: boolean;
  transB?: boolean;
  bias?: 'row' | 'batch';
  accumulate?: boolean;
  alpha?: number;
}

interface Prepared {
  c: Case;
  out: Tensor;
  expected: Float64Array;
  bound: Float64Array;
  dispose: () => void;
}

function prepare(gpu: Gpu, c: Case, variant?: string): Prepared {
  const batchA = c.batchA ?? 1;
  const batchB = c.batchB ?? 1;
  const batch = Math.max(batchA, batchB);
  const is3d = batchA > 1 || batchB > 1;
  const aData = randF32(batchA * c.M * c.K);
  const bData = randF32(batchB * c.K * c.N);
  const aShape = c.transA ? [c.K, c.M] : [c.M, c.K];
  const bShape = c.transB ? [c.N, c.K] : [c.K, c.N];
  const a = gpu.upload(aData, batchA > 1 ? [batchA, ...aShape] : aShape);
  const b = gpu.upload(bData, batchB > 1 ? [batchB, ...bShape] : bShape);
  const refOpts = { transA: c.transA, transB: c.transB, batch, batchB };
  const exact = matmulRef(f64(aData), f64(bData), c.M, c.N, c.K, refOpts);
  const mag = matmulRef(abs64(aData), abs64(bData), c.M, c.N, c.K, refOpts);
  const alpha = c.alpha ?? 1;
  const expected = exact.map((v) => v * alpha);
  const bound = mag.map((v) => v * Math.abs(alpha));
  const opts: MatmulOptions = { transA: c.transA, transB: c.transB, alpha: c.alpha, variant };
  let bias: Tensor | undefined;
  if (c.bias) {
    const rows = c.bias === 'batch' ? batch : 1;
    const bd = randF32(rows * c.N);
    bias = gpu.upload(bd, c.bias === 'batch' ? [batch, c.N] : [c.N]);
    opts.bias = bias;
    for (let i = 0; i < expected.length; i++) {
      const z = Math.floor(i / (c.M * c.N));
      const bv = bd[(c.bias === 'batch' ? z * c.N : 0) + (i % c.N)];
      expected[i] += bv;
      bound[i] += Math.abs(bv);
    }
  }
  let out: Tensor;
  if (c.accumulate) {
    const old = randF32(batch * c.M * c.N);
    out = gpu.upload(old, is3d ? [batch, c.M, c.N] : [c.M, c.N]);
    for (let i = 0; i < expected.length; i++) {
      expected[i] += old[i];
      bound[i] += Math.abs(old[i]);
    }
    matmul(gpu, a, b, { ...opts, accumulate: true, out });
  } else {
    out = matmul(gpu, a, b, opts);
  }
  expect(out.shape).toEqual(is3d ? [batch, c.M, c.N] : [c.M, c.N]);
  const tol = (c.K + 4) * U32;
  for (let i = 0; i < bound.length; i++) bound[i] = bound[i] * tol + 1e-30;
  return {
    c,
    out,
    expected,
    bound,
    dispose: () => {
      a.dispose();
      b.dispose();
      bias?.dispose();
      out.dispose();
    },
  };
}

function check(p: Prepared, got: Float32Array, label: string): void {
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < p.expected.length; i++) {
    const r = Math.abs(got[i] - p.expected[i]) / p.bound[i];
    if (!(r <= worst)) {
      worst = r;
      worstAt = i;
    }
  }
  if (!(worst <= 1)) {
    throw new Error(`${label} ${JSON.stringify(p.c)}: element ${worstAt} got ${got[worstAt]}, expected ${p.expected[worstAt]} (error/bound ${worst})`);
  }
}

/** Records every case, reads all outputs back with one submit, checks them. */
async function runCases(gpu: Gpu, cases: Case[], variant?: string): Promise<void> {
  const prepared = cases.map((c) => prepare(gpu, c, variant));
  const got = await gpu.readMany(prepared.map((p) => p.out));
  prepared.forEach((p, i) => check(p, got[i] as Float32Array, variant ?? 'default'));
  prepared.forEach((p) => p.dispose());
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 13],
  [5, 68, 36], // small M, N and K multiples of 4 (vec4 GEMV paths)
  [37, 53, 29],
  [33, 128, 64], // vec4 rowcast paths
  [65, 129, 67],
];
// The three forms forward and backward use: A·B, A·Bᵀ (x·Wᵀ), Aᵀ·B (weight gradients). Aᵀ·Bᵀ is
// checked on the naive variant and the default choice only: every extra form is another pipeline, and
// a pipeline costs 0.1–2 s of LLVM compile time on lavapipe.
const FORMS: { transA?: boolean; transB?: boolean }[] = [{}, { transB: true }, { transA: true }];
const TT = { transA: true, transB: true };

function variantCases(variant: string): Case[] {
  const cases: Case[] = [];
  const forms = variant === 'naive' ? [...FORMS, TT] : FORMS;
  for (const [M, N, K] of SHAPES) for (const f of forms) cases.push({ M, N, K, ...f });
  for (const f of forms) {
    // Batched with shared B, per-batch bias and accumulate; and with shared A, row bias, alpha.
    cases.push({ M: 17, N: 19, K: 23, batchA: 3, ...f, bias: 'batch', accumulate: true });
    cases.push({ M: 17, N: 20, K: 24, batchB: 3, ...f, bias: 'row', alpha: -0.5 });
    cases.push({ M: 3, N: 19, K: 23, batchA: 3, batchB: 3, ...f, bias: 'row', accumulate: true, alpha: 2 });
  }
  return cases;
}

describe('matmul', () => {
  it('reference agrees with a hand-computed product (incl. transposes and batch broadcast)', () => {
    // A = [[1,2],[3,4]], B = [[5,6],[7,8]] → AB = [[19,22],[43,50]]
    const A = Float64Array.of(1, 2, 3, 4);
    const B = Float64Array.of(5, 6, 7, 8);
    expect(Array.from(matmulRef(A, B, 2, 2, 2))).toEqual([19, 22, 43, 50]);
    // Aᵀ (stored [[1,3],[2,4]]) and Bᵀ (stored [[5,7],[6,8]]) give the same product.
    expect(Array.from(matmulRef(Float64Array.of(1, 3, 2, 4), Float64Array.of(5, 7, 6, 8), 2, 2, 2, { transA: true, transB: true }))).toEqual([
      19, 22, 43, 50,
    ]);
    const two = matmulRef(Float64Array.of(1, 2, 3, 4, 1, 0, 0, 1), B, 2, 2, 2, { batch: 2, bias: Float64Array.of(1, -1) });
    expect(Array.from(two)).toEqual([20, 21, 44, 49, 6, 5, 8, 7]);
  });

  for (const variant of listMatmulVariants()) {
    it(`variant ${variant}: all forms × odd shapes, batched broadcast, bias, accumulate`, async () => {
      const gpu = await getGpu();
      // The cooperative variants need llvmpipe's 8-lane subgroups (the dispatch refuses them elsewhere).
      if (variant.startsWith('coop') && llvmpipeSubgroupWidth(gpu) !== 8) {
        expect(() => matmul(gpu, gpu.zeros([8, 8]), gpu.zeros([8, 8]), { variant })).toThrow(/needs llvmpipe with subgroups/);
        return;
      }
      await runCases(gpu, variantCases(variant), variant);
    });
  }

  it('gemvsplit with more output columns than one dispatch dimension holds (N = 70,001 > 65,535)', async () => {
    // Real GPUs pick gemvsplit for x·Wᵀ at small M; an LM head of 151,936 rows in one binding gave
    // 151,936 workgroups in x before the kernel looped over columns.
    const gpu = await getGpu();
    await runCases(gpu, [{ M: 3, N: 70001, K: 9, transB: true }], 'gemvsplit');
  });

  it('default choice on a large-ish shape 256×896×300 (A·Bᵀ, A·B, Aᵀ·B) and Aᵀ·Bᵀ', async () => {
    const gpu = await getGpu();
    await runCases(gpu, [
      { M: 256, N: 896, K: 300, transB: true },
      { M: 256, N: 896, K: 300 },
      { M: 256, N: 896, K: 300, transA: true, bias: 'row' },
      { M: 37, N: 53, K: 29, ...TT, batchA: 3, bias: 'batch', accumulate: true },
    ]);
  });

  it('default choice for weight gradients (long-K Aᵀ·B → split-K on software adapters) and tall-skinny outputs', async () => {
    const gpu = await getGpu();
    await runCases(gpu, [
      // LoRA dB [out, r] and dA [r, in] over 1100 tokens (K not a multiple of the slice length).
      { M: 17, N: 8, K: 1100, transA: true, accumulate: true, alpha: 0.5 },
      { M: 8, N: 61, K: 2111, transA: true, bias: 'row' },
      { M: 64, N: 48, K: 1536, transA: true, accumulate: true },
      // x·Aᵀ with rank-8 A: tall-skinny output.
      { M: 300, N: 8, K: 64, transB: true },
      { M: 257, N: 13, K: 33, accumulate: true },
    ]);
  });

  it('default choice on the decode shape class (M = 1, 8, 32)', async () => {
    const gpu = await getGpu();
    await runCases(gpu, [
      { M: 1, N: 300, K: 96, transB: true },
      { M: 8, N: 301, K: 97, transB: true, bias: 'row' },
      { M: 32, N: 300, K: 96, transB: true, accumulate: true },
    ]);
  });

  it('matmulChunk / matmulChunked on a ChunkedMatrix with small chunks', async () => {
    const gpu = await getGpu();
    const N = 37;
    const K = 24;
    const M = 5;
    const wData = randF32(N * K);
    const xData = randF32(M * K);
    const biasData = randF32(N);
    const w = gpu.uploadChunked(wData, N, K, 'w', 10 * K * 4); // 10 rows per chunk → 4 chunks
    expect(w.chunks.length).toBe(4);
    const x = gpu.upload(xData, [M, K]);
    const bias = gpu.upload(biasData, [N]);
    const exact = matmulRef(f64(xData), f64(wData), M, N, K, { transB: true });
    const mag = matmulRef(abs64(xData), abs64(wData), M, N, K, { transB: true });
    const tol = (K + 4) * U32;

    const parts = w.chunks.map((_, c) => matmulChunk(gpu, x, w, c));
    const full = matmulChunked(gpu, x, w, { bias });
    const old = randF32(M * N);
    const acc = gpu.upload(old, [M, N]);
    matmulChunked(gpu, x, w, { out: acc, accumulate: true, alpha: 0.5 });
    const got = await gpu.readMany([...parts, full, acc]);
    for (let c = 0; c < parts.length; c++) {
      const rows = w.chunkRows(c);
      expect(parts[c].shape).toEqual([M, rows]);
      for (let m = 0; m < M; m++)
        for (let r = 0; r < rows; r++) {
          const i = m * N + c * w.rowsPerChunk + r;
          expect(Math.abs(got[c][m * rows + r] - exact[i])).toBeLessThanOrEqual(tol * mag[i] + 1e-30);
        }
    }
    const gf = got[parts.length];
    const ga = got[parts.length + 1];
    for (let i = 0; i < M * N; i++) {
      const n = i % N;
      expect(Math.abs(gf[i] - (exact[i] + biasData[n]))).toBeLessThanOrEqual(tol * (mag[i] + Math.abs(biasData[n])));
      expect(Math.abs(ga[i] - (old[i] + 0.5 * exact[i]))).toBeLessThanOrEqual(tol * (0.5 * mag[i] + Math.abs(old[i])));
    }
    [...parts, full, acc, x, bias].forEach((t) => t.dispose());
    w.dispose();
  });

  it('rejects bad shapes with a GpuError naming the kernel and shapes', async () => {
    const gpu = await getGpu();
    const a = gpu.zeros([3, 4]);
    const b = gpu.zeros([5, 6]);
    const b3 = gpu.zeros([2, 4, 6]);
    const a3 = gpu.zeros([3, 3, 4]);
    expect(() => matmul(gpu, a, b)).toThrow(GpuError);
    expect(() => matmul(gpu, a, b)).toThrow(/matmul.*\[3, 4\].*\[5, 6\]/);
    expect(() => matmul(gpu, a3, b3)).toThrow(/do not broadcast/);
    expect(() => matmul(gpu, a, b3, { bias: gpu.zeros([5]) })).toThrow(/bias/);
    expect(() => matmul(gpu, a, b3, { accumulate: true })).toThrow(/requires out/);
    expect(() => matmul(gpu, a, b3, { out: gpu.zeros([2, 3, 5]) })).toThrow(/out/);
    expect(() => matmul(gpu, a, b3, { variant: 'nope' })).toThrow(/unknown variant/);
    const ok = matmul(gpu, a, b3);
    expect(ok.shape).toEqual([2, 3, 6]);
    await gpu.sync();
    [a, b, b3, a3, ok].forEach((t) => t.dispose());
  });
});

// Segmented matmul (LoRA of K students over one joint batch): row tile t uses B[seg[t]]. Odd row
// counts (a partial last tile), both forms, K and N on and off multiples of 4, rank-8 shapes, segments
// in any order and repeated, accumulate with alpha. Tolerance as above: (K + 4)·u32 times Σ|a||b| per
// element (a float32 dot of K terms plus the scaled accumulate).
describe('matmulSegmented', () => {
  for (const variant of ['naive', 'coop8x1', 'coopskinny', 'naive per row']) {
    it(`${variant}: A·B[s] and A·B[s]ᵀ vs the float64 reference`, async () => {
      const gpu = await getGpu();
      if (variant.startsWith('coop') && llvmpipeSubgroupWidth(gpu) !== 8) return;
      const rowsPerSeg = variant === 'naive per row' ? 1 : 8;
      for (const [M, N, K, transB] of [
        [37, 8, 64, true],
        [40, 64, 8, false],
        [37, 61, 13, true],
        [21, 8, 192, false],
        [16, 20, 12, false],
      ] as [number, number, number, boolean][]) {
        const S = 3;
        const tiles = Math.ceil(M / rowsPerSeg);
        const seg = Uint32Array.from({ length: tiles }, (_, t) => [2, 0, 0, 1, 2][t % 5]);
        const a = randF32(M * K), b = randF32(S * K * N), old = randF32(M * N);
        const out = gpu.upload(old, [M, N]);
        matmulSegmented(gpu, gpu.upload(a, [M, K]), gpu.upload(b, transB ? [S, N, K] : [S, K, N]), gpu.upload(seg), { transB, accumulate: true, alpha: -0.5, out, variant: variant.split(' ')[0], rowsPerSeg });
        const got = await gpu.readF32(out);
        const ref = matmulSegmentedRef(a, b, seg, M, N, K, transB, rowsPerSeg);
        const mag = matmulSegmentedRef(Float64Array.from(a, Math.abs), Float64Array.from(b, Math.abs), seg, M, N, K, transB, rowsPerSeg);
        for (let i = 0; i < M * N; i++) {
          const want = old[i] - 0.5 * ref[i];
          const bound = (K + 4) * U32 * (0.5 * mag[i] + Math.abs(old[i])) + 1e-30;
          if (!(Math.abs(got[i] - want) <= bound)) throw new Error(`${variant} M${M} N${N} K${K} transB ${transB}: element ${i} got ${got[i]}, want ${want}`);
        }
      }
    });
  }
});
