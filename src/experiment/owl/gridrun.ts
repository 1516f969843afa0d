// Running a grid manifest across machines: a shard runs its cell groups on a shared stage cache and
// writes one result file per cell; status reads the result files and the groups' locks; the merge
// re-runs the finished cells' experiments on the cache read-only (every stage is served from it, so
// the numbers are exactly those a single run of the same cells gives) and writes one report.
//
// Grid folder (`--out`):
//   grid.json                   the manifest as run (normalised)
//   cells/<exp>/<cell>.json     one result per finished cell (atomic), keyed by the cell's inputs
//   locks/<exp>/<group>.lock    held while a worker runs that group (status: "running")
//   shards/<i>-of-<n>.json      what each shard ran, computed, reused and waited for
//   logs/                       the scheduler's task logs (the generated Slurm script's)
//   experiments/<exp>/          each experiment's full report (merge)
//   report.md, report.json, chart.svg, heatmap.svg   the grid's report (merge)
// The stage cache is `--cache DIR` (DIR/stages/…), or the grid folder itself.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Gpu } from '../../gpu/runtime.ts';
import { UserError } from '../../util/errors.ts';
import { killPoint } from '../../util/faults.ts';
import { readControlJson, writeFileAtomic, writeJsonAtomic } from '../../util/fsatomic.ts';
import { checkOutDir } from '../../util/outpaths.ts';
import { assertRunFolderUsable, initRunFolder, inspectRunFolder, markRunComplete, removeIfEmpty, runLock } from '../../util/runfolder.ts';
import { acquireLock, lockIsStale, readLock, type Lock, type LockInfo } from '../../util/lock.ts';
import { experimentKey, Experiment, modelKey, type StudentResult } from './experiment.ts';
import type { Cell } from './grid.ts';
import { gridExperiments, type GridExperiment, type GridManifest } from './manifest.ts';
import { GRID_REPORT_FILES, writeGridReport, writeReport } from './report.ts';
import { expandGrid, idPath, shardGroups, type CellGroup, type GridCell, type RelationOf, type ShardSpec } from './shard.ts';
import { hashOf, StageMissing, StageStore, stableJson } from './stages.ts';
import { gridStatistics } from './stats.ts';

export interface GridPlan {
  manifest: GridManifest;
  outDir: string;
  experiments: GridExperiment[];
  cells: GridCell[];
  groups: CellGroup[];
}

/** A manifest's experiments, cells and groups (reads the model folders for the students' relations). */
export function planGrid(manifest: GridManifest, outDir: string, opts: { quiet?: boolean; relationOf?: RelationOf } = {}): GridPlan {
  const experiments = gridExperiments(manifest, outDir, opts.quiet ?? true);
  const { cells, groups } = expandGrid(experiments, opts.relationOf);
  return { manifest, outDir, experiments, cells, groups };
}

/** The manifest as run, without the file's location: what a grid folder is checked against. */
export function gridIdentity(m: GridManifest): unknown {
  const { file: _f, slurm: _s, k8s: _k, shards: _n, ...rest } = m;
  return rest;
}

export const resultFile = (outDir: string, id: string) => path.join(outDir, 'cells', `${idPath(id)}.json`);
export const groupLockFile = (outDir: string, group: string) => path.join(outDir, 'locks', `${idPath(group)}.lock`);

/** Everything a cell's numbers depend on: its experiment's settings, the cell, and the models' content. */
export function cellKey(gc: GridCell): string {
  return hashOf({ exp: experimentKey(gc.exp.cfg), cell: gc.cell, models: { base: modelKey(gc.exp.cfg.teacherBase), student: modelKey(gc.cell.student.dir) } });
}

export interface CellResultFile {
  version: 1;
  id: string;
  experiment: string;
  trait: string;
  teacherBase: string;
  key: string;
  cell: Cell;
  students: StudentResult[];
  finished: string;
  worker: { host: string; pid: number; shard: string };
}

