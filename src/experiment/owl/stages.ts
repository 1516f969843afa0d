// Content-addressed, atomic, resumable pipeline stages. A stage's folder is named by a hash of
// everything that determines its output; it is computed in a temporary folder and renamed into
// place only when complete (with done.json written last inside it), so a killed or failed stage is
// simply recomputed on the next run and nothing half-written is ever trusted.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../../util/fsatomic.ts';

/** Stable JSON (sorted keys) so equal inputs always hash the same. */
export function stableJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
    .join(',')}}`;
}

/** Whether a process with this pid runs on this host (EPERM: it exists, owned by someone else). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function hashOf(v: unknown, length = 16): string {
  return createHash('sha256').update(stableJson(v)).digest('hex').slice(0, length);
}

export interface StageRun<T> {
  result: T;
  dir: string;
  /** Hash of the stage's name and inputs: the identity later stages key on. */
  key: string;
  cached: boolean;
  wallS: number;
}

export interface StageTiming {
  stage: string;
  key: string;
  cached: boolean;
  wallS: number;
}

export class StageStore {
  readonly timings: StageTiming[] = [];
  private readonly memo = new Map<string, Promise<StageRun<unknown>>>();
  /** Told when a finished stage's done.json cannot be read (the stage is then recomputed). */
  onCorrupt?: (file: string) => void;

  constructor(readonly root: string) {
    mkdirSync(path.join(root, 'stages'), { recursive: true });
    // Leftovers of killed runs are never trusted; a live process's temporary folder is its own.
    for (const d of readdirSync(path.join(root, 'stages'))) {
      const m = /\.tmp-(\d+)$/.exec(d);
      if (m && !processAlive(Number(m[1]))) rmSync(path.join(root, 'stages', d), { recursive: true, force: true });
    }
  }

  /**
   * Runs `compute(dir)` unless a finished stage with the same inputs exists. `compute` writes its
   * files into `dir` and returns a JSON-serialisable result (stored as done.json).
   */
  run<T>(name: string, inputs: unknown, compute: (dir: string) => Promise<T>): Promise<StageRun<T>> {
    // One store serves a stage once per process: later callers share the first call's promise.
    const key = hashOf({ name, inputs });
    let p = this.memo.get(key) as Promise<StageRun<T>> | undefined;
    if (!p) {
      p = this.runOnce(name, key, inputs, compute);
      this.memo.set(key, p);
      p.catch(() => this.memo.delete(key));
    }
    return p;
  }

  private async runOnce<T>(name: string, key: string, inputs: unknown, compute: (dir: string) => Promise<T>): Promise<StageRun<T>> {
    const safeName = name.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80);
    const dir = path.join(this.root, 'stages', `${safeName}-${key}`);
    const done = path.join(dir, 'done.json');
    if (existsSync(done)) {
      let stored: { result: T; wallS: number } | null = null;
      try {
        stored = JSON.parse(readFileSync(done, 'utf8')) as { result: T; wallS: number };
        if (typeof stored !== 'object' || stored === null || !('result' in stored)) stored = null;
      } catch {
        stored = null;
      }
      if (stored) {
        this.timings.push({ stage: name, key, cached: true, wallS: stored.wallS });
        return { result: stored.result, dir, key, cached: true, wallS: stored.wallS };
      }
      this.onCorrupt?.(done);
    }
    rmSync(dir, { recursive: true, force: true });
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const t0 = performance.now();
    const result = await compute(tmp);
    const wallS = (performance.now() - t0) / 1000;
    await writeJsonAtomic(path.join(tmp, 'done.json'), { name, inputs, result, wallS });
    renameSync(tmp, dir);
    this.timings.push({ stage: name, key, cached: false, wallS });
    return { result, dir, key, cached: false, wallS };
  }
}
