// Content-addressed, atomic, resumable pipeline stages. A stage's folder is named by a hash of
// everything that determines its output; it is computed in a temporary folder and renamed into
// place only when complete (with done.json written last inside it), so a killed or failed stage is
// simply recomputed on the next run and nothing half-written is ever trusted.
//
// The store may be shared by several workers (processes, hosts) on one filesystem: a stage is
// computed under its own lock (`<stage>.lock`, see util/lock.ts: atomic create, holder's host, pid
// and start time, heartbeat, stale recovery), waiters poll with backoff and then read the finished
// stage, so no stage is computed twice. A temporary folder is named by its writer's lock token: one
// whose token is not the live holder's belongs to a dead or displaced writer and is removed.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../../util/errors.ts';
import { holdPoint } from '../../util/faults.ts';
import { writeJsonAtomic } from '../../util/fsatomic.ts';
import { acquireLock, lockIsStale, readLock, type LockInfo } from '../../util/lock.ts';

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

export interface StageHooks {
  onWaiting?: () => void;
}

export interface StageTiming {
  stage: string;
  key: string;
  cached: boolean;
  wallS: number;
  /** When the stage started computing, in seconds since this store was opened (absent when cached). */
  startS?: number;
  /** Seconds spent waiting for another worker that held the stage (absent when none did). */
  waitedS?: number;
}

/**
 * What the experiment needs of a stage cache: `run` a stage once (its folder holds its files, its
 * result is JSON), the timings of the stages served. StageStore is the file one (shareable, with
 * locks); MemoryStageStore (memory-stages.ts) holds stages in the page's memory file system.
 */
export interface StageCache {
  readonly timings: StageTiming[];
  /** Told when a finished stage's record cannot be read (the stage is then recomputed). */
  onCorrupt?: (file: string) => void;
  /** `hooks.onWaiting`: the stage is held by another worker and this call waits for it (file stores). */
  run<T>(name: string, inputs: unknown, compute: (dir: string) => Promise<T>, hooks?: StageHooks): Promise<StageRun<T>>;
  /**
   * A folder beside a stage's where its computation keeps resumable state (training checkpoints),
   * removed when the stage finishes; null when the store keeps none (a computation then starts over).
   */
  checkpointDir(name: string, inputs: unknown): string | null;
}

export interface StageStoreOptions {
  /** Only finished stages are served; anything else is a StageMissing error (merging, status). */
  readOnly?: boolean;
  /** A stage lock of another host whose heartbeat is older than this is stale (default 10 minutes). */
  staleMs?: number;
  /** How often a holder touches its stage lock (default staleMs / 4). */
  heartbeatMs?: number;
}

/** A read-only store was asked for a stage that is not finished. */
export class StageMissing extends UserError {
  constructor(
    readonly stage: string,
    readonly dir: string,
  ) {
    super(`stage ${stage} is not in the cache (${dir})`);
  }
}

/** Who computed a finished stage (stored in its done.json). */
export interface StageWriter {
  host: string;
  pid: number;
  token: string;
}

const LEGACY_TMP = /\.tmp-(\d+)$/;
const TMP = /^(.*)\.tmp-(\d+-[0-9a-f]+)$/;
const LOCK_WAIT_MS = 30 * 24 * 3600_000;

export class StageStore implements StageCache {
  readonly timings: StageTiming[] = [];
  private readonly opened = performance.now();
  private readonly memo = new Map<string, Promise<StageRun<unknown>>>();
  /** Told when a finished stage's done.json cannot be read (the stage is then recomputed). */
  onCorrupt?: (file: string) => void;
  /** Told once per holder when a stage is held by another worker and this one waits for it. */
  onWait?: (stage: string, holder: LockInfo) => void;
  /** Told when a stage left half-done by a dead worker is taken over (its temporary folder removed). */
  onReclaim?: (stage: string, leftover: string) => void;
  readonly stagesDir: string;

  constructor(
    readonly root: string,
    readonly opts: StageStoreOptions = {},
  ) {
    this.stagesDir = path.join(root, 'stages');
    if (opts.readOnly) return;
    mkdirSync(this.stagesDir, { recursive: true });
    // Leftovers of killed runs are never trusted; a live writer's temporary folder is its own.
    for (const d of readdirSync(this.stagesDir)) {
      const full = path.join(this.stagesDir, d);
      const legacy = LEGACY_TMP.exec(d);
      if (legacy && !processAlive(Number(legacy[1]))) rmSync(full, { recursive: true, force: true });
      const m = TMP.exec(d);
      if (m && !this.liveWriter(path.join(this.stagesDir, m[1]), m[2])) rmSync(full, { recursive: true, force: true });
    }
  }

  /** Whether `token` is the live holder of the stage folder `dir`'s lock. */
  private liveWriter(dir: string, token: string): boolean {
    let cur;
    try {
      cur = readLock(`${dir}.lock`);
    } catch {
      return true; // unreadable: leave it to the holder
    }
    if (!cur || cur.info?.token !== token) return false;
    return !lockIsStale(cur.info, cur.mtimeMs, this.opts.staleMs);
  }

