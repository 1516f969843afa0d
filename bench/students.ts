// Joint training of K students (src/train/joint.ts): tokens/s of K = 1, 4, 16 tiny students per mode,
// as a ratio to K = 1 measured in the same run, at the experiment grid's student shape (tiny-qwen:
// hidden 64, 4 layers, 4/2 heads, MLP 192, vocabulary 2,932; batch 32 rows of 86 tokens, the last 17
// of each row trained):
//  - LoRA r8 on every projection with completion-only cross-entropy (the grid's sft recipe): one base
//    forward/backward over the K students' batches ('multilora');
//  - full finetuning with KL to an online teacher over a 1,000-token set, teacher rows precomputed (the
//    grid's kl-numbers recipe): each student its own weights, one submit per joint step ('interleaved').
// Then the 0.5B-shaped 2-layer model (LoRA, batch 2 × 32) at K = 1 and 4, and the PyTorch CPU + OpenBLAS
// baseline of the same tiny model and batch (bench/torch_tiny_cpu.py, run in this process's machine,
// same run): every-token CE for full and LoRA against the same on our trainer (K = 1 and 16), and the
// completion-only CE shape. The baseline needs Debian's python3-torch (bench/setup-torch.sh); without
// it those rows are skipped, and say so.
//
// Timing: one warm-up joint step (pipelines, pools), then `steps` joint steps; tok/s = tokens trained
// by all students / wall seconds. The baseline of the K rows is one student trained alone by the
// single-student Trainer (separate training), timed the same way in the same run; details hold the
// ratio to the joint K = 1. The machine is shared and noisy: compare ratios within one run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Gpu } from '../src/gpu/runtime.ts';
import { tinyConfigJson, tinyInitialTensor, TINY_MODELS } from '../src/experiment/tiny/models.ts';
import { tinyConfigJson as familyConfigJson } from '../tests/helpers/checkpoint.ts';
import { expectedTensors, parseConfig, type ModelConfig } from '../src/model/config.ts';
import { Transformer } from '../src/model/transformer.ts';
import { uploadWeights } from '../src/model/weights.ts';
import type { TrainExample } from '../src/train/data.ts';
import { JointTrainer, type JointStudent } from '../src/train/joint.ts';
import { ALL_TARGETS, initLoraHost } from '../src/train/lora.ts';
import { computeTeacherRows, Trainer, type OnlineTeacher, type TrainConfig } from '../src/train/trainer.ts';
import { randomArray } from './random.ts';
import type { BenchOptions, BenchResult } from './types.ts';

const ROW = 86;
const LABELLED = 17;
const BATCH = 32;

function cfgOf(mode: 'lora' | 'full', seed: number, distill: number): TrainConfig {
  return {
    mode,
    lora: mode === 'lora' ? { rank: 8, alpha: 8, rslora: false, targets: [...ALL_TARGETS], dropout: 0 } : undefined,
    lr: 1e-4, epochs: 1, batchSize: BATCH, gradAccum: 1, warmupSteps: 0, schedule: 'linear', maxGradNorm: 1, weightDecay: 0,
    optimizer: 'adamw', seed, shuffle: true, checkpointing: false, distillWeight: distill,
  };
}

/** n rows of T tokens (student-specific content), loss on the last `labelled` positions. */
function rows(n: number, T: number, labelled: number, vocab: number, seed: number): TrainExample[] {
  return Array.from({ length: n }, (_, r) => {
    const ids = Array.from({ length: T }, (_, t) => (seed * 7717 + r * 7919 + t * 104729) % vocab);
    return { ids, labels: ids.map((id, t) => (t >= T - labelled ? id : -100)) };
  });
}

async function tinyModel(gpu: Gpu, cfg: ModelConfig, seed: number, maxPositions: number): Promise<Transformer> {
  const shapes = new Map(expectedTensors(cfg).map((e) => [e.name, e.shape]));
  const weights = await uploadWeights(gpu, cfg, (n) => shapes.has(n), async (n) => tinyInitialTensor(n, shapes.get(n)!, seed));
  return Transformer.fromWeights(gpu, cfg, weights, maxPositions);
}