/** A cell's result file when it is finished for these inputs (null: absent, unreadable or stale). */
export function readCellResult(plan: GridPlan, gc: GridCell, keys = new Map<string, string>()): CellResultFile | null {
  let r: CellResultFile;
  try {
    r = JSON.parse(readFileSync(resultFile(plan.outDir, gc.id), 'utf8')) as CellResultFile;
  } catch {
    return null;
  }
  let key = keys.get(gc.id);
  if (!key) keys.set(gc.id, (key = cellKey(gc)));
  return r && r.version === 1 && r.key === key && Array.isArray(r.students) ? r : null;
}

export interface ShardSummary {
  shard: string;
  source: string;
  host: string;
  pid: number;
  started: string;
  finished: string;
  wallS: number;
  groups: { id: string; cells: string[]; outcome: 'ran' | 'already done' | 'done by another worker' }[];
  computed: { stage: string; key: string; wallS: number }[];
  reused: number;
  waited: { stage: string; key: string; waitedS: number }[];
}

export interface ShardOptions {
  gpu: Gpu;
  cacheDir: string;
  shard: ShardSpec;
  quiet: boolean;
  /** Stale timeout of another host's stage or group lock (heartbeat every quarter of it). */
  staleMs?: number;
  log: (line: string) => void;
}

/** Opens the shared cache for computing, with the waits and reclaims told through `log`. */
export function sharedStore(cacheDir: string, staleMs: number | undefined, log: (l: string) => void): StageStore {
  const store = new StageStore(cacheDir, { staleMs });
  store.onWait = (stage, h) => log(`waiting for stage ${stage}: another worker computes it (pid ${h.pid} on ${h.host}, since ${h.started})`);
  store.onReclaim = (stage, leftover) => log(`reclaiming stage ${stage}: its worker is gone (removed ${leftover})`);
  store.onCorrupt = (f) => log(`warning: ${f} is unreadable; recomputing that stage`);
  return store;
}