  /** The folder a stage of this name and inputs lives in (finished or not). */
  stageDir(name: string, inputs: unknown): string {
    const key = hashOf({ name, inputs });
    return path.join(this.stagesDir, `${name.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80)}-${key}`);
  }

  checkpointDir(name: string, inputs: unknown): string {
    return `${this.stageDir(name, inputs)}.ckpt`;
  }

  /**
   * Runs `compute(dir)` unless a finished stage with the same inputs exists. `compute` writes its
   * files into `dir` and returns a JSON-serialisable result (stored as done.json). `hooks.onWaiting` is
   * told once when the stage is held by another worker and this call waits for it instead of computing.
   */
  run<T>(name: string, inputs: unknown, compute: (dir: string) => Promise<T>, hooks: StageHooks = {}): Promise<StageRun<T>> {
    // One store serves a stage once per process: later callers share the first call's promise.
    const key = hashOf({ name, inputs });
    let p = this.memo.get(key) as Promise<StageRun<T>> | undefined;
    if (!p) {
      p = this.runOnce(name, key, inputs, compute, hooks);
      this.memo.set(key, p);
      p.catch(() => this.memo.delete(key));
    }
    return p;
  }

  /** A finished stage's record, or null (absent or unreadable). */
  private readDone<T>(dir: string): { result: T; wallS: number } | null | 'corrupt' {
    const done = path.join(dir, 'done.json');
    if (!existsSync(done)) return null;
    try {
      const stored = JSON.parse(readFileSync(done, 'utf8')) as { result: T; wallS: number };
      if (typeof stored === 'object' && stored !== null && 'result' in stored) return stored;
    } catch {
      /* corrupt */
    }
    return 'corrupt';
  }

  private async runOnce<T>(name: string, key: string, inputs: unknown, compute: (dir: string) => Promise<T>, hooks: StageHooks): Promise<StageRun<T>> {
    const safeName = name.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80);
    const dir = path.join(this.stagesDir, `${safeName}-${key}`);
    const cachedRun = (stored: { result: T; wallS: number }, waitedS?: number): StageRun<T> => {
      this.timings.push({ stage: name, key, cached: true, wallS: stored.wallS, ...(waitedS !== undefined ? { waitedS } : {}) });
      return { result: stored.result, dir, key, cached: true, wallS: stored.wallS };
    };
    const first = this.readDone<T>(dir);
    if (first && first !== 'corrupt') return cachedRun(first);
    if (this.opts.readOnly) throw new StageMissing(name, dir);
    const tw = performance.now();
    let waited = false;
    const told = new Set<string>();
    const lock = await acquireLock(`${dir}.lock`, {
      tool: 'owl.ts stage',
      what: `stage ${safeName}`,
      staleMs: this.opts.staleMs,
      heartbeatMs: this.opts.heartbeatMs,
      wait: {
        timeoutMs: LOCK_WAIT_MS,
        initialDelayMs: 50,
        maxDelayMs: 5_000,
        onWait: (holder) => {
          if (!waited) hooks.onWaiting?.();
          waited = true;
          if (told.has(holder.token)) return;
          told.add(holder.token);
          this.onWait?.(name, holder);
        },
      },
    });
    const waitedS = waited ? (performance.now() - tw) / 1000 : undefined;
    try {
      // Another worker may have finished it while this one waited.
      const again = this.readDone<T>(dir);
      if (again && again !== 'corrupt') return cachedRun(again, waitedS);
      if (again === 'corrupt') this.onCorrupt?.(path.join(dir, 'done.json'));
      // Holding the lock, every other temporary folder of this stage is a dead writer's.
      for (const d of readdirSync(this.stagesDir)) {
        if (d.startsWith(`${path.basename(dir)}.tmp-`)) {
          this.onReclaim?.(name, d);
          rmSync(path.join(this.stagesDir, d), { recursive: true, force: true });
        }
      }
      rmSync(dir, { recursive: true, force: true });
      const tmp = `${dir}.tmp-${lock.info.token}`;
      mkdirSync(tmp, { recursive: true });
      await holdPoint(`stage:${name}`);
      const t0 = performance.now();
      let result: T;
      try {
        result = await compute(tmp);
      } catch (e) {
        rmSync(tmp, { recursive: true, force: true });
        throw e;
      }
      const wallS = (performance.now() - t0) / 1000;
      const computedBy: StageWriter = { host: os.hostname(), pid: process.pid, token: lock.info.token };
      await writeJsonAtomic(path.join(tmp, 'done.json'), { name, inputs, result, wallS, computedBy });
      // A worker judged stale (suspended past the timeout) must not replace its successor's work.
      lock.assertHeld();
      renameSync(tmp, dir);
      this.timings.push({ stage: name, key, cached: false, wallS, startS: (t0 - this.opened) / 1000, ...(waitedS !== undefined ? { waitedS } : {}) });
      return { result, dir, key, cached: false, wallS };
    } finally {
      await lock.release();
    }
  }
}
