import { describe, expect, it } from 'vitest';
import { getGpu, GpuError } from '../src/gpu/runtime.ts';
import { matmulChunked } from '../src/kernels/matmul.ts';
import { nucleusRef, philox4x32, sampleTokens, sampleTokensRef } from '../src/kernels/sampling.ts';
import { normalArray } from './helpers/random.ts';


function softmax(z: ArrayLike<number>, T: number, allowed?: number[]): number[] {
  const ids = allowed ?? [...Array(z.length).keys()];
  const m = Math.max(...ids.map((v) => z[v] / T));
  const p = new Array(z.length).fill(0);
  let s = 0;
  for (const v of ids) s += p[v] = Math.exp(z[v] / T - m);
  return p.map((x) => x / s);
}
/** Pearson chi-square statistic of counts against probabilities (bins with p > 0). */
function chiSquare(counts: number[], p: number[], n: number): { stat: number; df: number } {
  let stat = 0;
  let df = -1;
  for (let v = 0; v < p.length; v++) {
    if (p[v] === 0) continue;
    stat += (counts[v] - n * p[v]) ** 2 / (n * p[v]);
    df++;
  }
  return { stat, df };
}
// Chi-square critical value at significance α = 0.001 (Wilson–Hilferty, z₀.₉₉₉ = 3.0902; within 1%
// of the tables for df ≥ 3, e.g. df 6: 22.42 vs 22.458). The draws are deterministic for a given seed,
// so a pass is reproducible; α bounds how unlucky a correct sampler could be with another seed.
function chi2Critical999(df: number): number {
  const a = 2 / (9 * df);
  return df * (1 - a + 3.0902 * Math.sqrt(a)) ** 3;
}

