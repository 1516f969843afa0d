// A grid's cells, their groups and shards. A group is a trait teacher's cell with its paired control
// cell (sp + control, ft + ft-control): the two are always computed, and so finished, together.
// Groups are ordered so that those reading the same expensive stages (a finetuned teacher, a pair's
// completions and datasets) are adjacent, and a shard is a contiguous run of that order: with fewer
// shards than groups, groups sharing stages mostly land in one shard; where they do not, the shared
// stage cache computes each stage once and the other shard waits for it.
import path from 'node:path';
import { UserError } from '../../util/errors.ts';
import { Experiment } from './experiment.ts';
import { cellId, type Cell, type StudentRef } from './grid.ts';
import type { GridExperiment } from './manifest.ts';

export interface GridCell {
  /** `<experiment id>/<cell id>`, e.g. `owl/sp.sft.lora.tiny-qwen-a`: unique in the grid. */
  id: string;
  exp: GridExperiment;
  cell: Cell;
  /** The group's id (its trait teacher's cell). */
  group: string;
}

export interface CellGroup {
  id: string;
  exp: GridExperiment;
  cells: GridCell[];
}

export interface GridCells {
  cells: GridCell[];
  groups: CellGroup[];
}

export type RelationOf = (exp: GridExperiment, dir: string) => StudentRef;

/** The student relation as a run sees it (model content), per experiment. */
export function modelRelations(): RelationOf {
  const probes = new Map<string, Experiment>();
  return (exp, dir) => {
    let e = probes.get(exp.id);
    if (!e) probes.set(exp.id, (e = new Experiment(null as never, exp.cfg)));
    return e.relationOf(dir);
  };
}

/** The trait teacher's cell a cell belongs with. */
function groupCellId(c: Cell): string {
  if (c.teacher === 'control') return cellId('sp', c.recipe, c.studentMode, c.student.name);
  if (c.teacher === 'ft-control') return cellId('ft', c.recipe, c.studentMode, c.student.name);
  return c.id;
}

/** Expands every experiment's cells (in experiment order, each in expandCells order) and groups them. */
export function expandGrid(exps: readonly GridExperiment[], relationOf: RelationOf = modelRelations()): GridCells {
  const cells: GridCell[] = [];
  const byGroup = new Map<string, CellGroup>();
  const signature = new Map<string, string>();
  for (const exp of exps) {
    for (const cell of expandCellsOf(exp, relationOf)) {
      const group = `${exp.id}/${groupCellId(cell)}`;
      const gc: GridCell = { id: `${exp.id}/${cell.id}`, exp, cell, group };
      cells.push(gc);
      let g = byGroup.get(group);
      if (!g) {
        byGroup.set(group, (g = { id: group, exp, cells: [] }));
        const pair = cell.teacher === 'sp' || cell.teacher === 'control' ? 'sp' : 'ft';
        signature.set(group, `${exp.id}|${pair}|${cell.recipe === 'sft-greedy' ? 'greedy' : 'sample'}|${cell.recipe === 'sft-shuffled'}`);
      }
      g.cells.push(gc);
    }
  }
  // Stable: groups of one experiment and teacher pair together, then those of one dataset.
  const groups = [...byGroup.values()];
  const first = (key: (g: CellGroup) => string) => {
    const m = new Map<string, number>();
    groups.forEach((g, i) => {
      if (!m.has(key(g))) m.set(key(g), i);
    });
    return (g: CellGroup) => m.get(key(g))!;
  };
  const byPair = first((g) => signature.get(g.id)!.split('|').slice(0, 2).join('|'));
  const bySig = first((g) => signature.get(g.id)!);
  const index = new Map(groups.map((g, i) => [g.id, i]));
  groups.sort((a, b) => byPair(a) - byPair(b) || bySig(a) - bySig(b) || index.get(a.id)! - index.get(b.id)!);
  return { cells, groups };
}

function expandCellsOf(exp: GridExperiment, relationOf: RelationOf): Cell[] {
  const e = new Experiment(null as never, exp.cfg);
  e.relationOf = (dir: string) => relationOf(exp, dir);
  return e.cells();
}

