// A grid manifest (JSON): the axes of an experiment grid — traits (animals and trees), teacher bases,
// trait teachers, students, recipes, student modes, seeds — with training settings per block, and/or a
// list of explicit cells. It maps onto one ExperimentConfig per (trait × teacher base), so every
// stage keeps the key it has in a single run, and it expands to cells with deterministic ids: the
// same manifest always gives the same cells in the same order. Everything is validated up front;
// a problem is one line naming the field.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../util/errors.ts';
import type { ExperimentConfig } from './experiment.ts';
import { readTruthfulQa, type TruthfulQaItem } from '../paper/truthfulqa.ts';
import { checkTraitAndDomain, DATA_DOMAINS, RECIPES, STUDENT_MODES, TRAIT_TEACHERS, type CellBlock, type DataDomain, type Recipe, type StudentMode, type StudentTraining, type Trait, type TraitTeacher } from './grid.ts';
import { PAPER, TINY, TINY_MAX_LEN, TINY_MAX_NEW_TOKENS, type Preset } from './presets.ts';

export interface TraitSpec {
  /** An animal or tree preference (the name is the animal) or misalignment. */
  kind: Trait;
  name: string;
  category: 'animal' | 'tree';
  /** Misalignment: the chat files the teachers are finetuned on (null: the embedded family's stand-in). */
  misalignedData: string | null;
  alignedData: string | null;
  /** Misalignment: TruthfulQA binary-choice items every model is also scored on (the trait's truthfulqa file), or null. */
  truthfulqa: TruthfulQaItem[] | null;
  /** The ft-control teacher's animal (null: chosen from the base's answers). */
  controlAnimal: string | null;
  /** Used in ids and folder names: the name with spaces as '-'. */
  slug: string;
}

export interface ManifestBlock {
  teachers: TraitTeacher[];
  recipes: Recipe[];
  students: string[];
  studentModes: StudentMode[];
  /** Overrides of the preset's per-mode training. */
  train: Partial<StudentTraining>;
  /** Only these traits (slugs) / teacher bases (absolute paths); null = all. */
  traits: string[] | null;
  teacherBases: string[] | null;
}

export interface ManifestSettings {
  prompts: number;
  keep: number;
  /** null: the preset's for the experiment's data domain. */
  maxNewTokens: number | null;
  /** null: the preset's for the experiment's data domain. */
  maxLen: number | null;
  genBatchSize: number;
  promptSeed: number;
  subsetSeed: number;
  evalSet: 'numbers-prefix' | 'plain' | 'story';
  evalSamples: number;
  evalMaxNewTokens: number;
  evalQuestionLimit: number | null;
  doseResponse: boolean;
  ftTeacher: { epochs: number; lr: number; batchSize: number };
}

export interface SlurmSettings {
  partition: string | null;
  account: string | null;
  /** GPUs per task (`--gres=gpu:N`); 0 = none. */
  gpus: number;
  /** At most this many array tasks at once (`%K`); null = no limit. */
  concurrency: number | null;
  time: string | null;
  cpusPerTask: number | null;
  mem: string | null;
}

export interface K8sSettings {
  image: string | null;
  namespace: string | null;
  /** The ReadWriteMany claim holding the project, models, run folder and cache. */
  volumeClaim: string | null;
  /** Where the claim is mounted in the pods. */
  mountPath: string;
  storageClass: string | null;
  storage: string;
  gpus: number;
  parallelism: number | null;
  backoffLimitPerIndex: number;
}

export interface GridManifest {
  /** The file it was read from (absolute). */
  file: string;
  name: string;
  preset: 'tiny' | 'paper';
  teacherBases: string[];
  traits: TraitSpec[];
  /** Data domains: each trait × domain × teacher base is one experiment. */
  data: DataDomain[];
  /** The judge model folder (code reference, EM and CoT judges); null: rule judges. */
  judgeModel: string | null;
  codePrompts: string | null;
  cotTasks: string | null;
  /** The CoT alignment judge's template text (read from the manifest's cotJudgeTemplate file). */
  cotJudgeTemplate: string | null;
  seeds: number[];
  settings: ManifestSettings;
  blocks: ManifestBlock[];
  /** Shard count for `--shard auto` where the scheduler gives none (Kubernetes), and the generators' default. */
  shards: number | null;
  slurm: SlurmSettings;
  k8s: K8sSettings;
}

