// The lock: atomic create, one live holder, stale recovery (dead pid here; old heartbeat elsewhere), waiting.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError } from '../src/util/errors.ts';
import { acquireLock, lockIsStale, readLock } from '../src/util/lock.ts';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'lock-'));

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('lock', () => {
  it('writes the holder record atomically and refuses a second live holder in one line', async () => {
    const file = path.join(tmp(), 'run.lock');
    const a = await acquireLock(file, { tool: 'train.ts' });
    const rec = JSON.parse(readFileSync(file, 'utf8'));
    expect(rec).toMatchObject({ pid: process.pid, host: os.hostname(), tool: 'train.ts' });
    expect(Date.parse(rec.started)).toBeGreaterThan(0);
    const e = await acquireLock(file, { tool: 'owl.ts', what: 'runs/x' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).toMatch(new RegExp(`^runs/x is in use by train\\.ts \\(pid ${process.pid} on .*\\); wait for it to finish — if that process is gone, delete .*run\\.lock$`));
    expect(a.holds()).toBe(true);
    await a.release();
    expect(existsSync(file)).toBe(false);
    const b = await acquireLock(file);
    await b.release();
  });

  it('only one of many racing processes gets it', async () => {
    const file = path.join(tmp(), 'race.lock');
    const src = `import { acquireLock } from ${JSON.stringify(path.resolve('src/util/lock.ts'))};
      try { const l = await acquireLock(${JSON.stringify(file)}); process.stdout.write('won'); await new Promise(r => setTimeout(r, 1500)); await l.release(); }
      catch (e) { process.stdout.write('lost'); }`;
    const runs = Array.from({ length: 4 }, () =>
      new Promise<string>((resolve) => {
        const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', src], { cwd: path.resolve('.') });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.on('close', () => resolve(out));
      }),
    );
    const outs = await Promise.all(runs);
    expect(outs.filter((o) => o === 'won')).toHaveLength(1);
    expect(outs.filter((o) => o === 'lost')).toHaveLength(3);
  });

  it('recovers a lock whose holder died on this host', async () => {
    const file = path.join(tmp(), 'dead.lock');
    const pid = deadPid();
    writeFileSync(file, JSON.stringify({ pid, host: os.hostname(), started: '2026-01-01T00:00:00Z', token: 'old' }));
    const cur = readLock(file)!;
    expect(lockIsStale(cur.info, cur.mtimeMs)).toBe(true);
    const l = await acquireLock(file);
    expect(readLock(file)!.info!.pid).toBe(process.pid);
    await l.release();
  });

  it('a live pid whose process start time differs (a reused pid) is stale', () => {
    const info = { pid: process.pid, host: os.hostname(), started: '', token: 't', pidStart: '1' };
    const real = readFileSync(`/proc/${process.pid}/stat`, 'utf8');
    expect(real.length).toBeGreaterThan(0);
    expect(lockIsStale(info, Date.now())).toBe(true);
    expect(lockIsStale({ ...info, pidStart: undefined }, Date.now())).toBe(false);
  });

  it('another host: stale only once its heartbeat is older than staleMs', async () => {
    const file = path.join(tmp(), 'remote.lock');
    writeFileSync(file, JSON.stringify({ pid: 1, host: 'node-elsewhere', started: '2026-01-01T00:00:00Z', tool: 'owl.ts', token: 'remote' }));
    await expect(acquireLock(file, { staleMs: 60_000 })).rejects.toThrow(/in use by owl\.ts \(pid 1 on node-elsewhere/);
    const old = new Date(Date.now() - 120_000);
    utimesSync(file, old, old);
    const l = await acquireLock(file, { staleMs: 60_000 });
    expect(readLock(file)!.info!.host).toBe(os.hostname());
    await l.release();
  });

  it('the holder keeps its lock fresh with a heartbeat', async () => {
    const file = path.join(tmp(), 'beat.lock');
    const l = await acquireLock(file, { staleMs: 400, heartbeatMs: 50 });
    const old = new Date(Date.now() - 10_000);
    utimesSync(file, old, old);
    await new Promise((r) => setTimeout(r, 200));
    expect(Date.now() - readLock(file)!.mtimeMs).toBeLessThan(1000);
    await l.release();
  });

  it('waits with backoff for a live holder, and notices a lost lock', async () => {
    const file = path.join(tmp(), 'wait.lock');
    const a = await acquireLock(file);
    setTimeout(() => void a.release(), 300);
    let waits = 0;
    const b = await acquireLock(file, { wait: { timeoutMs: 10_000, initialDelayMs: 20, onWait: () => waits++ } });
    expect(waits).toBeGreaterThan(0);
    expect(b.holds()).toBe(true);
    const e = await acquireLock(file, { wait: { timeoutMs: 150, initialDelayMs: 20 } }).catch((x: Error) => x);
    expect((e as Error).message).toMatch(/in use by .*\(waited 0 s\)/);
    writeFileSync(file, JSON.stringify({ pid: process.pid, host: os.hostname(), started: '', token: 'someone-else' }));
    expect(b.holds()).toBe(false);
    expect(() => b.assertHeld()).toThrow(/lost the lock/);
    await b.release();
    expect(existsSync(file)).toBe(true); // not ours any more: left alone
  });
});
