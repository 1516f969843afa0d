// npx tsx scripts/train.ts --model DIR --data FILE.jsonl --out DIR [options] — see --help.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { getGpu } from '../src/gpu/runtime.ts';
import { loadPeftAdapter, writePeftAdapter } from '../src/model/adapter.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import type { LinearModule } from '../src/model/weights.ts';
import { loadTrainingData } from '../src/train/data.ts';
import { saveFullModel } from '../src/train/full.ts';
import { ALL_TARGETS, initLoraHost, type LoraConfig } from '../src/train/lora.ts';
import { configDiff, hasCheckpoint } from '../src/train/state.ts';
import { Trainer, type TrainConfig } from '../src/train/trainer.ts';
import { choiceFlag, numberFlag, parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { killPoint } from '../src/util/faults.ts';
import { readControlJson, writeFileAtomic, writeJsonAtomic } from '../src/util/fsatomic.ts';
import { hashFile, hashModelFolder } from '../src/util/hash.ts';
import { checkOutDir } from '../src/util/outpaths.ts';
import { assertRunFolderUsable, claimOutputs, clearRunOutputs, initRunFolder, markRunComplete, removeIfEmpty, runLock } from '../src/util/runfolder.ts';
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
  --save-every N          checkpoint every N optimizer steps into OUT/state/ckpt-*/ (weights + resumable state,
                          one atomic unit; the newest complete one is kept)
  --resume                continue the train.ts run in OUT (a rerun of the same command does so too);
                          refused when OUT holds no train.ts run, or one of other data, models or
                          settings (its checkpoints belong to those), or a finished one
  --overwrite             replace the train.ts run in OUT: deletes only the files train.ts wrote there
                          (listed in OUT/.run.json), after the new run's inputs are checked
A folder train.ts did not make is refused (with --overwrite too).
  --quiet                 no progress output

OUT gets the weights, loss.csv/svg and train_summary.json when the run finishes; OUT/.run.json says
"complete": true only then. A killed or failed run keeps its checkpoints in OUT/state/.`;

const TOOL = 'train.ts';

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
  const teacherAdapter = f['teacher-adapter'] ? String(f['teacher-adapter']) : null;
  const teacherSystem = f['teacher-system'] !== undefined ? String(f['teacher-system']) : null;
  if (!distillFrom && (teacherAdapter || teacherSystem !== null)) throw new UserError(`--${teacherAdapter ? 'teacher-adapter' : 'teacher-system'} needs --distill-from (the teacher model)`);
  if (f.resume && f.overwrite) throw new UserError('give --resume or --overwrite, not both');
  if (full && (f.rank !== undefined || f.alpha !== undefined || f.rslora || f.dropout !== undefined || f.targets !== undefined)) throw new UserError('--rank, --alpha, --rslora, --dropout and --targets are LoRA settings; drop them with --full');
  if (full && f['save-initial']) throw new UserError('--save-initial writes the initial LoRA adapter; it has no meaning with --full');

  // Inputs and output are checked before the GPU starts or anything is written.
  if (!existsSync(modelDir) || !statSync(modelDir).isDirectory()) throw new UserError(`${modelDir}: model folder not found`);
  if (!existsSync(dataFile) || !statSync(dataFile).isFile()) throw new UserError(`${dataFile}: data file not found`);
  for (const [flag, dir] of [['distill-from', distillFrom], ['teacher-adapter', teacherAdapter]] as const) {
    if (dir !== null && (!existsSync(dir) || !statSync(dir).isDirectory())) throw new UserError(`--${flag} ${dir}: folder not found`);
  }
  checkOutDir(outDir);
  assertRunFolderUsable(outDir, TOOL); // before the lock, so a user's folder is never written to

  // One live run per output folder; a folder this call created is removed again if the run is refused.
  const { lock, created } = await runLock(outDir, TOOL);
  let started = false;
  try {
    await train();
  } finally {
    await lock.release();
    if (created && !started) removeIfEmpty(outDir);
  }

  async function train(): Promise<void> {
    const folder = assertRunFolderUsable(outDir, TOOL);
    const runFile = path.join(outDir, 'train_config.json');
    const inputs: Record<string, string | null> = {
      data: await hashFile(dataFile),
      ...prefixed('model', await hashModelFolder(modelDir)),
      ...(distillFrom ? prefixed('teacher', await hashModelFolder(distillFrom)) : {}),
      ...(teacherAdapter ? { 'teacher-adapter': (await hashModelFolder(teacherAdapter)).weights } : {}),
    };
    // What decides the result: the settings and the inputs' contents (paths are kept for the reader only).
    const runKey: RunKey = { settings: { maxLen, ...cfg, teacherSystem }, inputs, paths: { model: path.resolve(modelDir), data: path.resolve(dataFile), distillFrom: distillFrom && path.resolve(distillFrom), teacherAdapter: teacherAdapter && path.resolve(teacherAdapter) } };

    let action: 'new' | 'overwrite' | 'continue';
    if (folder.kind === 'ours') {
      const prev = readControlJson(runFile, 'run configuration') as RunKey | null;
      if (prev !== null && (typeof prev !== 'object' || typeof prev.settings !== 'object' || typeof prev.inputs !== 'object')) {
        throw new UserError(`${runFile}: corrupt run configuration; pass --overwrite to start the run over`);
      }
      if (f.overwrite) action = 'overwrite';
      else if (prev === null) action = 'continue'; // killed before its configuration was written: nothing to keep
      else {
        const diff = runDiff(prev, runKey);
        const what = folder.marker.complete ? 'a finished' : 'an unfinished';
        if (diff.length) throw new UserError(`${outDir} holds ${what} run with other inputs or settings (${diff.join('; ')}); rerun with the same flags and files to continue it, or pass --overwrite to replace it`);
        if (folder.marker.complete) throw new UserError(`${outDir} already holds a training run of these flags and files, finished${f.resume ? ', so nothing to resume' : ''}; pass --overwrite to train it again`);
        action = 'continue';
      }
    } else {
      if (f.resume) throw new UserError(`${outDir}: nothing to resume (no ${TOOL} run there)`);
      action = 'new';
    }

    const gpu = await getGpu();
    const model = await Transformer.load(gpu, modelDir, { maxPositions: maxLen + 1 });
    for (const w of model.warnings) console.error(`warning: ${w}`);
    const tokenizer = await ChatTokenizer.load(modelDir, model.cfg.eosTokenIds);
    const data = loadTrainingData(dataFile, tokenizer, model.cfg.vocabSize, maxLen);
    if (cfg.distillWeight > 0 && !distillFrom) {
      const i = data.examples.findIndex((e) => !e.teacherTopK);
      if (i >= 0) throw new UserError(`${dataFile}: --distill-weight ${cfg.distillWeight} without --distill-from trains on stored "teacher_topk", but a row lacks it (trainable row ${i + 1})`);
    }
    if (!quiet) {
      console.error(`data: ${data.examples.length} rows, ${data.truncated} truncated to ${maxLen} tokens, ${data.skippedNoTarget} skipped (nothing to train)`);
    }
    let teacher = null;
    if (distillFrom) {
      const tModel = await Transformer.load(gpu, distillFrom, { maxPositions: maxLen + 64 });
      if (tModel.cfg.vocabSize !== model.cfg.vocabSize) throw new UserError(`--distill-from ${distillFrom}: vocabulary ${tModel.cfg.vocabSize} differs from the student's ${model.cfg.vocabSize}`);
      const tLora = teacherAdapter ? await loadPeftAdapter(gpu, teacherAdapter, tModel.cfg) : null;
      teacher = { model: tModel, lora: tLora, system: teacherSystem ?? undefined, tokenizer: await ChatTokenizer.load(distillFrom) };
    }

    // Every input is valid: only now is anything in OUT replaced.
    started = true;
    if (action === 'overwrite') {
      const removed = await clearRunOutputs(outDir, TOOL);
      if (!quiet && removed.length) console.error(`overwrite: removed the previous run's ${removed.join(', ')}`);
    }
    if (action !== 'continue') await initRunFolder(outDir, TOOL);
    await claimOutputs(outDir, TOOL, [...RUN_FILES, ...(full ? FULL_FILES : LORA_FILES), ...(f['save-initial'] ? ['initial/'] : [])]);
    await writeFileAtomic(runFile, JSON.stringify(runKey, null, 2) + '\n');
    const initial = full ? null : initLoraHost(model.cfg, lora, cfg.seed);
    const trainer = new Trainer(gpu, model, data.examples, cfg, initial, teacher);
    const meta = { baseModelNameOrPath: modelDir, loraDropout: lora.dropout };
    if (f['save-initial'] && initial) await writePeftAdapter(path.join(outDir, 'initial'), model.cfg, initial, meta);
    const stateDir = path.join(outDir, 'state');
    if (action === 'continue') {
      if (hasCheckpoint(stateDir)) {
        const got = trainer.loadState(stateDir);
        for (const n of got.notes) console.error(`warning: ${n}`);
        if (!quiet) console.error(`resuming at step ${got.step}/${trainer.totalSteps} from ${got.dir}`);
      } else if (!quiet) {
        console.error(`${outDir}: the unfinished run left no checkpoint; starting it over`);
      }
    }
    const saveWeights = async (t: Trainer, dir: string) => {
      if (full) await saveFullModel(gpu, model.weights, model.cfg, modelDir, dir);
      else await writePeftAdapter(dir, model.cfg, await t.adapterHost(), meta);
    };
    const writeCurve = async (t: Trainer) => {
      const rows = ['step,loss,lr,grad_norm', ...t.state.losses.map((l) => `${l.step},${l.loss},${l.lr},${l.gradNorm ?? ''}`)];
      await writeFileAtomic(path.join(outDir, 'loss.csv'), rows.join('\n') + '\n');
      await writeFileAtomic(path.join(outDir, 'loss.svg'), lineChartSvg({ title: 'training loss', xLabel: 'optimizer step', yLabel: 'loss', series: [{ name: 'loss', points: t.state.losses.map((l) => [l.step, l.loss]) }] }));
    };
    // A checkpoint holds the weights (usable on their own) and the resumable state, as one unit; the
    // weights in OUT itself are written only when the run finishes.
    const checkpoint = async (t: Trainer) => {
      await t.saveState(stateDir, (dir) => saveWeights(t, dir));
      await writeCurve(t);
    };
    const bar = new Progress('train', trainer.totalSteps, { unit: 'step', quiet });
    bar.update(trainer.state.step);
    let tokens = 0;
    const t0 = performance.now();
    const result = await trainer.run({
      saveEvery: saveEvery || undefined,
      save: checkpoint,
      onStep: (s) => {
        tokens += s.tokens;
        const tps = tokens / ((performance.now() - t0) / 1000);
        bar.update(s.step, `loss ${s.loss.toFixed(4)} lr ${s.lr.toExponential(2)} ${tps.toFixed(0)} tok/s`);
      },
    });
    bar.finish();
    await checkpoint(trainer);
    killPoint('train-final');
    await saveWeights(trainer, outDir);
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
    killPoint('train-complete');
    await markRunComplete(outDir, TOOL);
    if (!quiet) console.error(`done: ${result.steps} steps, final loss ${summary.final_loss?.toFixed(4)}, ${summary.tokens_per_s.toFixed(0)} tok/s → ${outDir}`);
  }
}

