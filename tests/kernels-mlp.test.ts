import { describe, expect, it } from 'vitest';
import { getGpu, GpuError } from '../src/gpu/runtime.ts';
import { matmulRef } from '../src/kernels/matmul.ts';
import {
  accuracyCounts,
  accuracyCountsRef,
  gatherImages,
  klDistill,
  klDistillRef,
  narrowLinear,
  narrowLinearGradW,
  noiseImages,
  noisePixelRef,
  reluBackwardInPlace,
  reluInPlace,
  softmaxCrossEntropy,
  softmaxCrossEntropyRef,
} from '../src/experiment/mnist/kernels.ts';
import { rng, uniformArray } from './helpers/random.ts';



function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe('gatherImages', () => {
  it('decodes packed bytes to [-1, 1] for per-model index lists, with labels', async () => {
    const gpu = await getGpu();
    const nImg = 37;
    const words = 5; // 20 "pixels": any multiple of 4 works
    const r = rng(1);
    const bytes = Uint8Array.from({ length: nImg * words * 4 }, () => Math.floor(r() * 256));
    bytes[0] = 0;
    bytes[1] = 255;
    const labels = Uint32Array.from({ length: nImg }, (_, i) => i % 10);
    const G = 3;
    const rows = 5;
    const stride = 11;
    const offset = 4;
    const idx = Uint32Array.from({ length: G * stride }, () => Math.floor(r() * nImg));
    idx[offset] = 0;
    const images = gpu.upload(new Uint32Array(bytes.buffer), [nImg, words], 'u32');
    const out = gatherImages(gpu, images, gpu.upload(labels), { idx: gpu.upload(idx), stride, offset }, G, rows);
    expect(out.x.shape).toEqual([G, rows, words * 4]);
    const [x, y] = await gpu.readMany([out.x, out.labels]);
    for (let m = 0; m < G; m++) {
      for (let row = 0; row < rows; row++) {
        const img = idx[m * stride + offset + row];
        expect(y[m * rows + row]).toBe(labels[img]);
        for (let p = 0; p < words * 4; p++) {
          // b/127.5 − 1 in f32: within one ulp of 1.
          expect(Math.abs(x[(m * rows + row) * words * 4 + p] - (bytes[img * words * 4 + p] / 127.5 - 1))).toBeLessThan(2e-7);
        }
      }
    }
    expect(x[0]).toBe(-1);
    expect(x[1]).toBe(1);
  });

  it('rejects an index table too small for the batch', async () => {
    const gpu = await getGpu();
    const images = gpu.zeros([4, 196], 'u32');
    const labels = gpu.zeros([4], 'u32');
    expect(() => gatherImages(gpu, images, labels, { idx: gpu.zeros([10], 'u32'), stride: 5, offset: 2 }, 2, 4)).toThrow(GpuError);
  });
});

describe('noiseImages (counter-based hash)', () => {
  it('matches the reference bit for bit and is uniform on [-1, 1)', async () => {
    const gpu = await getGpu();
    const G = 2;
    const rows = 3;
    const pixels = 784;
    const stride = 9;
    const offset = 1;
    const idx = Uint32Array.from({ length: G * stride }, (_, i) => (i * 7919) % 60000);
    const x = await gpu.readF32(noiseImages(gpu, { idx: gpu.upload(idx), stride, offset }, G, rows, pixels, 1234, 5));
    let sum = 0;
    let sumSq = 0;
    let min = Infinity;
    let max = -Infinity;
    for (let m = 0; m < G; m++) {
      for (let r = 0; r < rows; r++) {
        for (let p = 0; p < pixels; p++) {
          const v = x[(m * rows + r) * pixels + p];
          // (h>>8)·2⁻²³ − 1 is exact in f32, so GPU and reference agree exactly.
          expect(v).toBe(noisePixelRef(1234, 5 + m, idx[m * stride + offset + r], p));
          sum += v;
          sumSq += v * v;
          min = Math.min(min, v);
          max = Math.max(max, v);
        }
      }
    }
    const n = G * rows * pixels;
    // n = 4704 uniform draws: mean sd = 0.577/√n ≈ 0.008; var of U(-1,1) is 1/3.
    expect(Math.abs(sum / n)).toBeLessThan(0.04);
    expect(Math.abs(sumSq / n - 1 / 3)).toBeLessThan(0.03);
    expect(min).toBeGreaterThanOrEqual(-1);
    expect(max).toBeLessThan(1);
  });

  it('the same image index gives the same image; other models/seeds differ', () => {
    expect(noisePixelRef(0, 3, 17, 100)).toBe(noisePixelRef(0, 3, 17, 100));
    expect(noisePixelRef(0, 3, 17, 100)).not.toBe(noisePixelRef(0, 4, 17, 100));
    expect(noisePixelRef(0, 3, 17, 100)).not.toBe(noisePixelRef(1, 3, 17, 100));
    expect(noisePixelRef(0, 3, 17, 100)).not.toBe(noisePixelRef(0, 3, 18, 100));
  });
});

