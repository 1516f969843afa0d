// Runtime overheads: per-dispatch cost (many tiny dispatches in one submit), submit+wait round trip,
// and small readback latency. Baseline: the same work as a plain JS loop in this process.
import { defineKernel } from '../src/gpu/kernel.ts';
import type { Gpu } from '../src/gpu/runtime.ts';
import type { BenchOptions, BenchResult } from './types.ts';

const tiny = defineKernel({
  name: 'bench_tiny_add',
  bindings: [['y', 'f32', 'read_write']],
  uniforms: { a: 'f32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(1)
fn main() { y[0] = y[0] + u.a; }`,
});

export async function benchRuntime(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const y = gpu.zeros([64]);
  const n = opts.quick ? 200 : 1000;
  // Warm up the pipeline and bind group caches.
  for (let i = 0; i < 10; i++) tiny.run(gpu, {}, { y }, 1, { a: 1 });
  await gpu.sync();
  // Twice: the first pass warms the JIT of the recording path; the second is reported.
  let perDispatchUs = 0;
  let t0 = 0;
  for (let pass = 0; pass < 2; pass++) {
    t0 = performance.now();
    for (let i = 0; i < n; i++) tiny.run(gpu, {}, { y }, 1, { a: 1 });
    await gpu.sync();
    perDispatchUs = ((performance.now() - t0) * 1000) / n;
  }
  results.push({
    family: 'runtime',
    name: `dispatch overhead (${n} tiny dispatches, one submit)`,
    value: perDispatchUs,
    unit: 'µs/dispatch',
  });
  const reps = opts.quick ? 20 : 100;
  t0 = performance.now();
  for (let i = 0; i < reps; i++) {
    tiny.run(gpu, {}, { y }, 1, { a: 1 });
    await gpu.sync();
  }
  results.push({ family: 'runtime', name: 'dispatch + submit + wait round trip', value: ((performance.now() - t0) * 1000) / reps, unit: 'µs' });
  t0 = performance.now();
  for (let i = 0; i < reps; i++) {
    tiny.run(gpu, {}, { y }, 1, { a: 1 });
    await gpu.readF32(y);
  }
  results.push({ family: 'runtime', name: 'dispatch + 256 B readback', value: ((performance.now() - t0) * 1000) / reps, unit: 'µs' });
  y.dispose();
  return results;
}
