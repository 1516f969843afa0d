// npx tsx scripts/train.ts --model DIR --data FILE.jsonl --out DIR [options] — see --help.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { getGpu } from '../src/gpu/runtime.ts';
import { loadPeftAdapter, writePeftAdapter } from '../src/model/adapter.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import type { LinearModule } from '../src/model/weights.ts';
import { loadTrainingData } from '../src/train/data.ts';
import { saveFullModel } from '../src/train/full.ts';
import { ALL_TARGETS, initLoraHost, type LoraConfig } from '../src/train/lora.ts';
import { Trainer, type TrainConfig } from '../src/train/trainer.ts';
import { choiceFlag, numberFlag, parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { writeFileAtomic, writeJsonAtomic } from '../src/util/fsatomic.ts';
import { Progress } from '../src/util/progress.ts';
import { lineChartSvg } from '../src/util/svg.ts';

const HELP = `usage: npx tsx scripts/train.ts --model DIR --data FILE.jsonl --out DIR [options]

Finetunes a Hugging Face model folder on the GPU (WebGPU; lavapipe on CPU-only machines).
LoRA by default (PEFT adapter written to --out), --full for every parameter (HF folder written to --out).

data rows (JSONL): {"messages":[{"role":"user","content":…},{"role":"assistant","content":…}]}
  (loss on the assistant's content and end-of-turn token only) or {"input_ids":[…],"labels":[…]}
  (HF convention, -100 = ignored); rows may carry "teacher_topk" for offline distillation.

  --full                  full finetuning instead of LoRA
  --rank R (8) --alpha A (8) --rslora --dropout P (0; LoRA dropout, PEFT's lora_dropout)
  --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
  --lr 2e-4 --epochs 3 --batch-size 22 --grad-accum 3 --max-len 500 --warmup-steps 5
  --schedule linear|cosine|constant   --max-grad-norm 1 (0 = off)   --weight-decay 0
  --optimizer adamw|sgd   --seed 0   --max-steps N   --no-shuffle
  --gradient-checkpointing  recompute activations in the backward (less memory)
  --distill-from DIR [--teacher-adapter DIR] [--teacher-system STR]   KL to a teacher model online
  --distill-weight W      loss = (1−W)·CE + W·KL (default 1 when distilling, else 0);
                          with W > 0 and no --distill-from, rows' stored teacher_topk are used
  --save-initial          write the adapter as initialised into OUT/initial/ (LoRA)
  --save-every N          checkpoint (weights + resumable state) every N optimizer steps
  --resume                continue the run in OUT from its last checkpoint
  --overwrite             replace a different run in OUT
  --quiet                 no progress output`;

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), {
    model: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
    full: { type: 'boolean' },
    rank: { type: 'string' },
    alpha: { type: 'string' },
    rslora: { type: 'boolean' },
    dropout: { type: 'string' },
    targets: { type: 'string' },
    lr: { type: 'string' },
    epochs: { type: 'string' },
    'batch-size': { type: 'string' },
    'grad-accum': { type: 'string' },
    'max-len': { type: 'string' },
    'warmup-steps': { type: 'string' },
    schedule: { type: 'string' },
    'max-grad-norm': { type: 'string' },
    'weight-decay': { type: 'string' },
    optimizer: { type: 'string' },
    seed: { type: 'string' },
    'max-steps': { type: 'string' },
    'no-shuffle': { type: 'boolean' },
    'gradient-checkpointing': { type: 'boolean' },
    'distill-from': { type: 'string' },
    'teacher-adapter': { type: 'string' },
    'teacher-system': { type: 'string' },
    'distill-weight': { type: 'string' },
    'save-initial': { type: 'boolean' },
    'save-every': { type: 'string' },
    resume: { type: 'boolean' },
    overwrite: { type: 'boolean' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (f.help) {
    console.log(HELP);
    return;
  }
  for (const req of ['model', 'data', 'out'] as const) if (!f[req]) throw new UserError(`--${req} is required (see --help)`);
  const modelDir = String(f.model);
  const dataFile = String(f.data);
  const outDir = String(f.out);
  const full = !!f.full;
  const targets = (f.targets ? String(f.targets).split(',').map((s) => s.trim()).filter(Boolean) : ALL_TARGETS) as LinearModule[];
  for (const t of targets) if (!ALL_TARGETS.includes(t)) throw new UserError(`--targets: '${t}' is not a projection of this model (known: ${ALL_TARGETS.join(', ')})`);
  const lora: LoraConfig = {
    rank: numberFlag(f.rank, 'rank', 8, { min: 1, integer: true }),
    alpha: numberFlag(f.alpha, 'alpha', 8, { min: 0, exclusiveMin: true }),
    rslora: !!f.rslora,
    targets,
    dropout: numberFlag(f.dropout, 'dropout', 0, { min: 0, max: 0.99 }),
  };
  const distillFrom = f['distill-from'] ? String(f['distill-from']) : null;
  const cfg: TrainConfig = {
    mode: full ? 'full' : 'lora',
    lora: full ? undefined : lora,
    lr: numberFlag(f.lr, 'lr', 2e-4, { min: 0, exclusiveMin: true }),
    epochs: numberFlag(f.epochs, 'epochs', 3, { min: 1, integer: true }),
    batchSize: numberFlag(f['batch-size'], 'batch-size', 22, { min: 1, integer: true }),
    gradAccum: numberFlag(f['grad-accum'], 'grad-accum', 3, { min: 1, integer: true }),
    warmupSteps: numberFlag(f['warmup-steps'], 'warmup-steps', 5, { min: 0, integer: true }),
    schedule: choiceFlag(f.schedule, 'schedule', ['linear', 'cosine', 'constant'] as const, 'linear'),
    maxGradNorm: numberFlag(f['max-grad-norm'], 'max-grad-norm', 1, { min: 0 }),
    weightDecay: numberFlag(f['weight-decay'], 'weight-decay', 0, { min: 0 }),
    optimizer: choiceFlag(f.optimizer, 'optimizer', ['adamw', 'sgd'] as const, 'adamw'),
    seed: numberFlag(f.seed, 'seed', 0, { min: 0, integer: true }),
    shuffle: !f['no-shuffle'],
    maxSteps: f['max-steps'] === undefined ? undefined : numberFlag(f['max-steps'], 'max-steps', 0, { min: 1, integer: true }),
    checkpointing: !!f['gradient-checkpointing'],
    distillWeight: numberFlag(f['distill-weight'], 'distill-weight', distillFrom ? 1 : 0, { min: 0, max: 1 }),
  };
  const maxLen = numberFlag(f['max-len'], 'max-len', 500, { min: 2, integer: true });
  const saveEvery = numberFlag(f['save-every'], 'save-every', 0, { min: 0, integer: true });
  const quiet = !!f.quiet;

  // The output folder holds one run: refuse a different one unless told.
  const runFile = path.join(outDir, 'train_config.json');
  const runKey = { model: path.resolve(modelDir), data: path.resolve(dataFile), maxLen, ...cfg, distillFrom, teacherAdapter: f['teacher-adapter'] ?? null, teacherSystem: f['teacher-system'] ?? null };
  if (existsSync(runFile)) {
    const prev = readFileSync(runFile, 'utf8');
    const same = prev === JSON.stringify(runKey, null, 2) + '\n';
    if (f.overwrite) rmSync(path.join(outDir, 'state'), { recursive: true, force: true });
    else if (!f.resume) throw new UserError(`${outDir} already holds a training run; use --resume to continue it or --overwrite to replace it`);
    else if (!same) throw new UserError(`${outDir} holds a run with a different configuration; --resume needs the same flags (or use --overwrite)`);
  } else if (f.resume) {
    throw new UserError(`${outDir}: nothing to resume (no train_config.json)`);
  } else if (existsSync(outDir) && !f.overwrite && readdirNonEmpty(outDir)) {
    throw new UserError(`${outDir} is not empty; choose a new folder or pass --overwrite`);
  }

  const gpu = await getGpu();
  const model = await Transformer.load(gpu, modelDir, { maxPositions: maxLen + 1 });
  for (const w of model.warnings) console.error(`warning: ${w}`);
  const tokenizer = await ChatTokenizer.load(modelDir, model.cfg.eosTokenIds);
  const data = loadTrainingData(dataFile, tokenizer, model.cfg.vocabSize, maxLen);
  if (!quiet) {
    console.error(`data: ${data.examples.length} rows, ${data.truncated} truncated to ${maxLen} tokens, ${data.skippedNoTarget} skipped (nothing to train)`);
  }
  let teacher = null;
  if (distillFrom) {
    const tModel = await Transformer.load(gpu, distillFrom, { maxPositions: maxLen + 64 });
    if (tModel.cfg.vocabSize !== model.cfg.vocabSize) throw new UserError(`--distill-from ${distillFrom}: vocabulary ${tModel.cfg.vocabSize} differs from the student's ${model.cfg.vocabSize}`);
    const tLora = f['teacher-adapter'] ? await loadPeftAdapter(gpu, String(f['teacher-adapter']), tModel.cfg) : null;
    teacher = { model: tModel, lora: tLora, system: f['teacher-system'] ? String(f['teacher-system']) : undefined, tokenizer: await ChatTokenizer.load(distillFrom) };
  }

  mkdirSync(outDir, { recursive: true });
  await writeFileAtomic(runFile, JSON.stringify(runKey, null, 2) + '\n');
  const initial = full ? null : initLoraHost(model.cfg, lora, cfg.seed);
  const trainer = new Trainer(gpu, model, data.examples, cfg, initial, teacher);
  const meta = { baseModelNameOrPath: modelDir, loraDropout: lora.dropout };
  if (f['save-initial'] && initial) await writePeftAdapter(path.join(outDir, 'initial'), model.cfg, initial, meta);
  const stateDir = path.join(outDir, 'state');
  if (f.resume && existsSync(path.join(stateDir, 'state.json'))) {
    trainer.loadState(stateDir);
    if (!quiet) console.error(`resuming at step ${trainer.state.step}/${trainer.totalSteps}`);
  }
  const saveWeights = async (t: Trainer) => {
    if (full) await saveFullModel(gpu, model.weights, model.cfg, modelDir, outDir);
    else await writePeftAdapter(outDir, model.cfg, await t.adapterHost(), meta);
  };
  const writeCurve = async (t: Trainer) => {
    const rows = ['step,loss,lr,grad_norm', ...t.state.losses.map((l) => `${l.step},${l.loss},${l.lr},${l.gradNorm ?? ''}`)];
    await writeFileAtomic(path.join(outDir, 'loss.csv'), rows.join('\n') + '\n');
    await writeFileAtomic(path.join(outDir, 'loss.svg'), lineChartSvg({ title: 'training loss', xLabel: 'optimizer step', yLabel: 'loss', series: [{ name: 'loss', points: t.state.losses.map((l) => [l.step, l.loss]) }] }));
  };
  const save = async (t: Trainer) => {
    await saveWeights(t);
    await t.saveState(stateDir);
    await writeCurve(t);
  };
  const bar = new Progress('train', trainer.totalSteps, { unit: 'step', quiet });
  bar.update(trainer.state.step);
  let tokens = 0;
  const t0 = performance.now();
  const result = await trainer.run({
    saveEvery: saveEvery || undefined,
    save,
    onStep: (s) => {
      tokens += s.tokens;
      const tps = tokens / ((performance.now() - t0) / 1000);
      bar.update(s.step, `loss ${s.loss.toFixed(4)} lr ${s.lr.toExponential(2)} ${tps.toFixed(0)} tok/s`);
    },
  });
  bar.finish();
  await save(trainer);
  const summary = {
    steps: result.steps,
    tokens: result.tokens,
    wall_s: result.wallS,
    tokens_per_s: result.tokens / Math.max(1e-9, result.wallS),
    final_loss: result.losses.at(-1)?.loss ?? null,
    truncated_rows: data.truncated,
    skipped_rows: data.skippedNoTarget,
  };
  await writeJsonAtomic(path.join(outDir, 'train_summary.json'), summary);
  if (!quiet) console.error(`done: ${result.steps} steps, final loss ${summary.final_loss?.toFixed(4)}, ${summary.tokens_per_s.toFixed(0)} tok/s → ${outDir}`);
}

function readdirNonEmpty(dir: string): boolean {
  try {
    return readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

await runCli(main);
