import { describe, expect, it } from 'vitest';
import { getGpu, GpuError, type Gpu } from '../src/gpu/runtime.ts';
import {
  crossEntropy,
  crossEntropyRef,
  headBackwardRef,
  headLogitsRef,
  klDistillation,
  TokenSubset,
  klDistillationRef,
  lmHeadCrossEntropy,
  logSoftmaxTopK,
  logSoftmaxTopKRef,
  topKDistillation,
  topKDistillationRef,
} from '../src/kernels/loss.ts';
import { normalArray, rng } from './helpers/random.ts';

/** max |a − b| / max |b| (relative to the largest reference value). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0;
  let s = 1e-30;
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return e / s;
}
/** Central-difference gradient check of f at x against grad (float64, h = 1e-6). */
function gradcheck(f: (x: Float64Array) => number, x: Float64Array, grad: ArrayLike<number>, idx?: number[]): number {
  const h = 1e-6;
  const ids = idx ?? [...x.keys()];
  const fd: number[] = [];
  const an: number[] = [];
  for (const i of ids) {
    const x0 = x[i];
    x[i] = x0 + h;
    const fp = f(x);
    x[i] = x0 - h;
    const fm = f(x);
    x[i] = x0;
    fd.push((fp - fm) / (2 * h));
    an.push(grad[i]);
  }
  return relErr(fd, an);
}

// Tolerances. Gradchecks (float64 reference): central differences with h = 1e-6 have truncation
// error ~h²·f‴ ≈ 1e-12 and cancellation error ~eps64·|f|/h ≈ 1e-10, so 1e-6 relative to the largest
// gradient leaves a wide margin. GPU vs reference: float32 logits from K ≤ 32 products (error
// ~K·eps32·|x||w| ≈ 1e-6) and sums of ≤ 1000 exponentials (~V·eps32 relative ≈ 1e-4 worst case,
// ~√V·eps32 typical) → losses within 1e-5 relative, gradients within 1e-4 of their largest value
// (dx and dW sum 1000 products more).
const LOSS_TOL = 1e-5;
const GRAD_TOL = 1e-4;

describe('loss references: finite-difference gradchecks (float64)', () => {
  const M = 4, V = 9;
  const z = Float64Array.from(normalArray(M * V, 1, 2));
  const t = Float64Array.from(normalArray(M * V, 2, 2));
  it('cross-entropy with ignore-index', () => {
    const labels = [3, -100, 0, 8];
    const ref = crossEntropyRef(z, M, V, labels);
    expect(ref.count).toBe(3);
    expect(gradcheck((x) => crossEntropyRef(x, M, V, labels).loss, z, ref.dlogits)).toBeLessThan(1e-6);
  });
  it('top-k KL: renormalised, raw, masked, restricted to a token set', () => {
    const k = 3;
    const idx = [1, 4, 7, 0, 2, 8, 5, 6, -1, 3, 1, 2];
    const logp = [-0.5, -1.5, -2.5, -0.2, -2, -3, -1, -1.2, 0, -0.1, -3, -4];
    const mask = [1, 0.5, 0, 2];
    for (const opts of [{}, { teacherNorm: 'raw' as const }, { mask }, { tokenSet: [1, 2, 4, 5, 6, 8], mask }]) {
      const ref = topKDistillationRef(z, M, V, idx, logp, k, opts);
      expect(ref.loss).toBeGreaterThan(0);
      expect(gradcheck((x) => topKDistillationRef(x, M, V, idx, logp, k, opts).loss, z, ref.dlogits)).toBeLessThan(1e-6);
    }
  });
  it('dense KL (with mask and token set)', () => {
    for (const opts of [{}, { mask: [1, 0, 1, 0.5], tokenSet: [0, 2, 3, 7] }]) {
      const ref = klDistillationRef(z, t, M, V, opts);
      expect(gradcheck((x) => klDistillationRef(x, t, M, V, opts).loss, z, ref.dlogits)).toBeLessThan(1e-6);
    }
    // KL(p‖p) = 0
    expect(Math.abs(klDistillationRef(z, z, M, V).loss)).toBeLessThan(1e-12);
  });
  it('LM head chain rule: dx and dW', () => {
    const H = 5;
    const x = Float64Array.from(normalArray(M * H, 3));
    const w = Float64Array.from(normalArray(V * H, 4));
    const labels = [2, 5, -100, 1];
    const loss = (xx: Float64Array, ww: Float64Array) => crossEntropyRef(headLogitsRef(xx, ww, M, H, V), M, V, labels).loss;
    const d = crossEntropyRef(headLogitsRef(x, w, M, H, V), M, V, labels).dlogits;
    const g = headBackwardRef(d, x, w, M, H, V);
    expect(gradcheck((xx) => loss(xx, w), x, g.dx)).toBeLessThan(1e-6);
    expect(gradcheck((ww) => loss(x, ww), w, g.dW)).toBeLessThan(1e-6);
  });
});

