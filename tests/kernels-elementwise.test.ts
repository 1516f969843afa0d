import { describe, expect, it } from 'vitest';
import { getGpu, GpuError } from '../src/gpu/runtime.ts';
import {
  add,
  addInPlace,
  addRef,
  biasAdd,
  biasAddRef,
  copyRows,
  gatherRows,
  gatherRowsRef,
  scatterAddRows,
  scatterAddRowsRef,
  scale,
  splitGateUpRef,
  swiglu,
  swigluBackward,
  swigluBackwardRef,
  swigluFused,
  swigluFusedBackward,
  swigluRef,
} from '../src/kernels/elementwise.ts';
import { EPS32, uniformArray } from './helpers/random.ts';


/** max |a − b| / max(|b|, floor) elementwise. */
function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1): number {
  let e = 0;
  for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]) / Math.max(floor, Math.abs(b[i])));
  return e;
}

const SHAPES: [number, number][] = [
  [1, 7],
  [3, 33],
  [17, 64],
  [5, 4864 + 3],
  [257, 896],
];

describe('swiglu', async () => {
  const gpu = await getGpu();

  it('forward (separate and concatenated gate|up) matches the reference', async () => {
    for (const [R, I] of SHAPES) {
      // Gate values over [−12, 12]: covers both saturated tails of the sigmoid.
      const gate = uniformArray(R * I, R + I, 12);
      const up = uniformArray(R * I, R * I, 3);
      const ref = swigluRef(gate, up);
      const gu = new Float32Array(R * 2 * I);
      for (let r = 0; r < R; r++) {
        gu.set(gate.subarray(r * I, (r + 1) * I), r * 2 * I);
        gu.set(up.subarray(r * I, (r + 1) * I), r * 2 * I + I);
      }
      const y1 = swiglu(gpu, gpu.upload(gate, [R, I]), gpu.upload(up, [R, I]));
      const y2 = swigluFused(gpu, gpu.upload(gu, [R, 2 * I]));
      expect(y2.shape).toEqual([R, I]);
      const [a, b] = await gpu.readMany([y1, y2]);
      // exp, a division and two products in float32: a few eps32 (WGSL exp is within 3 + 2|x| ulp).
      const tol = 64 * EPS32;
      expect(maxRelErr(a, ref), `${R}×${I}`).toBeLessThan(tol);
      expect(Array.from(b)).toEqual(Array.from(a));
    }
  });

  it('reference backward passes a float64 finite-difference gradcheck', () => {
    const n = 9;
    const gate = Float64Array.from(uniformArray(n, 1, 6));
    const up = Float64Array.from(uniformArray(n, 2, 2));
    const dy = Float64Array.from(uniformArray(n, 3));
    const loss = (g: Float64Array, u: Float64Array) => swigluRef(g, u).reduce((s, v, i) => s + v * dy[i], 0);
    const { dGate, dUp } = swigluBackwardRef(gate, up, dy);
    const h = 1e-6;
    for (let i = 0; i < n; i++) {
      for (const [arr, grad] of [
        [gate, dGate],
        [up, dUp],
      ] as const) {
        const p = arr.slice();
        const m = arr.slice();
        p[i] += h;
        m[i] -= h;
        const num = arr === gate ? (loss(p, up) - loss(m, up)) / (2 * h) : (loss(gate, p) - loss(gate, m)) / (2 * h);
        expect(Math.abs(num - grad[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(grad[i])));
      }
    }
  });

  it('GPU backward (separate and fused) matches the reference backward', async () => {
    for (const [R, I] of SHAPES) {
      const gate = uniformArray(R * I, R + 5, 12);
      const up = uniformArray(R * I, I + 6, 3);
      const dy = uniformArray(R * I, R * I + 7);
      const ref = swigluBackwardRef(gate, up, dy);
      const { dGate, dUp } = swigluBackward(gpu, gpu.upload(gate, [R, I]), gpu.upload(up, [R, I]), gpu.upload(dy, [R, I]));
      const gu = new Float32Array(R * 2 * I);
      for (let r = 0; r < R; r++) {
        gu.set(gate.subarray(r * I, (r + 1) * I), r * 2 * I);
        gu.set(up.subarray(r * I, (r + 1) * I), r * 2 * I + I);
      }
      const dgu = swigluFusedBackward(gpu, gpu.upload(gu, [R, 2 * I]), gpu.upload(dy, [R, I]));
      const [g, u, f] = await gpu.readMany([dGate, dUp, dgu]);
      const tol = 64 * EPS32;
      expect(maxRelErr(g, ref.dGate), `dGate ${R}×${I}`).toBeLessThan(tol);
      expect(maxRelErr(u, ref.dUp), `dUp ${R}×${I}`).toBeLessThan(tol);
      const split = splitGateUpRef(f, R, I);
      expect(Array.from(split.gate)).toEqual(Array.from(g));
      expect(Array.from(split.up)).toEqual(Array.from(u));
    }
  });

  it('rejects mismatched shapes', () => {
    expect(() => swiglu(gpu, gpu.zeros([2, 3]), gpu.zeros([3, 2]))).toThrow(GpuError);
    expect(() => swigluFused(gpu, gpu.zeros([2, 5]))).toThrow(/even number of columns/);
  });
});

describe('add / scale / bias', async () => {
  const gpu = await getGpu();

  it('add, in place add, scale, bias add match the reference', async () => {
    for (const [R, N] of SHAPES) {
      const a = uniformArray(R * N, 1 + R, 4);
      const b = uniformArray(R * N, 2 + N, 4);
      const bias = uniformArray(N, 3);
      const at = gpu.upload(a, [R, N]);
      const bt = gpu.upload(b, [R, N]);
      const sum = add(gpu, at, bt);
      const axpy = add(gpu, at, bt, { alpha: -0.5 });
      const sc = scale(gpu, at, 0.25);
      const bi = biasAdd(gpu, at, gpu.upload(bias));
      const inPlace = gpu.upload(a, [R, N]);
      expect(addInPlace(gpu, inPlace, bt, 2)).toBe(inPlace);
      biasAdd(gpu, inPlace, gpu.upload(bias), { out: inPlace });
      const [s, x, c, bb, ip] = await gpu.readMany([sum, axpy, sc, bi, inPlace]);
      // One or two float32 roundings (eps32 each) relative to the operands' magnitude (≤ 4).
      const tol = 3 * EPS32 * 4;
      expect(maxRelErr(s, addRef(a, b))).toBeLessThan(tol);
      expect(maxRelErr(x, addRef(a, b, -0.5))).toBeLessThan(tol);
      expect(maxRelErr(c, a.map((v) => v * 0.25))).toBeLessThan(tol);
      expect(maxRelErr(bb, biasAddRef(a, R, N, bias))).toBeLessThan(tol);
      expect(maxRelErr(ip, biasAddRef(addRef(a, b, 2), R, N, bias))).toBeLessThan(2 * tol);
    }
  });

  it('refuses outputs that alias an input in unsupported ways', () => {
    const a = gpu.zeros([4, 4]);
    const b = gpu.zeros([4, 4]);
    expect(() => add(gpu, a, b, { out: b })).toThrow(/add: out must be a itself/);
    expect(() => add(gpu, a, gpu.zeros([3]))).toThrow(/differ in size/);
    expect(() => biasAdd(gpu, a, gpu.zeros([3]))).toThrow(/biasAdd: bias \[3\]/);
  });
});

describe('gatherRows / copyRows', async () => {
  const gpu = await getGpu();

  it('gathers rows (last token per sequence), zero rows for out-of-range indices', async () => {
    for (const [R, D] of [
      [1, 7],
      [40, 33],
      [300, 896],
    ] as [number, number][]) {
      const x = uniformArray(R * D, R);
      const idx = Uint32Array.from([R - 1, 0, Math.floor(R / 2), R + 5, R - 1]);
      const y = gatherRows(gpu, gpu.upload(x, [R, D]), gpu.upload(idx));
      expect(y.shape).toEqual([idx.length, D]);
      expect(Array.from(await gpu.readF32(y))).toEqual(Array.from(gatherRowsRef(x, R, D, idx)));
    }
  });

  it('scatter-adds rows at distinct indices (vec4 and scalar rows, a source offset, skipped indices)', async () => {
    for (const [R, D, n] of [
      [9, 7, 4],
      [300, 64, 37],
    ] as [number, number, number][]) {
      const x = uniformArray((n + 2) * D, D);
      const y = uniformArray(R * D, R + 1);
      // Distinct indices, one past the end (skipped).
      const idx = Uint32Array.from({ length: n }, (_, i) => (i === n - 1 ? R + 3 : (i * 7) % R));
      expect(new Set(idx).size).toBe(n);
      const yT = gpu.upload(y, [R, D]);
      scatterAddRows(gpu, gpu.upload(x, [n + 2, D]), gpu.upload(idx), yT, { srcRow0: 2, alpha: -0.5 });
      const want = scatterAddRowsRef(x, D, idx, y, R, 2, -0.5);
      // One float32 multiply-add per element: |error| ≤ ulp of the sum (values ≲ 10, ulp ≈ 1e-6).
      const got = await gpu.readF32(yT);
      let err = 0;
      for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
      expect(err).toBeLessThan(2e-6);
    }
  });

  it('copies contiguous row blocks and checks ranges', async () => {
    const src = gpu.upload(Float32Array.from({ length: 15 }, (_, i) => i), [5, 3]);
    const dst = gpu.zeros([4, 3]);
    copyRows(gpu, src, dst, 2, 1, 2);
    expect(Array.from(await gpu.readF32(dst))).toEqual([0, 0, 0, 6, 7, 8, 9, 10, 11, 0, 0, 0]);
    expect(() => copyRows(gpu, src, dst, 4, 0, 2)).toThrow(GpuError);
  });
});

describe('transpose2d', () => {
  it('transposes odd shapes exactly', async () => {
    const { transpose2d } = await import('../src/kernels/elementwise.ts');
    const gpu = await getGpu();
    for (const [R, C] of [[1, 1], [1, 7], [13, 1], [37, 65]] as const) {
      const x = uniformArray(R * C, R * 100 + C);
      const y = await gpu.readF32(transpose2d(gpu, gpu.upload(x, [R, C])));
      for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) expect(y[c * R + r]).toBe(x[r * C + c]);
    }
  });
});