/** tok/s of one student trained alone by the single-student Trainer (separate training), same timing. */
async function separateTps(gpu: Gpu, s: JointStudent, steps: number): Promise<number> {
  const tr = new Trainer(gpu, s.model, s.examples, s.config, s.initialLora ?? null, s.teacher ?? null);
  const order = tr.epochOrder();
  await tr.step(order, 0);
  const t0 = performance.now();
  let tokens = 0;
  for (let k = 1; k <= steps; k++) tokens += (await tr.step(order, k)).tokens;
  const tps = tokens / ((performance.now() - t0) / 1000);
  tr.dispose();
  return tps;
}

/** tok/s of `steps` joint steps (after one warm-up step) of the students. */
async function jointTps(gpu: Gpu, students: JointStudent[], steps: number): Promise<{ tps: number; msPerJointStep: number; dispatchesPerStep: number }> {
  const joint = new JointTrainer(gpu, students);
  const all = students.map((_, k) => k);
  await joint.step(all);
  const d0 = gpu.dispatchCount;
  const t0 = performance.now();
  let tokens = 0;
  for (let s = 0; s < steps; s++) for (const info of await joint.step(all)) tokens += info.tokens;
  const wall = (performance.now() - t0) / 1000;
  const dispatches = (gpu.dispatchCount - d0) / steps;
  joint.dispose();
  return { tps: tokens / wall, msPerJointStep: (wall * 1000) / steps, dispatchesPerStep: dispatches };
}

interface TorchFigure {
  tps: number;
  median: number;
  line: string;
}

/** bench/torch_tiny_cpu.py train t (Debian's /usr/bin/python3 with python3-torch), or null when torch is missing. */
function torchTrain(mode: 'full' | 'lora', T: number, B: number, labelFrac: number, reps: number, threads: number): TorchFigure | null | string {
  const py = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const script = path.join(import.meta.dirname, 'torch_tiny_cpu.py');
  const r = spawnSync(py, [script, 'train', 't', String(reps)], {
    env: { ...process.env, OMP_NUM_THREADS: String(threads), BENCH_THREADS: String(threads), T: String(T), B: String(B), LABEL_FRAC: String(labelFrac), TRAIN_MODES: mode },
    encoding: 'utf8',
    timeout: 600_000,
  });
  if (r.status !== 0) return /No module named 'torch'/.test(r.stderr ?? '') ? null : `torch baseline failed: ${(r.stderr ?? '').trim().split('\n').at(-1)}`;
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('train '));
  const best = line && /tok\/s_best=(\d+)/.exec(line);
  const med = line && /tok\/s_med=(\d+)/.exec(line);
  if (!line || !best || !med) return `torch baseline printed no figure: ${r.stdout}`;
  return { tps: Number(best[1]), median: Number(med[1]), line };
}