describe('ReLU', () => {
  for (const n of [4096, 1001]) {
    it(`forward and backward in place (n=${n}, ${n % 4 === 0 ? 'vec4' : 'scalar'} path)`, async () => {
      const gpu = await getGpu();
      const z = uniformArray(n, n);
      const dy = uniformArray(n, n + 1);
      const y = reluInPlace(gpu, gpu.upload(z));
      const d = reluBackwardInPlace(gpu, gpu.upload(dy), y);
      const [yv, dv] = (await gpu.readMany([y, d])) as Float32Array[];
      for (let i = 0; i < n; i++) {
        expect(yv[i]).toBe(Math.max(0, z[i]));
        expect(dv[i]).toBe(z[i] > 0 ? dy[i] : 0);
      }
    });
  }
});

// Central differences on the float64 references. h = 1e-6: truncation error O(h^2·f''') ≈ 1e-12;
// round-off ≈ eps64·|f|/h ≈ 1e-10 absolute. Errors are measured relative to the largest gradient
// entry (entries near zero have no meaningful per-element relative error); ~1e-6 is the bar.
function gradcheck(f: (x: Float64Array) => number, x: Float64Array, grad: ArrayLike<number>): number {
  let worst = 0;
  let gmax = 0;
  for (let i = 0; i < grad.length; i++) gmax = Math.max(gmax, Math.abs(grad[i]));
  for (let i = 0; i < x.length; i++) {
    const keep = x[i];
    x[i] = keep + 1e-6;
    const fp = f(x);
    x[i] = keep - 1e-6;
    const fm = f(x);
    x[i] = keep;
    const num = (fp - fm) / 2e-6;
    worst = Math.max(worst, Math.abs(num - grad[i]) / gmax);
  }
  return worst;
}

describe('softmaxCrossEntropy (first `classes` logits)', () => {
  const G = 2;
  const R = 7;
  const C = 16;
  const classes = 10;
  const scale = 1 / (G * R);
  const logits = uniformArray(G * R * C, 5, 4);
  const labels = Uint32Array.from({ length: G * R }, (_, i) => (i * 3) % classes);

  it('reference gradient passes a finite-difference check', () => {
    const x = Float64Array.from(logits);
    const ref = softmaxCrossEntropyRef(x, labels, G * R, C, classes, scale);
    const f = (v: Float64Array) => softmaxCrossEntropyRef(v, labels, G * R, C, classes, scale).loss.reduce((a, b) => a + b, 0) * scale;
    expect(gradcheck(f, x, ref.dLogits)).toBeLessThan(1e-6);
    // Columns ≥ classes get exactly zero gradient.
    for (let r = 0; r < G * R; r++) for (let j = classes; j < C; j++) expect(ref.dLogits[r * C + j]).toBe(0);
  });

  it('GPU matches the reference', async () => {
    const gpu = await getGpu();
    const out = softmaxCrossEntropy(gpu, gpu.upload(logits, [G, R, C]), gpu.upload(labels, [G, R]), classes, scale);
    const [loss, d] = (await gpu.readMany([out.loss, out.dLogits])) as Float32Array[];
    const ref = softmaxCrossEntropyRef(logits, labels, G * R, C, classes, scale);
    // f32 exp/log over 10 terms of logits |z| ≤ 4: a few ulp of values ≤ ~10.
    expect(maxAbsDiff(loss, ref.loss)).toBeLessThan(5e-6);
    expect(maxAbsDiff(d, ref.dLogits)).toBeLessThan(1e-7);
  });
});

