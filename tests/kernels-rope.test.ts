import { describe, expect, it } from 'vitest';
import { getGpu, GpuError } from '../src/gpu/runtime.ts';
import { ropeInvFreq as modelRopeInvFreq } from '../src/model/reference.ts';
import { createRopeTable, rope, ropeBackward, ropeBackwardRef, ropeInvFreq, ropeRef, type Llama3RopeScaling } from '../src/kernels/rope.ts';
import { EPS32, uniformArray } from './helpers/random.ts';


function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]));
  return e;
}
/** Positions of a right-padded batch: sequence b holds positions start_b, start_b+1, … */
function batchPositions(B: number, T: number, starts: number[]): Uint32Array {
  const p = new Uint32Array(B * T);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) p[b * T + t] = starts[b] + t;
  return p;
}

const LLAMA32: Llama3RopeScaling = { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
const LLAMA31: Llama3RopeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };

describe('ropeInvFreq', () => {
  it('is theta^(-2i/d), rounded like HF in hf-f32 mode', () => {
    const inv = ropeInvFreq(64, 10000, null, 'f64');
    const inv32 = ropeInvFreq(64, 10000);
    for (let i = 0; i < 32; i++) {
      expect(inv[i]).toBeCloseTo(Math.pow(10000, -(2 * i) / 64), 15);
      expect(Math.fround(inv32[i])).toBe(inv32[i]);
      // f32 exponent (2i/d exact) and powf: within 2 ulp of the exact value.
      expect(Math.abs(inv32[i] - inv[i])).toBeLessThanOrEqual(2 * EPS32 * 2 * inv[i]);
    }
  });

  it('applies llama3 scaling as HF _compute_llama3_parameters', () => {
    const d = 128;
    const theta = 500000;
    for (const sc of [LLAMA31, LLAMA32]) {
      const base = ropeInvFreq(d, theta, null, 'f64');
      const scaled = ropeInvFreq(d, theta, sc, 'f64');
      const lowWav = sc.originalMaxPositionEmbeddings / sc.lowFreqFactor;
      const highWav = sc.originalMaxPositionEmbeddings / sc.highFreqFactor;
      let sawLow = 0;
      let sawHigh = 0;
      let sawMid = 0;
      for (let i = 0; i < d / 2; i++) {
        const wav = (2 * Math.PI) / base[i];
        if (wav < highWav) {
          expect(scaled[i]).toBe(base[i]);
          sawHigh++;
        } else if (wav > lowWav) {
          expect(scaled[i]).toBeCloseTo(base[i] / sc.factor, 18);
          sawLow++;
        } else {
          const smooth = (sc.originalMaxPositionEmbeddings / wav - sc.lowFreqFactor) / (sc.highFreqFactor - sc.lowFreqFactor);
          expect(scaled[i]).toBeCloseTo((1 - smooth) * (base[i] / sc.factor) + smooth * base[i], 15);
          sawMid++;
        }
      }
      expect(sawLow * sawHigh * sawMid).toBeGreaterThan(0);
    }
  });

  it('agrees with the model reference implementation (both precisions, with and without scaling)', () => {
    for (const [d, theta, sc] of [
      [64, 10000, null],
      [128, 1000000, null],
      [128, 500000, LLAMA32],
      [64, 500000, LLAMA31],
    ] as const) {
      for (const prec of ['hf-f32', 'f64'] as const) {
        const a = ropeInvFreq(d, theta, sc, prec);
        const b = modelRopeInvFreq(d, theta, sc, prec);
        for (let i = 0; i < d / 2; i++) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(EPS32 * b[i]);
      }
    }
  });
});