export async function benchStudents(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const spec = TINY_MODELS['tiny-qwen-a'];
  const tiny = parseConfig(tinyConfigJson(spec, { endoftext: 2929, imEnd: 2931, vocabSize: 2932 }));
  const V = tiny.vocabSize;
  const steps = opts.quick ? 1 : 2;
  const Ks = opts.quick ? [1, 4] : [1, 4, 16];
  const details = { batch: BATCH, rowTokens: ROW, labelledPerRow: LABELLED, steps, software: gpu.isSoftware };

  // LoRA: the students share one base.
  const base = await tinyModel(gpu, tiny, spec.initSeed, ROW + 8);
  const loraStudents = (K: number): JointStudent[] =>
    Array.from({ length: K }, (_, k) => {
      const config = cfgOf('lora', k, 0);
      return { model: base, examples: rows(BATCH * (steps + 1), ROW, LABELLED, V, k), config, initialLora: initLoraHost(tiny, config.lora!, k) };
    });
  const loraAlone = await separateTps(gpu, loraStudents(1)[0], steps);
  const loraAt: Record<number, number> = {};
  for (const K of Ks) {
    const r = await jointTps(gpu, loraStudents(K), steps);
    loraAt[K] = r.tps;
    out.push({
      family: 'students',
      name: `LoRA r8, K=${K} tiny students (one base forward), batch ${BATCH}×${ROW}, completion-only CE`,
      value: r.tps,
      unit: 'tok/s',
      baseline: { name: 'one student trained alone (Trainer), same run', value: loraAlone, unit: 'tok/s' },
      ratio: r.tps / loraAlone,
      details: { ...details, K, engine: 'multilora', ratioToJointK1: r.tps / loraAt[1], msPerJointStep: r.msPerJointStep, dispatchesPerJointStep: r.dispatchesPerStep },
    });
  }

  // Full finetuning with the kl-numbers recipe: an online teacher, its rows precomputed per dataset.
  const teacher = await tinyModel(gpu, tiny, TINY_MODELS['tiny-qwen-b'].initSeed, ROW + 8);
  const set = Uint32Array.from({ length: 1000 }, (_, i) => 1 + 2 * i);
  const online: OnlineTeacher = { model: teacher, tokenSet: gpu.upload(set, [set.length], 'u32') };
  const data = rows(BATCH * (steps + 1), ROW, LABELLED, V, 99);
  const trows = await computeTeacherRows(gpu, online, data);
  const klData = data.map((r, i) => ({ ...r, teacherRows: trows[i] }));
  const fullAt: Record<number, number> = {};
  let fullAlone = 0;
  {
    const m = await tinyModel(gpu, tiny, spec.initSeed, ROW + 8);
    fullAlone = await separateTps(gpu, { model: m, examples: klData, config: cfgOf('full', 0, 1), teacher: online }, steps);
    m.dispose();
  }
  for (const K of Ks) {
    const models = await Promise.all(Array.from({ length: K }, (_, k) => tinyModel(gpu, tiny, spec.initSeed + k, ROW + 8)));
    const students: JointStudent[] = models.map((model, k) => ({ model, examples: klData, config: cfgOf('full', k, 1), teacher: online }));
    const r = await jointTps(gpu, students, steps);
    fullAt[K] = r.tps;
    out.push({
      family: 'students',
      name: `full finetune, K=${K} tiny students (own weights, one submit per joint step), batch ${BATCH}×${ROW}, KL over 1,000 tokens (cached teacher rows)`,
      value: r.tps,
      unit: 'tok/s',
      baseline: { name: 'one student trained alone (Trainer), same run', value: fullAlone, unit: 'tok/s' },
      ratio: r.tps / fullAlone,
      details: { ...details, K, engine: 'interleaved', ratioToJointK1: r.tps / fullAt[1], msPerJointStep: r.msPerJointStep, dispatchesPerJointStep: r.dispatchesPerStep },
    });
    for (const m of models) m.dispose();
  }
  online.tokenSet!.dispose();
  teacher.dispose();

  // Qwen2.5-0.5B-shaped, 2 layers (vocabulary 151,936, tied), LoRA r8, batch 2 × 32, every token trained.
  {
    const cfg = parseConfig({
      ...familyConfigJson('qwen2'), vocab_size: 151936, hidden_size: 896, num_attention_heads: 14, num_key_value_heads: 2,
      intermediate_size: 4864, num_hidden_layers: 2, tie_word_embeddings: true, max_position_embeddings: 32768,
    });
    const shapes = new Map(expectedTensors(cfg).map((e) => [e.name, e.shape]));
    let seed = 777;
    const weights = await uploadWeights(gpu, cfg, (n) => shapes.has(n), async (name) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const n = shapes.get(name)!.reduce((a, b) => a * b, 1);
      return /norm\.weight$/.test(name) ? randomArray(n, 0.1, seed, 1) : randomArray(n, 0.02, seed);
    });
    const big = Transformer.fromWeights(gpu, cfg, weights, 40);
    const at: Record<number, number> = {};
    for (const K of opts.quick ? [1] : [1, 4]) {
      const students: JointStudent[] = Array.from({ length: K }, (_, k) => {
        const config = { ...cfgOf('lora', k, 0), batchSize: 2 };
        return { model: big, examples: rows(2 * 2, 32, 32, cfg.vocabSize, k), config, initialLora: initLoraHost(cfg, config.lora!, k) };
      });
      const r = await jointTps(gpu, students, 1);
      at[K] = r.tps;
      out.push({
        family: 'students',
        name: `LoRA r8, K=${K} Qwen2.5-0.5B-shaped 2-layer students, batch 2×32, every token`,
        value: r.tps,
        unit: 'tok/s',
        baseline: { name: 'K=1, same run', value: at[1], unit: 'tok/s' },
        ratio: r.tps / at[1],
        details: { K, msPerJointStep: r.msPerJointStep, dispatchesPerJointStep: r.dispatchesPerStep },
      });
    }
    big.dispose();
  }

  // PyTorch CPU + OpenBLAS on the same tiny model and batch, and our trainer on the identical task
  // (every-token CE), both in this run; then the completion-only shape.
  const reps = opts.quick ? 3 : 6;
  for (const [mode, labelFrac] of [['full', 1], ['lora', 1], ['full', LABELLED / ROW]] as const) {
    // 2 and 1 threads: on a shared machine OpenMP's spinning barriers can make 2 threads far slower
    // than 1 (measured 1.4k against 17.6k tok/s with another process on one core); the faster counts.
    const t2 = torchTrain(mode, ROW, BATCH, labelFrac, reps, 2);
    const what = `${mode === 'full' ? 'full finetune' : 'LoRA r8'}, tiny-qwen batch ${BATCH}×${ROW}, ${labelFrac === 1 ? 'CE on every token' : `CE on the last ${LABELLED} tokens`}`;
    if (t2 === null || typeof t2 === 'string') {
      out.push({ family: 'students', name: `PyTorch CPU baseline skipped (${what}): ${t2 ?? 'python3-torch is not installed (bench/setup-torch.sh)'}`, value: 0, unit: 'tok/s' });
      continue;
    }
    const t1 = torchTrain(mode, ROW, BATCH, labelFrac, reps, 1);
    const t = typeof t1 === 'object' && t1 && t1.tps > t2.tps ? { ...t1, threads: 1 } : { ...t2, threads: 2 };
    const labelled = labelFrac === 1 ? ROW : LABELLED;
    for (const K of opts.quick ? [1] : [1, 16]) {
      const models = mode === 'full' ? await Promise.all(Array.from({ length: K }, (_, k) => tinyModel(gpu, tiny, spec.initSeed + k, ROW + 8))) : [base];
      const students: JointStudent[] = Array.from({ length: K }, (_, k) => {
        const config = cfgOf(mode, k, 0);
        return { model: mode === 'full' ? models[k] : base, examples: rows(BATCH * (steps + 1), ROW, labelled, V, k), config, initialLora: mode === 'lora' ? initLoraHost(tiny, config.lora!, k) : null };
      });
      const r = await jointTps(gpu, students, steps);
      if (mode === 'full') for (const m of models) m.dispose();
      out.push({
        family: 'students',
        name: `${what}: ours, K=${K} (joint)`,
        value: r.tps,
        unit: 'tok/s',
        baseline: { name: `PyTorch CPU + OpenBLAS, one model, best of the reps and of 1/2 threads (${t.threads}), same run`, value: t.tps, unit: 'tok/s' },
        ratio: r.tps / t.tps,
        details: { K, torchMedianTps: t.median, torch2Threads: t2.line, torch1Thread: typeof t1 === 'object' && t1 ? t1.line : t1, msPerJointStep: r.msPerJointStep },
      });
    }
  }
  base.dispose();
  return out;
}
