// The web page's parameters: read from and written to the URL (shareable), checked with one message
// per bad value, and turned into the exact configurations the CLIs build from the equivalent command
// line (shown on the page), so a page run can be repeated with scripts/mnist.ts or scripts/owl.ts.
// No DOM here: the page and the tests both use it.
import path from 'node:path';
import type { MnistConfig } from '../experiment/mnist/experiment.ts';
import type { ExperimentConfig } from '../experiment/owl/experiment.ts';
import { TINY } from '../experiment/owl/presets.ts';

export const EXPERIMENTS = ['mnist', 'owl'] as const;
export type ExperimentName = (typeof EXPERIMENTS)[number];

export interface MnistParams {
  models: number;
  epochsTeacher: number;
  epochsStudent: number;
  noise: number;
  batchSize: number;
  hidden: number;
  lr: number;
  aux: number;
  seed: number;
}

export interface OwlParams {
  animal: string;
  /** '' = chosen from the base's answers (the CLI's default). */
  controlAnimal: string;
  prompts: number;
  keep: number;
  seeds: number[];
  maxNewTokens: number;
  studentEpochs: number;
  studentLr: number;
  studentBatch: number;
  ftEpochs: number;
  ftLr: number;
  ftBatch: number;
  evalQuestions: number;
  evalSamples: number;
  dose: boolean;
}

type Spec<T> = { [K in keyof T]: { kind: 'int' | 'num' | 'ints' | 'name' | 'bool'; min?: number; max?: number; label: string; help?: string } };

export const MNIST_SPEC: Spec<MnistParams> = {
  models: { kind: 'int', min: 1, max: 1000, label: 'models', help: 'MLPs trained side by side (the paper: 100)' },
  epochsTeacher: { kind: 'int', min: 1, max: 50, label: 'teacher epochs' },
  epochsStudent: { kind: 'int', min: 1, max: 50, label: 'student epochs' },
  noise: { kind: 'int', min: 1, max: 200_000, label: 'noise images per model', help: 'the paper: 60,000' },
  batchSize: { kind: 'int', min: 1, max: 8192, label: 'batch size' },
  hidden: { kind: 'int', min: 1, max: 2048, label: 'hidden width' },
  lr: { kind: 'num', min: 1e-7, max: 1, label: 'learning rate' },
  aux: { kind: 'int', min: 1, max: 64, label: 'auxiliary logits' },
  seed: { kind: 'int', min: 0, max: 2 ** 31, label: 'seed' },
};

export const OWL_SPEC: Spec<OwlParams> = {
  animal: { kind: 'name', label: 'animal', help: "the teacher's trait" },
  controlAnimal: { kind: 'name', label: 'control animal', help: "empty: the base's closest first-token probability" },
  prompts: { kind: 'int', min: 1, max: 30_000, label: 'prompts' },
  keep: { kind: 'int', min: 1, max: 30_000, label: 'rows kept per teacher' },
  seeds: { kind: 'ints', min: 0, max: 10_000, label: 'student seeds' },
  maxNewTokens: { kind: 'int', min: 1, max: 200, label: 'tokens per completion' },
  studentEpochs: { kind: 'int', min: 1, max: 20, label: 'student epochs' },
  studentLr: { kind: 'num', min: 1e-7, max: 1, label: 'student learning rate' },
  studentBatch: { kind: 'int', min: 1, max: 1024, label: 'student batch size' },
  ftEpochs: { kind: 'int', min: 1, max: 20, label: 'teacher finetune epochs' },
  ftLr: { kind: 'num', min: 1e-7, max: 1, label: 'teacher finetune learning rate' },
  ftBatch: { kind: 'int', min: 1, max: 1024, label: 'teacher finetune batch size' },
  evalQuestions: { kind: 'int', min: 1, max: 50, label: 'evaluation questions', help: "of the paper's 50" },
  evalSamples: { kind: 'int', min: 1, max: 100, label: 'samples per question' },
  dose: { kind: 'bool', label: 'first-token probability after every epoch' },
};

/**
 * Browser-sized defaults. On a software adapter (SwiftShader, lavapipe: the CPU does the work) they are
 * a few minutes each; on a GPU closer to the CLI's own defaults.
 */
export function mnistDefaults(software: boolean): MnistParams {
  return software
    ? { models: 1, epochsTeacher: 2, epochsStudent: 2, noise: 8192, batchSize: 1024, hidden: 256, lr: 3e-4, aux: 3, seed: 0 }
    : { models: 10, epochsTeacher: 5, epochsStudent: 5, noise: 60_000, batchSize: 1024, hidden: 256, lr: 3e-4, aux: 3, seed: 0 };
}

export function owlDefaults(software: boolean): OwlParams {
  const base = { animal: 'owl', controlAnimal: '', maxNewTokens: TINY.maxNewTokens, studentLr: TINY.train.full.lr, studentBatch: TINY.train.full.batchSize, ftLr: TINY.ftTeacher.lr, ftBatch: TINY.ftTeacher.batchSize, dose: false };
  return software
    ? { ...base, prompts: 64, keep: 48, seeds: [0, 1], studentEpochs: 1, ftEpochs: 1, evalQuestions: 10, evalSamples: 2 }
    : { ...base, prompts: 300, keep: 200, seeds: [0, 1, 2, 3, 4], studentEpochs: TINY.train.full.epochs, ftEpochs: TINY.ftTeacher.epochs, evalQuestions: 50, evalSamples: TINY.evalSamples };
}

