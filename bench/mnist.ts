// Throughput of the batched MNIST MLP training steps (the experiment's inner loop), in model-samples
// per second (one sample through one model's forward + backward + Adam), against the float64 CPU
// reference forward + backward in the same process.

import type { Gpu } from '../src/gpu/runtime.ts';
import { gatherImages, klDistill, noiseImages, softmaxCrossEntropy } from '../src/experiment/mnist/kernels.ts';
import { Adam } from '../src/kernels/optimizer.ts';
import { BatchedMlp, mlpBackwardRef, mlpDims, mlpForwardRef, referenceInit, type MlpDims } from '../src/experiment/mnist/experiment.ts';
import type { BenchOptions, BenchResult } from './types.ts';

/** FLOPs of one sample's forward + backward (no input gradient) through one model. */
function flopsPerSample(d: MlpDims): number {
  const fwd = 2 * (d.input * d.hidden + d.hidden * d.hidden + d.hidden * d.outPad);
  const bwd = 2 * (d.input * d.hidden) + 4 * (d.hidden * d.hidden + d.hidden * d.outPad);
  return fwd + bwd;
}

function cpuReference(d: MlpDims, rows: number, iters: number): number {
  const params = referenceInit(0, 0, d).map((p) => Float64Array.from(p));
  const x = Float64Array.from({ length: rows * d.input }, (_, i) => ((i * 7919) % 255) / 127.5 - 1);
  const dLogits = Float64Array.from({ length: rows * d.outPad }, (_, i) => (i % d.outPad < d.outputs ? 1e-3 : 0));
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) {
    const acts = mlpForwardRef(params, x, 1, rows, d);
    mlpBackwardRef(params, x, acts, dLogits, 1, rows, d);
  }
  return (rows * iters) / ((performance.now() - t0) / 1000);
}

export async function benchMnist(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const d = mlpDims(3);
  const batch = 1024;
  const iters = opts.quick ? 2 : 6;
  const cpuRows = opts.quick ? 8 : 32;
  const cpu = cpuReference(d, cpuRows, opts.quick ? 1 : 2);
  const baseline = { name: `float64 CPU reference fwd+bwd (1 model, ${cpuRows} rows)`, value: cpu, unit: 'model-samples/s' };
  const results: BenchResult[] = [];
  const fps = flopsPerSample(d);

  // Synthetic "data set": 4096 random byte images.
  const nImg = 4096;
  const bytes = new Uint8Array(nImg * 784);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  const images = gpu.upload(new Uint32Array(bytes.buffer), [nImg, 196], 'u32');
  const labels = gpu.upload(Uint32Array.from({ length: nImg }, (_, i) => i % 10));

  for (const G of opts.quick ? [1] : [1, 4]) {
    const idx = gpu.upload(Uint32Array.from({ length: G * batch }, (_, i) => (i * 7) % nImg));
    const model = new BatchedMlp(gpu, G, d);
    for (let m = 0; m < G; m++) model.setModel(m, referenceInit(0, m, d));
    const opt = new Adam(gpu, [model.params.flat]);

    // Teacher step: gather → forward → CE → backward → Adam.
    const teacherStep = () => {
      const { x, labels: y } = gatherImages(gpu, images, labels, { idx, stride: batch, offset: 0 }, G, batch);
      const acts = model.forward(x);
      const { dLogits, loss } = softmaxCrossEntropy(gpu, acts.logits, y, 10, 1 / (G * batch));
      model.backward(x, acts, dLogits);
      opt.step([model.grads.flat], { lr: 3e-4 });
      for (const t of [x, y, dLogits, loss]) t.dispose();
      acts.dispose();
    };
    teacherStep();
    await gpu.sync();
    let t0 = performance.now();
    for (let i = 0; i < iters; i++) teacherStep();
    await gpu.sync();
    let secs = (performance.now() - t0) / 1000;
    const teacherRate = (G * batch * iters) / secs;
    results.push({
      family: 'mnist',
      name: `teacher train step, ${G} model${G > 1 ? 's' : ''} × batch ${batch}`,
      value: teacherRate,
      unit: 'model-samples/s',
      baseline,
      ratio: teacherRate / cpu,
      details: { GFLOPs: (teacherRate * fps) / 1e9, msPerStep: (1000 * secs) / iters, iters, adapter: gpu.info.isSoftware ? 'software' : 'gpu' },
    });

    // Distillation step: noise → teacher forward → 4 students (forward, KL, backward, Adam), as the experiment.
    const students = [0, 1, 2, 3].map(() => {
      const s = new BatchedMlp(gpu, G, d);
      s.copyFrom(model);
      return { s, opt: new Adam(gpu, [s.params.flat]) };
    });
    const distillStep = () => {
      const x = noiseImages(gpu, { idx, stride: batch, offset: 0 }, G, batch, 784, 1);
      const target = model.forward(x);
      students.forEach(({ s, opt: so }, k) => {
        const acts = s.forward(x);
        const { dLogits, loss } = klDistill(gpu, acts.logits, target.logits, k % 2 === 0 ? 10 : 0, d.outputs, 1 / G);
        s.backward(x, acts, dLogits);
        so.step([s.grads.flat], { lr: 3e-4 });
        acts.dispose();
        dLogits.dispose();
        loss.dispose();
      });
      target.dispose();
      x.dispose();
    };
    distillStep();
    await gpu.sync();
    t0 = performance.now();
    for (let i = 0; i < iters; i++) distillStep();
    await gpu.sync();
    secs = (performance.now() - t0) / 1000;
    // Counted as student model-samples (4 per noise image per model); the teacher forward is overhead.
    const distillRate = (4 * G * batch * iters) / secs;
    results.push({
      family: 'mnist',
      name: `distillation step (teacher fwd + 4 students), ${G} model${G > 1 ? 's' : ''} × batch ${batch}`,
      value: distillRate,
      unit: 'model-samples/s',
      baseline,
      ratio: distillRate / cpu,
      details: {
        GFLOPs: (distillRate * fps * (1 + 1 / 12)) / 1e9,
        msPerStep: (1000 * secs) / iters,
        iters,
        // Seconds for the default experiment's distillation of one model (60k noise × 5 epochs).
        estSecondsPerModel60k: (60000 * 5 * 4) / (distillRate / G),
      },
    });
    for (const { s, opt: so } of students) {
      s.dispose();
      so.dispose();
    }
    model.dispose();
    opt.dispose();
    idx.dispose();
  }
  images.dispose();
  labels.dispose();
  return results;
}
