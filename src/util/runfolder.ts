// Run folders a tool owns. The tool writes a marker (RUN_MARKER) into every output folder it creates,
// naming itself and listing each output before writing it. `--overwrite` then deletes only what the
// marker lists, only in a folder carrying the same tool's marker, and never the user's own files next
// to them; a folder without the marker is refused with one line. The marker also records completion,
// written last, so a killed or failed run never looks finished.
//
// Protocol for a tool (the caller holds the folder's lock, see runLock, for every write):
//   inspectRunFolder / assertRunFolderUsable  before any work: refuse a folder that is not ours
//   … validate every input …
//   clearRunOutputs (for --overwrite)           deletes the previous run's listed outputs
//   initRunFolder                               fresh marker, complete = false
//   claimOutputs([...]) before writing files    the marker lists them first, so a kill never leaves
//                                               an unlisted file behind
//   markRunComplete                             last
import { existsSync, lstatSync, mkdirSync, readdirSync, rmdirSync, rmSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { UserError } from './errors.ts';
import { readControlJson, writeJsonAtomic } from './fsatomic.ts';
import { acquireLock, type Lock, type LockOptions } from './lock.ts';
import { errnoText } from './outpaths.ts';

/** The marker file a tool writes into each folder it creates. */
export const RUN_MARKER = '.run.json';
/** The lock file of a run folder (see runLock). */
export const RUN_LOCK = '.run.lock';

export interface RunMarker {
  /** The tool that made the folder, e.g. "train.ts". */
  tool: string;
  version: 1;
  created: string;
  /** Paths (relative, '/'-separated) the tool wrote or is writing; a trailing '/' is a whole folder it owns. */
  outputs: string[];
  complete: boolean;
  completed?: string;
}

export type RunFolderState =
  | { kind: 'absent' }
  /** Exists and holds nothing but (possibly) a lock. */
  | { kind: 'empty' }
  | { kind: 'ours'; marker: RunMarker }
  /** Another tool's run folder. */
  | { kind: 'foreign'; tool: string }
  /** Something without a marker: the user's files. */
  | { kind: 'unmarked'; entries: string[] };

const markerPath = (dir: string) => path.join(dir, RUN_MARKER);

/** Leftovers that say nothing about who owns a folder: its lock and write probes. */
const isControl = (name: string) => name === RUN_LOCK || name.startsWith(`${RUN_LOCK}.`) || name.startsWith('.write-probe-');

function readMarker(dir: string): RunMarker {
  const file = markerPath(dir);
  const m = readControlJson(file, 'run marker') as Partial<RunMarker> | null;
  if (
    !m ||
    typeof m !== 'object' ||
    typeof m.tool !== 'string' ||
    !Array.isArray(m.outputs) ||
    !m.outputs.every((o) => typeof o === 'string') ||
    typeof m.complete !== 'boolean'
  ) {
    throw new UserError(`${file}: corrupt run marker (not {"tool", "outputs", "complete"}); remove the folder yourself if it is not needed`);
  }
  return m as RunMarker;
}

/** What `dir` holds, as far as `tool` is concerned. A corrupt marker is a UserError naming it. */
export function inspectRunFolder(dir: string, tool: string): RunFolderState {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'absent' };
    if (code === 'ENOTDIR') throw new UserError(`${dir} is a file, not a folder`);
    throw new UserError(`cannot read ${dir}: ${errnoText(e)}`);
  }
  if (entries.includes(RUN_MARKER)) {
    const marker = readMarker(dir);
    return marker.tool === tool ? { kind: 'ours', marker } : { kind: 'foreign', tool: marker.tool };
  }
  const own = entries.filter((e) => !isControl(e));
  return own.length === 0 ? { kind: 'empty' } : { kind: 'unmarked', entries: own.sort() };
}

/**
 * The validation-time check of an output folder: returns its state when `tool` may write there (absent,
 * empty, or its own run), else throws one line. Deletes nothing.
 */
export function assertRunFolderUsable(dir: string, tool: string, flag = '--out', preexisting: readonly string[] = []): RunFolderState {
  const st = inspectRunFolder(dir, tool);
  // Entries the tool's own tooling makes before the run (e.g. a scheduler's log folder) do not make it someone else's.
  if (st.kind === 'unmarked' && st.entries.every((e) => preexisting.includes(e))) return { kind: 'empty' };
  if (st.kind === 'foreign') throw new UserError(`${flag} ${dir} holds a ${st.tool} run, not a ${tool} one; choose another folder`);
  if (st.kind === 'unmarked') {
    const shown = st.entries.slice(0, 3).join(', ') + (st.entries.length > 3 ? ', …' : '');
    throw new UserError(`${flag} ${dir} is not empty (${shown}) and was not made by ${tool} (no ${RUN_MARKER}); choose a new folder — nothing was changed`);
  }
  return st;
}

/** Checks one listed output: relative, inside the folder, not a control file. */
function safeOutput(dir: string, rel: string): string | null {
  const norm = path.posix.normalize(rel);
  if (!rel || path.isAbsolute(rel) || norm.startsWith('..') || norm === '.' || norm === './') return null;
  const first = norm.split('/')[0];
  if (first === RUN_MARKER || isControl(first)) return null;
  const abs = path.resolve(dir, norm);
  const root = path.resolve(dir);
  if (!abs.startsWith(root + path.sep)) return null;
  return abs;
}