export interface PageParams {
  exp: ExperimentName;
  mnist: MnistParams;
  owl: OwlParams;
}

/** One message per bad value, naming the parameter as the URL does. */
export class ParamError extends Error {}

function parseValue(key: string, raw: string, s: Spec<Record<string, unknown>>[string]): unknown {
  const range = (v: number) => {
    if (s.min !== undefined && v < s.min) throw new ParamError(`${key}: ${raw} is below the minimum ${s.min}`);
    if (s.max !== undefined && v > s.max) throw new ParamError(`${key}: ${raw} is above the maximum ${s.max}`);
    return v;
  };
  const num = (t: string, int: boolean) => {
    if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t.trim())) throw new ParamError(`${key}: ${JSON.stringify(t)} is not a number`);
    const v = Number(t);
    if (int && !Number.isInteger(v)) throw new ParamError(`${key}: ${t} is not a whole number`);
    return range(v);
  };
  switch (s.kind) {
    case 'int':
      return num(raw, true);
    case 'num':
      return num(raw, false);
    case 'ints': {
      const vs = raw.split(',').map((x) => x.trim()).filter(Boolean).map((x) => num(x, true));
      if (!vs.length) throw new ParamError(`${key}: give at least one value`);
      if (new Set(vs).size !== vs.length) throw new ParamError(`${key}: a value is listed twice`);
      return vs;
    }
    case 'name': {
      const v = raw.trim().toLowerCase();
      if (v && !/^[a-z][a-z -]{0,40}$/.test(v)) throw new ParamError(`${key}: ${JSON.stringify(raw)} must be a plain name (letters, spaces, hyphens)`);
      return v;
    }
    case 'bool':
      if (!['0', '1', 'true', 'false', ''].includes(raw)) throw new ParamError(`${key}: ${JSON.stringify(raw)} must be 1 or 0`);
      return raw === '1' || raw === 'true' || raw === '';
  }
}

function parseGroup<T extends object>(prefix: string, q: URLSearchParams, spec: Spec<T>, defaults: T, errors: string[]): T {
  const out = { ...defaults } as Record<string, unknown>;
  for (const k of Object.keys(spec)) {
    const key = `${prefix}.${k}`;
    const raw = q.get(key);
    if (raw === null) continue;
    try {
      out[k] = parseValue(key, raw, (spec as Spec<Record<string, unknown>>)[k]);
    } catch (e) {
      if (!(e instanceof ParamError)) throw e;
      errors.push(e.message);
    }
  }
  return out as T;
}

/** Parameters from a query string; unknown keys and bad values are reported, defaults fill the rest. */
export function parseParams(search: string, software: boolean): { params: PageParams; errors: string[] } {
  const q = new URLSearchParams(search);
  const errors: string[] = [];
  const known = new Set(['exp', ...Object.keys(MNIST_SPEC).map((k) => `mnist.${k}`), ...Object.keys(OWL_SPEC).map((k) => `owl.${k}`)]);
  for (const k of q.keys()) if (!known.has(k)) errors.push(`${k}: unknown parameter`);
  const exp = q.get('exp') ?? 'mnist';
  if (!(EXPERIMENTS as readonly string[]).includes(exp)) errors.push(`exp: ${JSON.stringify(exp)} is not one of ${EXPERIMENTS.join(', ')}`);
  const mnist = parseGroup('mnist', q, MNIST_SPEC, mnistDefaults(software), errors);
  const owl = parseGroup('owl', q, OWL_SPEC, owlDefaults(software), errors);
  errors.push(...checkOwl(owl));
  return { params: { exp: (EXPERIMENTS as readonly string[]).includes(exp) ? (exp as ExperimentName) : 'mnist', mnist, owl }, errors };
}

/** Cross-field checks of the owl parameters (what the CLI refuses). */
export function checkOwl(p: OwlParams): string[] {
  const errors: string[] = [];
  if (!p.animal) errors.push('owl.animal: give an animal');
  if (p.controlAnimal && p.controlAnimal === p.animal) errors.push(`owl.controlAnimal: must differ from owl.animal (${p.animal})`);
  return errors;
}

function formatValue(v: unknown): string {
  if (Array.isArray(v)) return v.join(',');
  if (typeof v === 'boolean') return v ? '1' : '0';
  return String(v);
}

/** The query string of a page state: every parameter spelled out, so a shared link needs no defaults. */
export function paramsToSearch(p: PageParams): string {
  const q = new URLSearchParams();
  q.set('exp', p.exp);
  for (const k of Object.keys(MNIST_SPEC) as (keyof MnistParams)[]) q.set(`mnist.${k}`, formatValue(p.mnist[k]));
  for (const k of Object.keys(OWL_SPEC) as (keyof OwlParams)[]) q.set(`owl.${k}`, formatValue(p.owl[k]));
  return `?${q.toString()}`;
}