/** Runs one shard's cell groups and writes their cells' result files; returns what it did. */
export async function runShard(plan: GridPlan, opts: ShardOptions): Promise<ShardSummary> {
  const t0 = performance.now();
  const started = new Date().toISOString();
  const { shard, log } = opts;
  const label = `${shard.index + 1}/${shard.count}`;
  const store = sharedStore(opts.cacheDir, opts.staleMs, log);
  const mine = shardGroups(plan.groups, shard.index, shard.count);
  log(`shard ${label} (${shard.source}): ${mine.length} of ${plan.groups.length} cell groups, ${mine.reduce((a, g) => a + g.cells.length, 0)} cells`);
  const keys = new Map<string, string>();
  const isDone = (g: CellGroup) => g.cells.every((c) => readCellResult(plan, c, keys));
  const outcomes: ShardSummary['groups'] = [];
  let current: { id: string; exp: Experiment } | null = null;
  let n = 0;

  const runGroup = async (g: CellGroup, lock: Lock) => {
    if (current?.id !== g.exp.id) {
      // One experiment's models in memory at a time (groups of an experiment are adjacent).
      current?.exp.dispose();
      current = { id: g.exp.id, exp: new Experiment(opts.gpu, { ...g.exp.cfg, quiet: opts.quiet }, { store }) };
    }
    log(`[${++n}/${mine.length}] ${g.cells.map((c) => c.id).join(' + ')}`);
    const res = await current.exp.run({ cells: g.cells.map((c) => c.cell.id) });
    lock.assertHeld();
    for (const gc of g.cells) {
      const file = resultFile(plan.outDir, gc.id);
      mkdirSync(path.dirname(file), { recursive: true });
      const out: CellResultFile = {
        version: 1, id: gc.id, experiment: gc.exp.id, trait: gc.exp.trait.name, teacherBase: gc.exp.teacherBase, key: keys.get(gc.id) ?? cellKey(gc), cell: gc.cell,
        students: res.students.filter((s) => s.cell === gc.cell.id), finished: new Date().toISOString(), worker: { host: os.hostname(), pid: process.pid, shard: label },
      };
      await writeJsonAtomic(file, out);
      killPoint('owl-grid-cell');
    }
    outcomes.push({ id: g.id, cells: g.cells.map((c) => c.id), outcome: 'ran' });
  };

  const staleMs = opts.staleMs;
  const lockOpts = { tool: 'owl.ts grid', staleMs };
  const deferred: CellGroup[] = [];
  for (const g of mine) {
    if (isDone(g)) {
      outcomes.push({ id: g.id, cells: g.cells.map((c) => c.id), outcome: 'already done' });
      n++;
      continue;
    }
    const file = groupLockFile(plan.outDir, g.id);
    mkdirSync(path.dirname(file), { recursive: true });
    let lock: Lock;
    try {
      lock = await acquireLock(file, { ...lockOpts, what: `cell group ${g.id}` });
    } catch (e) {
      const cur = readLock(file);
      if (!(e instanceof UserError) || !cur || lockIsStale(cur.info, cur.mtimeMs, staleMs)) throw e;
      // Another worker runs it (a retried task, a second launch): do the others first.
      log(`${g.id}: another worker runs it (${holder(cur.info)}); coming back to it`);
      deferred.push(g);
      continue;
    }
    try {
      if (isDone(g)) outcomes.push({ id: g.id, cells: g.cells.map((c) => c.id), outcome: 'done by another worker' });
      else await runGroup(g, lock);
    } finally {
      await lock.release();
    }
  }
  for (const g of deferred) {
    const file = groupLockFile(plan.outDir, g.id);
    const lock = await acquireLock(file, { ...lockOpts, what: `cell group ${g.id}`, wait: { timeoutMs: 30 * 24 * 3600_000, maxDelayMs: 10_000 } });
    try {
      if (isDone(g)) {
        outcomes.push({ id: g.id, cells: g.cells.map((c) => c.id), outcome: 'done by another worker' });
        n++;
      } else await runGroup(g, lock);
    } finally {
      await lock.release();
    }
  }
  (current as { exp: Experiment } | null)?.exp.dispose();
  const summary: ShardSummary = {
    shard: label,
    source: shard.source,
    host: os.hostname(),
    pid: process.pid,
    started,
    finished: new Date().toISOString(),
    wallS: (performance.now() - t0) / 1000,
    groups: outcomes,
    computed: store.timings.filter((t) => !t.cached).map((t) => ({ stage: t.stage, key: t.key, wallS: t.wallS })),
    reused: store.timings.filter((t) => t.cached).length,
    waited: store.timings.filter((t) => t.waitedS !== undefined).map((t) => ({ stage: t.stage, key: t.key, waitedS: t.waitedS! })),
  };
  const sfile = path.join(plan.outDir, 'shards', `${shard.index + 1}-of-${shard.count}.json`);
  mkdirSync(path.dirname(sfile), { recursive: true });
  await writeJsonAtomic(sfile, summary);
  return summary;
}

function holder(info: LockInfo | null): string {
  return info ? `pid ${info.pid} on ${info.host}, since ${info.started}` : 'a worker starting up';
}

export interface GridStatus {
  done: GridCell[];
  running: { cell: GridCell; holder: LockInfo | null }[];
  missing: GridCell[];
}

/** Cells finished (a result file for these inputs), running (their group's lock held by a live worker) and missing. */
export function gridStatus(plan: GridPlan, staleMs?: number): GridStatus {
  const keys = new Map<string, string>();
  const out: GridStatus = { done: [], running: [], missing: [] };
  const held = new Map<string, LockInfo | null | false>();
  for (const gc of plan.cells) {
    if (readCellResult(plan, gc, keys)) {
      out.done.push(gc);
      continue;
    }
    let h = held.get(gc.group);
    if (h === undefined) {
      const cur = readLock(groupLockFile(plan.outDir, gc.group));
      h = cur && !lockIsStale(cur.info, cur.mtimeMs, staleMs) ? cur.info : false;
      held.set(gc.group, h);
    }
    if (h !== false) out.running.push({ cell: gc, holder: h });
    else out.missing.push(gc);
  }
  return out;
}

