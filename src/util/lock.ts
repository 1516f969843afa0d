// An exclusive lock file: one live holder at a time, recovered when its holder is gone. Made for run
// folders on a local disk and for shared caches on a cluster filesystem:
//  - created atomically and complete: the holder's record is written to a temp file which is then
//    hard-linked to the lock name (link fails if the name exists, also over NFS, and readers never see
//    a half-written record); where links are not supported, exclusive create is used instead;
//  - the record holds the holder's pid, host, process start time and start date;
//  - a lock is stale when its holder is provably gone: a dead pid (or a reused one) on this host, or, for
//    another host, a heartbeat older than `staleMs` (the holder touches the file every `heartbeatMs`);
//  - breaking a stale lock happens under a short-lived guard file and re-checks the record, so two
//    processes recovering the same stale lock cannot delete each other's fresh one;
//  - a second live holder is refused with one line, or waited for with exponential backoff.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, statSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import { UserError } from './errors.ts';
import { errnoText } from './outpaths.ts';

export interface LockInfo {
  pid: number;
  host: string;
  /** ISO date the lock was taken. */
  started: string;
  /** The holding tool, for messages. */
  tool?: string;
  /** Start time of the holder's process (Linux /proc ticks), to tell a reused pid from the holder. */
  pidStart?: string;
  /** Unique per acquisition: a lock is released or broken only by matching it. */
  token: string;
}

export interface LockOptions {
  /** The holding tool (recorded, shown to a refused second run). */
  tool?: string;
  /** What the lock protects, for messages (default: the lock file). */
  what?: string;
  /** A lock of another host whose heartbeat is older than this is stale (default 10 minutes). */
  staleMs?: number;
  /** How often the holder touches the lock (default staleMs / 4; 0 = never). */
  heartbeatMs?: number;
  /** Wait for a live holder instead of refusing at once. */
  wait?: { timeoutMs: number; initialDelayMs?: number; maxDelayMs?: number; onWait?: (holder: LockInfo) => void };
}

const DEFAULT_STALE_MS = 10 * 60_000;
/** A record that cannot be read yet (exclusive-create fallback, mid-write) is trusted this long. */
const UNREADABLE_GRACE_MS = 10_000;
/** A break guard older than this was left by a killed process. */
const GUARD_STALE_MS = 30_000;

/** Start time of a process from /proc (null where unavailable). */
function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the parenthesised command name (which may contain spaces).
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The current record of a lock file and its age, or null when there is none. */
export function readLock(file: string): { info: LockInfo | null; mtimeMs: number } | null {
  let text: string;
  let mtimeMs: number;
  try {
    mtimeMs = statSync(file).mtimeMs;
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new UserError(`cannot read the lock ${file}: ${errnoText(e)}`);
  }
  try {
    const info = JSON.parse(text) as LockInfo;
    if (typeof info.pid !== 'number' || typeof info.host !== 'string' || typeof info.token !== 'string') return { info: null, mtimeMs };
    return { info, mtimeMs };
  } catch {
    return { info: null, mtimeMs };
  }
}

/** Whether a holder is provably gone (see the file comment). */
export function lockIsStale(info: LockInfo | null, mtimeMs: number, staleMs = DEFAULT_STALE_MS, now = Date.now()): boolean {
  if (!info) return now - mtimeMs > UNREADABLE_GRACE_MS;
  if (info.host === os.hostname()) {
    if (!pidAlive(info.pid)) return true;
    const start = processStart(info.pid);
    return info.pidStart !== undefined && start !== null && start !== info.pidStart;
  }
  return now - mtimeMs > staleMs;
}

/** Locks this process holds, released on exit by one listener (a grid holds one per running stage). */
const held = new Set<Lock>();
let exitHook = false;

export class Lock {
  private timer: NodeJS.Timeout | null = null;
  private released = false;
  /** Set when the heartbeat finds the lock no longer ours (broken by someone who judged it stale). */
  lost = false;

