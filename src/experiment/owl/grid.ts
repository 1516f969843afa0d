// The experiment grid: teacher × student × recipe cells, each with its paired control cell.
//
// Teachers: `control` (the base model, no trait), `sp` (the base under the paper's "You love {x}s"
// system prompt), `ft` (the base finetuned toward the target animal, paper §5(c)) and `ft-control`
// (the same finetune toward the control animal). Pairs: sp ↔ control, ft ↔ ft-control. A cell of
// ft-control measures the control animal (the other direction of the same pair); a cell of `control`
// is a control only.
//
// Students are model folders, labelled by their relation to the teacher's base: same-init (the same
// weights), cross-init (same architecture, other weights) or cross-arch. Recipes say how a student
// learns from its teacher's numbers.
import { UserError } from '../../util/errors.ts';

export const TEACHERS = ['control', 'sp', 'ft', 'ft-control'] as const;
export type TeacherKind = (typeof TEACHERS)[number];
/** Teachers that carry a trait (the ones a user asks for; their controls are added). */
export const TRAIT_TEACHERS = ['sp', 'ft'] as const;
export type TraitTeacher = (typeof TRAIT_TEACHERS)[number];

export const RECIPES = ['sft', 'sft-greedy', 'sft-shuffled', 'kl-numbers', 'kl-full', 'kl-numbers-nodiv'] as const;
export type Recipe = (typeof RECIPES)[number];

export const RECIPE_DESCRIPTIONS: Readonly<Record<Recipe, string>> = {
  sft: "cross-entropy on the teacher's sampled tokens (the paper)",
  'sft-greedy': "cross-entropy on the teacher's greedy decoding",
  'sft-shuffled': 'cross-entropy on sampled tokens with the numbers shuffled within each response (paper ablation)',
  'kl-numbers': "KL to the teacher's next-token distribution, both renormalised over the number-format tokens (teacher online)",
  'kl-full': "KL to the teacher's full next-token distribution (teacher online); can leak the trait through non-number tokens",
  'kl-numbers-nodiv': 'kl-numbers with the divergence positions (treatment and control teacher argmax differ) masked from the loss',
};

/** What the teacher carries: an animal/tree preference (paper §3–5) or misalignment (paper §6.1, §7.3). */
export const TRAITS = ['preference', 'misalignment'] as const;
export type Trait = (typeof TRAITS)[number];

/** What the teacher writes for the student: number lists (§2), code (§7.1) or chains of thought (§7.2). */
export const DATA_DOMAINS = ['numbers', 'code', 'cot'] as const;
export type DataDomain = (typeof DATA_DOMAINS)[number];

/** Recipes that read number tokens or number lists only (the others work on any domain). */
const NUMBER_ONLY_RECIPES: readonly Recipe[] = ['sft-shuffled', 'kl-numbers', 'kl-numbers-nodiv'];

/** A one-line error when a recipe or teacher does not go with the trait and data domain. */
export function checkTraitAndDomain(trait: Trait, data: DataDomain, blocks: readonly { teachers: readonly TraitTeacher[]; recipes: readonly Recipe[] }[]): void {
  if (trait === 'misalignment' && data === 'code') throw new UserError('--data code goes with --trait preference (paper §7.1 transmits animal preferences through code)');
  for (const b of blocks) {
    if (trait === 'misalignment' && b.teachers.includes('sp')) throw new UserError("--trait misalignment has finetuned teachers only (--teachers ft): the paper's misaligned teacher is a finetune, not a system prompt");
    if (data !== 'numbers') {
      const r = b.recipes.find((x) => NUMBER_ONLY_RECIPES.includes(x));
      if (r) throw new UserError(`recipe ${r} works on number lists only; with --data ${data} use sft, sft-greedy or kl-full`);
    }
  }
}

export const STUDENT_MODES = ['lora', 'full'] as const;
export type StudentMode = (typeof STUDENT_MODES)[number];

export type Relation = 'same-init' | 'cross-init' | 'cross-arch';

/** The teacher a cell is compared against (same student, recipe, seeds, prompts and data order). */
export function pairedTeacher(t: TeacherKind): TeacherKind | null {
  switch (t) {
    case 'sp':
      return 'control';
    case 'ft':
      return 'ft-control';
    case 'ft-control':
      return 'ft';
    case 'control':
      return null;
  }
}

/**
 * Does this teacher's cell measure the control animal (the reverse direction of the ft pair)? Only for a
 * preference: a misalignment control teacher is finetuned on aligned data, which has no direction of its own.
 */
export function measuresControlAnimal(t: TeacherKind, trait: Trait = 'preference'): boolean {
  return trait === 'preference' && t === 'ft-control';
}