export function statusText(plan: GridPlan, st: GridStatus): string {
  const L = [`grid ${plan.manifest.name}: ${st.done.length} done, ${st.running.length} running, ${st.missing.length} missing (of ${plan.cells.length} cells in ${plan.groups.length} groups)`];
  for (const c of st.done) L.push(`done     ${c.id}`);
  for (const r of st.running) L.push(`running  ${r.cell.id}  (${holder(r.holder)})`);
  for (const c of st.missing) L.push(`missing  ${c.id}`);
  return L.join('\n');
}

/**
 * Merges every finished cell into one report: each experiment re-runs its finished cells on the cache
 * read-only (a missing stage is an error naming it), its report goes to experiments/<id>/, and the
 * grid's report to the grid folder. A finished cell whose paired control is not finished waits.
 */
export async function mergeGrid(plan: GridPlan, opts: { cacheDir: string; log: (l: string) => void }): Promise<{ files: string[]; reported: number; missing: string[] }> {
  const keys = new Map<string, string>();
  const results = new Map<string, CellResultFile>();
  for (const gc of plan.cells) {
    const r = readCellResult(plan, gc, keys);
    if (r) results.set(gc.id, r);
  }
  const missing = plan.cells.filter((c) => !results.has(c.id)).map((c) => c.id);
  const waiting: string[] = [];
  const experiments = [];
  const files: string[] = [];
  for (const exp of plan.experiments) {
    const cells = plan.cells.filter((c) => c.exp === exp && results.has(c.id)).filter((c) => {
      const ok = !c.cell.control || results.has(`${exp.id}/${c.cell.control}`);
      if (!ok) waiting.push(c.id);
      return ok;
    });
    if (!cells.length) continue;
    const store = new StageStore(opts.cacheDir, { readOnly: true });
    // Quiet whatever the flags: the report's config is then the same for every merge.
    const e = new Experiment(null as never, { ...exp.cfg, quiet: true }, { store });
    let res;
    try {
      res = await e.run({ cells: cells.map((c) => c.cell.id) });
    } catch (err) {
      if (err instanceof StageMissing) throw new UserError(`merge: ${exp.id}: ${err.message}, though its cells' result files say they are finished; was the grid run with another --cache?`);
      throw err;
    }
    for (const gc of cells) {
      const fromCache = res.students.filter((s) => s.cell === gc.cell.id);
      if (stableJson(fromCache) !== stableJson(results.get(gc.id)!.students)) opts.log(`warning: ${gc.id}: its result file differs from the cache's stages (the report uses the cache)`);
    }
    files.push(...(await writeReport(res)).files);
    experiments.push({ id: exp.id, trait: exp.trait.name, category: exp.trait.category, teacherBase: path.basename(exp.teacherBase), res, st: gridStatistics(res) });
  }
  files.push(...(await writeGridReport(plan.outDir, { name: plan.manifest.name, manifest: plan.manifest.file, experiments, total: plan.cells.length, missing, waiting })));
  return { files, reported: plan.cells.length - missing.length - waiting.length, missing: [...missing, ...waiting] };
}

const TOOL = 'owl.ts';
/** A stage cache made by `--cache` (an owl.ts run or grid folder may serve as one too). */
const CACHE_TOOL = 'owl.ts cache';
/** What a grid folder may hold (listed in its marker before they are written). */
export const GRID_OUTPUTS = ['grid.json', 'cells/', 'locks/', 'shards/', 'experiments/', 'stages/', 'logs/', ...GRID_REPORT_FILES];

// The folder lock is held only briefly (setting up, writing the merged report), so waiting long is safe.
const FOLDER_WAIT = { timeoutMs: 3600_000, initialDelayMs: 50, maxDelayMs: 5_000 };

