import { describe, expect, it } from 'vitest';
import { getGpu, GpuError, type Gpu, type Tensor } from '../src/gpu/runtime.ts';
import {
  Adam,
  AdamW,
  adamStepRef,
  clipCoefRef,
  gradNorm,
  gradNormClip,
  gradNormRef,
  packTensors,
  SGD,
  sgdStepRef,
  type AdamRefState,
} from '../src/kernels/optimizer.ts';
import { normalArray } from './helpers/random.ts';

// Test data are float32 (normalArray) so GPU and reference start equal.

const f64 = (a: ArrayLike<number>): Float64Array => Float64Array.from(a as ArrayLike<number>);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

/** max over i of |a-b| / (1 + |b|) */
function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])));
  return d;
}

// Awkward sizes: 1 element, a small odd matrix, just over one workgroup, a prime, more than one norm block.
const SHAPES: number[][] = [[1], [3, 5], [257], [1009], [2, 4099]];

interface Setup {
  params: Tensor[];
  paramData: Float32Array[];
  gradData: Float32Array[][]; // [step][tensor]
}

function setup(gpu: Gpu, steps: number, gradScale = 1, seed = 1): Setup {
  const paramData = SHAPES.map((s, i) => normalArray(s.reduce((a, b) => a * b, 1), seed * 100 + i));
  const gradData = Array.from({ length: steps }, (_, t) =>
    SHAPES.map((s, i) => normalArray(s.reduce((a, b) => a * b, 1), seed * 1000 + t * 10 + i + 7, gradScale)),
  );
  return { params: paramData.map((d, i) => gpu.upload(d, SHAPES[i])), paramData, gradData };
}

// Per-step error budget for parameters of magnitude ≤ ~4: the f32 update p·(1-lr·wd) - lr·m̂/(√v̂+ε)
// rounds p once or twice per step (≤ 2·6e-8·|p|) and the ratio m̂/(√v̂+ε) (magnitude ≤ ~3) to a few ulp,
// times lr ≤ 1e-2. So |Δ| ≤ steps · 3e-7 · (1 + |p|) is a safe bound.
const paramTol = (steps: number): number => steps * 3e-7;

describe('gradNorm (two-pass, deterministic)', () => {
  it('matches the float64 norm over many tensors of awkward sizes', async () => {
    const gpu = await getGpu();
    const data = [normalArray(1, 3), normalArray(15, 4), normalArray(4097, 5), normalArray(100_003, 6, 0.01), normalArray(8192, 7, 3)];
    const grads = data.map((d) => gpu.upload(d));
    const norm = gradNorm(gpu, grads);
    const clip = gradNormClip(gpu, grads, 2.5);
    const [n, c] = (await gpu.readMany([norm, clip])) as Float32Array[];
    const ref = gradNormRef(data);
    // f32 sums: ≤16 sequential terms per thread, then tree depth 8 and a final strided sum over a few dozen
    // partials: relative error ≲ (16 + 8 + 40)·6e-8 ≈ 4e-6 of Σg², half that on the norm.
    expect(Math.abs(n[0] - ref) / ref).toBeLessThan(4e-6);
    expect(Math.abs(c[0] - ref) / ref).toBeLessThan(4e-6);
    expect(Math.abs(c[1] - clipCoefRef(ref, 2.5))).toBeLessThan(4e-6);
    // Deterministic: the same reduction twice is bit-identical.
    const again = await gpu.readF32(gradNorm(gpu, grads));
    expect(again[0]).toBe(n[0]);
  });

  it('gives clip coefficient 1 when the norm is below maxNorm', async () => {
    const gpu = await getGpu();
    const g = gpu.upload(new Float32Array([3, 4]));
    const out = await gpu.readF32(gradNormClip(gpu, [g], 10));
    expect(out[0]).toBeCloseTo(5, 6);
    expect(out[1]).toBe(1);
  });
});

