// Matmul throughput per variant and shape class. GPU time = N recorded dispatches + one gpu.sync().
// Baselines run in the same process: the best variant for each shape, and a blocked Float32 JS
// matmul (single thread) on a smaller size, compared per FLOP. At the experiment students' shapes
// (tiny models, M = B·T = 32·94 rows) the default choice is compared with the previous default (the
// choice without llvmpipe's subgroups: rowcast/skinny), alternating the two for 3 rounds (best of
// each), since the shared 2-core machine is noisy.

import type { Gpu, Tensor } from '../src/gpu/runtime.ts';
import { chooseVariant, listMatmulVariants, matmul, type MatmulOptions } from '../src/kernels/matmul.ts';
import { llvmpipeSubgroupWidth } from '../src/kernels/norm.ts';
import { randomArray } from './random.ts';
import type { BenchOptions, BenchResult } from './types.ts';

// Uniform in [−1, 1) (std 1/√3), a new seed per tensor: only the magnitudes matter for timing.
let tensorSeed = 1;
function randTensor(gpu: Gpu, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return gpu.upload(randomArray(n, 1 / Math.sqrt(3), tensorSeed++), shape);
}

/** Seconds per call of `record` (which records one dispatch), timed over enough calls for ~budget s. */
async function timeGpu(gpu: Gpu, record: () => void, budgetS: number, maxIters = 200): Promise<{ s: number; iters: number }> {
  record();
  await gpu.sync(); // compile + warm
  let t0 = performance.now();
  record();
  await gpu.sync();
  const one = (performance.now() - t0) / 1000;
  const iters = Math.max(1, Math.min(maxIters, Math.floor(budgetS / Math.max(one, 1e-6))));
  t0 = performance.now();
  for (let i = 0; i < iters; i++) record();
  await gpu.sync();
  return { s: (performance.now() - t0) / 1000 / iters, iters };
}

/** Blocked Float32 i-k-j matmul in JS: the CPU baseline. Returns GFLOP/s at size n. */
function cpuGflops(n: number): number {
  const a = new Float32Array(n * n).map(() => Math.random());
  const b = new Float32Array(n * n).map(() => Math.random());
  const c = new Float32Array(n * n);
  const run = () => {
    c.fill(0);
    const BS = 64;
    for (let i0 = 0; i0 < n; i0 += BS)
      for (let k0 = 0; k0 < n; k0 += BS)
        for (let i = i0; i < Math.min(n, i0 + BS); i++)
          for (let k = k0; k < Math.min(n, k0 + BS); k++) {
            const av = a[i * n + k];
            const bo = k * n;
            const co = i * n;
            for (let j = 0; j < n; j++) c[co + j] += av * b[bo + j];
          }
  };
  run();
  const t0 = performance.now();
  let reps = 0;
  do {
    run();
    reps++;
  } while (performance.now() - t0 < 300);
  return (2 * n * n * n * reps) / ((performance.now() - t0) / 1000) / 1e9;
}

