// The shared stage cache: worker processes on one store compute each stage once (the others wait and
// read it), a worker killed with SIGKILL mid-stage leaves nothing trusted and its stage is reclaimed
// by a waiting worker, and leftovers of dead writers are removed (lock-aware, for other hosts too).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { StageMissing, StageStore } from '../src/experiment/owl/stages.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const WORKER = path.join(ROOT, 'tests', 'helpers', 'stage-worker.ts');

interface Worker {
  proc: ChildProcess;
  events: Record<string, unknown>[];
  stderr: string;
  done: Promise<number | null>;
}

function worker(root: string, delayMs: number, stages: string[], env: Record<string, string> = {}): Worker {
  const proc = spawn(process.execPath, ['--import', 'tsx', WORKER, root, String(delayMs), stages.join(',')], { cwd: ROOT, env: { ...process.env, ...env } });
  const w: Worker = { proc, events: [], stderr: '', done: null as never };
  let buf = '';
  proc.stdout!.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      w.events.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  proc.stderr!.on('data', (d) => (w.stderr += d));
  w.done = new Promise((resolve) => proc.on('close', (code) => resolve(code)));
  return w;
}

async function until(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const stageDirs = (root: string) => readdirSync(path.join(root, 'stages')).filter((d) => !d.includes('.tmp-') && !d.endsWith('.lock') && !d.includes('.lock.'));

describe('shared stage cache', () => {
  it('two worker processes on one cache compute each stage once', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'stage-cache-'));
    const stages = ['a', 'b', 'c', 'd', 'e', 'f'];
    // Opposite orders, so they meet on every stage from both sides.
    const w1 = worker(root, 300, stages);
    const w2 = worker(root, 300, [...stages].reverse());
    expect(await w1.done, w1.stderr).toBe(0);
    expect(await w2.done, w2.stderr).toBe(0);
    const computed = [...w1.events, ...w2.events].filter((e) => e.event === 'stage' && !e.cached).map((e) => e.stage);
    expect(computed.sort()).toEqual(stages);
    // Both saw every stage, with the one computed result.
    for (const w of [w1, w2]) expect(w.events.filter((e) => e.event === 'stage').map((e) => e.stage).sort()).toEqual(stages);
    const by = new Map<string, unknown>();
    for (const e of [...w1.events, ...w2.events]) if (e.event === 'stage') {
      if (by.has(e.stage as string)) expect(e.by).toBe(by.get(e.stage as string));
      by.set(e.stage as string, e.by);
    }
    expect(stageDirs(root)).toHaveLength(stages.length);
    for (const d of stageDirs(root)) {
      const done = JSON.parse(readFileSync(path.join(root, 'stages', d, 'done.json'), 'utf8'));
      expect(done.computedBy.pid).toBe(done.result.by);
    }
    // Nothing else is left: no lock, no temporary folder.
    expect(readdirSync(path.join(root, 'stages')).length).toBe(stages.length);
  }, 120_000);

  it('kill -9 one worker mid-stage: nothing it wrote is trusted and the waiting worker reclaims the stage', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'stage-kill-'));
    const w1 = worker(root, 100, ['x', 'y'], { SUBLIMINAL_HOLD_AT: 'stage:y' });
    await until('worker 1 to hold stage y', () => w1.stderr.includes('hold: stage:y'));
    const w2 = worker(root, 100, ['x', 'y']);
    await until('worker 2 to wait for y', () => w2.events.some((e) => e.event === 'wait' && e.stage === 'y'));
    expect(w2.events.find((e) => e.stage === 'x')).toMatchObject({ cached: true, by: w1.proc.pid });
    // Mid-stage: the temporary folder exists, nothing is finished.
    expect(readdirSync(path.join(root, 'stages')).some((d) => d.startsWith('y-') && d.includes('.tmp-'))).toBe(true);
    w1.proc.kill('SIGKILL');
    expect(await w1.done).toBe(null);
    expect(await w2.done, w2.stderr).toBe(0);
    expect(w2.events.some((e) => e.event === 'reclaim' && e.stage === 'y')).toBe(true);
    expect(w2.events.find((e) => e.event === 'stage' && e.stage === 'y')).toMatchObject({ cached: false, by: w2.proc.pid });
    expect(readdirSync(path.join(root, 'stages')).sort()).toEqual(stageDirs(root).sort());
    expect(stageDirs(root)).toHaveLength(2);
  }, 120_000);

  it('removes a dead writer\'s temporary folder (this host: dead pid; another host: stale heartbeat), keeps a live one', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'stage-clean-'));
    const st = path.join(root, 'stages');
    mkdirSync(st, { recursive: true });
    const lockOf = (dir: string, info: Record<string, unknown>) => writeFileSync(path.join(st, `${dir}.lock`), JSON.stringify(info));
    // Live: this process holds the lock.
    mkdirSync(path.join(st, `live-1.tmp-${process.pid}-aa`));
    lockOf('live-1', { pid: process.pid, host: os.hostname(), started: '', token: `${process.pid}-aa` });
    // Another host, fresh heartbeat: kept.
    mkdirSync(path.join(st, 'remote-1.tmp-77-bb'));
    lockOf('remote-1', { pid: 77, host: 'elsewhere', started: '', token: '77-bb' });
    // Another host, heartbeat older than the timeout: removed.
    mkdirSync(path.join(st, 'old-1.tmp-78-cc'));
    lockOf('old-1', { pid: 78, host: 'elsewhere', started: '', token: '78-cc' });
    const { utimesSync } = await import('node:fs');
    const past = new Date(Date.now() - 3_600_000);
    utimesSync(path.join(st, 'old-1.lock'), past, past);
    // No lock at all (its writer released or died): removed. Legacy pid-named folder of a dead pid: removed.
    mkdirSync(path.join(st, 'gone-1.tmp-79-dd'));
    mkdirSync(path.join(st, 'legacy-1.tmp-999999999'));
    new StageStore(root, { staleMs: 60_000 });
    expect(readdirSync(st).filter((d) => d.includes('.tmp-')).sort()).toEqual([`live-1.tmp-${process.pid}-aa`, 'remote-1.tmp-77-bb']);
  });

  it('a read-only store serves finished stages and reports a missing one', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'stage-ro-'));
    const s = new StageStore(root);
    await s.run('one', { a: 1 }, async () => 1);
    const ro = new StageStore(root, { readOnly: true });
    expect((await ro.run('one', { a: 1 }, async () => 2)).result).toBe(1);
    await expect(ro.run('two', { a: 1 }, async () => 2)).rejects.toBeInstanceOf(StageMissing);
    expect(existsSync(path.join(root, 'stages', 'two'))).toBe(false);
  });
});