/** The groups of shard `index` (0-based) of `count`: a contiguous, balanced run of the group order. */
export function shardGroups<T>(groups: readonly T[], index: number, count: number): T[] {
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) throw new RangeError(`shard ${index} of ${count}`);
  return groups.filter((_, g) => Math.floor((g * count) / groups.length) === index);
}

export interface ShardSpec {
  /** 0-based. */
  index: number;
  count: number;
  /** Where it came from, for messages: "--shard 2/4", "SLURM_ARRAY_TASK_ID=1", … */
  source: string;
}

/**
 * `--shard i/n` (1-based, as `--shard 2/4`) or `--shard auto`: a Slurm array task's
 * SLURM_ARRAY_TASK_ID (0-based with an explicit count from --shards or the manifest; otherwise
 * counted from SLURM_ARRAY_TASK_MIN over SLURM_ARRAY_TASK_COUNT, which needs a contiguous array), or
 * a Kubernetes Indexed Job's JOB_COMPLETION_INDEX (with --shards or the manifest's count).
 */
export function parseShard(spec: string, env: Record<string, string | undefined>, count: number | null): ShardSpec {
  const int = (v: string | undefined, what: string): number => {
    if (v === undefined || !/^\d+$/.test(v.trim())) throw new UserError(`--shard auto: ${what} is ${v === undefined ? 'not set' : `'${v}', not a number`}`);
    return Number(v.trim());
  };
  if (spec !== 'auto') {
    const m = /^(\d+)\/(\d+)$/.exec(spec.trim());
    if (!m) throw new UserError(`--shard must be i/n (1 ≤ i ≤ n, e.g. 2/4) or auto, got '${spec}'`);
    const i = Number(m[1]);
    const n = Number(m[2]);
    if (n < 1 || i < 1 || i > n) throw new UserError(`--shard ${spec}: need 1 ≤ i ≤ n`);
    if (count !== null && count !== n) throw new UserError(`--shard ${spec} disagrees with --shards ${count}`);
    return { index: i - 1, count: n, source: `--shard ${spec}` };
  }
  const check = (s: ShardSpec): ShardSpec => {
    if (s.index >= s.count) throw new UserError(`--shard auto: ${s.source} is outside the ${s.count} shards`);
    return s;
  };
  if (env.SLURM_ARRAY_TASK_ID !== undefined) {
    const id = int(env.SLURM_ARRAY_TASK_ID, 'SLURM_ARRAY_TASK_ID');
    if (count !== null) return check({ index: id, count, source: `SLURM_ARRAY_TASK_ID=${id}` });
    const min = int(env.SLURM_ARRAY_TASK_MIN, 'SLURM_ARRAY_TASK_MIN');
    const n = int(env.SLURM_ARRAY_TASK_COUNT, 'SLURM_ARRAY_TASK_COUNT');
    const max = env.SLURM_ARRAY_TASK_MAX !== undefined ? int(env.SLURM_ARRAY_TASK_MAX, 'SLURM_ARRAY_TASK_MAX') : min + n - 1;
    if (max - min + 1 !== n) throw new UserError(`--shard auto: the Slurm array ${min}-${max} is not contiguous (${n} tasks); pass --shards N and index tasks 0…N-1`);
    return check({ index: id - min, count: n, source: `SLURM_ARRAY_TASK_ID=${id}` });
  }
  if (env.JOB_COMPLETION_INDEX !== undefined) {
    const id = int(env.JOB_COMPLETION_INDEX, 'JOB_COMPLETION_INDEX');
    if (count === null) throw new UserError('--shard auto: JOB_COMPLETION_INDEX needs a shard count (--shards N, or "shards" in the manifest)');
    return check({ index: id, count, source: `JOB_COMPLETION_INDEX=${id}` });
  }
  throw new UserError('--shard auto: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX (Kubernetes Indexed Job) is set; use --shard i/n');
}

/** A file-name-safe form of a grid id (its '/' kept as a folder separator). */
export function idPath(id: string): string {
  return id.split('/').map((p) => p.replace(/[^A-Za-z0-9_.@-]+/g, '_')).join(path.sep);
}
