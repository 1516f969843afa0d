// Attention throughput: causal GQA forward/backward (tokens/s, GFLOP/s) at Qwen2.5-0.5B's head shape
// (H=14, KVH=2, D=64) with B·T = 2048 tokens, against the float64 CPU reference run in the same process
// at a smaller size (compared per FLOP); at the experiment students' shape (tiny models: B=32, T=94,
// H=4, KVH=2, D=16), the default kernels against the per-lane kernels (coop off) in the same run; and
// decode step latency over a KV cache, single-pass vs split-K. GPU time = N recorded calls + one
// gpu.sync(); the students' shape alternates the two variants and keeps each one's best of 3 rounds.

import type { Gpu, Tensor } from '../src/gpu/runtime.ts';
import {
  KvCache,
  attention,
  attentionConfig,
  attentionBackward,
  attentionBackwardFlops,
  attentionBackwardRef,
  attentionDecode,
  attentionForwardFlops,
  attentionRef,
  type AttentionDims,
  type DecodeVariant,
} from '../src/kernels/attention.ts';
import { randomArray } from './random.ts';
import type { BenchOptions, BenchResult } from './types.ts';

const HEADS = 14, KV_HEADS = 2, HEAD_DIM = 64;

// Uniform in [−1, 1) (std 1/√3), a new seed per call: only the magnitudes matter for timing.
let dataSeed = 1;
const randData = (n: number): Float32Array => randomArray(n, 1 / Math.sqrt(3), dataSeed++);

/** Seconds per call of `record`, timed over `iters` calls after one warm-up (compile) call. */
async function timeGpu(gpu: Gpu, record: () => Tensor[], iters: number): Promise<number> {
  for (const t of record()) t.dispose();
  await gpu.sync();
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) for (const t of record()) t.dispose();
  await gpu.sync();
  return (performance.now() - t0) / 1000 / iters;
}

/** Seconds per call of a CPU function, repeated for at least minS seconds. */
function timeCpu(fn: () => void, minS: number): number {
  let reps = 0;
  const t0 = performance.now();
  do {
    fn();
    reps++;
  } while (performance.now() - t0 < minS * 1000);
  return (performance.now() - t0) / 1000 / reps;
}