async function readF(gpu: Gpu, ...ts: Parameters<Gpu['readF32']>[0][]): Promise<Float32Array[]> {
  return (await gpu.readMany(ts)) as Float32Array[];
}

describe('cross-entropy on the GPU', () => {
  it('plain logits: M=1 V=7, M=37 V=1000 with ignored rows, given normaliser', async () => {
    const gpu = await getGpu();
    for (const [M, V, norm] of [
      [1, 7, undefined],
      [37, 1000, undefined],
      [37, 1000, 100],
    ] as const) {
      const z = normalArray(M * V, M + V, 3);
      const r = rng(M);
      const labels = Int32Array.from({ length: M }, (_, i) => (i % 5 === 3 ? -100 : Math.floor(r() * V)));
      const out = crossEntropy(gpu, gpu.upload(z, [M, V]), gpu.upload(labels), { normalizer: norm });
      const [res, d] = await readF(gpu, out.result, out.dlogits!);
      const ref = crossEntropyRef(z, M, V, labels, norm);
      expect(Math.abs(res[0] - ref.loss) / ref.loss).toBeLessThan(LOSS_TOL);
      expect(Math.abs(res[1] - ref.sum) / ref.sum).toBeLessThan(LOSS_TOL);
      expect(res[2]).toBe(ref.count);
      expect(relErr(d, ref.dlogits)).toBeLessThan(GRAD_TOL);
      out.dispose();
    }
  });

  it('all-masked batch gives loss 0 and zero gradients, no NaN', async () => {
    const gpu = await getGpu();
    const M = 3, V = 11;
    const out = crossEntropy(gpu, gpu.upload(normalArray(M * V, 5), [M, V]), gpu.upload(new Int32Array([-100, -100, -100])));
    const [res, d] = await readF(gpu, out.result, out.dlogits!);
    expect(Array.from(res)).toEqual([0, 0, 0, 0]);
    expect(d.every((v) => v === 0)).toBe(true);
    const H = 8;
    const w = gpu.uploadChunked(normalArray(V * H, 6), V, H, 'w', 4 * H * 4);
    const o2 = lmHeadCrossEntropy(gpu, gpu.upload(normalArray(M * H, 7), [M, H]), w, gpu.upload(new Int32Array([-100, -100, -100])), { dW: true });
    const [r2, dx] = await readF(gpu, o2.result, o2.dx!);
    expect(r2[0]).toBe(0);
    expect(dx.every((v) => v === 0)).toBe(true);
    o2.dispose();
  });

  it('LM head over a chunked vocab (V=1000 in chunks of 333 rows, row blocks): loss, dx, dW, kept or recomputed logits', async () => {
    const gpu = await getGpu();
    const M = 130, H = 24, V = 1000;
    const x = normalArray(M * H, 11);
    const wd = normalArray(V * H, 12, 0.5);
    const r = rng(3);
    const labels = Int32Array.from({ length: M }, (_, i) => (i % 7 === 0 ? -100 : Math.floor(r() * V)));
    const w = gpu.uploadChunked(wd, V, H, 'w', 333 * H * 4);
    expect(w.chunks.length).toBe(4);
    const logits = headLogitsRef(x, wd, M, H, V);
    const ref = crossEntropyRef(logits, M, V, labels);
    const g = headBackwardRef(ref.dlogits, x, wd, M, H, V);
    const runs: Float32Array[][] = [];
    const dispatches: number[] = [];
    for (const keepLogits of [false, true, undefined]) {
      const before = gpu.dispatchCount;
      // 64 rows × 333 columns per logits block → 3 row blocks per chunk.
      const out = lmHeadCrossEntropy(gpu, gpu.upload(x, [M, H]), w, gpu.upload(labels), { dW: true, maxLogitsBytes: 64 * 333 * 4, keepLogits });
      dispatches.push(gpu.dispatchCount - before);
      const [res, dx, ...dW] = await readF(gpu, out.result, out.dx!, ...out.dW!.chunks);
      expect(Math.abs(res[0] - ref.loss) / ref.loss).toBeLessThan(LOSS_TOL);
      expect(res[2]).toBe(ref.count);
      expect(relErr(dx, g.dx)).toBeLessThan(GRAD_TOL);
      const dWflat = new Float32Array(V * H);
      let o = 0;
      for (const c of dW) {
        dWflat.set(c, o);
        o += c.length;
      }
      expect(relErr(dWflat, g.dW)).toBeLessThan(GRAD_TOL);
      runs.push([res, dx, dWflat]);
      out.dispose();
    }
    // Kept logits are the recomputed ones (same kernel, same inputs): bit-identical results, and the
    // backward pass records one matmul fewer per (chunk, row block) — 4 chunks × 3 blocks. A 130 × 1000
    // head fits the default budget, so the default keeps them.
    for (let i = 0; i < 3; i++) expect(Array.from(runs[1][i])).toEqual(Array.from(runs[0][i]));
    expect(dispatches[0] - dispatches[1]).toBe(12);
    expect(dispatches[2]).toBe(dispatches[1]);
    w.dispose();
  });

  it('rejects mismatched shapes and dtypes', async () => {
    const gpu = await getGpu();
    const z = gpu.upload(normalArray(12, 1), [3, 4]);
    expect(() => crossEntropy(gpu, z, gpu.upload(new Int32Array(2)))).toThrow(GpuError);
    expect(() => crossEntropy(gpu, z, gpu.upload(new Float32Array(3)))).toThrow(/labels must be i32/);
    const w = gpu.uploadChunked(normalArray(20, 2), 4, 5);
    expect(() => lmHeadCrossEntropy(gpu, z, w, gpu.upload(new Int32Array(3)))).toThrow(/hidden sizes differ/);
  });
});