  constructor(
    readonly file: string,
    readonly info: LockInfo,
    heartbeatMs: number,
  ) {
    held.add(this);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const l of [...held]) l.releaseSync();
      });
    }
    if (heartbeatMs > 0) {
      this.timer = setInterval(() => this.beat(), heartbeatMs);
      this.timer.unref();
    }
  }

  private beat(): void {
    if (!this.holds()) {
      this.lost = true;
      this.stopTimer();
      return;
    }
    try {
      const now = new Date();
      utimesSync(this.file, now, now);
    } catch {
      /* the next beat retries; a lost lock shows in holds() */
    }
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Whether the lock file still holds this acquisition's record. */
  holds(): boolean {
    if (this.released) return false;
    try {
      return readLock(this.file)?.info?.token === this.info.token;
    } catch {
      return false;
    }
  }

  /** Throws a UserError if the lock was lost (e.g. broken as stale while this process was suspended). */
  assertHeld(): void {
    if (!this.holds()) throw new UserError(`lost the lock ${this.file} (another run judged it stale); stopping so the two runs do not mix`);
  }

  releaseSync(): void {
    if (this.released) return;
    this.stopTimer();
    held.delete(this);
    if (this.holds()) {
      try {
        unlinkSync(this.file);
      } catch {
        /* gone already */
      }
    }
    this.released = true;
  }

  async release(): Promise<void> {
    this.releaseSync();
  }
}

/** Writes the record to a temp file and links it to `file`: false if `file` exists. */
function tryCreate(file: string, info: LockInfo): boolean {
  const body = JSON.stringify(info) + '\n';
  const tmp = `${file}.${info.token}.tmp`;
  writeFileSync(tmp, body, { flag: 'wx' });
  try {
    linkSync(tmp, file);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      /* ignore */
    }
  }
  // No hard links on this filesystem: exclusive create (readers allow UNREADABLE_GRACE_MS for the write).
  let fd: number;
  try {
    fd = openSync(file, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    writeSync(fd, body);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** Removes `file` if it still holds the stale record `token` (null: an unreadable one), under a guard; false if another process holds the guard. */
function breakStale(file: string, token: string | null, mtimeMs: number): boolean {
  const guard = `${file}.break`;
  try {
    closeSync(openSync(guard, 'wx'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    try {
      if (Date.now() - statSync(guard).mtimeMs > GUARD_STALE_MS) unlinkSync(guard);
    } catch {
      /* someone else just removed it */
    }
    return false;
  }
  try {
    const cur = readLock(file);
    if (cur && (cur.info?.token ?? null) === token && cur.mtimeMs === mtimeMs) unlinkSync(file);
  } finally {
    try {
      unlinkSync(guard);
    } catch {
      /* ignore */
    }
  }
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function holderText(info: LockInfo | null): string {
  if (!info) return 'another run (its lock record is being written)';
  return `${info.tool ?? 'another run'} (pid ${info.pid} on ${info.host}, since ${info.started})`;
}

/**
 * Takes the lock at `file`. A live holder means a UserError naming it (after waiting, with `wait`); a
 * stale lock is recovered. Release with lock.release(); the lock is also released when the process exits.
 */
export async function acquireLock(file: string, opts: LockOptions = {}): Promise<Lock> {
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  const heartbeatMs = opts.heartbeatMs ?? Math.floor(staleMs / 4);
  const pidStart = processStart(process.pid);
  const info: LockInfo = {
    pid: process.pid,
    host: os.hostname(),
    started: new Date().toISOString(),
    ...(opts.tool ? { tool: opts.tool } : {}),
    ...(pidStart !== null ? { pidStart } : {}),
    token: `${process.pid}-${randomBytes(8).toString('hex')}`,
  };
  const t0 = Date.now();
  let delay = opts.wait?.initialDelayMs ?? 100;
  for (;;) {
    try {
      if (tryCreate(file, info)) return new Lock(file, info, heartbeatMs);
    } catch (e) {
      throw new UserError(`cannot create the lock ${file}: ${errnoText(e)}`);
    }
    const cur = readLock(file);
    if (!cur) continue; // released between our attempt and the read
    if (lockIsStale(cur.info, cur.mtimeMs, staleMs)) {
      // Another process is breaking it: give it a moment, then look again.
      if (!breakStale(file, cur.info?.token ?? null, cur.mtimeMs)) await sleep(50);
      continue;
    }
    const waited = Date.now() - t0;
    if (!opts.wait || waited >= opts.wait.timeoutMs) {
      const after = opts.wait ? ` (waited ${(waited / 1000).toFixed(0)} s)` : '';
      throw new UserError(`${opts.what ?? file} is in use by ${holderText(cur.info)}${after}; wait for it to finish — if that process is gone, delete ${file}`);
    }
    if (cur.info) opts.wait.onWait?.(cur.info);
    // Jittered exponential backoff, so many waiters on a shared filesystem do not poll in step.
    await sleep(Math.min(delay * (0.5 + Math.random()), opts.wait.timeoutMs - waited));
    delay = Math.min(delay * 2, opts.wait.maxDelayMs ?? 5_000);
  }
}
