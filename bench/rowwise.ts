// Row-wise / elementwise kernels at Qwen2.5-0.5B shapes (tokens 2048, hidden 896, 14×64 query
// heads, intermediate 4864, vocab 151,936): effective GB/s (minimal bytes read + written once) of
// the GPU kernels, each with the ratio to the float64 CPU reference on the same shapes in this
// process (and, for RMSNorm, the row layouts against each other).
import type { Gpu, Tensor } from '../src/gpu/runtime.ts';
import { embed, embedRef, embedVariant } from '../src/kernels/embedding.ts';
import { swiglu, swigluBackward, swigluBackwardRef, swigluFused, swigluRef } from '../src/kernels/elementwise.ts';
import { addRmsnorm, llvmpipeSubgroupWidth, rmsnorm, rmsnormBackward, rmsnormBackwardRef, rmsnormRef, rmsnormVariant, type RmsnormVariant } from '../src/kernels/norm.ts';
import { createRopeTable, rope, ropeInvFreq, ropeRef } from '../src/kernels/rope.ts';
import { randomArray } from './random.ts';
import type { BenchOptions, BenchResult } from './types.ts';

/** Uniform in [−1, 1) (std 1/√3). */
const randf = (n: number, seed: number): Float32Array => randomArray(n, 1 / Math.sqrt(3), seed);

/** Milliseconds per call of `record` (GPU): `iters` recorded calls, one sync. */
async function gpuMs(gpu: Gpu, iters: number, record: () => void): Promise<number> {
  record();
  await gpu.sync(); // pipelines compiled, caches warm
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) record();
  await gpu.sync();
  return (performance.now() - t0) / iters;
}

function cpuMs(iters: number, fn: () => void): number {
  fn(); // JIT warm-up, not timed
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) fn();
  return (performance.now() - t0) / iters;
}