describe('rope reference', () => {
  it('is the identity at position 0 and matches hand values at position 1', () => {
    const x = [1, 2, 3, 4];
    const inv = ropeInvFreq(4, 10000, null, 'f64'); // [1, 0.01]
    expect(Array.from(ropeRef(x, 1, 1, 4, [0], inv))).toEqual(x);
    const y = ropeRef(x, 1, 1, 4, [1], inv);
    const c1 = Math.cos(1);
    const s1 = Math.sin(1);
    const c2 = Math.cos(0.01);
    const s2 = Math.sin(0.01);
    const hand = [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2];
    for (let i = 0; i < 4; i++) expect(y[i]).toBeCloseTo(hand[i], 14);
  });

  it('backward passes a float64 finite-difference gradcheck', () => {
    const tokens = 3;
    const heads = 2;
    const D = 6;
    const pos = [0, 5, 1234];
    const inv = ropeInvFreq(D, 10000, null, 'f64');
    const x = Float64Array.from(uniformArray(tokens * heads * D, 1));
    const dy = Float64Array.from(uniformArray(tokens * heads * D, 2));
    const loss = (xx: Float64Array) => ropeRef(xx, tokens, heads, D, pos, inv).reduce((s, v, i) => s + v * dy[i], 0);
    const g = ropeBackwardRef(dy, tokens, heads, D, pos, inv);
    const h = 1e-6;
    for (let i = 0; i < x.length; i++) {
      const xp = x.slice();
      const xm = x.slice();
      xp[i] += h;
      xm[i] -= h;
      // Linear map: central differences are exact up to roundoff ~1e-16/h.
      expect(Math.abs((loss(xp) - loss(xm)) / (2 * h) - g[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(g[i])));
    }
  });
});

describe('rope on the GPU', async () => {
  const gpu = await getGpu();

  const cases: { name: string; B: number; T: number; heads: number; D: number; theta: number; sc: Llama3RopeScaling | null; starts: number[] }[] = [
    { name: '1 token, headDim 6 (scalar path)', B: 1, T: 1, heads: 3, D: 6, theta: 10000, sc: null, starts: [1] },
    { name: 'Qwen2.5-0.5B q: 14×64, 2 sequences', B: 2, T: 37, heads: 14, D: 64, theta: 1000000, sc: null, starts: [0, 900] },
    { name: 'k: 2×64, decode positions per sequence', B: 5, T: 1, heads: 2, D: 64, theta: 1000000, sc: null, starts: [3, 17, 200, 1, 4000] },
    { name: 'Llama-3 scaled 4×128', B: 3, T: 11, heads: 4, D: 128, theta: 500000, sc: LLAMA32, starts: [0, 2000, 4080] },
  ];

  for (const c of cases) {
    it(`matches the reference: ${c.name}`, async () => {
      const tokens = c.B * c.T;
      const width = c.heads * c.D;
      const pos = batchPositions(c.B, c.T, c.starts);
      const inv = ropeInvFreq(c.D, c.theta, c.sc);
      const table = createRopeTable(gpu, inv, 4096 + 64);
      const x = uniformArray(tokens * width, tokens + c.D, 2);
      const xt = gpu.upload(x, [tokens, width]);
      const pt = gpu.upload(pos);
      const y = rope(gpu, xt, pt, table);
      const xin = gpu.upload(x, [tokens, width]);
      const yIn = rope(gpu, xin, pt, table, { inPlace: true });
      expect(yIn).toBe(xin);
      const [yv, yiv] = await gpu.readMany([y, xin]);
      expect(Array.from(yiv)).toEqual(Array.from(yv));
      // Against HF's float32 angles: only the f32 rounding of cos/sin (eps32) and the two products
      // and the difference in float32 (3·eps32) remain: 8·eps32 relative to max|x|.
      const refHf = ropeRef(x, tokens, c.heads, c.D, pos, inv, { angles: 'hf-f32' });
      expect(maxAbsDiff(yv, refHf)).toBeLessThan(8 * EPS32 * 2);
      // Against float64 angles: the float32 angle is off by ≤ |angle|·eps32 ≤ maxPos·eps32 rad.
      const refF64 = ropeRef(x, tokens, c.heads, c.D, pos, inv);
      expect(maxAbsDiff(yv, refF64)).toBeLessThan((8 + 2 * Math.max(...pos)) * EPS32 * 2);
      // Position 0 is the identity.
      const p0 = pos.indexOf(0);
      if (p0 >= 0) for (let j = 0; j < width; j++) expect(yv[p0 * width + j]).toBe(x[p0 * width + j]);
      for (const t of [xt, pt, y, xin]) t.dispose();
      table.dispose();
    });
  }

  it('falls back to WGSL cos/sin for positions beyond the table', async () => {
    const D = 64;
    const inv = ropeInvFreq(D, 10000);
    const table = createRopeTable(gpu, inv, 16);
    const pos = Uint32Array.from([0, 15, 16, 17, 40, 100]);
    const x = uniformArray(pos.length * D, 9);
    const y = await gpu.readF32(rope(gpu, gpu.upload(x, [pos.length, D]), gpu.upload(pos), table));
    const ref = ropeRef(x, pos.length, 1, D, pos, inv, { angles: 'hf-f32' });
    // WGSL bounds sin/cos error by 2^-11 absolute on [−π, π]; larger angles are implementation defined.
    // llvmpipe is far better; 1e-4 catches indexing errors without demanding a specific libm.
    expect(maxAbsDiff(y, ref)).toBeLessThan(1e-4);
  });

  it('backward: GPU matches the reference, and rope∘ropeBackward is the identity', async () => {
    const tokens = 29;
    const heads = 3;
    const D = 128;
    const pos = Uint32Array.from({ length: tokens }, (_, i) => (i * 97) % 3000);
    const inv = ropeInvFreq(D, 500000, LLAMA31);
    const table = createRopeTable(gpu, inv, 3000);
    const dy = uniformArray(tokens * heads * D, 4, 3);
    const pt = gpu.upload(pos);
    const dyt = gpu.upload(dy, [tokens, heads * D]);
    const dx = ropeBackward(gpu, dyt, pt, table);
    const back = rope(gpu, dx, pt, table);
    const [dxv, backv] = await gpu.readMany([dx, back]);
    const ref = ropeBackwardRef(dy, tokens, heads, D, pos, inv, { angles: 'hf-f32' });
    expect(maxAbsDiff(dxv, ref)).toBeLessThan(8 * EPS32 * 3);
    // Two rotations in float32 with f32-rounded cos/sin: cos²+sin² = 1 ± 2·eps32.
    expect(maxAbsDiff(backv, dy)).toBeLessThan(16 * EPS32 * 3);
    table.dispose();
  });

  it('rotates a head range of a packed QKV row (q and k in place, v untouched)', async () => {
    const tokens = 5;
    const H = 4;
    const KV = 2;
    const D = 64;
    const width = (H + 2 * KV) * D;
    const pos = Uint32Array.from([7, 8, 9, 0, 1]);
    const inv = ropeInvFreq(D, 10000);
    const table = createRopeTable(gpu, inv, 64);
    const qkv = uniformArray(tokens * width, 21);
    const t = gpu.upload(qkv, [tokens, width]);
    const pt = gpu.upload(pos);
    rope(gpu, t, pt, table, { inPlace: true, headRange: [0, H] });
    rope(gpu, t, pt, table, { inPlace: true, headRange: [H, KV] });
    const got = await gpu.readF32(t);
    // Reference: rotate q|k as H + KV heads of the first (H + KV)·D columns; v is unchanged.
    const qk = new Float64Array(tokens * (H + KV) * D);
    for (let r = 0; r < tokens; r++) for (let j = 0; j < (H + KV) * D; j++) qk[r * (H + KV) * D + j] = qkv[r * width + j];
    const ref = ropeRef(qk, tokens, H + KV, D, pos, inv, { angles: 'hf-f32' });
    let err = 0;
    for (let r = 0; r < tokens; r++) {
      for (let j = 0; j < width; j++) {
        const want = j < (H + KV) * D ? ref[r * (H + KV) * D + j] : qkv[r * width + j];
        err = Math.max(err, Math.abs(got[r * width + j] - want));
      }
    }
    expect(err).toBeLessThan(8 * EPS32);
    expect(() => rope(gpu, t, pt, table, { headRange: [H, KV * 3] })).toThrow(/headRange/);
    table.dispose();
  });

  it('rejects bad calls with a GpuError', () => {
    const table = createRopeTable(gpu, ropeInvFreq(8, 10000), 8);
    const x = gpu.zeros([2, 16]);
    expect(() => rope(gpu, x, gpu.zeros([2], 'f32'), table)).toThrow(GpuError);
    expect(() => rope(gpu, x, gpu.zeros([3], 'u32'), table)).toThrow(/positions must have shape \[2\]/);
    expect(() => rope(gpu, gpu.zeros([2, 12]), gpu.zeros([2], 'u32'), table)).toThrow(/multiple of headDim 8/);
    table.dispose();
  });
});