/** Temp files an atomic write of `file` leaves when killed (see fsatomic.ts). */
function atomicLeftovers(file: string): string[] {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const re = new RegExp(`^\\.${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.\\d+\\.[0-9a-f]+\\.tmp$`);
  try {
    return readdirSync(dir).filter((n) => re.test(n)).map((n) => path.join(dir, n));
  } catch {
    return [];
  }
}

/**
 * Deletes the outputs listed in `tool`'s marker in `dir` (and their atomic-write leftovers), nothing else:
 * files the user added stay. Refuses (one line, nothing deleted) unless `dir` is `tool`'s run folder.
 * Call it only after the new run's inputs are validated. Returns the paths removed (relative).
 */
export async function clearRunOutputs(dir: string, tool: string): Promise<string[]> {
  const st = inspectRunFolder(dir, tool);
  if (st.kind === 'absent' || st.kind === 'empty') return [];
  if (st.kind !== 'ours') {
    throw new UserError(
      st.kind === 'foreign'
        ? `refusing to overwrite ${dir}: it holds a ${st.tool} run, not a ${tool} one`
        : `refusing to overwrite ${dir}: it was not made by ${tool} (no ${RUN_MARKER}); nothing was deleted`,
    );
  }
  const bad = st.marker.outputs.filter((o) => safeOutput(dir, o) === null);
  if (bad.length) throw new UserError(`${markerPath(dir)}: lists ${JSON.stringify(bad[0])}, which is outside the run folder; refusing to delete anything`);
  const removed: string[] = [];
  for (const rel of st.marker.outputs) {
    const abs = safeOutput(dir, rel)!;
    const wantDir = rel.endsWith('/');
    let ls;
    try {
      ls = lstatSync(abs);
    } catch {
      ls = null;
    }
    try {
      if (ls) {
        if (wantDir && ls.isDirectory()) rmSync(abs, { recursive: true, force: true });
        else if (!ls.isDirectory()) unlinkSync(abs); // a file, or a link (never followed)
        else continue; // listed as a file but now a folder: not something we wrote
        removed.push(rel);
      }
      if (!wantDir) for (const t of atomicLeftovers(abs)) unlinkSync(t);
    } catch (e) {
      throw new UserError(`cannot delete ${abs} while overwriting: ${errnoText(e)}`);
    }
  }
  await writeJsonAtomic(markerPath(dir), { ...st.marker, outputs: [], complete: false, completed: undefined });
  return removed;
}

/** Creates `dir` if needed and writes a fresh marker (no outputs, not complete). */
export async function initRunFolder(dir: string, tool: string, outputs: string[] = [], preexisting: readonly string[] = []): Promise<RunMarker> {
  const st = assertRunFolderUsable(dir, tool, '--out', preexisting);
  mkdirSync(dir, { recursive: true });
  const marker: RunMarker = { tool, version: 1, created: new Date().toISOString(), outputs: st.kind === 'ours' ? mergeOutputs(st.marker.outputs, outputs) : [...outputs], complete: false };
  await writeJsonAtomic(markerPath(dir), marker);
  return marker;
}

function mergeOutputs(a: string[], b: string[]): string[] {
  return [...new Set([...a, ...b])];
}

/** Lists outputs in the marker before they are written (idempotent). */
export async function claimOutputs(dir: string, tool: string, outputs: string[]): Promise<void> {
  const st = inspectRunFolder(dir, tool);
  if (st.kind !== 'ours') throw new Error(`claimOutputs: ${dir} is not a ${tool} run folder`);
  for (const o of outputs) if (safeOutput(dir, o) === null) throw new Error(`claimOutputs: ${JSON.stringify(o)} is not a path inside the run folder`);
  const merged = mergeOutputs(st.marker.outputs, outputs);
  if (merged.length === st.marker.outputs.length && !st.marker.complete) return;
  await writeJsonAtomic(markerPath(dir), { ...st.marker, outputs: merged, complete: false, completed: undefined });
}

/** Records that the run finished: written after every output. */
export async function markRunComplete(dir: string, tool: string): Promise<void> {
  const st = inspectRunFolder(dir, tool);
  if (st.kind !== 'ours') throw new Error(`markRunComplete: ${dir} is not a ${tool} run folder`);
  await writeJsonAtomic(markerPath(dir), { ...st.marker, complete: true, completed: new Date().toISOString() });
}

/** Whether the marker says the run finished (false for a folder that is not `tool`'s). */
export function isRunComplete(dir: string, tool: string): boolean {
  const st = inspectRunFolder(dir, tool);
  return st.kind === 'ours' && st.marker.complete;
}

/**
 * Takes the run folder's lock (creating the folder if needed): one live run per folder. Returns the lock
 * and whether this call created the folder (so a run refused during validation can remove what it made:
 * see removeIfEmpty).
 */
export async function runLock(dir: string, tool: string, opts: Omit<LockOptions, 'tool'> = {}): Promise<{ lock: Lock; created: boolean }> {
  const created = !existsSync(dir);
  mkdirSync(dir, { recursive: true });
  try {
    const lock = await acquireLock(path.join(dir, RUN_LOCK), { ...opts, tool, what: dir });
    return { lock, created };
  } catch (e) {
    if (created) removeIfEmpty(dir);
    throw e;
  }
}

/** Removes `dir` if it is empty: the folder a refused run created for its lock (release the lock first). */
export function removeIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* not empty (someone else's now), or already gone */
  }
}