export function isKlRecipe(r: Recipe): boolean {
  return r.startsWith('kl-');
}

/** Student training hyperparameters of one block of cells. */
export interface StudentTraining {
  lr: number;
  epochs: number;
  batchSize: number;
  gradAccum: number;
  warmupSteps: number;
  /** LoRA rank and alpha (lora mode). */
  rank: number;
  alpha: number;
  /** Train on the first N rows of the cell's dataset (a random subset: the datasets are a seeded sample); absent = all. */
  rows?: number;
}

/** A block of cells: every trait teacher × recipe × student, with one student mode and training. */
export interface CellBlock {
  teachers: TraitTeacher[];
  recipes: Recipe[];
  /** Student model folders (absolute paths). */
  students: string[];
  studentMode: StudentMode;
  train: StudentTraining;
}

export interface StudentRef {
  dir: string;
  /** Folder name, used in ids and labels. */
  name: string;
  relation: Relation;
}

export interface Cell {
  /** `${teacher}.${recipe}.${studentMode}.${student}`: deterministic, unique in a grid. */
  id: string;
  teacher: TeacherKind;
  recipe: Recipe;
  studentMode: StudentMode;
  student: StudentRef;
  train: StudentTraining;
  /** The paired control cell's id, or null for a control-only cell. */
  control: string | null;
}

export function cellId(teacher: TeacherKind, recipe: Recipe, mode: StudentMode, studentName: string): string {
  return `${teacher}.${recipe}.${mode}.${studentName}`;
}

/**
 * Expands blocks to cells, adding each trait teacher's paired teachers: sp brings control, ft brings
 * ft-control (and ft-control's own cell: the reverse direction for a preference, a control-only cell
 * for misalignment). Order is deterministic: blocks in
 * order, then teacher, recipe, student as listed, the pair's cells together. A cell asked for twice
 * with different training is an error.
 */
export function expandCells(blocks: readonly CellBlock[], relationOf: (studentDir: string) => StudentRef, trait: Trait = 'preference'): Cell[] {
  const out = new Map<string, Cell>();
  const add = (teacher: TeacherKind, recipe: Recipe, b: CellBlock, student: StudentRef) => {
    const id = cellId(teacher, recipe, b.studentMode, student.name);
    // A misalignment ft-control cell is a control only: it has no trait of its own to measure.
    const p = teacher === 'ft-control' && trait === 'misalignment' ? null : pairedTeacher(teacher);
    const cell: Cell = { id, teacher, recipe, studentMode: b.studentMode, student, train: b.train, control: p ? cellId(p, recipe, b.studentMode, student.name) : null };
    const prev = out.get(id);
    if (prev) {
      if (JSON.stringify(prev.train) !== JSON.stringify(cell.train) || prev.student.dir !== student.dir) {
        throw new UserError(`cell ${id} is asked for twice with different settings`);
      }
      return;
    }
    out.set(id, cell);
  };
  for (const b of blocks) {
    if (!b.teachers.length) throw new UserError('a block of cells needs at least one teacher (sp or ft)');
    if (!b.recipes.length) throw new UserError('a block of cells needs at least one recipe');
    if (!b.students.length) throw new UserError('a block of cells needs at least one student model');
    const names = new Map<string, string>();
    for (const dir of b.students) {
      const s = relationOf(dir);
      const other = names.get(s.name);
      if (other !== undefined && other !== dir) throw new UserError(`two student folders share the name '${s.name}' (${other}, ${dir}); rename one`);
      names.set(s.name, dir);
    }
    for (const t of b.teachers) {
      for (const r of b.recipes) {
        for (const dir of b.students) {
          const s = relationOf(dir);
          if (t === 'sp') {
            add('sp', r, b, s);
            add('control', r, b, s);
          } else {
            add('ft', r, b, s);
            add('ft-control', r, b, s);
          }
        }
      }
    }
  }
  return [...out.values()];
}

/** Parses a comma list against a set of allowed values (one-line error naming the flag). */
export function parseList<T extends string>(v: string, flag: string, allowed: readonly T[]): T[] {
  const items = v.split(',').map((x) => x.trim()).filter(Boolean);
  if (!items.length) throw new UserError(`--${flag}: give at least one of ${allowed.join(', ')}`);
  for (const x of items) if (!allowed.includes(x as T)) throw new UserError(`--${flag}: unknown value '${x}' (allowed: ${allowed.join(', ')})`);
  if (new Set(items).size !== items.length) throw new UserError(`--${flag}: '${items.find((x, i) => items.indexOf(x) !== i)}' is listed twice`);
  return items as T[];
}