describe('AdamW (torch.optim.AdamW semantics)', () => {
  const hp = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };

  async function runAdam(opts: { steps: number; lr: number; maxGradNorm?: number; decoupled: boolean; gradScale?: number }) {
    const gpu = await getGpu();
    const s = setup(gpu, opts.steps, opts.gradScale ?? 1);
    const opt = opts.decoupled ? new AdamW(gpu, s.params, hp) : new Adam(gpu, s.params, hp);
    const refP = s.paramData.map(f64);
    const state: AdamRefState = { m: refP.map((p) => new Float64Array(p.length)), v: refP.map((p) => new Float64Array(p.length)), t: 0 };
    const norms: number[] = [];
    for (let t = 0; t < opts.steps; t++) {
      const grads = s.gradData[t].map((d, i) => gpu.upload(d, SHAPES[i]));
      opt.step(grads, { lr: opts.lr, maxGradNorm: opts.maxGradNorm });
      if (opt.lastGradNorm) norms.push((await gpu.readF32(opt.lastGradNorm))[1]);
      grads.forEach((g) => g.dispose());
      adamStepRef(refP, s.gradData[t], state, { ...hp, lr: opts.lr, decoupled: opts.decoupled, maxGradNorm: opts.maxGradNorm });
    }
    const got = (await gpu.readMany([...s.params, ...opt.m, ...opt.v])) as Float32Array[];
    const k = SHAPES.length;
    return { gpu, opt, s, refP, state, norms, gotP: got.slice(0, k), gotM: got.slice(k, 2 * k), gotV: got.slice(2 * k) };
  }

  it('bias correction at t=1: each coordinate moves by ≈ lr·sign(g) (after decay)', async () => {
    const r = await runAdam({ steps: 1, lr: 1e-2, decoupled: true });
    for (let k = 0; k < SHAPES.length; k++) {
      const p0 = r.s.paramData[k];
      const g = r.s.gradData[0][k];
      for (let i = 0; i < p0.length; i++) {
        // m̂ = g, v̂ = g² at t=1, so the step is lr·g/(|g|+eps).
        const expected = p0[i] * (1 - 1e-2 * 0.1) - 1e-2 * (g[i] / (Math.abs(g[i]) + 1e-8));
        expect(Math.abs(r.gotP[k][i] - expected)).toBeLessThan(paramTol(1) * (1 + Math.abs(expected)));
      }
      expect(maxRelDiff(r.gotP[k], r.refP[k])).toBeLessThan(paramTol(1));
    }
  });

  it('several steps with weight decay match the float64 replay (params and moments)', async () => {
    const steps = 6;
    const r = await runAdam({ steps, lr: 1e-2, decoupled: true });
    expect(r.opt.t).toBe(steps);
    for (let k = 0; k < SHAPES.length; k++) {
      expect(maxRelDiff(r.gotP[k], r.refP[k])).toBeLessThan(paramTol(steps));
      // Moments: f32 recurrences over `steps` terms, relative error ≲ steps·2 ulp of |g| ~ 1.
      expect(maxAbsDiff(r.gotM[k], r.state.m[k])).toBeLessThan(steps * 3e-7);
      expect(maxRelDiff(r.gotV[k], r.state.v[k])).toBeLessThan(steps * 3e-7);
    }
  });

  it('clipping active: gradients scaled by maxNorm/(norm+1e-6) on the GPU', async () => {
    const steps = 4;
    const r = await runAdam({ steps, lr: 1e-2, maxGradNorm: 0.5, decoupled: true, gradScale: 5 });
    expect(r.norms.length).toBe(steps);
    for (let t = 0; t < steps; t++) {
      const expected = clipCoefRef(gradNormRef(r.s.gradData[t]), 0.5);
      expect(expected).toBeLessThan(0.01); // clearly active
      expect(Math.abs(r.norms[t] - expected) / expected).toBeLessThan(4e-6);
    }
    for (let k = 0; k < SHAPES.length; k++) {
      expect(maxRelDiff(r.gotP[k], r.refP[k])).toBeLessThan(paramTol(steps));
      // Moments carry the clip coefficient: compare relative to their scale (|m| ~ coef·|g|).
      const mScale = Math.max(...Array.from(r.state.m[k], Math.abs)) + 1e-30;
      expect(maxAbsDiff(r.gotM[k], r.state.m[k]) / mScale).toBeLessThan(steps * 2e-6);
    }
  });

  it('clipping inactive: same result as no clipping', async () => {
    const steps = 3;
    const a = await runAdam({ steps, lr: 1e-2, maxGradNorm: 1e6, decoupled: true });
    const b = await runAdam({ steps, lr: 1e-2, decoupled: true });
    expect(a.norms.every((c) => c === 1)).toBe(true);
    for (let k = 0; k < SHAPES.length; k++) expect(maxAbsDiff(a.gotP[k], b.gotP[k])).toBe(0);
  });

  it('Adam (coupled L2 weight decay, torch.optim.Adam) matches the float64 replay', async () => {
    const steps = 5;
    const r = await runAdam({ steps, lr: 3e-3, decoupled: false });
    for (let k = 0; k < SHAPES.length; k++) expect(maxRelDiff(r.gotP[k], r.refP[k])).toBeLessThan(paramTol(steps));
  });

  it('Adam defaults to weight decay 0; AdamW to 0.01 (torch defaults)', async () => {
    const gpu = await getGpu();
    const p = gpu.upload(new Float32Array([1]));
    expect(new Adam(gpu, [p]).weightDecay).toBe(0);
    expect(new AdamW(gpu, [p]).weightDecay).toBe(0.01);
  });

  it('state export/import resumes bit-identically', async () => {
    const gpu = await getGpu();
    const s = setup(gpu, 4, 1, 3);
    const a = new AdamW(gpu, s.params, hp);
    const up = (t: number) => s.gradData[t].map((d, i) => gpu.upload(d, SHAPES[i]));
    a.step(up(0), { lr: 1e-2 });
    a.step(up(1), { lr: 1e-2 });
    const saved = await a.exportState();
    const savedParams = (await gpu.readMany(s.params)) as Float32Array[];
    a.step(up(2), { lr: 1e-2, maxGradNorm: 1 });
    const direct = (await gpu.readMany(s.params)) as Float32Array[];

    const p2 = savedParams.map((d, i) => gpu.upload(d, SHAPES[i]));
    const b = new AdamW(gpu, p2, hp);
    b.importState(saved);
    expect(b.t).toBe(2);
    b.step(up(2), { lr: 1e-2, maxGradNorm: 1 });
    const resumed = (await gpu.readMany(p2)) as Float32Array[];
    for (let k = 0; k < SHAPES.length; k++) expect(maxAbsDiff(resumed[k], direct[k])).toBe(0);
  });

  it('packed parameters: all tensors updated by one dispatch, same result as per-tensor', async () => {
    const gpu = await getGpu();
    const s = setup(gpu, 2, 1, 5);
    const packedP = packTensors(gpu, SHAPES, 'params');
    const packedG = packTensors(gpu, SHAPES, 'grads');
    s.paramData.forEach((d, i) => gpu.write(packedP.views[i], d));
    const packedOpt = new AdamW(gpu, [packedP.flat], hp);
    const sepOpt = new AdamW(gpu, s.params, hp);
    for (let t = 0; t < 2; t++) {
      s.gradData[t].forEach((d, i) => gpu.write(packedG.views[i], d));
      const before = gpu.dispatchCount;
      packedOpt.step([packedG.flat], { lr: 1e-2, maxGradNorm: 1 });
      // 1 partial-norm + 1 final-norm + 1 update dispatch.
      expect(gpu.dispatchCount - before).toBe(3);
      sepOpt.step(s.gradData[t].map((d, i) => gpu.upload(d, SHAPES[i])), { lr: 1e-2, maxGradNorm: 1 });
    }
    const packed = (await gpu.readMany(packedP.views)) as Float32Array[];
    const sep = (await gpu.readMany(s.params)) as Float32Array[];
    // Only the norm's summation order differs (one block layout vs per tensor): ≤ a few ulp of the clip coef.
    for (let k = 0; k < SHAPES.length; k++) expect(maxRelDiff(packed[k], sep[k])).toBeLessThan(1e-6);
    // Gaps between views stay zero.
    const flat = await gpu.readF32(packedP.flat);
    const align = gpu.limits.minStorageBufferOffsetAlignment / 4;
    if (align > 1) expect(flat[1]).toBe(0); // shape [1] is followed by padding
  });

  it('a tensor larger than 65535 workgroups (grid spread over y) is fully updated', async () => {
    const gpu = await getGpu();
    const n = 65535 * 256 + 1000;
    const pData = normalArray(n, 11);
    const gData = normalArray(n, 12);
    const p = gpu.upload(pData);
    const g = gpu.upload(gData);
    const opt = new AdamW(gpu, [p], { weightDecay: 0 });
    opt.step([g], { lr: 1e-3 });
    const got = await gpu.readF32(p);
    // Spot-check a stride of elements including the tail: expected p - lr·g/(|g|+eps).
    for (let i = 0; i < n; i += i > n - 2000 ? 1 : 997) {
      const e = pData[i] - 1e-3 * (gData[i] / (Math.abs(gData[i]) + 1e-8));
      expect(Math.abs(got[i] - e)).toBeLessThan(3e-7 * (1 + Math.abs(e)));
    }
    opt.dispose();
    p.dispose();
    g.dispose();
  });

  it('rejects mismatched gradients with a GpuError naming the optimizer', async () => {
    const gpu = await getGpu();
    const opt = new AdamW(gpu, [gpu.zeros([4])]);
    expect(() => opt.step([gpu.zeros([5])], { lr: 1 })).toThrow(GpuError);
    expect(() => opt.step([gpu.zeros([5])], { lr: 1 })).toThrow(/AdamW.*grads\[0\] \[5\].*params\[0\] \[4\]/);
    expect(() => opt.step([], { lr: 1 })).toThrow(/0 gradients for 1 parameters/);
    expect(() => opt.step([gpu.zeros([4], 'u32')], { lr: 1 })).toThrow(/f32/);
  });
});

