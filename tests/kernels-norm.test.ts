import { describe, expect, it } from 'vitest';
import { getGpu, GpuError } from '../src/gpu/runtime.ts';
import {
  addRmsnorm,
  addRmsnormRef,
  llvmpipeSubgroupWidth,
  rmsnorm,
  rmsnormBackward,
  rmsnormBackwardRef,
  rmsnormRef,
  type RmsnormVariant,
} from '../src/kernels/norm.ts';
import { EPS32, uniformArray } from './helpers/random.ts';

/** max |a − b| / max |b| (error relative to the array's magnitude). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0;
  let m = 1e-30;
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return e / m;
}

// Float32 RMSNorm: the sum of D squares has relative error ≤ ~D·eps32 (serial, worst case; tree
// and subgroup orders are far better), rsqrt and the two products add a few eps32. So y is checked
// to (D + 16)·eps32 relative to max|y|.
const fwdTol = (D: number) => (D + 16) * EPS32;

describe('rmsnorm forward', async () => {
  const gpu = await getGpu();
  const variants: RmsnormVariant[] = ['workgroup', 'lane'];
  if (llvmpipeSubgroupWidth(gpu) !== null) variants.push('subgroup');
  const shapes: [number, number][] = [
    [1, 7],
    [3, 33],
    [5, 896],
    [67, 64],
    [300, 128],
    [1031, 896], // large, prime-ish row count
  ];

  for (const variant of variants) {
    it(`matches the float64 reference (${variant})`, async () => {
      for (const [R, D] of shapes) {
        const x = uniformArray(R * D, R * 31 + D, 3);
        const w = uniformArray(D, D, 0.5, 1);
        const ref = rmsnormRef(x, R, D, w, 1e-6);
        const xt = gpu.upload(x, [R, D]);
        const wt = gpu.upload(w);
        const { y, rstd } = rmsnorm(gpu, xt, wt, 1e-6, { saveRstd: true, variant });
        const [yv, rv] = await gpu.readMany([y, rstd!]);
        expect(relErr(yv, ref.y), `${variant} ${R}×${D}`).toBeLessThan(fwdTol(D));
        expect(relErr(rv, ref.rstd), `${variant} rstd ${R}×${D}`).toBeLessThan(fwdTol(D));
        for (const t of [xt, wt, y, rstd!]) t.dispose();
      }
    });
  }

  it('uses eps exactly as HF (rows of zeros give 0, tiny rows are dominated by eps)', async () => {
    const D = 12;
    const x = new Float32Array(2 * D);
    for (let j = 0; j < D; j++) x[D + j] = 1e-4;
    const w = new Float32Array(D).fill(1);
    const ref = rmsnormRef(x, 2, D, w, 1e-5);
    const { y } = rmsnorm(gpu, gpu.upload(x, [2, D]), gpu.upload(w), 1e-5);
    const yv = await gpu.readF32(y);
    expect(relErr(yv, ref.y)).toBeLessThan(fwdTol(D));
    expect(yv[0]).toBe(0);
  });

  it("computes Qwen3's per-head q/k norm via a [tokens·heads, headDim] reshape", async () => {
    const tokens = 9;
    const heads = 14;
    const headDim = 64;
    const x = uniformArray(tokens * heads * headDim, 5, 2);
    const w = uniformArray(headDim, 6, 0.3, 1);
    const xt = gpu.upload(x, [tokens, heads * headDim]);
    const { y } = rmsnorm(gpu, xt.reshape([tokens * heads, headDim]), gpu.upload(w), 1e-6);
    const yv = await gpu.readF32(y);
    // Reference head by head on the [tokens, heads, headDim] view.
    const ref = new Float64Array(x.length);
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * headDim;
        ref.set(rmsnormRef(x.subarray(o, o + headDim), 1, headDim, w, 1e-6).y, o);
      }
    }
    expect(relErr(yv, ref)).toBeLessThan(fwdTol(headDim));
  });

  it('rejects bad shapes with a GpuError naming the kernel', () => {
    const x = gpu.zeros([4, 8]);
    expect(() => rmsnorm(gpu, x, gpu.zeros([7]), 1e-6)).toThrow(GpuError);
    expect(() => rmsnorm(gpu, x, gpu.zeros([7]), 1e-6)).toThrow(/rmsnorm: weight \[7\]/);
    expect(() => rmsnorm(gpu, x, gpu.zeros([8]), 1e-6, { out: x })).toThrow(/alias/);
  });
});

describe('addRmsnorm (fused residual add)', async () => {
  const gpu = await getGpu();
  for (const [R, D] of [
    [1, 33],
    [70, 896],
  ] as const) {
    it(`returns sum and normed sum, new tensor and in place (${R}×${D})`, async () => {
      const res = uniformArray(R * D, 1, 2);
      const x = uniformArray(R * D, 2, 2);
      const w = uniformArray(D, 3, 0.5, 1);
      const ref = addRmsnormRef(res, x, R, D, w, 1e-6);
      const resT = gpu.upload(res, [R, D]);
      const xT = gpu.upload(x, [R, D]);
      const wT = gpu.upload(w);
      const a = addRmsnorm(gpu, resT, xT, wT, 1e-6, { saveRstd: true });
      const [s1, y1, r1] = await gpu.readMany([a.sum, a.y, a.rstd!]);
      // The sum is one float32 add: exact to eps32 relative.
      expect(relErr(s1, ref.sum)).toBeLessThan(2 * EPS32);
      expect(relErr(y1, ref.y)).toBeLessThan(fwdTol(D));
      expect(relErr(r1, ref.rstd)).toBeLessThan(fwdTol(D));
      const b = addRmsnorm(gpu, resT, xT, wT, 1e-6, { sumOut: resT });
      expect(b.sum).toBe(resT);
      const [s2, y2] = await gpu.readMany([resT, b.y]);
      expect(relErr(s2, ref.sum)).toBeLessThan(2 * EPS32);
      expect(relErr(y2, ref.y)).toBeLessThan(fwdTol(D));
    });
  }
});

describe('rmsnorm backward', async () => {
  const gpu = await getGpu();

  it('reference backward passes a float64 finite-difference gradcheck', () => {
    const R = 3;
    const D = 7;
    const x = Float64Array.from(uniformArray(R * D, 11, 2));
    const w = Float64Array.from(uniformArray(D, 12, 0.5, 1));
    const dy = Float64Array.from(uniformArray(R * D, 13));
    const eps = 1e-6;
    const loss = (xx: Float64Array, ww: Float64Array) => rmsnormRef(xx, R, D, ww, eps).y.reduce((s, v, i) => s + v * dy[i], 0);
    const { dx, dWeight } = rmsnormBackwardRef(x, R, D, w, dy, eps);
    const h = 1e-6;
    // Central differences: truncation O(h²) ≈ 1e-12, roundoff ≈ 1e-16/h ≈ 1e-10 relative to |loss| ~ 10.
    const tol = 1e-6;
    for (let i = 0; i < R * D; i++) {
      const xp = x.slice();
      const xm = x.slice();
      xp[i] += h;
      xm[i] -= h;
      const num = (loss(xp, w) - loss(xm, w)) / (2 * h);
      expect(Math.abs(num - dx[i])).toBeLessThan(tol * Math.max(1, Math.abs(dx[i])));
    }
    for (let j = 0; j < D; j++) {
      const wp = w.slice();
      const wm = w.slice();
      wp[j] += h;
      wm[j] -= h;
      const num = (loss(x, wp) - loss(x, wm)) / (2 * h);
      expect(Math.abs(num - dWeight[j])).toBeLessThan(tol * Math.max(1, Math.abs(dWeight[j])));
    }
  });

  const variants: RmsnormVariant[] = ['workgroup', 'lane'];
  if (llvmpipeSubgroupWidth(gpu) !== null) variants.push('subgroup');
  for (const variant of variants) {
    it(`GPU backward matches the reference backward (${variant})`, async () => {
      for (const [R, D] of [
        [1, 7],
        [5, 33],
        [67, 64],
        [257, 896],
      ] as [number, number][]) {
        const x = uniformArray(R * D, R + D, 2);
        const w = uniformArray(D, D + 1, 0.5, 1);
        const dy = uniformArray(R * D, R * 7 + 3);
        const ref = rmsnormBackwardRef(x, R, D, w, dy, 1e-6);
        const xt = gpu.upload(x, [R, D]);
        const wt = gpu.upload(w);
        const dyt = gpu.upload(dy, [R, D]);
        const { rstd } = rmsnorm(gpu, xt, wt, 1e-6, { saveRstd: true, variant });
        // Accumulating mode: dx into an existing gradient (all ones), dWeight into existing (twos).
        const dxAcc = gpu.upload(new Float32Array(R * D).fill(1), [R, D]);
        const dwAcc = gpu.upload(new Float32Array(D).fill(2));
        const fresh = rmsnormBackward(gpu, xt, wt, rstd!, dyt, { variant });
        rmsnormBackward(gpu, xt, wt, rstd!, dyt, { variant, dx: dxAcc, dWeight: dwAcc });
        const [dx, dw, dx2, dw2] = await gpu.readMany([fresh.dx, fresh.dWeight!, dxAcc, dwAcc]);
        // dx: a D-term float32 dot product per row (≤ D·eps32 relative) times terms of size ~|dx|.
        // dWeight: an R-row float32 sum, (R + D)·eps32 relative to its magnitude is generous.
        const tolDx = (D + 16) * EPS32 * 4;
        const tolDw = (R + D + 16) * EPS32 * 4;
        expect(relErr(dx, ref.dx), `dx ${variant} ${R}×${D}`).toBeLessThan(tolDx);
        expect(relErr(dw, ref.dWeight), `dW ${variant} ${R}×${D}`).toBeLessThan(tolDw);
        expect(relErr(dx2, ref.dx.map((v) => v + 1))).toBeLessThan(tolDx);
        expect(relErr(dw2, ref.dWeight.map((v) => v + 2))).toBeLessThan(tolDw);
        for (const t of [xt, wt, dyt, rstd!, dxAcc, dwAcc, fresh.dx, fresh.dWeight!]) t.dispose();
      }
    });
  }

  it('is deterministic (same bits twice) and can skip dWeight', async () => {
    const R = 257;
    const D = 96;
    const xt = gpu.upload(uniformArray(R * D, 1), [R, D]);
    const wt = gpu.upload(uniformArray(D, 2, 0.5, 1));
    const dyt = gpu.upload(uniformArray(R * D, 3), [R, D]);
    const { rstd } = rmsnorm(gpu, xt, wt, 1e-6, { saveRstd: true });
    const a = rmsnormBackward(gpu, xt, wt, rstd!, dyt);
    const b = rmsnormBackward(gpu, xt, wt, rstd!, dyt);
    const c = rmsnormBackward(gpu, xt, wt, rstd!, dyt, { skipDWeight: true });
    expect(c.dWeight).toBeUndefined();
    const [da, db] = await gpu.readMany([a.dWeight!, b.dWeight!]);
    expect(Array.from(da)).toEqual(Array.from(db));
  });
});
