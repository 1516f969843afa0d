// Loss and sampling benchmarks.
// 1. LM-head cross-entropy forward+backward (dx) over a Qwen2.5-sized head (151,936 × 896; quick:
//    32,768 × 896): tokens/s. Baseline: the float64 CPU reference (logits, CE, dx) in this process on
//    a scaled-down vocab, converted to the full vocab by its linear cost in V (tokens·V per second).
// 2. Sampling step latency (LM head matmul + top-p sampling, and sampling alone on given logits) at
//    B = 1, 64, 256 over the full vocab. Baseline: the CPU reference sampler on the same logits (B = 1).
import { getGpu, type Gpu, type Tensor } from '../src/gpu/runtime.ts';
import { crossEntropyRef, headBackwardRef, headLogitsRef, lmHeadCrossEntropy } from '../src/kernels/loss.ts';
import { matmulChunked } from '../src/kernels/matmul.ts';
import { sampleTokens, sampleTokensRef } from '../src/kernels/sampling.ts';
import type { BenchOptions, BenchResult } from './types.ts';

function fill(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0 || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296 - 0.5) * scale;
  }
  return a;
}

async function timeGpu(gpu: Gpu, iters: number, record: () => Tensor[]): Promise<number> {
  for (const t of record()) t.dispose(); // warm-up: pipelines and pools
  await gpu.sync();
  const t0 = performance.now();
  const outs: Tensor[] = [];
  for (let i = 0; i < iters; i++) outs.push(...record());
  await gpu.sync();
  const ms = (performance.now() - t0) / iters;
  for (const t of outs) t.dispose();
  return ms;
}

export async function benchLoss(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const V = opts.quick ? 32768 : 151936;
  const H = 896;
  const M = opts.quick ? 32 : 64;
  const w = gpu.uploadChunked((r0, r1) => fill((r1 - r0) * H, r0 + 1, 0.1), V, H, 'lm_head');
  const x = gpu.upload(fill(M * H, 7, 1), [M, H]);
  const labels = gpu.upload(Int32Array.from({ length: M }, (_, i) => (i * 7919) % V));

  // --- CE forward + backward (dx) on the GPU.
  const iters = opts.quick ? 1 : 2;
  const ceMs = await timeGpu(gpu, iters, () => {
    const r = lmHeadCrossEntropy(gpu, x, w, labels);
    return [r.result, r.lse, r.dx!];
  });
  // --- CPU float64 reference at a scaled-down vocab (same H), cost linear in V.
  const Vs = 2048, Ms = 8;
  const xs = fill(Ms * H, 3, 1), ws = fill(Vs * H, 4, 0.1);
  const ls = Int32Array.from({ length: Ms }, (_, i) => (i * 31) % Vs);
  const c0 = performance.now();
  const logits = headLogitsRef(xs, ws, Ms, H, Vs);
  const ce = crossEntropyRef(logits, Ms, Vs, ls);
  headBackwardRef(ce.dlogits, xs, ws, Ms, H, Vs);
  const cpuMs = performance.now() - c0;
  const gpuTokS = (M / ceMs) * 1000;
  const cpuTokSFull = ((Ms / cpuMs) * 1000 * Vs) / V;
  results.push({
    family: 'loss',
    name: `lmHeadCrossEntropy fwd+bwd(dx) V=${V} H=${H} M=${M}`,
    value: gpuTokS,
    unit: 'tok/s',
    baseline: { name: `crossEntropyRef+headBackwardRef (float64 CPU, V=${Vs} M=${Ms}, scaled to V=${V})`, value: cpuTokSFull, unit: 'tok/s' },
    ratio: gpuTokS / cpuTokSFull,
    details: { msPerIter: ceMs, chunks: w.chunks.length, gflops: (6 * M * V * H) / (ceMs * 1e6), cpuMs, iters },
  });

  // --- Sampling step latency over the full vocab.
  const sIters = opts.quick ? 1 : 2;
  for (const B of [1, 64, 256]) {
    const xb = gpu.upload(fill(B * H, 11 + B, 1), [B, H]);
    const headMs = await timeGpu(gpu, sIters, () => [sampleTokens(gpu, { x: xb, w }, { temperature: 0.8, topP: 0.95, seed: 1, step: 0 })]);
    results.push({
      family: 'loss',
      name: `sample step: LM head + top-p, B=${B} V=${V}`,
      value: headMs,
      unit: 'ms',
      details: { perTokenMs: headMs / B },
    });
    // Sampling alone on materialised logits (only when [B, V] fits one binding).
    if (B * V * 4 <= gpu.limits.maxStorageBufferBindingSize) {
      const lg = matmulChunked(gpu, xb, w);
      const sMs = await timeGpu(gpu, opts.quick ? 2 : 5, () => [sampleTokens(gpu, { logits: lg }, { temperature: 0.8, topP: 0.95, seed: 1, step: 0 })]);
      const gMs = await timeGpu(gpu, opts.quick ? 2 : 5, () => [sampleTokens(gpu, { logits: lg }, { temperature: 0.8, seed: 1, step: 0 })]);
      const r: BenchResult = { family: 'loss', name: `sample top-p on logits, B=${B} V=${V}`, value: sMs, unit: 'ms', details: { temperatureOnlyMs: gMs } };
      if (B === 1) {
        const host = await gpu.readF32(lg);
        const t0 = performance.now();
        sampleTokensRef(host, 1, V, { temperature: 0.8, topP: 0.95, seed: 1, step: 0 });
        const refMs = performance.now() - t0;
        r.baseline = { name: 'sampleTokensRef (CPU, sort-based nucleus)', value: refMs, unit: 'ms' };
        r.details!.speedupVsRef = refMs / sMs;
      }
      results.push(r);
      lg.dispose();
    }
    xb.dispose();
  }
  w.dispose();
  x.dispose();
  labels.dispose();
  return results;
}

// Standalone: npx tsx bench/loss.ts [--quick]
if (import.meta.url === `file://${process.argv[1]}`) {
  const gpu = await getGpu();
  for (const r of await benchLoss(gpu, { quick: process.argv.includes('--quick') })) console.log(JSON.stringify(r));
}