describe('SGD (torch.optim.SGD semantics)', () => {
  const cases = [
    { name: 'plain', momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, maxGradNorm: undefined },
    { name: 'momentum + dampening + L2', momentum: 0.9, dampening: 0.1, nesterov: false, weightDecay: 0.05, maxGradNorm: undefined },
    { name: 'nesterov + clipping', momentum: 0.8, dampening: 0, nesterov: true, weightDecay: 0, maxGradNorm: 0.7 },
  ];
  for (const c of cases) {
    it(`${c.name}: 4 steps match the float64 replay`, async () => {
      const gpu = await getGpu();
      const steps = 4;
      const s = setup(gpu, steps, 1, 9);
      const opt = new SGD(gpu, s.params, c);
      const refP = s.paramData.map(f64);
      const buf: (Float64Array | null)[] = refP.map(() => null);
      for (let t = 0; t < steps; t++) {
        opt.step(s.gradData[t].map((d, i) => gpu.upload(d, SHAPES[i])), { lr: 0.05, maxGradNorm: c.maxGradNorm });
        sgdStepRef(refP, s.gradData[t], buf, { ...c, lr: 0.05 });
      }
      const got = (await gpu.readMany(s.params)) as Float32Array[];
      // p - lr·d with |lr·d| ≲ 0.5: a couple of f32 roundings per step.
      for (let k = 0; k < SHAPES.length; k++) expect(maxRelDiff(got[k], refP[k])).toBeLessThan(paramTol(steps));
    });
  }
});