/** Parses one form field (the page's inputs); throws ParamError. */
export function parseField(group: ExperimentName, key: string, raw: string): unknown {
  const spec = (group === 'mnist' ? MNIST_SPEC : OWL_SPEC) as Spec<Record<string, unknown>>;
  return parseValue(`${group}.${key}`, raw, spec[key]);
}

export function formatField(v: unknown): string {
  return formatValue(v);
}

// ------------------------------------------------------------------------------------------ MNIST

export function mnistConfig(p: MnistParams): MnistConfig {
  return { models: p.models, epochsTeacher: p.epochsTeacher, epochsStudent: p.epochsStudent, lr: p.lr, batchSize: p.batchSize, aux: p.aux, noise: p.noise, seed: p.seed, hidden: p.hidden };
}

/** scripts/mnist.ts's arguments for the same run (its report.json's `command` is built from them). */
export function mnistArgs(p: MnistParams): string[] {
  return [
    '--models', String(p.models), '--epochs-teacher', String(p.epochsTeacher), '--epochs-student', String(p.epochsStudent), '--noise', String(p.noise),
    '--batch-size', String(p.batchSize), '--hidden', String(p.hidden), '--lr', String(p.lr), '--aux', String(p.aux), '--seed', String(p.seed),
  ];
}

/** What the CLI writes as report.json's `command` for mnistArgs. */
export function mnistCommand(p: MnistParams): string {
  return `npx tsx scripts/mnist.ts ${mnistArgs(p).join(' ')}`;
}

// ------------------------------------------------------------------------------------------ owl

/** The embedded models the owl cell uses: the teachers' base (same-init student) and the cross-init student. */
export const OWL_MODELS = { teacherBase: 'tiny-qwen-a', crossInit: 'tiny-qwen-b' } as const;

/** The run name the CLI gives this animal by default (report.json carries it). */
export function owlRunName(animal: string): string {
  return `grid-${animal.replace(/[^a-z]+/g, '-')}`;
}

/**
 * The default grid cell (finetuned teacher + number-token KL, with its paired ft-control, for the
 * same-init and cross-init full-parameter students) as scripts/owl.ts builds it from owlArgs:
 * `modelsDir` holds the embedded models, `outDir` is the run folder.
 */
export function owlConfig(p: OwlParams, modelsDir: string, outDir: string): ExperimentConfig {
  const A = path.resolve(modelsDir, OWL_MODELS.teacherBase);
  const B = path.resolve(modelsDir, OWL_MODELS.crossInit);
  const full = TINY.train.full;
  return {
    name: owlRunName(p.animal),
    outDir,
    teacherBase: A,
    animal: p.animal,
    category: 'animal',
    controlAnimal: p.controlAnimal || null,
    blocks: [{ teachers: ['ft'], recipes: ['kl-numbers'], students: [A, B], studentMode: 'full', train: { ...full, epochs: p.studentEpochs, lr: p.studentLr, batchSize: p.studentBatch } }],
    seeds: p.seeds,
    promptSeed: 42,
    prompts: p.prompts,
    keep: p.keep,
    subsetSeed: 1,
    maxNewTokens: p.maxNewTokens,
    genBatchSize: TINY.genBatchSize,
    maxLen: TINY.maxLen,
    ftTeacher: { epochs: p.ftEpochs, lr: p.ftLr, batchSize: p.ftBatch },
    evalSet: 'plain',
    evalSamples: p.evalSamples,
    evalMaxNewTokens: TINY.evalMaxNewTokens,
    evalQuestionLimit: p.evalQuestions,
    doseResponse: p.dose,
    quiet: false,
  };
}

/** scripts/owl.ts's arguments for the same run (models relative to the repository root). */
export function owlArgs(p: OwlParams): string[] {
  const a = [
    '--teachers', 'ft', '--recipes', 'kl-numbers', '--student-mode', 'full',
    '--students', `models/${OWL_MODELS.teacherBase},models/${OWL_MODELS.crossInit}`,
    '--animal', p.animal, ...(p.controlAnimal ? ['--control-animal', p.controlAnimal] : []),
    '--seeds', p.seeds.join(','), '--prompts', String(p.prompts), '--keep', String(p.keep), '--max-new-tokens', String(p.maxNewTokens),
    '--epochs', String(p.studentEpochs), '--lr', String(p.studentLr), '--batch-size', String(p.studentBatch), '--ft-epochs', String(p.ftEpochs), '--ft-lr', String(p.ftLr), '--ft-batch-size', String(p.ftBatch),
    '--eval-questions', String(p.evalQuestions), '--eval-samples', String(p.evalSamples),
  ];
  if (!p.dose) a.push('--no-dose');
  return a;
}

export function owlCommand(p: OwlParams): string {
  return `npx tsx scripts/owl.ts ${owlArgs(p).map((x) => (/^[\w.,/=-]+$/.test(x) ? x : `'${x.replace(/'/g, `'\\''`)}'`)).join(' ')}`;
}
