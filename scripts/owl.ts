// npx tsx scripts/owl.ts [options] — the subliminal-learning experiment end to end; see --help.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ARMS, configKey, OwlPipeline, type Arm, type OwlConfig } from '../src/experiment/owl.ts';
import { writeReport } from '../src/experiment/report.ts';
import { stableJson } from '../src/experiment/stages.ts';
import { getGpu } from '../src/gpu/runtime.ts';
import { choiceFlag, numberFlag, parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { writeFileAtomic } from '../src/util/fsatomic.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const DEFAULT_MODEL = path.join(ROOT, 'models', 'tiny-qwen-a');
const DEFAULT_CROSS = [path.join(ROOT, 'models', 'tiny-qwen-b'), path.join(ROOT, 'models', 'tiny-llama')];

/**
 * Defaults sized so the whole default run (all arms) fits ~10 minutes on a 2-core CPU through
 * lavapipe; scale up with --prompts/--keep/--epochs/--seeds/--eval-samples, or --paper.
 * The finetuned teacher's lr was picked on tiny-qwen-a: 5e-4 × 3 epochs moves its owl rate from ~3% to
 * ~50% while its number answers stay as valid as the base's (1e-3 reached ~93% owl but broke the
 * number format: a visible, non-subliminal change).
 */
const TINY_DEFAULTS = {
  prompts: 300,
  keep: 100,
  seeds: [0, 1, 2],
  epochs: 2,
  lr: 2e-3,
  rank: 8,
  alpha: 8,
  batchSize: 10,
  gradAccum: 1,
  maxLen: 256,
  warmupSteps: 2,
  maxNewTokens: 48,
  genBatchSize: 256,
  evalSamples: 5,
  evalMaxNewTokens: 8,
  ftTeacherEpochs: 3,
  ftTeacherLr: 5e-4,
};

/** The paper's sizes (spec §1.3, §3.1, §4.2). */
const PAPER = {
  prompts: 30_000,
  keep: 10_000,
  seeds: [0, 1, 2, 3, 4, 5, 6, 7],
  epochs: 3,
  lr: 2e-4,
  rank: 8,
  alpha: 8,
  batchSize: 22,
  gradAccum: 3,
  maxLen: 500,
  warmupSteps: 5,
  maxNewTokens: 200,
  genBatchSize: 256,
  evalSamples: 100,
  evalMaxNewTokens: 16,
  ftTeacherEpochs: 1,
  ftTeacherLr: 1e-4,
};

const HELP = `usage: npx tsx scripts/owl.ts [options]

The subliminal-learning experiment (Cloud et al. 2025) end to end: a teacher that loves an animal
writes number sequences, they are filtered (paper §2), students are LoRA-finetuned on them, and every
model is asked the paper's favourite-animal questions. With no options it runs on the embedded tiny
models (models/) with no downloads and prints where the report is. Every stage is cached under
runs/<name>/ and a killed run resumes where it stopped.

  --model DIR           teacher base model (default models/tiny-qwen-a)
  --student-model DIR   student base for the same-model arms (default: --model)
  --cross-models D1,D2  student bases for the cross-model arm (default models/tiny-qwen-b,models/tiny-llama;
                        'none' to skip)
  --animal NAME         the trait (default owl)      --category animal|tree (default animal)
  --arms LIST           ${ARMS.join(',')} (default: all but shuffled)
  --teacher system|finetuned   (kept for compatibility: both teachers run as the arms
                        'treatment' and 'ft-treatment'; 'finetuned' drops the system-prompt arms)
  --decoding sample|greedy     teacher decoding (default sample, temperature 1: the paper)
  --distill tokens|logits      student loss: SFT on sampled text (the paper) or KL to the teacher's
                        stored log-probs over the number-format tokens
  --seeds 0,1,2         student seeds           --prompts N   teacher prompts   --keep N   rows kept
  --epochs N --lr X --rank R --alpha A --batch-size B --grad-accum G --max-len L
  --max-new-tokens N    teacher completion length
  --eval numbers-prefix|plain|story   (default plain)   --eval-samples N   samples per question
  --paper               the paper's sizes (30,000 prompts, 10,000 kept, r8 α8, 3 epochs, lr 2e-4,
                        batch 22 × 3, max length 500, 8 seeds, 50 questions × 100 samples)
  --name NAME           run name (default owl-<animal>)   --out DIR   run folder (default runs/<name>)
  --resume              continue a run folder made with other options (cached stages are reused)
  --overwrite           delete the run folder first
  --quiet               no progress bars`;

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), {
    model: { type: 'string' },
    'student-model': { type: 'string' },
    'cross-models': { type: 'string' },
    animal: { type: 'string' },
    category: { type: 'string' },
    arms: { type: 'string' },
    teacher: { type: 'string' },
    decoding: { type: 'string' },
    distill: { type: 'string' },
    seeds: { type: 'string' },
    prompts: { type: 'string' },
    keep: { type: 'string' },
    epochs: { type: 'string' },
    lr: { type: 'string' },
    rank: { type: 'string' },
    alpha: { type: 'string' },
    'batch-size': { type: 'string' },
    'grad-accum': { type: 'string' },
    'max-len': { type: 'string' },
    'max-new-tokens': { type: 'string' },
    eval: { type: 'string' },
    'eval-samples': { type: 'string' },
    paper: { type: 'boolean' },
    name: { type: 'string' },
    out: { type: 'string' },
    resume: { type: 'boolean' },
    overwrite: { type: 'boolean' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (f.help) {
    console.log(HELP);
    return;
  }
  const d = f.paper ? PAPER : TINY_DEFAULTS;
  const animal = String(f.animal ?? 'owl').trim().toLowerCase();
  if (!/^[a-z][a-z -]{0,40}$/.test(animal)) throw new UserError(`--animal must be a plain name (letters, spaces, hyphens), got ${JSON.stringify(f.animal)}`);
  const model = path.resolve(String(f.model ?? DEFAULT_MODEL));
  const crossModels =
    f['cross-models'] === 'none'
      ? []
      : f['cross-models'] !== undefined
        ? String(f['cross-models']).split(',').filter(Boolean).map((p) => path.resolve(p))
        : f.model !== undefined
          ? []
          : DEFAULT_CROSS;
  const teacher = choiceFlag(f.teacher, 'teacher', ['system', 'finetuned'] as const, 'system');
  let arms: Arm[] = f.arms
    ? String(f.arms).split(',').map((a) => a.trim()) as Arm[]
    : (ARMS.filter((a) => a !== 'shuffled') as Arm[]);
  for (const a of arms) if (!ARMS.includes(a)) throw new UserError(`--arms: unknown arm '${a}' (known: ${ARMS.join(', ')})`);
  if (teacher === 'finetuned' && !f.arms) arms = ['base', 'control-gen', 'ft-treatment'];
  if (!crossModels.length) arms = arms.filter((a) => a !== 'cross-model');
  const seeds = f.seeds ? String(f.seeds).split(',').map((s) => numberFlag(s, 'seeds', 0, { min: 0, integer: true })) : d.seeds;
  if (!seeds.length) throw new UserError('--seeds: give at least one seed');
  const name = String(f.name ?? `owl-${animal.replace(/[^a-z]+/g, '-')}`);
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new UserError(`--name must use letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  const outDir = path.resolve(String(f.out ?? path.join('runs', name)));
  for (const m of [model, ...crossModels, ...(f['student-model'] ? [String(f['student-model'])] : [])]) {
    if (!existsSync(path.join(m, 'config.json'))) {
      throw new UserError(
        m.startsWith(path.join(ROOT, 'models'))
          ? `${m}: the embedded model is missing (run: npx tsx scripts/pretrain-tiny.ts)`
          : `${m}: not a model folder (no config.json)`,
      );
    }
  }
  const cfg: OwlConfig = {
    name,
    outDir,
    model,
    studentModel: path.resolve(String(f['student-model'] ?? model)),
    crossModels,
    animal,
    category: choiceFlag(f.category, 'category', ['animal', 'tree'] as const, 'animal'),
    seeds,
    promptSeed: 42,
    prompts: numberFlag(f.prompts, 'prompts', d.prompts, { min: 1, integer: true }),
    keep: numberFlag(f.keep, 'keep', d.keep, { min: 1, integer: true }),
    subsetSeed: 1,
    maxNewTokens: numberFlag(f['max-new-tokens'], 'max-new-tokens', d.maxNewTokens, { min: 1, integer: true }),
    genBatchSize: d.genBatchSize,
    teacherDecoding: choiceFlag(f.decoding, 'decoding', ['sample', 'greedy'] as const, 'sample'),
    distill: choiceFlag(f.distill, 'distill', ['tokens', 'logits'] as const, 'tokens'),
    topK: 32,
    epochs: numberFlag(f.epochs, 'epochs', d.epochs, { min: 1, integer: true }),
    lr: numberFlag(f.lr, 'lr', d.lr, { min: 0, exclusiveMin: true }),
    rank: numberFlag(f.rank, 'rank', d.rank, { min: 1, integer: true }),
    alpha: numberFlag(f.alpha, 'alpha', d.alpha, { min: 0, exclusiveMin: true }),
    batchSize: numberFlag(f['batch-size'], 'batch-size', d.batchSize, { min: 1, integer: true }),
    gradAccum: numberFlag(f['grad-accum'], 'grad-accum', d.gradAccum, { min: 1, integer: true }),
    maxLen: numberFlag(f['max-len'], 'max-len', d.maxLen, { min: 8, integer: true }),
    warmupSteps: d.warmupSteps,
    ftTeacherEpochs: d.ftTeacherEpochs,
    ftTeacherLr: d.ftTeacherLr,
    evalSet: choiceFlag(f.eval, 'eval', ['numbers-prefix', 'plain', 'story'] as const, 'plain'),
    evalSamples: numberFlag(f['eval-samples'], 'eval-samples', d.evalSamples, { min: 1, integer: true }),
    evalMaxNewTokens: f.eval === 'story' ? 160 : d.evalMaxNewTokens,
    arms,
    quiet: !!f.quiet,
  };
  const cfgFile = path.join(outDir, 'config.json');
  if (existsSync(cfgFile)) {
    const prev = readFileSync(cfgFile, 'utf8');
    const same = prev.trim() === stableJson(configKey(cfg));
    if (f.overwrite) rmSync(outDir, { recursive: true, force: true });
    else if (!same && !f.resume) {
      throw new UserError(`${outDir} holds a run with a different configuration; pass --resume to reuse its cached stages or --overwrite to start over`);
    }
  } else if (f.overwrite) rmSync(outDir, { recursive: true, force: true });
  const gpu = await getGpu();
  const pipeline = new OwlPipeline(gpu, cfg);
  mkdirSync(outDir, { recursive: true });
  await writeFileAtomic(cfgFile, stableJson(configKey(cfg)) + '\n');
  const res = await pipeline.run();
  const files = await writeReport(res);
  pipeline.dispose();
  console.log(`report: ${files.md}`);
  console.log(`        ${files.json}`);
  console.log(`        ${files.svg}`);
}

await runCli(main);