/**
 * Makes or checks the grid folder under its lock (shards start together): refused when not owl.ts's,
 * when it holds a single run, or when it holds another manifest's grid (unless `resume`).
 */
export async function prepareGridFolder(plan: GridPlan, resume: boolean): Promise<void> {
  const out = plan.outDir;
  const { lock, created } = await runLock(out, TOOL, { wait: FOLDER_WAIT });
  let ok = false;
  try {
    // A new grid folder may already hold logs/: the generated Slurm script makes it for the tasks' output.
    const st = assertRunFolderUsable(out, TOOL, '--out', ['logs']);
    if (st.kind === 'ours' && existsSync(path.join(out, 'config.json')) && !existsSync(path.join(out, 'grid.json'))) {
      throw new UserError(`--out ${out} holds a single owl.ts run, not a grid; choose another folder (its stages can be reused with --cache ${out})`);
    }
    const gridFile = path.join(out, 'grid.json');
    const want = stableJson(gridIdentity(plan.manifest));
    const prev = readControlJson(gridFile, 'grid manifest');
    if (resume && (st.kind !== 'ours' || prev === null)) throw new UserError(`--out ${out}: nothing to resume (no ${TOOL} grid run there)`);
    if (prev !== null && stableJson(prev) !== want && !resume) {
      throw new UserError(`${out} holds a grid run from another manifest; pass --resume to run this one there (cached stages are reused, finished cells of the old one stay) or choose another --out`);
    }
    await initRunFolder(out, TOOL, GRID_OUTPUTS, ['logs']);
    if (prev === null || stableJson(prev) !== want) await writeFileAtomic(gridFile, want + '\n');
    ok = true;
  } finally {
    await lock.release();
    if (created && !ok) removeIfEmpty(out);
  }
}

/** Makes or checks a `--cache` folder: absent or empty (made and marked), an owl.ts cache, or an owl.ts run folder. */
export async function prepareCache(dir: string): Promise<void> {
  checkOutDir(dir, '--cache');
  const { lock, created } = await runLock(dir, CACHE_TOOL, { wait: FOLDER_WAIT });
  let ok = false;
  try {
    const st = inspectRunFolder(dir, CACHE_TOOL);
    if (st.kind === 'unmarked') throw new UserError(`--cache ${dir} is not empty (${st.entries.slice(0, 3).join(', ')}) and was not made by owl.ts; choose a new folder — nothing was changed`);
    if (st.kind === 'foreign' && st.tool !== TOOL) throw new UserError(`--cache ${dir} holds a ${st.tool} run; choose another folder`);
    if (st.kind !== 'foreign') await initRunFolder(dir, CACHE_TOOL, ['stages/']);
    mkdirSync(path.join(dir, 'stages'), { recursive: true });
    ok = true;
  } finally {
    await lock.release();
    if (created && !ok) removeIfEmpty(dir);
  }
}

/** Takes the grid folder's lock for writing the merged report; marks the folder complete when no cell is missing. */
export async function mergeInFolder(plan: GridPlan, cacheDir: string, log: (l: string) => void): Promise<{ files: string[]; reported: number; missing: string[] }> {
  const keys = new Map<string, string>();
  if (!plan.cells.some((c) => readCellResult(plan, c, keys))) throw new UserError(`nothing to merge: none of the grid's ${plan.cells.length} cells is finished in ${plan.outDir} (see --status)`);
  const { lock } = await runLock(plan.outDir, TOOL, { wait: FOLDER_WAIT });
  try {
    assertRunFolderUsable(plan.outDir, TOOL);
    await initRunFolder(plan.outDir, TOOL, GRID_OUTPUTS);
    const r = await mergeGrid(plan, { cacheDir, log });
    if (!r.missing.length) await markRunComplete(plan.outDir, TOOL);
    return r;
  } finally {
    await lock.release();
  }
}