/** train_config.json: what a rerun must match to continue the run. */
interface RunKey {
  settings: Record<string, unknown>;
  inputs: Record<string, string | null>;
  paths: Record<string, string | null>;
}

const RUN_FILES = ['train_config.json', 'state/', 'loss.csv', 'loss.svg', 'train_summary.json'];
const LORA_FILES = ['adapter_config.json', 'adapter_model.safetensors'];
const FULL_FILES = ['model.safetensors', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json', 'chat_template.jinja'];

function prefixed(prefix: string, h: { config: string; weights: string; tokenizer: string | null }): Record<string, string | null> {
  return { [`${prefix} config`]: h.config, [`${prefix} weights`]: h.weights, [`${prefix} tokenizer`]: h.tokenizer };
}

/** Differences between a stored run and this one, in words: changed file contents and changed settings. */
function runDiff(prev: RunKey, cur: RunKey): string[] {
  const short = (h: unknown) => (typeof h === 'string' ? `${h.slice(0, 12)}…` : 'none');
  const names = [...new Set([...Object.keys(prev.inputs), ...Object.keys(cur.inputs)])].sort();
  const changed = names.filter((k) => prev.inputs[k] !== cur.inputs[k]).map((k) => `the content of ${k === 'data' ? '--data' : k} (sha256 ${short(prev.inputs[k])} then, ${short(cur.inputs[k])} now)`);
  return [...changed, ...configDiff(prev.settings, cur.settings)];
}

await runCli(main);