export async function benchRowwise(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const quick = opts.quick;
  const T = quick ? 512 : 2048;
  const D = 896;
  const H = 14;
  const hd = 64;
  const I = 4864;
  const V = quick ? 16384 : 151936;
  const iters = quick ? 3 : 10;
  const cpuIters = 1;
  const results: BenchResult[] = [];
  const gbps = (bytes: number, ms: number) => bytes / ms / 1e6;
  const push = (name: string, bytes: number, ms: number, baseName: string, baseMs: number, details: Record<string, unknown>) => {
    const value = gbps(bytes, ms);
    const base = gbps(bytes, baseMs);
    results.push({
      family: 'rowwise',
      name,
      value,
      unit: 'GB/s',
      baseline: { name: baseName, value: base, unit: 'GB/s' },
      ratio: value / base,
      details: { ...details, gpuMs: ms, baselineMs: baseMs, iters },
    });
  };
  const disposeAll = (ts: (Tensor | undefined)[]) => ts.forEach((t) => t?.dispose());

  // ---- RMSNorm [T, D], each layout; baseline: float64 reference
  {
    const x = randf(T * D, 1);
    const w = randf(D, 2).map((v) => 1 + 0.5 * v);
    const xt = gpu.upload(x, [T, D]);
    const wt = gpu.upload(w);
    const y = gpu.empty([T, D]);
    const refMs = cpuMs(cpuIters, () => rmsnormRef(x, T, D, w, 1e-6));
    const variants: RmsnormVariant[] = ['workgroup', 'lane'];
    if (llvmpipeSubgroupWidth(gpu) !== null) variants.push('subgroup');
    const chosen = rmsnormVariant(gpu, T, D);
    for (const variant of variants) {
      const ms = await gpuMs(gpu, iters, () => rmsnorm(gpu, xt, wt, 1e-6, { out: y, variant }));
      push(`rmsnorm ${T}×${D} (${variant}${variant === chosen ? ', default' : ''})`, 2 * T * D * 4, ms, 'rmsnormRef (CPU f64)', refMs, { variant });
    }
    // q-norm rows of Qwen3 shape: [T·H, 64]
    const qchosen = rmsnormVariant(gpu, T * H, hd);
    const qx = gpu.upload(randf(T * H * hd, 3), [T * H, hd]);
    const qw = gpu.upload(randf(hd, 4));
    const qy = gpu.empty([T * H, hd]);
    const qRef = randf(T * H * hd, 3);
    const qRefW = randf(hd, 4);
    const qRefMs = cpuMs(cpuIters, () => rmsnormRef(qRef, T * H, hd, qRefW, 1e-6));
    for (const variant of variants) {
      const ms = await gpuMs(gpu, iters, () => rmsnorm(gpu, qx, qw, 1e-6, { out: qy, variant }));
      push(`rmsnorm per-head ${T * H}×${hd} (${variant}${variant === qchosen ? ', default' : ''})`, 2 * T * H * hd * 4, ms, 'rmsnormRef (CPU f64)', qRefMs, { variant });
    }
    // fused residual add + norm (reads 2, writes 2) vs the reference add + norm
    const r = gpu.upload(randf(T * D, 5), [T, D]);
    const sum = gpu.empty([T, D]);
    const xr = randf(T * D, 5);
    const addRefMs = cpuMs(cpuIters, () => {
      const s = new Float64Array(T * D);
      for (let i = 0; i < s.length; i++) s[i] = xr[i] + x[i];
      rmsnormRef(s, T, D, w, 1e-6);
    });
    const addMs = await gpuMs(gpu, iters, () => addRmsnorm(gpu, r, xt, wt, 1e-6, { out: y, sumOut: sum }));
    push(`addRmsnorm ${T}×${D} (${chosen})`, 4 * T * D * 4, addMs, 'add + rmsnormRef (CPU f64)', addRefMs, { variant: chosen });
    // backward (dx and dWeight): reads x, dy, writes dx (+ small dW partials)
    const { rstd } = rmsnorm(gpu, xt, wt, 1e-6, { saveRstd: true });
    const dyt = gpu.upload(randf(T * D, 6), [T, D]);
    const dy = randf(T * D, 6);
    const bRefMs = cpuMs(cpuIters, () => rmsnormBackwardRef(x, T, D, w, dy, 1e-6));
    const bMs = await gpuMs(gpu, iters, () => {
      const g = rmsnormBackward(gpu, xt, wt, rstd!, dyt);
      g.dx.dispose();
      g.dWeight?.dispose();
    });
    push(`rmsnormBackward ${T}×${D} (${chosen}, dx + dWeight)`, 3 * T * D * 4, bMs, 'rmsnormBackwardRef (CPU f64)', bRefMs, { variant: chosen });
    disposeAll([xt, wt, y, qx, qw, qy, r, sum, rstd, dyt]);
  }

  // ---- RoPE on q [T, 14·64] in place, 2 sequences of T/2 tokens
  {
    const inv = ropeInvFreq(hd, 1000000);
    const table = createRopeTable(gpu, inv, 32768);
    const pos = Uint32Array.from({ length: T }, (_, i) => i % (T / 2));
    const x = randf(T * H * hd, 7);
    const xt = gpu.upload(x, [T, H * hd]);
    const pt = gpu.upload(pos);
    const refMs = cpuMs(cpuIters, () => ropeRef(x, T, H, hd, pos, inv, { angles: 'hf-f32' }));
    const ms = await gpuMs(gpu, iters, () => rope(gpu, xt, pt, table, { inPlace: true }));
    push(`rope q ${T}×${H}×${hd} (in place, table)`, 2 * T * H * hd * 4, ms, 'ropeRef (CPU f64)', refMs, {});
    disposeAll([xt, pt]);
    table.dispose();
  }

  // ---- SwiGLU [T, I]: separate gate/up, concatenated gate|up, backward
  {
    const g = randf(T * I, 8).map((v) => 6 * v);
    const u = randf(T * I, 9);
    const gt = gpu.upload(g, [T, I]);
    const ut = gpu.upload(u, [T, I]);
    const gu = gpu.upload(randf(T * 2 * I, 10), [T, 2 * I]);
    const y = gpu.empty([T, I]);
    const refMs = cpuMs(cpuIters, () => swigluRef(g, u));
    const ms = await gpuMs(gpu, iters, () => swiglu(gpu, gt, ut, { out: y }));
    push(`swiglu ${T}×${I}`, 3 * T * I * 4, ms, 'swigluRef (CPU f64)', refMs, {});
    const fms = await gpuMs(gpu, iters, () => swigluFused(gpu, gu, { out: y }));
    push(`swigluFused ${T}×2·${I}`, 3 * T * I * 4, fms, 'swigluRef (CPU f64)', refMs, {});
    const dyt = gpu.upload(randf(T * I, 11), [T, I]);
    const dy = randf(T * I, 11);
    const bRefMs = cpuMs(cpuIters, () => swigluBackwardRef(g, u, dy));
    const bMs = await gpuMs(gpu, iters, () => {
      const r = swigluBackward(gpu, gt, ut, dyt);
      r.dGate.dispose();
      r.dUp.dispose();
    });
    push(`swigluBackward ${T}×${I}`, 5 * T * I * 4, bMs, 'swigluBackwardRef (CPU f64)', bRefMs, {});
    disposeAll([gt, ut, gu, y, dyt]);
  }

  // ---- embedding gather from the (chunked) vocab table
  {
    const tableRows = (a: number, b: number) => randf((b - a) * D, 12 + a);
    const table = gpu.uploadChunked(tableRows, V, D, 'bench.embed');
    const ids = Uint32Array.from(randf(T, 13), (v) => Math.floor(((v + 1) / 2) * V) % V);
    const idt = gpu.upload(ids);
    const y = gpu.empty([T, D]);
    // Reference on a host copy of the rows it touches (a full float64 table would be 1 GB).
    const hostTable = new Float32Array(V * D);
    for (let c = 0; c < table.chunks.length; c++) hostTable.set(tableRows(c * table.rowsPerChunk, c * table.rowsPerChunk + table.chunkRows(c)), c * table.rowsPerChunk * D);
    const refMs = cpuMs(cpuIters, () => embedRef(hostTable, V, D, ids));
    for (const variant of ['per-chunk', 'select'] as const) {
      const ms = await gpuMs(gpu, iters, () => embed(gpu, table, idt, { out: y, variant }));
      push(`embed ${T} tokens from ${V}×${D} (${table.chunks.length} chunks, ${variant})`, 2 * T * D * 4, ms, 'embedRef (CPU f64)', refMs, { chunks: table.chunks.length, variant });
    }
    const hostMs = await gpuMs(gpu, iters, () => embed(gpu, table, idt, { out: y, hostIds: ids }));
    push(`embed ${T} tokens, hostIds given (range check + chunk skipping, ${embedVariant(gpu, table.chunks.length)})`, 2 * T * D * 4, hostMs, 'embedRef (CPU f64)', refMs, {});
    disposeAll([idt, y]);
    table.dispose();
  }

  return results;
}