describe('distillation losses on the GPU', () => {
  it('top-k KL (plain and chunked; renormalised/raw; mask; token set) vs reference', async () => {
    const gpu = await getGpu();
    const M = 70, H = 16, V = 1000, k = 5;
    const x = normalArray(M * H, 21);
    const wd = normalArray(V * H, 22, 0.6);
    const logits = headLogitsRef(x, wd, M, H, V);
    const teacher = normalArray(M * V, 23, 2);
    const tk = logSoftmaxTopKRef(teacher, M, V, k);
    const idx = Int32Array.from(tk.indices.flat());
    const logp = Float32Array.from(tk.logprobs.flat());
    const mask = Float32Array.from({ length: M }, (_, i) => (i % 4 === 1 ? 0 : 1));
    // A token set that keeps about half of each row's teacher top-k.
    const tokenSet = Uint32Array.from([...Array(V).keys()].filter((v) => v % 2 === 0));
    const w = gpu.uploadChunked(wd, V, H, 'w', 333 * H * 4);
    const xT = gpu.upload(x, [M, H]);
    const zT = gpu.upload(Float32Array.from(logits), [M, V]);
    for (const o of [{}, { teacherNorm: 'raw' as const, mask }, { tokenSet, mask }]) {
      const gpuOpts = { ...o, mask: 'mask' in o ? gpu.upload(mask) : undefined, tokenSet: 'tokenSet' in o ? gpu.upload(tokenSet) : undefined };
      const ref = topKDistillationRef(logits, M, V, idx, logp, k, o);
      const plain = topKDistillation(gpu, { logits: zT }, gpu.upload(idx, [M, k]), gpu.upload(logp, [M, k]), gpuOpts);
      const chunked = topKDistillation(gpu, { x: xT, w }, gpu.upload(Uint32Array.from(idx), [M, k]), gpu.upload(logp, [M, k]), { ...gpuOpts, maxLogitsBytes: 64 * 333 * 4 });
      const recomputed = topKDistillation(gpu, { x: xT, w }, gpu.upload(Uint32Array.from(idx), [M, k]), gpu.upload(logp, [M, k]), { ...gpuOpts, maxLogitsBytes: 64 * 333 * 4, keepLogits: false });
      const [r1, d1, r2, dx, dx2] = await readF(gpu, plain.result, plain.dlogits!, chunked.result, chunked.dx!, recomputed.dx!);
      expect(Array.from(dx2)).toEqual(Array.from(dx));
      recomputed.dispose();
      const g = headBackwardRef(ref.dlogits, x, wd, M, H, V);
      expect(Math.abs(r1[0] - ref.loss) / ref.loss).toBeLessThan(LOSS_TOL);
      expect(Math.abs(r2[0] - ref.loss) / ref.loss).toBeLessThan(LOSS_TOL);
      expect(relErr(d1, ref.dlogits)).toBeLessThan(GRAD_TOL);
      expect(relErr(dx, g.dx)).toBeLessThan(GRAD_TOL);
      plain.dispose();
      chunked.dispose();
    }
    w.dispose();
  });

  it('dense KL against full teacher logits (plain and chunked, token set) vs reference', async () => {
    const gpu = await getGpu();
    const M = 9, H = 12, V = 1000;
    const xs = normalArray(M * H, 31), xt = normalArray(M * H, 32);
    const ws = normalArray(V * H, 33, 0.5), wt = normalArray(V * H, 34, 0.5);
    const zs = headLogitsRef(xs, ws, M, H, V), zt = headLogitsRef(xt, wt, M, H, V);
    const mask = Float32Array.from({ length: M }, (_, i) => (i === 4 ? 0 : 1));
    const set = Uint32Array.from([...Array(V).keys()].filter((v) => v % 3 === 0));
    const Ws = gpu.uploadChunked(ws, V, H, 'ws', 333 * H * 4), Wt = gpu.uploadChunked(wt, V, H, 'wt', 333 * H * 4);
    for (const o of [{}, { mask, tokenSet: set }]) {
      const gOpts = { mask: o.mask && gpu.upload(o.mask), tokenSet: o.tokenSet && gpu.upload(o.tokenSet), dW: true };
      const ref = klDistillationRef(zs, zt, M, V, o);
      const plain = klDistillation(gpu, { logits: gpu.upload(Float32Array.from(zs), [M, V]) }, { logits: gpu.upload(Float32Array.from(zt), [M, V]) }, gOpts);
      const chunked = klDistillation(gpu, { x: gpu.upload(xs, [M, H]), w: Ws }, { x: gpu.upload(xt, [M, H]), w: Wt }, gOpts);
      const recomputed = klDistillation(gpu, { x: gpu.upload(xs, [M, H]), w: Ws }, { x: gpu.upload(xt, [M, H]), w: Wt }, { ...gOpts, keepLogits: false });
      const [r1, d1, r2, dx, dW0, dx2, dW2] = await readF(gpu, plain.result, plain.dlogits!, chunked.result, chunked.dx!, chunked.dW!.chunks[0], recomputed.dx!, recomputed.dW!.chunks[0]);
      // Kept (the default at this size) and recomputed logits give bit-identical gradients.
      expect(Array.from(dx2)).toEqual(Array.from(dx));
      expect(Array.from(dW2)).toEqual(Array.from(dW0));
      recomputed.dispose();
      const g = headBackwardRef(ref.dlogits, xs, ws, M, H, V);
      // KL is a difference of O(1) terms: compare against the summed magnitude, 1e-5 relative.
      expect(Math.abs(r1[0] - ref.loss)).toBeLessThan(LOSS_TOL * 10);
      expect(Math.abs(r2[0] - ref.loss)).toBeLessThan(LOSS_TOL * 10);
      expect(relErr(d1, ref.dlogits)).toBeLessThan(GRAD_TOL);
      expect(relErr(dx, g.dx)).toBeLessThan(GRAD_TOL);
      expect(relErr(dW0, g.dW.subarray(0, 333 * H))).toBeLessThan(GRAD_TOL);
      plain.dispose();
      chunked.dispose();
    }
  });

  it('dense KL over a TokenSubset (logits of the set rows only, 3 vocab chunks, dW scattered) vs reference', async () => {
    const gpu = await getGpu();
    const M = 37, H = 12, V = 1000;
    const xs = normalArray(M * H, 51), xt = normalArray(M * H, 52);
    const ws = normalArray(V * H, 53, 0.5), wt = normalArray(V * H, 54, 0.5);
    const zs = headLogitsRef(xs, ws, M, H, V), zt = headLogitsRef(xt, wt, M, H, V);
    const mask = Float32Array.from({ length: M }, (_, i) => (i % 5 === 2 ? 0 : i % 5 === 3 ? 0.5 : 1));
    // Unsorted, with a duplicate and an id outside the vocabulary (both dropped), spanning every chunk.
    const set = [...[...Array(V).keys()].filter((v) => v % 3 === 1).reverse(), 4, 4, V + 7];
    const Ws = gpu.uploadChunked(ws, V, H, 'ws', 333 * H * 4), Wt = gpu.uploadChunked(wt, V, H, 'wt', 333 * H * 4);
    const sub = new TokenSubset(gpu, set, V, Ws.rowsPerChunk);
    expect(sub.size).toBe(new Set(set.filter((v) => v < V)).size);
    const ref = klDistillationRef(zs, zt, M, V, { mask, tokenSet: set.filter((v) => v < V) });
    const dW = gpu.uploadChunked(new Float32Array(V * H).fill(0.25), V, H, 'dW', 333 * H * 4);
    const r = klDistillation(gpu, { x: gpu.upload(xs, [M, H]), w: Ws }, { x: gpu.upload(xt, [M, H]), w: Wt }, { mask: gpu.upload(mask), tokenSubset: sub, dW, normalizer: 7 });
    const refN = klDistillationRef(zs, zt, M, V, { mask, tokenSet: set.filter((v) => v < V), normalizer: 7 });
    const [res, dx, ...dWc] = await readF(gpu, r.result, r.dx!, ...dW.chunks);
    const g = headBackwardRef(refN.dlogits, xs, ws, M, H, V);
    // Same tolerances as the dense test above: the subset path sums the same terms (over the set only).
    expect(Math.abs(res[0] - refN.loss)).toBeLessThan(LOSS_TOL * 10);
    expect(ref.loss).toBeGreaterThan(0);
    expect(relErr(dx, g.dx)).toBeLessThan(GRAD_TOL);
    const dWall = new Float32Array(V * H);
    let o = 0;
    for (const c of dWc) (dWall.set(c, o), (o += c.length));
    // dW accumulated into 0.25 everywhere: rows outside the set keep 0.25 exactly.
    const want = g.dW.map((v) => v + 0.25);
    expect(relErr(dWall, want)).toBeLessThan(GRAD_TOL);
    for (let v = 0; v < V; v++) if (v % 3 !== 1 && v !== 4) expect(dWall[v * H]).toBe(0.25);
    r.dispose();
    sub.dispose();
  });
});

