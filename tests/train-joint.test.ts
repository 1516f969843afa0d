// Joint training of K students equals training each alone: LoRA (one base forward/backward over the
// concatenated micro-batches, segmented LoRA matmuls) and full-parameter (each student's own weights,
// all recorded into one submit), at K = 3 with students whose batch sizes, sequence lengths, gradient
// accumulation, schedules, seeds and losses differ, including the experiment's recipe: online-teacher
// KL over a token set with precomputed teacher rows and per-position masks.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import type { Arch } from '../src/model/config.ts';
import { Transformer } from '../src/model/transformer.ts';
import type { TrainExample } from '../src/train/data.ts';
import { fullParamList } from '../src/train/full.ts';
import { JointTrainer, jointEngine, trainStudents, type JointStudent, type StudentJob, type StudentOutcome } from '../src/train/joint.ts';
import { ALL_TARGETS, initLoraHost, loraParams } from '../src/train/lora.ts';
import { computeTeacherRows, Trainer, type OnlineTeacher, type TrainConfig } from '../src/train/trainer.ts';
import { randomInts, rng } from './helpers/random.ts';

function examples(n: number, len: number, seed: number, prompt = 3): TrainExample[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const ids = randomInts(len - (i % 4), 3, 93, r);
    return { ids, labels: ids.map((t, k) => (k < prompt ? -100 : t)) };
  });
}

const BASE: TrainConfig = {
  mode: 'lora',
  lora: { rank: 8, alpha: 16, rslora: false, targets: ALL_TARGETS, dropout: 0 },
  lr: 3e-3,
  epochs: 2,
  batchSize: 3,
  gradAccum: 1,
  warmupSteps: 1,
  schedule: 'linear',
  maxGradNorm: 1,
  weightDecay: 0.01,
  optimizer: 'adamw',
  seed: 0,
  shuffle: true,
  checkpointing: false,
  distillWeight: 0,
};

async function load(gpu: Gpu, arch: Arch, seed: number): Promise<Transformer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'joint-'));
  await writeRandomCheckpoint(dir, tinyConfigJson(arch), { dtype: 'F32', seed });
  return Transformer.load(gpu, dir, { maxPositions: 64 });
}

/**
 * Three students: (0) CE, batch 3, rows of 9 tokens, 2 epochs; (1) the kl-numbers recipe — KL only to an
 * online teacher over a third of the vocabulary, precomputed teacher rows, a per-position mask — batch 2
 * with gradient accumulation 2, rows of 13, another seed and lr; (2) ½ CE + ½ KL to the same teacher
 * computed online (no cached rows), batch 1, rows of 6, constant schedule, no clipping.
 */