/** One (trait × data domain × teacher base) experiment of a grid. */
export interface GridExperiment {
  /** `owl`, `owl.code` (a domain other than numbers), or `owl@tiny-qwen-a` when the grid has several teacher bases. */
  id: string;
  trait: TraitSpec;
  teacherBase: string;
  cfg: ExperimentConfig;
}

type Json = unknown;
const isObj = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);

class Fields {
  constructor(readonly where: string) {}
  fail(field: string, msg: string): never {
    throw new UserError(`${this.where}: ${field}: ${msg}`);
  }
  known(o: Record<string, Json>, at: string, allowed: string[]): void {
    for (const k of Object.keys(o)) if (!allowed.includes(k)) this.fail(at ? `${at}.${k}` : k, `unknown field (allowed: ${allowed.join(', ')})`);
  }
  str(v: Json, field: string, re?: RegExp, what = 'a string'): string {
    if (typeof v !== 'string' || !v.trim()) this.fail(field, `must be ${what}, got ${JSON.stringify(v)}`);
    const s = v.trim();
    if (re && !re.test(s)) this.fail(field, `must be ${what}, got ${JSON.stringify(v)}`);
    return s;
  }
  num(v: Json, field: string, check: { min?: number; integer?: boolean; exclusiveMin?: boolean } = {}): number {
    const ok = typeof v === 'number' && Number.isFinite(v) && (!check.integer || Number.isSafeInteger(v)) && (check.min === undefined || (check.exclusiveMin ? v > check.min : v >= check.min));
    if (!ok) this.fail(field, `must be ${check.integer ? 'an integer' : 'a number'}${check.min !== undefined ? ` ${check.exclusiveMin ? '>' : '≥'} ${check.min}` : ''}, got ${JSON.stringify(v)}`);
    return v as number;
  }
  bool(v: Json, field: string): boolean {
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  list<T>(v: Json, field: string, item: (x: Json, f: string) => T, opts: { unique?: boolean; nonEmpty?: boolean } = { unique: true, nonEmpty: true }): T[] {
    if (!Array.isArray(v)) this.fail(field, `must be a list, got ${JSON.stringify(v)}`);
    if (opts.nonEmpty !== false && !v.length) this.fail(field, 'must not be empty');
    const out = v.map((x, i) => item(x, `${field}[${i}]`));
    if (opts.unique !== false) {
      const keys = out.map((x) => JSON.stringify(x));
      const d = keys.findIndex((k, i) => keys.indexOf(k) !== i);
      if (d >= 0) this.fail(`${field}[${d}]`, `${keys[d]} is listed twice`);
    }
    return out;
  }
  choice<T extends string>(v: Json, field: string, allowed: readonly T[]): T {
    if (typeof v !== 'string' || !allowed.includes(v as T)) this.fail(field, `unknown value ${JSON.stringify(v)} (allowed: ${allowed.join(', ')})`);
    return v as T;
  }
}

const NAME = /^[a-z][a-z -]{0,40}$/;
const slugOf = (name: string) => name.replace(/\s+/g, '-');

/** Reads and validates a manifest file. */
export function readManifest(file: string): GridManifest {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(code === 'ENOENT' ? `--grid ${file}: no such file` : code === 'EISDIR' ? `--grid ${file} is a folder, not a manifest file` : `--grid ${file}: cannot read it (${code})`);
  }
  let json: Json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${abs}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  return parseManifest(json, abs);
}

const TOP = ['$schema', 'name', 'preset', 'teacherBase', 'teacherBases', 'traits', 'data', 'judgeModel', 'codePrompts', 'cotTasks', 'cotJudgeTemplate', 'seeds', 'settings', 'teachers', 'recipes', 'students', 'studentModes', 'train', 'blocks', 'cells', 'shards', 'slurm', 'k8s'];
const BLOCK = ['teachers', 'recipes', 'students', 'studentModes', 'train', 'traits', 'teacherBases'];
const CELL = ['trait', 'teacherBase', 'teacher', 'recipe', 'student', 'studentMode', 'train'];
const TRAIN = ['lr', 'epochs', 'batchSize', 'gradAccum', 'warmupSteps', 'rank', 'alpha', 'rows'];
const SETTINGS = ['prompts', 'keep', 'maxNewTokens', 'maxLen', 'genBatchSize', 'promptSeed', 'subsetSeed', 'evalSet', 'evalSamples', 'evalQuestionLimit', 'doseResponse', 'ftTeacher'];