export async function benchMatmul(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const budget = opts.quick ? 0.3 : 1.0;
  const soft = gpu.info.isSoftware;
  const cpuN = opts.quick ? 128 : 256;
  const cpu = cpuGflops(cpuN);
  const cpuBase = { name: `blocked Float32 JS matmul N=${cpuN} (1 thread)`, value: cpu, unit: 'GFLOP/s' };
  results.push({ family: 'matmul', name: cpuBase.name, value: cpu, unit: 'GFLOP/s' });

  // 1. Square A·B per variant.
  const sizes = opts.quick ? [256, 512] : [256, 512, 1024, 2048];
  for (const n of sizes) {
    const a = randTensor(gpu, [n, n]);
    const b = randTensor(gpu, [n, n]);
    const out = gpu.empty([n, n]);
    const rows: { v: string; gflops: number; iters: number }[] = [];
    for (const v of listMatmulVariants()) {
      // Skip hopeless combinations on software adapters (minutes per call).
      if (v.startsWith('coop') && llvmpipeSubgroupWidth(gpu) !== 8) continue;
      if (soft && ((v === 'naive' && n > 512) || (v.startsWith('tiled') && n > 1024) || (v.startsWith('gemv') && n > 512))) continue;
      const t = await timeGpu(gpu, () => matmul(gpu, a, b, { variant: v, out }), budget);
      rows.push({ v, gflops: (2 * n * n * n) / t.s / 1e9, iters: t.iters });
    }
    const best = rows.reduce((x, y) => (y.gflops > x.gflops ? y : x));
    const def = chooseVariant(soft, n, n, 1, false, llvmpipeSubgroupWidth(gpu));
    for (const r of rows) {
      results.push({
        family: 'matmul',
        name: `A·B N=${n} (${r.v})${r.v === def ? ' [default]' : ''}`,
        value: r.gflops,
        unit: 'GFLOP/s',
        baseline: cpuBase,
        ratio: r.gflops / cpu,
        details: { vsBest: r.gflops / best.gflops, best: best.v, iters: r.iters },
      });
    }
    [a, b, out].forEach((t) => t.dispose());
  }

  // 1b. The students' shapes (tiny-qwen: hidden 64, kv 32, MLP 192, LoRA rank 8), M = 32·94 rows: the
  //     training products and LoRA's rank-8 ones, default vs the choice without subgroups.
  {
    const R = 32 * 94;
    const sub = llvmpipeSubgroupWidth(gpu);
    const cases: { label: string; a: number[]; b: number[]; o: MatmulOptions; M: number; N: number; K: number }[] = [];
    for (const [o, i] of [[64, 64], [32, 64], [192, 64], [64, 192]]) {
      cases.push({ label: `fwd x·Wᵀ [${R},${i}]·[${o},${i}]ᵀ`, a: [R, i], b: [o, i], o: { transB: true }, M: R, N: o, K: i });
      cases.push({ label: `bwd dX=dY·W [${R},${o}]·[${o},${i}]`, a: [R, o], b: [o, i], o: {}, M: R, N: i, K: o });
      cases.push({ label: `bwd dW=dYᵀ·X [${R},${o}]ᵀ·[${R},${i}]`, a: [R, o], b: [R, i], o: { transA: true }, M: o, N: i, K: R });
    }
    cases.push({ label: `LoRA u=x·Aᵀ [${R},64]·[8,64]ᵀ`, a: [R, 64], b: [8, 64], o: { transB: true }, M: R, N: 8, K: 64 });
    cases.push({ label: `LoRA g=dY·B [${R},192]·[192,8]`, a: [R, 192], b: [192, 8], o: {}, M: R, N: 8, K: 192 });
    cases.push({ label: `LoRA dB=dYᵀ·u [${R},64]ᵀ·[${R},8]`, a: [R, 64], b: [R, 8], o: { transA: true }, M: 64, N: 8, K: R });
    for (const c of cases) {
      const a = randTensor(gpu, c.a);
      const b = randTensor(gpu, c.b);
      const out = gpu.empty([c.M, c.N]);
      const flops = 2 * c.M * c.N * c.K;
      const def = chooseVariant(soft, c.M, c.N, 1, !!c.o.transB, sub);
      const prev = chooseVariant(soft, c.M, c.N, 1, !!c.o.transB, null);
      // Unforced calls for the default keep its split-K path; the previous default is forced, so it
      // runs without split-K unless the shapes agree (then both are the same call).
      const runs: Record<string, () => void> = { def: () => matmul(gpu, a, b, { ...c.o, out }), prev: () => matmul(gpu, a, b, { ...c.o, out, variant: prev }) };
      const best = { def: 0, prev: 0 };
      for (let round = 0; round < (opts.quick ? 1 : 3); round++) {
        for (const k of ['def', 'prev'] as const) {
          const t = await timeGpu(gpu, runs[k], budget / 3, 50);
          best[k] = Math.max(best[k], flops / t.s / 1e9);
        }
      }
      results.push({
        family: 'matmul',
        name: `students ${c.label} (default ${def})`,
        value: best.def,
        unit: 'GFLOP/s',
        baseline: { name: `previous default ${prev} (no subgroups), same run`, value: best.prev, unit: 'GFLOP/s' },
        ratio: best.def / best.prev,
        details: { rounds: opts.quick ? 1 : 3 },
      });
      [a, b, out].forEach((t) => t.dispose());
    }
  }

  // 2. Qwen2.5-0.5B projection shapes, T tokens: forward x·Wᵀ and the two backward products.
  const T = opts.quick ? 256 : 2048;
  const projections: [number, number][] = [
    [896, 4864],
    [896, 896],
    [896, 128],
    [4864, 896],
  ];
  const candidates = soft ? ['rowcast8x1', 'rowcast8x2', 'rowcast4x2', ...(llvmpipeSubgroupWidth(gpu) === 8 ? ['coop16x1'] : [])] : ['tiled64', 'tiled32', 'rowcast8x1'];
  for (const [kin, nout] of projections) {
    const x = randTensor(gpu, [T, kin]);
    const w = randTensor(gpu, [nout, kin]);
    const dy = randTensor(gpu, [T, nout]);
    const forms: { label: string; a: Tensor; b: Tensor; o: MatmulOptions; M: number; N: number; K: number }[] = [
      { label: `fwd x·Wᵀ [${T},${kin}]·[${nout},${kin}]ᵀ`, a: x, b: w, o: { transB: true }, M: T, N: nout, K: kin },
      { label: `bwd dX=dY·W [${T},${nout}]·[${nout},${kin}]`, a: dy, b: w, o: {}, M: T, N: kin, K: nout },
      { label: `bwd dW=dYᵀ·X [${T},${nout}]ᵀ·[${T},${kin}]`, a: dy, b: x, o: { transA: true }, M: nout, N: kin, K: T },
    ];
    for (const f of forms) {
      const out = gpu.empty([f.M, f.N]);
      const flops = 2 * f.M * f.N * f.K;
      const def = chooseVariant(soft, f.M, f.N, 1, !!f.o.transB, llvmpipeSubgroupWidth(gpu));
      const vs = opts.quick ? [def] : [...new Set([def, ...candidates])];
      const rows: { v: string; g: number; iters: number }[] = [];
      for (const v of vs) {
        const t = await timeGpu(gpu, () => matmul(gpu, f.a, f.b, { ...f.o, variant: v, out }), budget, 20);
        rows.push({ v, g: flops / t.s / 1e9, iters: t.iters });
      }
      const best = rows.reduce((p, q) => (q.g > p.g ? q : p));
      for (const r of rows)
        results.push({
          family: 'matmul',
          name: `${f.label} (${r.v})${r.v === def ? ' [default]' : ''}`,
          value: r.g,
          unit: 'GFLOP/s',
          baseline: cpuBase,
          ratio: r.g / cpu,
          details: { vsBest: r.g / best.g, best: best.v, iters: r.iters },
        });
      out.dispose();
    }
    [x, w, dy].forEach((t) => t.dispose());
  }

  // 3. Small-M (decode) x·Wᵀ, W 4864×896: weight bytes read per second.
  {
    const K = 896;
    const N = 4864;
    const w = randTensor(gpu, [N, K]);
    for (const M of [1, 8, 32]) {
      const x = randTensor(gpu, [M, K]);
      const out = gpu.empty([M, N]);
      const def = chooseVariant(soft, M, N, 1, true, llvmpipeSubgroupWidth(gpu));
      const rows: { v: string; gbs: number; s: number }[] = [];
      for (const v of [...new Set([def, 'gemv', 'gemvsplit', 'rowcast8x1', 'rowcast8x2'])]) {
        const t = await timeGpu(gpu, () => matmul(gpu, x, w, { transB: true, variant: v, out }), budget);
        rows.push({ v, gbs: (N * K * 4) / t.s / 1e9, s: t.s });
      }
      const best = rows.reduce((p, q) => (q.gbs > p.gbs ? q : p));
      for (const r of rows)
        results.push({
          family: 'matmul',
          name: `GEMV x·Wᵀ M=${M} K=${K} N=${N} (${r.v})${r.v === def ? ' [default]' : ''}`,
          value: r.gbs,
          unit: 'GB/s',
          baseline: { name: `best variant (${best.v})`, value: best.gbs, unit: 'GB/s' },
          ratio: r.gbs / best.gbs,
          details: { gflops: (2 * M * N * K) / r.s / 1e9, us: r.s * 1e6 },
        });
      [x, out].forEach((t) => t.dispose());
    }
    w.dispose();
  }

  // 4. Per-dispatch overhead: 1000 tiny matmuls in one submit.
  {
    const a = randTensor(gpu, [4, 4]);
    const b = randTensor(gpu, [4, 4]);
    const out = gpu.empty([4, 4]);
    const def = chooseVariant(soft, 4, 4, 1, false, llvmpipeSubgroupWidth(gpu));
    matmul(gpu, a, b, { out });
    await gpu.sync();
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) matmul(gpu, a, b, { out, variant: def });
    await gpu.sync();
    const us = ((performance.now() - t0) * 1000) / 1000;
    results.push({ family: 'matmul', name: `per-dispatch overhead, 1000 4×4×4 matmuls in one submit (${def})`, value: us, unit: 'µs/dispatch' });
    [a, b, out].forEach((t) => t.dispose());
  }
  return results;
}
