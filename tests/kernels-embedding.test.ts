import { describe, expect, it } from 'vitest';
import { getGpu, GpuError } from '../src/gpu/runtime.ts';
import { buildEmbedGradIndex, embed, embedBackward, embedBackwardRef, embedRef } from '../src/kernels/embedding.ts';
import { rng, uniformArray } from './helpers/random.ts';

function randIds(n: number, vocab: number, seed: number): Uint32Array {
  const r = rng(seed);
  // Skewed towards low ids so that ids repeat (the scatter-add must sum duplicates).
  return Uint32Array.from({ length: n }, () => Math.floor(vocab * r() * r()));
}

describe('embed (gather)', async () => {
  const gpu = await getGpu();

  for (const [V, D, tokens, chunkRows] of [
    [37, 7, 1, 0],
    [37, 33, 50, 5], // 8 chunks, the last one partial
    [1000, 896, 300, 128],
  ] as [number, number, number, number][]) {
    it(`gathers rows exactly (V=${V}, D=${D}, tokens=${tokens}, ${chunkRows ? `chunks of ${chunkRows} rows` : 'one tensor'})`, async () => {
      const table = uniformArray(V * D, V + D);
      const ids = randIds(tokens, V, tokens);
      const t = chunkRows ? gpu.uploadChunked(table, V, D, 'emb', chunkRows * D * 4) : gpu.upload(table, [V, D]);
      const idt = gpu.upload(ids);
      const outs = [
        embed(gpu, t, idt, { variant: 'per-chunk' }),
        embed(gpu, t, idt, { variant: 'per-chunk', hostIds: ids }),
        embed(gpu, t, idt, { variant: 'select' }),
        embed(gpu, t, idt, { hostIds: ids }),
      ];
      const ref = embedRef(table, V, D, ids);
      // A gather copies float32 values: exact.
      for (const a of await gpu.readMany(outs)) expect(a.every((v, i) => v === ref[i])).toBe(true);
    });
  }

  it('writes zero rows for out-of-range ids on the GPU, throws when the ids are known on the CPU', async () => {
    const V = 20;
    const D = 8;
    const table = uniformArray(V * D, 1);
    const ids = Uint32Array.from([3, 20, 19, 0xffffffff, 0]);
    const ct = gpu.uploadChunked(table, V, D, 'emb', 6 * D * 4);
    // Out-of-range rows are written as zeros (not left as pool garbage), in both variants.
    for (const variant of ['per-chunk', 'select'] as const) {
      const y = embed(gpu, ct, gpu.upload(ids), { variant });
      expect(Array.from(await gpu.readF32(y))).toEqual(Array.from(embedRef(table, V, D, ids)));
    }
    expect(() => embed(gpu, ct, gpu.upload(ids), { hostIds: ids })).toThrow(/token 1 has id 20, outside the vocabulary \[0, 20\)/);
    expect(() => embed(gpu, ct, gpu.upload(new Float32Array(5)))).toThrow(GpuError);
  });
});

describe('embedBackward (deterministic scatter-add)', async () => {
  const gpu = await getGpu();

  it('reference backward passes a float64 finite-difference gradcheck', () => {
    const V = 6;
    const D = 3;
    const ids = [2, 5, 2, 0, 2];
    const table = Float64Array.from(uniformArray(V * D, 2));
    const dOut = Float64Array.from(uniformArray(ids.length * D, 3));
    const loss = (tb: Float64Array) => embedRef(tb, V, D, ids).reduce((s, v, i) => s + v * dOut[i], 0);
    const g = embedBackwardRef(ids, dOut, V, D);
    const h = 1e-6;
    for (let i = 0; i < V * D; i++) {
      const p = table.slice();
      const m = table.slice();
      p[i] += h;
      m[i] -= h;
      expect(Math.abs((loss(p) - loss(m)) / (2 * h) - g[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(g[i])));
    }
  });

  it('builds the grouping index by (id, position)', () => {
    const idx = buildEmbedGradIndex([4, 1, 4, 4, 0], 5);
    expect(Array.from(idx.uniqueIds)).toEqual([0, 1, 4]);
    expect(Array.from(idx.segStart)).toEqual([0, 1, 2, 5]);
    expect(Array.from(idx.order)).toEqual([4, 1, 0, 2, 3]);
    expect(() => buildEmbedGradIndex([5], 5)).toThrow(GpuError);
  });

  for (const [V, D, tokens, chunkRows] of [
    [37, 7, 1, 0],
    [37, 33, 200, 5],
    [1000, 896, 300, 128],
  ] as [number, number, number, number][]) {
    it(`accumulates into the table like the reference (V=${V}, D=${D}, tokens=${tokens})`, async () => {
      const ids = randIds(tokens, V, V + tokens);
      const dOut = uniformArray(tokens * D, 5);
      const init = uniformArray(V * D, 6);
      const dt = chunkRows ? gpu.uploadChunked(init, V, D, 'dEmb', chunkRows * D * 4) : gpu.upload(init, [V, D]);
      const dOutT = gpu.upload(dOut, [tokens, D]);
      embedBackward(gpu, ids, dOutT, dt);
      const chunks = 'chunks' in dt ? dt.chunks : [dt];
      const got = new Float32Array(V * D);
      let o = 0;
      for (const c of await gpu.readMany(chunks)) {
        got.set(c as Float32Array, o);
        o += c.length;
      }
      const ref = embedBackwardRef(ids, dOut, V, D);
      // Each row sums its tokens' gradients in float32: |error| ≤ count·eps32·Σ|terms|.
      let maxCount = 1;
      const counts = new Map<number, number>();
      for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
      for (const c of counts.values()) maxCount = Math.max(maxCount, c);
      const tol = (maxCount + 2) * 2 ** -24 * (maxCount + 1) * 1.0;
      let err = 0;
      for (let i = 0; i < V * D; i++) err = Math.max(err, Math.abs(got[i] - (init[i] + ref[i])));
      expect(err).toBeLessThan(tol);
      // Rows no token uses are untouched (exactly).
      let changed = 0;
      for (let r = 0; r < V; r++) {
        if (counts.has(r)) continue;
        for (let j = 0; j < D; j++) if (got[r * D + j] !== init[r * D + j]) changed++;
      }
      expect(changed).toBe(0);
      // Deterministic: run again from the same start and compare bits (prebuilt index path).
      const dt2 = chunkRows ? gpu.uploadChunked(init, V, D, 'dEmb', chunkRows * D * 4) : gpu.upload(init, [V, D]);
      embedBackward(gpu, buildEmbedGradIndex(ids, V), dOutT, dt2);
      const again = new Float32Array(V * D);
      o = 0;
      for (const c of await gpu.readMany('chunks' in dt2 ? dt2.chunks : [dt2])) {
        again.set(c as Float32Array, o);
        o += c.length;
      }
      expect(again.every((v, i) => v === got[i])).toBe(true);
    });
  }

  it('rejects ids outside the vocabulary and mismatched dOut', () => {
    const dt = gpu.zeros([10, 4]);
    expect(() => embedBackward(gpu, [1, 10], gpu.zeros([2, 4]), dt)).toThrow(/id 10, outside the vocabulary/);
    expect(() => embedBackward(gpu, [1, 2], gpu.zeros([3, 4]), dt)).toThrow(/dOut must have shape \[2, 4\]/);
    expect(() => embedBackward(gpu, gpu.zeros([2], 'u32') as unknown as number[], gpu.zeros([2, 4]), dt)).toThrow(/on the CPU/);
  });
});