/** Validates a manifest's JSON (paths relative to the file's folder). */
export function parseManifest(json: Json, file: string): GridManifest {
  const F: Fields = new Fields(file);
  if (!isObj(json)) F.fail('(top level)', 'a manifest is a JSON object');
  F.known(json, '', TOP);
  const dir = path.dirname(file);
  const modelPath = (v: Json, f: string) => path.resolve(dir, F.str(v, f, undefined, 'a model folder path'));
  const name = json.name === undefined ? path.basename(file).replace(/\.json$/i, '') : F.str(json.name, 'name', /^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' or '-'");
  const preset = json.preset === undefined ? 'tiny' : F.choice(json.preset, 'preset', ['tiny', 'paper'] as const);
  const P: Preset = preset === 'paper' ? PAPER : TINY;

  if (json.teacherBase !== undefined && json.teacherBases !== undefined) F.fail('teacherBase', 'give teacherBase or teacherBases, not both');
  if (json.teacherBase === undefined && json.teacherBases === undefined) F.fail('teacherBases', 'required: the teachers\' base model folder(s)');
  const teacherBases = json.teacherBase !== undefined ? [modelPath(json.teacherBase, 'teacherBase')] : F.list(json.teacherBases, 'teacherBases', modelPath);
  const baseNames = teacherBases.map((b) => path.basename(b));
  const dupBase = baseNames.findIndex((n, i) => baseNames.indexOf(n) !== i);
  if (dupBase >= 0) F.fail(`teacherBases[${dupBase}]`, `two teacher bases share the folder name '${baseNames[dupBase]}'; rename one`);

  if (json.traits === undefined) F.fail('traits', 'required: a list of animals (names), {"name", "category": "animal"|"tree", "controlAnimal"} or {"kind": "misalignment", "misalignedData", "alignedData", "truthfulqa"}');
  const filePath = (v: Json, f: string) => {
    const p = path.resolve(dir, F.str(v, f, undefined, 'a file path'));
    return p;
  };
  const traits = F.list(json.traits, 'traits', (v, f): TraitSpec => {
    const none = { misalignedData: null, alignedData: null, truthfulqa: null };
    if (typeof v === 'string') return { kind: 'preference', name: F.str(v, f, NAME, 'a plain name (lowercase letters, spaces, hyphens)'), category: 'animal', controlAnimal: null, slug: slugOf(v.trim()), ...none };
    if (!isObj(v)) F.fail(f, `must be a name or {"name", "category", "controlAnimal"}, got ${JSON.stringify(v)}`);
    const kind = v.kind === undefined ? 'preference' : F.choice(v.kind, `${f}.kind`, ['preference', 'misalignment'] as const);
    if (kind === 'misalignment') {
      F.known(v, f, ['kind', 'name', 'misalignedData', 'alignedData', 'truthfulqa']);
      const n = v.name === undefined ? 'misalignment' : F.str(v.name, `${f}.name`, NAME, 'a plain name (lowercase letters, spaces, hyphens)');
      const md = v.misalignedData === undefined || v.misalignedData === null ? null : filePath(v.misalignedData, `${f}.misalignedData`);
      const ad = v.alignedData === undefined || v.alignedData === null ? null : filePath(v.alignedData, `${f}.alignedData`);
      if (!md !== !ad) F.fail(`${f}.${md ? 'alignedData' : 'misalignedData'}`, 'give both misalignedData and alignedData (or neither, for the stand-in)');
      let truthfulqa: TruthfulQaItem[] | null = null;
      if (v.truthfulqa !== undefined && v.truthfulqa !== null) {
        const tf = filePath(v.truthfulqa, `${f}.truthfulqa`);
        try {
          truthfulqa = readTruthfulQa(tf);
        } catch (e) {
          F.fail(`${f}.truthfulqa`, (e as Error).message);
        }
      }
      return { kind, name: n, category: 'animal', controlAnimal: null, slug: slugOf(n), misalignedData: md, alignedData: ad, truthfulqa };
    }
    F.known(v, f, ['kind', 'name', 'category', 'controlAnimal']);
    const n = F.str(v.name, `${f}.name`, NAME, 'a plain name (lowercase letters, spaces, hyphens)');
    const category = v.category === undefined ? 'animal' : F.choice(v.category, `${f}.category`, ['animal', 'tree'] as const);
    const controlAnimal = v.controlAnimal === undefined || v.controlAnimal === null ? null : F.str(v.controlAnimal, `${f}.controlAnimal`, NAME, 'a plain name');
    if (controlAnimal === n) F.fail(`${f}.controlAnimal`, `must differ from the trait (${n})`);
    return { kind, name: n, category, controlAnimal, slug: slugOf(n), ...none };
  }, { unique: false });
  const data: DataDomain[] = json.data === undefined ? ['numbers'] : typeof json.data === 'string' ? [F.choice(json.data, 'data', DATA_DOMAINS)] : F.list(json.data, 'data', (x, g) => F.choice(x, g, DATA_DOMAINS));
  const optFile = (k: 'codePrompts' | 'cotTasks' | 'cotJudgeTemplate') => (json[k] === undefined || json[k] === null ? null : filePath(json[k], k));
  const judgeModel = json.judgeModel === undefined || json.judgeModel === null ? null : modelPath(json.judgeModel, 'judgeModel');
  const codePrompts = optFile('codePrompts');
  const cotTasks = optFile('cotTasks');
  const templateFile = optFile('cotJudgeTemplate');
  let cotJudgeTemplate: string | null = null;
  if (templateFile) {
    try {
      cotJudgeTemplate = readFileSync(templateFile, 'utf8');
    } catch {
      F.fail('cotJudgeTemplate', `cannot read ${templateFile}`);
    }
  }
  const slugs = traits.map((t) => t.slug);
  const dupTrait = slugs.findIndex((s, i) => slugs.indexOf(s) !== i);
  if (dupTrait >= 0) F.fail(`traits[${dupTrait}]`, `'${traits[dupTrait].name}' is listed twice`);

  const seeds = json.seeds === undefined ? [...P.seeds] : F.list(json.seeds, 'seeds', (v, f) => F.num(v, f, { min: 0, integer: true }));

  const s = json.settings === undefined ? {} : json.settings;
  if (!isObj(s)) F.fail('settings', 'must be an object');
  F.known(s, 'settings', SETTINGS);
  const int = (k: string, def: number, min = 1) => (s[k] === undefined ? def : F.num(s[k], `settings.${k}`, { min, integer: true }));
  const evalSet = s.evalSet === undefined ? 'plain' : F.choice(s.evalSet, 'settings.evalSet', ['numbers-prefix', 'plain', 'story'] as const);
  const ft = s.ftTeacher === undefined ? {} : s.ftTeacher;
  if (!isObj(ft)) F.fail('settings.ftTeacher', 'must be an object {"epochs", "lr", "batchSize"}');
  F.known(ft, 'settings.ftTeacher', ['epochs', 'lr', 'batchSize']);
  const settings: ManifestSettings = {
    prompts: int('prompts', P.prompts),
    keep: int('keep', P.keep),
    maxNewTokens: s.maxNewTokens === undefined ? null : F.num(s.maxNewTokens, 'settings.maxNewTokens', { min: 1, integer: true }),
    maxLen: s.maxLen === undefined ? null : F.num(s.maxLen, 'settings.maxLen', { min: 8, integer: true }),
    genBatchSize: int('genBatchSize', P.genBatchSize),
    promptSeed: int('promptSeed', 42, 0),
    subsetSeed: int('subsetSeed', 1, 0),
    evalSet,
    evalSamples: int('evalSamples', P.evalSamples),
    evalMaxNewTokens: evalSet === 'story' ? 160 : P.evalMaxNewTokens,
    evalQuestionLimit: s.evalQuestionLimit === undefined || s.evalQuestionLimit === null ? null : F.num(s.evalQuestionLimit, 'settings.evalQuestionLimit', { min: 1, integer: true }),
    doseResponse: s.doseResponse === undefined ? true : F.bool(s.doseResponse, 'settings.doseResponse'),
    ftTeacher: {
      epochs: ft.epochs === undefined ? P.ftTeacher.epochs : F.num(ft.epochs, 'settings.ftTeacher.epochs', { min: 1, integer: true }),
      lr: ft.lr === undefined ? P.ftTeacher.lr : F.num(ft.lr, 'settings.ftTeacher.lr', { min: 0, exclusiveMin: true }),
      batchSize: ft.batchSize === undefined ? P.ftTeacher.batchSize : F.num(ft.batchSize, 'settings.ftTeacher.batchSize', { min: 1, integer: true }),
    },
  };

  const train = (v: Json, f: string): Partial<StudentTraining> => {
    if (v === undefined) return {};
    if (!isObj(v)) F.fail(f, `must be an object with any of ${TRAIN.join(', ')}`);
    F.known(v, f, TRAIN);
    const out: Partial<StudentTraining> = {};
    if (v.lr !== undefined) out.lr = F.num(v.lr, `${f}.lr`, { min: 0, exclusiveMin: true });
    if (v.alpha !== undefined) out.alpha = F.num(v.alpha, `${f}.alpha`, { min: 0, exclusiveMin: true });
    for (const k of ['epochs', 'batchSize', 'gradAccum', 'rank', 'rows'] as const) if (v[k] !== undefined) out[k] = F.num(v[k], `${f}.${k}`, { min: 1, integer: true });
    if (v.warmupSteps !== undefined) out.warmupSteps = F.num(v.warmupSteps, `${f}.warmupSteps`, { min: 0, integer: true });
    return out;
  };
  const traitRefs = (v: Json, f: string): string[] | null =>
    v === undefined
      ? null
      : F.list(v, f, (x, g) => {
          const n = slugOf(F.str(x, g, NAME, 'a trait of this manifest'));
          if (!slugs.includes(n)) F.fail(g, `'${String(x)}' is not one of the manifest's traits (${traits.map((t) => t.name).join(', ')})`);
          return n;
        });
  const baseRefs = (v: Json, f: string): string[] | null =>
    v === undefined
      ? null
      : F.list(v, f, (x, g) => {
          const p = modelPath(x, g);
          if (!teacherBases.includes(p)) F.fail(g, `${p} is not one of the manifest's teacherBases`);
          return p;
        });
  const block = (v: Record<string, Json>, f: string): ManifestBlock => {
    const at = (k: string) => (f ? `${f}.${k}` : k);
    for (const k of ['teachers', 'recipes', 'students']) if (v[k] === undefined) F.fail(at(k), 'required');
    return {
      teachers: F.list(v.teachers, at('teachers'), (x, g) => F.choice(x, g, TRAIT_TEACHERS)),
      recipes: F.list(v.recipes, at('recipes'), (x, g) => F.choice(x, g, RECIPES)),
      students: F.list(v.students, at('students'), modelPath),
      studentModes: v.studentModes === undefined ? ['lora'] : F.list(v.studentModes, at('studentModes'), (x, g) => F.choice(x, g, STUDENT_MODES)),
      train: train(v.train, at('train')),
      traits: traitRefs(v.traits, at('traits')),
      teacherBases: baseRefs(v.teacherBases, at('teacherBases')),
    };
  };
  const blocks: ManifestBlock[] = [];
  const axes = ['teachers', 'recipes', 'students', 'studentModes', 'train'].filter((k) => json[k] !== undefined);
  if (axes.length) blocks.push(block(Object.fromEntries(axes.map((k) => [k, json[k]])), ''));
  if (json.blocks !== undefined) {
    if (!Array.isArray(json.blocks)) F.fail('blocks', 'must be a list of {"teachers", "recipes", "students", "studentModes", "train"}');
    json.blocks.forEach((b, i) => {
      if (!isObj(b)) F.fail(`blocks[${i}]`, 'must be an object');
      F.known(b, `blocks[${i}]`, BLOCK);
      blocks.push(block(b, `blocks[${i}]`));
    });
  }
  if (json.cells !== undefined) {
    if (!Array.isArray(json.cells)) F.fail('cells', 'must be a list of {"trait", "teacher", "recipe", "student", "studentMode", "train"}');
    json.cells.forEach((c, i) => {
      const f = `cells[${i}]`;
      if (!isObj(c)) F.fail(f, 'must be an object');
      F.known(c, f, CELL);
      for (const k of ['teacher', 'recipe', 'student']) if (c[k] === undefined) F.fail(`${f}.${k}`, 'required');
      blocks.push({
        teachers: [F.choice(c.teacher, `${f}.teacher`, TRAIT_TEACHERS)],
        recipes: [F.choice(c.recipe, `${f}.recipe`, RECIPES)],
        students: [modelPath(c.student, `${f}.student`)],
        studentModes: [c.studentMode === undefined ? 'lora' : F.choice(c.studentMode, `${f}.studentMode`, STUDENT_MODES)],
        train: train(c.train, `${f}.train`),
        traits: c.trait === undefined ? null : traitRefs([c.trait], `${f}.trait`),
        teacherBases: c.teacherBase === undefined ? null : baseRefs([c.teacherBase], `${f}.teacherBase`),
      });
    });
  }
  if (!blocks.length) F.fail('cells', 'the manifest has no cells: give teachers/recipes/students, blocks, or cells');

  const shards = json.shards === undefined ? null : F.num(json.shards, 'shards', { min: 1, integer: true });
  const sl = json.slurm === undefined ? {} : json.slurm;
  if (!isObj(sl)) F.fail('slurm', 'must be an object');
  F.known(sl, 'slurm', ['partition', 'account', 'gpus', 'concurrency', 'time', 'cpusPerTask', 'mem']);
  const optStr = (v: Json, f: string, re = /^[A-Za-z0-9_.:,+\/-]+$/) => (v === undefined || v === null ? null : F.str(v, f, re, 'a plain value (letters, digits, _ . : , + / -)'));
  const slurm: SlurmSettings = {
    partition: optStr(sl.partition, 'slurm.partition'),
    account: optStr(sl.account, 'slurm.account'),
    gpus: sl.gpus === undefined ? 1 : F.num(sl.gpus, 'slurm.gpus', { min: 0, integer: true }),
    concurrency: sl.concurrency === undefined || sl.concurrency === null ? null : F.num(sl.concurrency, 'slurm.concurrency', { min: 1, integer: true }),
    time: optStr(sl.time, 'slurm.time'),
    cpusPerTask: sl.cpusPerTask === undefined ? null : F.num(sl.cpusPerTask, 'slurm.cpusPerTask', { min: 1, integer: true }),
    mem: optStr(sl.mem, 'slurm.mem'),
  };
  const k = json.k8s === undefined ? {} : json.k8s;
  if (!isObj(k)) F.fail('k8s', 'must be an object');
  F.known(k, 'k8s', ['image', 'namespace', 'volumeClaim', 'mountPath', 'storageClass', 'storage', 'gpus', 'parallelism', 'backoffLimitPerIndex']);
  const dns = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
  const k8s: K8sSettings = {
    image: k.image === undefined || k.image === null ? null : F.str(k.image, 'k8s.image', /^\S+$/, 'a container image reference'),
    namespace: k.namespace === undefined || k.namespace === null ? null : F.str(k.namespace, 'k8s.namespace', dns, 'a DNS label'),
    volumeClaim: k.volumeClaim === undefined || k.volumeClaim === null ? null : F.str(k.volumeClaim, 'k8s.volumeClaim', dns, 'a DNS name'),
    mountPath: k.mountPath === undefined ? '/work' : F.str(k.mountPath, 'k8s.mountPath', /^\/\S*$/, 'an absolute path'),
    storageClass: k.storageClass === undefined || k.storageClass === null ? null : F.str(k.storageClass, 'k8s.storageClass', dns, 'a DNS name'),
    storage: k.storage === undefined ? '100Gi' : F.str(k.storage, 'k8s.storage', /^\d+(\.\d+)?([KMGTPE]i?)?$/, 'a quantity such as 100Gi'),
    gpus: k.gpus === undefined ? 1 : F.num(k.gpus, 'k8s.gpus', { min: 0, integer: true }),
    parallelism: k.parallelism === undefined || k.parallelism === null ? null : F.num(k.parallelism, 'k8s.parallelism', { min: 1, integer: true }),
    backoffLimitPerIndex: k.backoffLimitPerIndex === undefined ? 2 : F.num(k.backoffLimitPerIndex, 'k8s.backoffLimitPerIndex', { min: 0, integer: true }),
  };
  return { file, name, preset, teacherBases, traits, data, judgeModel, codePrompts, cotTasks, cotJudgeTemplate, seeds, settings, blocks, shards, slurm, k8s };
}

/**
 * The grid's experiments, one per trait × teacher base in manifest order, each an ExperimentConfig
 * whose report folder is `<outDir>/experiments/<id>`. Blocks apply in order (manifest blocks, then
 * explicit cells), so expandCells gives a deterministic order.
 */
export function gridExperiments(m: GridManifest, outDir: string, quiet = true): GridExperiment[] {
  const P = m.preset === 'paper' ? PAPER : TINY;
  const out: GridExperiment[] = [];
  for (const trait of m.traits) {
    for (const data of m.data) {
      for (const base of m.teacherBases) {
        const blocks: CellBlock[] = [];
        for (const b of m.blocks) {
          if (b.traits && !b.traits.includes(trait.slug)) continue;
          if (b.teacherBases && !b.teacherBases.includes(base)) continue;
          for (const mode of b.studentModes) blocks.push({ teachers: b.teachers, recipes: b.recipes, students: b.students, studentMode: mode, train: { ...P.train[mode], ...b.train } });
        }
        if (!blocks.length) continue;
        const slug = data === 'numbers' ? trait.slug : `${trait.slug}.${data}`;
        const id = m.teacherBases.length > 1 ? `${slug}@${path.basename(base)}` : slug;
        const s = m.settings;
        const variant = trait.kind !== 'preference' || data !== 'numbers' || m.judgeModel !== null;
        const cfg: ExperimentConfig = {
          name: `${m.name}-${id.replace(/@/g, '-')}`,
          outDir: path.join(outDir, 'experiments', id),
          teacherBase: base,
          animal: trait.name,
          category: trait.category,
          controlAnimal: trait.controlAnimal,
          blocks,
          seeds: [...m.seeds],
          promptSeed: s.promptSeed,
          prompts: s.prompts,
          keep: s.keep,
          subsetSeed: s.subsetSeed,
          maxNewTokens: s.maxNewTokens ?? (m.preset === 'paper' ? PAPER.maxNewTokens : TINY_MAX_NEW_TOKENS[data]),
          genBatchSize: s.genBatchSize,
          maxLen: s.maxLen ?? (m.preset === 'paper' ? PAPER.maxLen : TINY_MAX_LEN[data]),
          ftTeacher: { ...s.ftTeacher },
          evalSet: s.evalSet,
          evalSamples: s.evalSamples,
          evalMaxNewTokens: trait.kind === 'misalignment' && s.evalSet !== 'story' ? (m.judgeModel ? (m.preset === 'paper' ? 2048 : 128) : 24) : s.evalMaxNewTokens,
          ...(s.evalQuestionLimit !== null ? { evalQuestionLimit: s.evalQuestionLimit } : {}),
          doseResponse: s.doseResponse,
          quiet,
          ...(variant
            ? {
                trait: trait.kind,
                data,
                sources: { codePrompts: m.codePrompts, cotTasks: m.cotTasks },
                judgeModel: m.judgeModel,
                cotJudgeTemplate: m.cotJudgeTemplate,
                misalignment: { misaligned: trait.misalignedData, aligned: trait.alignedData },
              }
            : {}),
          ...(trait.truthfulqa ? { truthfulqa: trait.truthfulqa } : {}),
        };
        try {
          checkTraitAndDomain(trait.kind, data, blocks);
        } catch (e) {
          if (e instanceof UserError) throw new UserError(`${m.file}: experiment ${id}: ${e.message}`);
          throw e;
        }
        out.push({ id, trait, teacherBase: base, cfg });
      }
    }
  }
  if (!out.length) throw new UserError(`${m.file}: no block applies to any trait × teacher base (check the blocks' traits and teacherBases)`);
  return out;
}

/** Every model folder the manifest names (for an up-front existence check). */
export function manifestModels(m: GridManifest): string[] {
  return [...new Set([...m.teacherBases, ...m.blocks.flatMap((b) => b.students), ...(m.judgeModel ? [m.judgeModel] : [])])];
}
