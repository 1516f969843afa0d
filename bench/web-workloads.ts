// The workloads bench/web.ts times in Node and in the browser: the same functions, imported by the
// Node script and bundled into the page's bench entry (bench/web-entry.ts).
import type { ImageDataset } from '../src/experiment/mnist/data.ts';
import { runMnistExperiment, type MnistConfig } from '../src/experiment/mnist/experiment.ts';
import type { Gpu } from '../src/gpu/runtime.ts';
import { Transformer } from '../src/model/transformer.ts';
import type { TrainExample } from '../src/train/data.ts';
import { Trainer, type TrainConfig } from '../src/train/trainer.ts';

export interface WebBenchResult {
  /** MNIST distillation: noise images × models through the 4 students (+ the teacher's forward) per second. */
  mnistDistillSamplesPerS: number;
  /** MNIST teacher training: real images × models per second. */
  mnistTeacherSamplesPerS: number;
  /** Full finetuning of the embedded tiny-qwen-a, batch 16 × 96, tokens per second. */
  tinyTrainTokPerS: number;
  details: Record<string, number>;
}

export const MNIST_BENCH: MnistConfig = { models: 1, epochsTeacher: 1, epochsStudent: 1, lr: 3e-4, batchSize: 1024, aux: 3, noise: 4096, seed: 0, hidden: 256 };
export const TRAIN_BENCH = { batch: 16, seqLen: 96, steps: 4 };

export async function mnistBench(gpu: Gpu, data: ImageDataset): Promise<{ distill: number; teacher: number; seconds: Record<string, number> }> {
  const r = await runMnistExperiment(gpu, data, MNIST_BENCH, {});
  const c = MNIST_BENCH;
  return { distill: (c.models * c.epochsStudent * c.noise) / r.seconds.students, teacher: (c.models * c.epochsTeacher * data.train.count) / r.seconds.teacher, seconds: r.seconds };
}

export async function tinyTrainBench(gpu: Gpu, modelDir: string): Promise<{ tokPerS: number; msPerStep: number }> {
  const { batch: B, seqLen: T, steps } = TRAIN_BENCH;
  const model = await Transformer.load(gpu, modelDir, { maxPositions: T + 1 });
  const V = model.cfg.vocabSize;
  const rows: TrainExample[] = Array.from({ length: B * (steps + 1) }, (_, r) => {
    const ids = Array.from({ length: T }, (_, t) => (r * 7919 + t * 104729) % V);
    return { ids, labels: ids };
  });
  const cfg: TrainConfig = {
    mode: 'full', lr: 1e-4, epochs: 1, batchSize: B, gradAccum: 1, warmupSteps: 0, schedule: 'constant', maxGradNorm: 1, weightDecay: 0,
    optimizer: 'adamw', seed: 0, shuffle: false, checkpointing: false, distillWeight: 0,
  };
  const trainer = new Trainer(gpu, model, rows, cfg, null);
  const order = rows.map((_, i) => i);
  await trainer.step(order, 0); // warm-up: pipelines, pool growth
  const t0 = performance.now();
  for (let s = 1; s <= steps; s++) await trainer.step(order, s);
  const wallS = (performance.now() - t0) / 1000;
  trainer.dispose();
  model.dispose();
  return { tokPerS: (B * T * steps) / wallS, msPerStep: (1000 * wallS) / steps };
}