describe('Philox-4x32-10', () => {
  it('matches the Random123 known-answer vectors', () => {
    expect(philox4x32([0, 0, 0, 0], [0, 0])).toEqual([0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    expect(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])).toEqual([0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    expect(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])).toEqual([0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
  });
});

describe('sampleTokens', () => {
  it('greedy = argmax with the lowest index on ties (B=1 and B=5, V=7 and V=1000)', async () => {
    const gpu = await getGpu();
    for (const [B, V] of [
      [1, 7],
      [5, 1000],
    ]) {
      const z = normalArray(B * V, B + V, 3);
      z[3] = z[5] = 100; // tie in row 0
      const t = await gpu.read(sampleTokens(gpu, { logits: gpu.upload(z, [B, V]) }, { greedy: true, seed: 0, step: 0 }));
      expect(Array.from(t)).toEqual(sampleTokensRef(z, B, V, { greedy: true, seed: 0, step: 0 }));
      expect(t[0]).toBe(3);
    }
  });

  it('temperature sampling matches softmax(z/T) (chi-square, α = 0.001) and the reference sampler', async () => {
    const gpu = await getGpu();
    const V = 7, B = 512, T = 0.7, steps = 8;
    const z = Float32Array.from([1.0, 0.2, -0.5, 1.3, 0.0, -2.0, 0.8]);
    const logits = gpu.upload(Float32Array.from({ length: B * V }, (_, i) => z[i % V]), [B, V]);
    const counts = new Array(V).fill(0);
    let agree = 0;
    for (let step = 0; step < steps; step++) {
      const t = await gpu.read(sampleTokens(gpu, { logits }, { temperature: T, seed: 1234, step }));
      const ref = sampleTokensRef(Array.from({ length: B * V }, (_, i) => z[i % V]), B, V, { temperature: T, seed: 1234, step });
      for (let b = 0; b < B; b++) {
        counts[t[b]]++;
        if (t[b] === ref[b]) agree++;
      }
    }
    const { stat, df } = chiSquare(counts, softmax(z, T), B * steps);
    expect(df).toBe(6);
    expect(stat).toBeLessThan(chi2Critical999(6));
    // Same Philox stream; float32 vs float64 perturbed logits can only flip near-exact ties.
    expect(agree / (B * steps)).toBeGreaterThan(0.999);
  });

  it('top-p never leaves the nucleus and matches the renormalised nucleus distribution', async () => {
    const gpu = await getGpu();
    const V = 50, B = 512, T = 1.3, topP = 0.6, steps = 6;
    const z = normalArray(V, 78, 2);
    const nucleus = nucleusRef(z, T, topP);
    // The test row's nucleus boundary is not within float32 rounding of topP.
    expect(nucleus.length).toBeGreaterThan(5);
    expect(nucleus.length).toBeLessThan(11);
    const logits = gpu.upload(Float32Array.from({ length: B * V }, (_, i) => z[i % V]), [B, V]);
    const counts = new Array(V).fill(0);
    for (let step = 0; step < steps; step++) {
      const t = await gpu.read(sampleTokens(gpu, { logits }, { temperature: T, topP, seed: 99, step }));
      for (const v of t) counts[v]++;
    }
    for (let v = 0; v < V; v++) if (!nucleus.includes(v)) expect(counts[v]).toBe(0);
    const { stat, df } = chiSquare(counts, softmax(z, T, nucleus), B * steps);
    expect(stat).toBeLessThan(chi2Critical999(df));
    // Per-row nuclei on random rows (V = 1000, various p) always contain the drawn token.
    const R = 16, W = 1000;
    const zr = normalArray(R * W, 5, 3);
    for (const p of [0.05, 0.5, 0.9, 0.999]) {
      const t = await gpu.read(sampleTokens(gpu, { logits: gpu.upload(zr, [R, W]) }, { temperature: 0.8, topP: p, seed: 7, step: 3 }));
      for (let b = 0; b < R; b++) expect(nucleusRef(zr.subarray(b * W, (b + 1) * W), 0.8, p)).toContain(t[b]);
    }
  });

  it('(seed, seqId, step) fixes the token regardless of batch composition; seqIds are independent', async () => {
    const gpu = await getGpu();
    const V = 300, B = 6;
    const z = normalArray(B * V, 8, 1.5);
    const seqIds = Uint32Array.from([40, 3, 17, 3000000000, 5, 6]);
    const all = await gpu.read(sampleTokens(gpu, { logits: gpu.upload(z, [B, V]) }, { seed: 2 ** 40 + 5, step: 9, seqIds: gpu.upload(seqIds), topP: 0.9 }));
    const again = await gpu.read(sampleTokens(gpu, { logits: gpu.upload(z, [B, V]) }, { seed: 2 ** 40 + 5, step: 9, seqIds: gpu.upload(seqIds), topP: 0.9 }));
    expect(Array.from(again)).toEqual(Array.from(all));
    for (const b of [0, 3, 5]) {
      const one = await gpu.read(
        sampleTokens(gpu, { logits: gpu.upload(z.slice(b * V, (b + 1) * V), [1, V]) }, { seed: 2 ** 40 + 5, step: 9, seqIds: gpu.upload(Uint32Array.of(seqIds[b])), topP: 0.9 }),
      );
      expect(one[0]).toBe(all[b]);
    }
    // Two sequences on identical logits: P(same token) should be Σp² (independent draws), not 1.
    const n = 256, Vs = 5;
    const zs = Float32Array.from([0.5, 0.1, 0.3, -0.2, 0.0]);
    const logits = gpu.upload(Float32Array.from({ length: 2 * n * Vs }, (_, i) => zs[i % Vs]), [2 * n, Vs]);
    const ids = Uint32Array.from({ length: 2 * n }, (_, i) => (i < n ? i : i - n + 100000));
    const t = await gpu.read(sampleTokens(gpu, { logits }, { seed: 3, step: 0, seqIds: gpu.upload(ids) }));
    let same = 0;
    for (let i = 0; i < n; i++) if (t[i] === t[i + n]) same++;
    const q = softmax(zs, 1).reduce((a, p) => a + p * p, 0);
    // Binomial(n, q): within 4 standard deviations.
    expect(Math.abs(same - n * q)).toBeLessThan(4 * Math.sqrt(n * q * (1 - q)));
  });

  it('per-row seeds: each row draws as a one-row call with its own seed (plain and top-p)', async () => {
    const gpu = await getGpu();
    const V = 300, B = 5;
    const z = normalArray(B * V, 9, 1.5);
    const seeds = [7, 2 ** 40 + 5, 7, 123456789, 2 ** 52 + 3];
    const seqIds = Uint32Array.from([4, 4, 9, 0, 11]);
    const rowSeeds = Uint32Array.from(seeds.flatMap((x) => [x >>> 0, Math.floor(x / 2 ** 32) >>> 0]));
    for (const topP of [1, 0.8]) {
      const all = await gpu.read(sampleTokens(gpu, { logits: gpu.upload(z, [B, V]) }, { seed: 0, step: 3, seqIds: gpu.upload(seqIds), rowSeeds: gpu.upload(rowSeeds, [B, 2]), topP }));
      for (let b = 0; b < B; b++) {
        const one = await gpu.read(sampleTokens(gpu, { logits: gpu.upload(z.slice(b * V, (b + 1) * V), [1, V]) }, { seed: seeds[b], step: 3, seqIds: gpu.upload(Uint32Array.of(seqIds[b])), topP }));
        expect(all[b]).toBe(one[0]);
        if (topP === 1) expect(all[b]).toBe(sampleTokensRef(z.slice(b * V, (b + 1) * V), 1, V, { seed: seeds[b], step: 3, seqIds: [seqIds[b]] })[0]);
      }
    }
  });

  it('chunked vocab (x·Wᵀ, chunks of 333 rows) equals unchunked logits', async () => {
    const gpu = await getGpu();
    const B = 7, H = 16, V = 1000;
    const x = gpu.upload(normalArray(B * H, 1), [B, H]);
    const w = gpu.uploadChunked(normalArray(V * H, 2), V, H, 'w', 333 * H * 4);
    const logits = matmulChunked(gpu, x, w);
    for (const o of [{ greedy: true }, { temperature: 0.9 }, { temperature: 1.1, topP: 0.7 }]) {
      for (const step of [0, 1]) {
        const opts = { ...o, seed: 11, step };
        const [a, b] = await gpu.readMany([sampleTokens(gpu, { x, w }, opts), sampleTokens(gpu, { logits }, opts)]);
        expect(Array.from(a)).toEqual(Array.from(b));
      }
    }
    w.dispose();
  });

  it('a small vocabulary in one chunk (far narrower than its chunk capacity) samples a large batch', async () => {
    // Regression: the block size came from the chunk capacity (rowsPerChunk), not the chunk's real rows, so
    // V = 269 × H = 32 under a 128 MiB binding limit refused batches over 32 rows.
    const gpu = await getGpu();
    const B = 300, H = 32, V = 269;
    const x = gpu.upload(normalArray(B * H, 3), [B, H]);
    const w = gpu.uploadChunked(normalArray(V * H, 4), V, H, 'w');
    expect(w.chunks).toHaveLength(1);
    expect(w.rowsPerChunk * 4 * 64).toBeGreaterThan(gpu.limits.maxStorageBufferBindingSize);
    const logits = matmulChunked(gpu, x, w);
    const [a, b] = await gpu.readMany([sampleTokens(gpu, { x, w }, { seed: 5, step: 0 }), sampleTokens(gpu, { logits }, { seed: 5, step: 0 })]);
    expect(Array.from(a)).toEqual(Array.from(b));
    w.dispose();
  });

  it('flags rows whose logits hold NaN or ±Inf, in every mode, plain and chunked, without changing the tokens', async () => {
    const gpu = await getGpu();
    const B = 5, H = 16, V = 1000;
    const xs = normalArray(B * H, 4);
    const ws = normalArray(V * H, 5);
    // Row 1: a NaN input (every logit NaN); row 3: one huge weight row → +Inf in the last chunk only.
    xs[1 * H + 3] = NaN;
    for (let h = 0; h < H; h++) ws[(V - 2) * H + h] = h === 0 ? 3e36 : 0;
    xs[3 * H] = 1e3;
    // Row 4: −Inf in the first chunk only (a later clean chunk must not clear the flag).
    for (let h = 0; h < H; h++) ws[10 * H + h] = h === 1 ? 3e36 : 0;
    xs[4 * H + 1] = -1e3;
    const x = gpu.upload(xs, [B, H]);
    const w = gpu.uploadChunked(ws, V, H, 'w', 333 * H * 4);
    const logits = matmulChunked(gpu, x, w);
    const want = [0, 1, 0, 1, 1];
    for (const o of [{ greedy: true }, { temperature: 0.9 }, { temperature: 1.1, topP: 0.7 }]) {
      for (const src of [{ x, w }, { logits }]) {
        const flags = gpu.upload(new Uint32Array(B).fill(7), [B], 'u32');
        const opts = { ...o, seed: 2, step: 0 };
        const [tok, f, plainTok] = await gpu.readMany([sampleTokens(gpu, src, { ...opts, nonFinite: flags }), flags, sampleTokens(gpu, src, opts)]);
        expect(Array.from(f), JSON.stringify(o)).toEqual(want);
        expect(Array.from(tok)).toEqual(Array.from(plainTok));
        flags.dispose();
      }
    }
    w.dispose();
  });

  it('rejects bad options', async () => {
    const gpu = await getGpu();
    const z = gpu.upload(new Float32Array(6), [2, 3]);
    expect(() => sampleTokens(gpu, { logits: z }, { seed: 0, step: 0, topP: 0 })).toThrow(GpuError);
    expect(() => sampleTokens(gpu, { logits: z }, { seed: 0, step: 0, seqIds: gpu.upload(new Uint32Array(3)) })).toThrow(/seqIds/);
    expect(() => sampleTokens(gpu, { logits: z }, { seed: 0, step: 0, nonFinite: gpu.upload(new Uint32Array(3)) })).toThrow(/nonFinite must be u32 \[2\]/);
  });
});