export async function benchAttention(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const iters = opts.quick ? 1 : 3;

  // CPU float64 reference at B=1, T=128 (and the same heads), per FLOP.
  const cpuDims: AttentionDims = { batch: 1, seqLen: opts.quick ? 64 : 128, heads: HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM };
  const cq = randData(cpuDims.seqLen * HEADS * HEAD_DIM), ck = randData(cpuDims.seqLen * KV_HEADS * HEAD_DIM);
  const cpuFwdS = timeCpu(() => attentionRef(cq, ck, ck, cpuDims), 0.3);
  const cpuBwdS = timeCpu(() => attentionBackwardRef(cq, ck, ck, cq, cpuDims), 0.3);
  const cpuFwd = { name: `float64 JS reference forward B=1 T=${cpuDims.seqLen}`, value: attentionForwardFlops(cpuDims) / cpuFwdS / 1e9, unit: 'GFLOP/s' };
  const cpuBwd = { name: `float64 JS reference backward B=1 T=${cpuDims.seqLen}`, value: attentionBackwardFlops(cpuDims) / cpuBwdS / 1e9, unit: 'GFLOP/s' };
  results.push({ family: 'attention', ...cpuFwd }, { family: 'attention', ...cpuBwd });

  for (const T of opts.quick ? [128] : [128, 512]) {
    const B = Math.round(2048 / T);
    const dims: AttentionDims = { batch: B, seqLen: T, heads: HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM };
    const q = gpu.upload(randData(B * T * HEADS * HEAD_DIM), [B * T, HEADS * HEAD_DIM]);
    const k = gpu.upload(randData(B * T * KV_HEADS * HEAD_DIM), [B * T, KV_HEADS * HEAD_DIM]);
    const v = gpu.upload(randData(B * T * KV_HEADS * HEAD_DIM), [B * T, KV_HEADS * HEAD_DIM]);
    const dOut = gpu.upload(randData(B * T * HEADS * HEAD_DIM), [B * T, HEADS * HEAD_DIM]);
    const fwdS = await timeGpu(gpu, () => {
      const r = attention(gpu, q, k, v, dims);
      return [r.out, r.lse];
    }, iters);
    const { out, lse } = attention(gpu, q, k, v, dims);
    const bwdS = await timeGpu(gpu, () => {
      const g = attentionBackward(gpu, q, k, v, out, lse, dOut, dims);
      return [g.dq, g.dk, g.dv];
    }, iters);
    const shape = `B=${B} T=${T} H=${HEADS} KVH=${KV_HEADS} D=${HEAD_DIM}`;
    for (const [what, s, flops, base] of [
      ['forward', fwdS, attentionForwardFlops(dims), cpuFwd],
      ['backward', bwdS, attentionBackwardFlops(dims), cpuBwd],
    ] as const) {
      const gflops = flops / s / 1e9;
      results.push({
        family: 'attention',
        name: `${what} ${shape}`,
        value: gflops,
        unit: 'GFLOP/s',
        baseline: base,
        ratio: gflops / base.value,
        details: { tokensPerS: (B * T) / s, ms: s * 1000, iters },
      });
    }
    for (const t of [q, k, v, dOut, out, lse]) t.dispose();
  }

  // The students' shape: default configuration against the per-lane kernels (the previous default).
  {
    const dims: AttentionDims = { batch: 32, seqLen: 94, heads: 4, kvHeads: 2, headDim: 16 };
    const rows = dims.batch * dims.seqLen;
    const q = gpu.upload(randData(rows * 64), [rows, 64]);
    const k = gpu.upload(randData(rows * 32), [rows, 32]);
    const v = gpu.upload(randData(rows * 32), [rows, 32]);
    const dOut = gpu.upload(randData(rows * 64), [rows, 64]);
    const def = attentionConfig(gpu);
    const variants = { default: {}, perLane: { coop: 0 } };
    const best: Record<string, { fwd: number; bwd: number }> = { default: { fwd: Infinity, bwd: Infinity }, perLane: { fwd: Infinity, bwd: Infinity } };
    for (let round = 0; round < (opts.quick ? 1 : 3); round++) {
      for (const [name, cfg] of Object.entries(variants)) {
        const fwdS = await timeGpu(gpu, () => {
          const r = attention(gpu, q, k, v, dims, cfg);
          return [r.out, r.lse];
        }, iters);
        const { out, lse } = attention(gpu, q, k, v, dims, cfg);
        const bwdS = await timeGpu(gpu, () => {
          const g = attentionBackward(gpu, q, k, v, out, lse, dOut, dims, cfg);
          return [g.dq, g.dk, g.dv];
        }, iters);
        out.dispose();
        lse.dispose();
        best[name].fwd = Math.min(best[name].fwd, fwdS);
        best[name].bwd = Math.min(best[name].bwd, bwdS);
      }
    }
    const shape = `B=32 T=94 H=4 KVH=2 D=16 (students)`;
    for (const what of ['fwd', 'bwd'] as const) {
      const flops = what === 'fwd' ? attentionForwardFlops(dims) : attentionBackwardFlops(dims);
      const g = flops / best.default[what] / 1e9;
      const b = flops / best.perLane[what] / 1e9;
      results.push({
        family: 'attention',
        name: `${what === 'fwd' ? 'forward' : 'backward'} ${shape}, default kernels${def.coop ? ` (coop, S=${def.coop})` : ''}`,
        value: g,
        unit: 'GFLOP/s',
        baseline: { name: 'per-lane kernels (coop off), same run', value: b, unit: 'GFLOP/s' },
        ratio: g / b,
        details: { ms: best.default[what] * 1000, baselineMs: best.perLane[what] * 1000, coop: def.coop, rounds: opts.quick ? 1 : 3 },
      });
    }
    for (const t of [q, k, v, dOut]) t.dispose();
  }

  // Decode step latency: q [B, H·D] over a cache of `len` committed positions (+ the new token).
  const batches = opts.quick ? [1, 64] : [1, 64, 256];
  const lens = opts.quick ? [100] : [100, 500];
  for (const L of lens) {
    for (const B of batches) {
      const cache = new KvCache(gpu, { layers: 1, batch: B, maxLen: L + 1, kvHeads: KV_HEADS, headDim: HEAD_DIM });
      const rowLen = KV_HEADS * HEAD_DIM;
      for (let c = 0; c < cache.chunks; c++) {
        const n = cache.chunkSeqs(c) * (L + 1) * rowLen;
        gpu.write(cache.k[0][c], randData(n));
        gpu.write(cache.v[0][c], randData(n));
      }
      gpu.write(cache.lens, new Uint32Array(B).fill(L));
      const q = gpu.upload(randData(B * HEADS * HEAD_DIM), [B, HEADS * HEAD_DIM]);
      const times: Partial<Record<DecodeVariant, number>> = {};
      for (const variant of ['single', 'split'] as const) {
        times[variant] = await timeGpu(gpu, () => [attentionDecode(gpu, q, cache, 0, cache.lens, { variant, maxAttendLen: L + 1 })], opts.quick ? 3 : 10);
      }
      const preferred: DecodeVariant = 'split'; // attentionDecode's default on every adapter
      const other: DecodeVariant = 'single';
      const us = times[preferred]! * 1e6;
      const baseUs = times[other]! * 1e6;
      results.push({
        family: 'attention',
        name: `decode step B=${B} cache=${L} (${preferred}, H=${HEADS} KVH=${KV_HEADS} D=${HEAD_DIM})`,
        value: us,
        unit: 'µs/step',
        baseline: { name: `decode variant ${other}`, value: baseUs, unit: 'µs/step' },
        ratio: baseUs / us,
        details: {
          ratioMeaning: 'speedup = baseline µs / value µs',
          tokensPerS: B / times[preferred]!,
          gflops: (4 * B * HEADS * HEAD_DIM * (L + 1)) / times[preferred]! / 1e9,
          singleUs: times.single! * 1e6,
          splitUs: times.split! * 1e6,
        },
      });
      q.dispose();
      cache.dispose();
    }
  }
  return results;
}
