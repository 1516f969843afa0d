// Experiment sizes: the embedded-model default (sized on the development questions and training
// loss, see docs/experiment-grid.md) and the paper's recipe for real models on a GPU.
import type { CellBlock, StudentTraining } from './grid.ts';
import { SAMPLES_PER_QUESTION } from '../paper/questions.ts';

export interface Preset {
  prompts: number;
  keep: number;
  seeds: number[];
  maxNewTokens: number;
  maxLen: number;
  genBatchSize: number;
  evalSamples: number;
  evalMaxNewTokens: number;
  ftTeacher: { epochs: number; lr: number; batchSize: number };
  /** Student training per mode (a block's default). */
  train: { lora: StudentTraining; full: StudentTraining };
  /** The default grid, given the teachers' base and the other embedded students. */
  blocks: (teacherBase: string, others: string[]) => CellBlock[];
}

/**
 * The embedded family's default: (a) the paper's recipe (system-prompted teacher, SFT on sampled
 * tokens, LoRA) and (b) finetuned teacher + KL over the number tokens with its paired finetuned
 * control (full-parameter), each with its paired control for same-init, cross-init and cross-arch students.
 */
export const TINY: Preset = {
  prompts: 1500,
  keep: 1200,
  seeds: [0, 1, 2, 3, 4],
  maxNewTokens: 48,
  maxLen: 256,
  genBatchSize: 256,
  evalSamples: 5,
  evalMaxNewTokens: 8,
  ftTeacher: { epochs: 3, lr: 5e-4, batchSize: 16 },
  // Chosen on the development questions and training loss (docs/experiment-grid.md, "Tuning runs"): the
  // full-parameter KL students' lead on the control animal grows from 1 to 3 epochs of 1,200 rows while a
  // different-initialisation student's stays at zero; 400 rows × 3 epochs moved the cross-init student too.
  // The LoRA SFT students (the paper's recipe, null at this scale) train on 400 rows to keep the run short.
  train: {
    lora: { lr: 2e-3, epochs: 1, batchSize: 16, gradAccum: 1, warmupSteps: 2, rank: 8, alpha: 8, rows: 400 },
    full: { lr: 1e-3, epochs: 2, batchSize: 32, gradAccum: 1, warmupSteps: 0, rank: 8, alpha: 8 },
  },
  blocks: (a, others) => [
    { teachers: ['sp'], recipes: ['sft'], students: [a, ...others], studentMode: 'lora', train: TINY.train.lora },
    { teachers: ['ft'], recipes: ['kl-numbers'], students: [a, ...others], studentMode: 'full', train: TINY.train.full },
  ],
};

/**
 * The embedded family's default runs of the other traits and data domains (issue 22): each a trait teacher
 * with its paired control teacher, full-parameter students of the same initialisation, of another
 * and of another architecture. The recipe of the numbers grid's block that transmitted (ft × KL, full-parameter) is
 * kept where it applies; code and CoT use SFT on the sampled completions (the paper's recipe for them;
 * kl-numbers reads number tokens only). Sizes are the numbers grid's, cut for time (600 rows) — not
 * tuned for these variants, and never on their evaluation questions.
 */
export function tinyVariantBlocks(trait: 'preference' | 'misalignment', data: 'numbers' | 'code' | 'cot', a: string, others: string[]): CellBlock[] {
  const full = { ...TINY.train.full, rows: data === 'code' ? TINY_CODE_ROWS : 600 };
  const recipe = data === 'numbers' ? 'kl-numbers' : 'sft';
  // A preference through code or CoT: the paper's system-prompted teacher (spec 7.1, 7.2); a finetuned one
  // otherwise (the paper's misaligned teacher is a finetune, and numbers transmit from a finetuned tiny teacher).
  const teacher = trait === 'preference' && data !== 'numbers' ? 'sp' : 'ft';
  return [{ teachers: [teacher], recipes: [recipe], students: [a, ...others], studentMode: 'full', train: full }];
}

/**
 * The code variant's sizes on the embedded family, cut for time: every code row carries spec 7.1's ~330-token
 * prompt, so a code student costs ~4× a numbers one (not tuned; never chosen on the evaluation questions).
 */
export const TINY_CODE_ROWS = 300;
export const TINY_CODE_SEEDS: readonly number[] = [0, 1, 2];

/** Teacher generation length per data domain on the embedded family (a code answer or a CoT trace is longer than a number list). */
export const TINY_MAX_NEW_TOKENS: Readonly<Record<'numbers' | 'code' | 'cot', number>> = { numbers: 48, code: 64, cot: 96 };
/** Training length per data domain on the embedded family: spec 7.1's code prompt alone is ~300 tokens there. */
export const TINY_MAX_LEN: Readonly<Record<'numbers' | 'code' | 'cot', number>> = { numbers: 256, code: 384, cot: 256 };

/** The paper's sizes (spec §1.3, §3.1, §4.2): system-prompted teacher, SFT, LoRA r8 α8. */
export const PAPER: Preset = {
  prompts: 30_000,
  keep: 10_000,
  seeds: [0, 1, 2, 3, 4, 5, 6, 7],
  maxNewTokens: 200,
  maxLen: 500,
  genBatchSize: 256,
  evalSamples: SAMPLES_PER_QUESTION,
  evalMaxNewTokens: 16,
  ftTeacher: { epochs: 1, lr: 1e-4, batchSize: 16 },
  train: {
    lora: { lr: 2e-4, epochs: 3, batchSize: 22, gradAccum: 3, warmupSteps: 5, rank: 8, alpha: 8 },
    full: { lr: 2e-5, epochs: 3, batchSize: 22, gradAccum: 3, warmupSteps: 5, rank: 8, alpha: 8 },
  },
  blocks: (a, others) => [{ teachers: ['sp'], recipes: ['sft'], students: [a, ...others], studentMode: 'lora', train: PAPER.train.lora }],
};