describe('klDistill (softmax over a logit range)', () => {
  const G = 3;
  const R = 5;
  const C = 16;
  const student = uniformArray(G * R * C, 8, 3);
  const teacher = uniformArray(G * R * C, 9, 3);
  for (const [lo, hi] of [
    [10, 13],
    [0, 13],
  ]) {
    it(`range [${lo}, ${hi}): reference gradcheck and GPU vs reference`, async () => {
      const scale = 1 / G;
      const x = Float64Array.from(student);
      const ref = klDistillRef(x, teacher, G * R, C, lo, hi, scale);
      const f = (v: Float64Array) => klDistillRef(v, teacher, G * R, C, lo, hi, scale).loss.reduce((a, b) => a + b, 0) * scale;
      expect(gradcheck(f, x, ref.dLogits)).toBeLessThan(1e-6);
      for (let r = 0; r < G * R; r++) for (let j = 0; j < C; j++) if (j < lo || j >= hi) expect(ref.dLogits[r * C + j]).toBe(0);
      // KL of a distribution with itself is 0.
      expect(Math.max(...klDistillRef(teacher, teacher, G * R, C, lo, hi, 1).loss.map(Math.abs))).toBeLessThan(1e-12);

      const gpu = await getGpu();
      const out = klDistill(gpu, gpu.upload(student, [G, R, C]), gpu.upload(teacher, [G, R, C]), lo, hi, scale);
      const [loss, d] = (await gpu.readMany([out.loss, out.dLogits])) as Float32Array[];
      // KL ≤ ~10 assembled from ≤ 13 f32 terms p·(log p − log q): ~1e-6 absolute.
      expect(maxAbsDiff(loss, ref.loss)).toBeLessThan(5e-6);
      expect(maxAbsDiff(d, ref.dLogits)).toBeLessThan(1e-7);
    });
  }

  it('rejects a bad range or mismatched shapes', async () => {
    const gpu = await getGpu();
    const s = gpu.zeros([2, 3, 16]);
    expect(() => klDistill(gpu, s, gpu.zeros([2, 3, 16]), 10, 17, 1)).toThrow(/range/);
    expect(() => klDistill(gpu, s, gpu.zeros([2, 4, 16]), 0, 13, 1)).toThrow(/does not match/);
  });
});

describe('accuracyCounts', () => {
  it('counts argmax hits per model over the class logits (first max on ties), accumulating', async () => {
    const gpu = await getGpu();
    const G = 3;
    const R = 130; // more rows than lanes in the workgroup
    const C = 16;
    const logits = uniformArray(G * R * C, 21);
    // A tie between classes 2 and 5 in row 0 of model 0: argmax must be 2. Huge aux logit ignored.
    logits.fill(0, 0, C);
    logits[2] = 1;
    logits[5] = 1;
    logits[12] = 100;
    const labels = Uint32Array.from({ length: R }, (_, i) => i % 10);
    labels[0] = 2;
    const counts = gpu.zeros([G], 'u32');
    const lt = gpu.upload(logits, [G, R, C]);
    const lb = gpu.upload(labels);
    accuracyCounts(gpu, lt, lb, 10, counts);
    accuracyCounts(gpu, lt, lb, 10, counts);
    const got = await gpu.readMany([counts]);
    const ref = accuracyCountsRef(logits, labels, G, R, C, 10);
    expect(ref[0]).toBeGreaterThan(0);
    expect(Array.from(got[0])).toEqual(ref.map((c) => 2 * c));
  });
});

describe('narrow output layer (N ≤ 16)', () => {
  const cases = [
    { G: 2, R: 67, K: 20, N: 16, hb: 2 },
    { G: 3, R: 1, K: 256, N: 4, hb: 3 },
    { G: 2, R: 5, K: 8, N: 12, hb: 1 }, // shared input rows
  ];
  for (const c of cases) {
    it(`forward and weight gradient vs float64 (G=${c.G}, R=${c.R}, K=${c.K}, N=${c.N}, h batch ${c.hb})`, async () => {
      const gpu = await getGpu();
      const h = uniformArray(c.hb * c.R * c.K, 31);
      const w = uniformArray(c.G * c.K * c.N, 32);
      const b = uniformArray(c.G * c.N, 33);
      const dz = uniformArray(c.G * c.R * c.N, 34);
      const y = narrowLinear(gpu, gpu.upload(h, [c.hb, c.R, c.K]), gpu.upload(w, [c.G, c.K, c.N]), gpu.upload(b, [c.G, c.N]));
      const got = await gpu.readF32(y);
      const ref = matmulRef(Float64Array.from(h), Float64Array.from(w), c.R, c.N, c.K, { batch: c.G, bias: Float64Array.from(b), biasPerBatch: true });
      // f32 sums of K ≤ 256 products of magnitude ≤ 1: error ≲ K·eps32 ≈ 3e-5.
      expect(maxAbsDiff(got, ref)).toBeLessThan(3e-5);
      if (c.hb === c.G) {
        const dw = narrowLinearGradW(gpu, gpu.upload(h, [c.G, c.R, c.K]), gpu.upload(dz, [c.G, c.R, c.N]), gpu.zeros([c.G, c.K, c.N]));
        const gotW = await gpu.readF32(dw);
        const refW = matmulRef(Float64Array.from(h), Float64Array.from(dz), c.K, c.N, c.R, { batch: c.G, transA: true });
        // Sums over R ≤ 67 rows: error ≲ R·eps32.
        expect(maxAbsDiff(gotW, refW)).toBeLessThan(1e-5);
      }
    });
  }

  it('rejects unsupported widths', async () => {
    const gpu = await getGpu();
    expect(() => narrowLinear(gpu, gpu.zeros([1, 2, 8]), gpu.zeros([1, 8, 20]), gpu.zeros([1, 20]))).toThrow(/N in/);
  });
});