describe('log-softmax top-k', () => {
  it('plain and chunked, full vocab and token set, with ties and small sets', async () => {
    const gpu = await getGpu();
    const M = 6, H = 10, V = 1000, k = 17;
    const x = normalArray(M * H, 41);
    const wd = normalArray(V * H, 42);
    const logits = Float32Array.from(headLogitsRef(x, wd, M, H, V));
    // Ties: row 0 has many equal logits at the top.
    for (let v = 100; v < 140; v += 2) logits[v] = 50;
    const w = gpu.uploadChunked(wd, V, H, 'w', 333 * H * 4);
    const set = Uint32Array.from([3, 999, 500, 4, 250, 333, 334, 666, 10]); // 9 < k: padded entries
    for (const tokenSet of [undefined, set]) {
      const ref = logSoftmaxTopKRef(logits, M, V, k, tokenSet);
      const a = logSoftmaxTopK(gpu, { logits: gpu.upload(logits, [M, V]) }, k, { tokenSet: tokenSet && gpu.upload(tokenSet) });
      const [ia, la] = await gpu.readMany([a.indices, a.logprobs]);
      for (let i = 0; i < M; i++) {
        const n = ref.indices[i].length;
        expect(Array.from(ia.subarray(i * k, i * k + n))).toEqual(ref.indices[i]);
        expect(relErr(la.subarray(i * k, i * k + n), ref.logprobs[i])).toBeLessThan(LOSS_TOL);
        for (let j = n; j < k; j++) {
          expect(ia[i * k + j]).toBe(0xffffffff);
          expect(la[i * k + j]).toBe(-Infinity);
        }
      }
      if (!tokenSet) {
        // Chunked (logits recomputed on the GPU: compare with the float64 logits' ranking, no ties).
        const refC = logSoftmaxTopKRef(headLogitsRef(x, wd, M, H, V), M, V, k);
        const c = logSoftmaxTopK(gpu, { x: gpu.upload(x, [M, H]), w }, k);
        const [ic, lc] = await gpu.readMany([c.indices, c.logprobs]);
        expect(Array.from(ic)).toEqual(refC.indices.flat());
        expect(relErr(lc, refC.logprobs.flat())).toBeLessThan(LOSS_TOL);
      }
    }
    w.dispose();
  });
});