async function students(gpu: Gpu, teacher: Transformer, mode: 'lora' | 'full', models: Transformer[]): Promise<JointStudent[]> {
  const V = teacher.cfg.vocabSize;
  const set = Uint32Array.from([...Array(V).keys()].filter((v) => v % 3 === 1));
  const online: OnlineTeacher = { model: teacher, tokenSet: gpu.upload(set, [set.length], 'u32') };
  const ex1 = examples(7, 13, 21, 5).map((r, b) => ({ ...r, distillMask: r.ids.map((_, t) => ((t + b) % 4 === 0 ? 0 : 1)) }));
  (await computeTeacherRows(gpu, online, ex1, 3)).forEach((rows, i) => (ex1[i].teacherRows = rows));
  const cfgs: TrainConfig[] = [
    { ...BASE, mode, seed: 1 },
    { ...BASE, mode, seed: 2, lr: 2e-3, batchSize: 2, gradAccum: 2, epochs: 1, distillWeight: 1 },
    { ...BASE, mode, seed: 3, batchSize: 1, epochs: 1, schedule: 'constant', maxGradNorm: 0, distillWeight: 0.5, maxSteps: 4 },
  ];
  const data = [examples(6, 9, 11), ex1, examples(5, 6, 31, 2)];
  const teachers = [null, online, { model: teacher }];
  return cfgs.map((config, k) => ({
    model: models[k],
    examples: data[k],
    config: mode === 'lora' ? config : { ...config, lora: undefined },
    initialLora: mode === 'lora' ? initLoraHost(models[k].cfg, config.lora!, 100 + k) : null,
    teacher: teachers[k],
  }));
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('joint training equals separate training (K = 3)', () => {
  it('LoRA: one base forward/backward with segmented adapters', async () => {
    const gpu = await getGpu();
    const base = await load(gpu, 'qwen2', 5);
    const teacher = await load(gpu, 'qwen2', 77);
    const studs = await students(gpu, teacher, 'lora', [base, base, base]);
    expect(jointEngine(studs)).toBe('multilora');

    const separate: { losses: number[]; params: Float32Array[] }[] = [];
    for (const s of studs) {
      const tr = new Trainer(gpu, base, s.examples, s.config, s.initialLora!, s.teacher ?? null);
      const res = await tr.run();
      separate.push({ losses: res.losses.map((l) => l.loss), params: (await gpu.readMany(loraParams(tr.lora!).params)) as Float32Array[] });
      tr.dispose();
    }
    // Once with all students in one forward, once with each joint micro-batch cut into forwards of at
    // most 35 rows (whole students, counted at their own lengths: 0 alone, 1 and 2 together).
    for (const maxRowsPerForward of [undefined, 35]) {
      const joint = new JointTrainer(gpu, studs, { maxRowsPerForward });
      const epochEnds: [number, number][] = [];
      const res = await joint.run({ onEpochEnd: async (k, e) => void epochEnds.push([k, e]) });
      // Every student's epochs end on its own schedule (student 0 twice).
      expect(epochEnds.filter(([k]) => k === 0).map(([, e]) => e)).toEqual([1, 2]);
      for (const [k, h] of joint.handles.entries()) {
        const params = (await gpu.readMany(loraParams(h.lora!).params)) as Float32Array[];
        const want = separate[k];
        expect(res[k].losses.length).toBe(want.losses.length);
        // Losses: the same float32 sums in another association (x·Wᵀ + s·x·Aᵀ·Bᵀ against the merged
        // x·(W + s·B·A)ᵀ, other matmul tilings at other row counts): ~1e-6 relative; bound 1e-4.
        res[k].losses.forEach((l, i) => expect(Math.abs(l.loss - want.losses[i])).toBeLessThan(1e-4 * Math.abs(want.losses[i]) + 1e-6));
        // Parameters after ≤ 4 AdamW steps: each update is lr·m̂/(√v̂ + ε), insensitive to a ~1e-6
        // relative gradient error except where |g| ≲ ε; the bound 2e-5 absolute (≈ 1% of one lr-sized
        // step) leaves room for that and stays far below the parameters' changes (~lr per step).
        // Observed ≤ 1.3e-7.
        params.forEach((p, i) => expect(maxAbsDiff(p, want.params[i])).toBeLessThan(2e-5));
      }
      joint.dispose();
    }
    base.dispose();
    teacher.dispose();
  });

  it('LoRA adapters whose stacked slices would miss the 256-byte view alignment train as separate students, with the same result', async () => {
    const gpu = await getGpu();
    const base = await load(gpu, 'qwen2', 5);
    const teacher = await load(gpu, 'qwen2', 77);
    // Rank 2 on k_proj (out 16): an adapter's B slice is 16·2 floats = 128 bytes, not a multiple of 256.
    const lora = { rank: 2, alpha: 4, rslora: false, targets: ALL_TARGETS, dropout: 0 };
    const studs = (await students(gpu, teacher, 'lora', [base, base, base])).map((s, k) => ({ ...s, config: { ...s.config, lora }, initialLora: initLoraHost(base.cfg, lora, 200 + k) }));
    expect(jointEngine(studs)).toBe('interleaved');
    const joint = new JointTrainer(gpu, studs);
    const res = await joint.run();
    for (const [k, s] of studs.entries()) {
      const tr = new Trainer(gpu, base, s.examples, s.config, s.initialLora!, s.teacher ?? null);
      const alone = await tr.run();
      // Interleaved students run each one's own step: the same kernels on the same rows, so the same bits.
      expect(res[k].losses.map((l) => l.loss)).toEqual(alone.losses.map((l) => l.loss));
      const want = (await gpu.readMany(loraParams(tr.lora!).params)) as Float32Array[];
      const got = (await gpu.readMany(loraParams(joint.handles[k].lora!).params)) as Float32Array[];
      got.forEach((p, i) => expect(maxAbsDiff(p, want[i])).toBe(0));
      tr.dispose();
    }
    joint.dispose();
    base.dispose();
    teacher.dispose();
  });

  it('full-parameter: each student its own weights, one submit per joint step', async () => {
    const gpu = await getGpu();
    const teacher = await load(gpu, 'qwen2', 77);
    const fresh = () => Promise.all([load(gpu, 'qwen2', 5), load(gpu, 'qwen2', 6), load(gpu, 'llama', 7)]);
    const sepModels = await fresh();
    const studs = await students(gpu, teacher, 'full', sepModels);
    const separate: { losses: number[]; params: Float32Array[] }[] = [];
    for (const s of studs) {
      const tr = new Trainer(gpu, s.model, s.examples, s.config, null, s.teacher ?? null);
      const res = await tr.run();
      separate.push({ losses: res.losses.map((l) => l.loss), params: (await gpu.readMany(fullParamList(s.model.weights).params)) as Float32Array[] });
      tr.dispose();
    }
    const jointModels = await fresh();
    const jstuds = studs.map((s, k) => ({ ...s, model: jointModels[k] }));
    expect(jointEngine(jstuds)).toBe('interleaved');
    const joint = new JointTrainer(gpu, jstuds);
    const submits = gpu.submitCount;
    const res = await joint.run();
    // The longest student (0) takes 4 steps: 4 joint steps, one submit each (+ the last optimizer update).
    expect(gpu.submitCount - submits).toBeLessThanOrEqual(4 + 1);
    for (const [k, h] of joint.handles.entries()) {
      const params = (await gpu.readMany(fullParamList(h.model.weights).params)) as Float32Array[];
      // The same kernels on the same shapes in the same order: bit for bit.
      expect(res[k].losses.map((l) => l.loss)).toEqual(separate[k].losses);
      params.forEach((p, i) => expect(maxAbsDiff(p, separate[k].params[i])).toBe(0));
    }
    joint.dispose();
    for (const m of [...sepModels, ...jointModels, teacher]) m.dispose();
  });
});

describe('trainStudents (jobs by model folder, per-student resume)', () => {
  it('groups LoRA students by base and full students apart; a killed job resumes every unfinished student to the uninterrupted result', async () => {
    const gpu = await getGpu();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'joint-model-'));
    await writeRandomCheckpoint(dir, tinyConfigJson('qwen2'), { dtype: 'F32', seed: 9 });
    const jobs = (ck?: string): StudentJob[] => [
      { modelDir: dir, examples: examples(5, 8, 1), config: { ...BASE, seed: 1, epochs: 2 } },
      { modelDir: dir, examples: examples(4, 11, 2), config: { ...BASE, seed: 2, batchSize: 2, epochs: 1 } },
      { modelDir: dir, examples: examples(6, 7, 3), config: { ...BASE, mode: 'full' as const, lora: undefined, seed: 3, epochs: 1, batchSize: 2 } },
      { modelDir: dir, examples: examples(3, 9, 4), config: { ...BASE, mode: 'full' as const, lora: undefined, seed: 4, epochs: 2, batchSize: 2 } },
    ].map((j, i) => ({ ...j, checkpointDir: ck ? path.join(ck, `s${i}`) : undefined }));
    const params = async (o: StudentOutcome): Promise<Float32Array[]> =>
      o.adapter ? o.adapter.layers.flatMap((l) => Object.values(l).flatMap((p) => [p!.A, p!.B])) : ((await gpu.readMany(fullParamList(o.model!.weights).params)) as Float32Array[]);

    const epochs: string[] = [];
    const clean = await trainStudents(gpu, jobs(), { onEpochEnd: async (i, e) => void epochs.push(`${i}:${e}`) });
    expect(epochs.sort()).toEqual(['0:1', '0:2', '1:1', '2:1', '3:1', '3:2']);
    const want = await Promise.all(clean.map(params));

    const ck = mkdtempSync(path.join(os.tmpdir(), 'joint-ck-'));
    let calls = 0;
    await expect(
      trainStudents(gpu, jobs(ck), {
        saveEvery: 1,
        onStep: (i) => {
          // "Killed" during the full-parameter group's second joint step.
          if (i === 3 && ++calls === 2) throw new Error('killed');
        },
      }),
    ).rejects.toThrow('killed');
    const finished: number[] = [];
    const again = await trainStudents(gpu, jobs(ck), { saveEvery: 1, onFinished: async (o) => void finished.push(o.index) });
    expect(finished.sort()).toEqual([0, 1, 2, 3]);
    expect(again.map((o) => o.resumedFrom !== null)).toEqual([true, true, true, true]);
    for (const [i, o] of again.entries()) {
      expect(o.result.steps).toBe(clean[i].result.steps);
      const got = await params(o);
      got.forEach((p, j) => expect(maxAbsDiff(p, want[i][j])).toBe(0));
    }
    for (const o of [...clean, ...again]) o.model?.dispose();
  });
});
