// A stage cache without locks for a single process that owns its files: the web page, where the
// stage folders live in the page's memory file system (util/files.ts). Same content addressing as
// StageStore (a stage's folder is named by the hash of its name and inputs), the same folder
// contents (done.json written last) and the same atomicity: a stage is computed in a temporary
// folder and renamed into place when complete, so a cancelled or failed stage leaves nothing trusted
// and is recomputed on the next run, while finished stages are reused.
import path from 'node:path';
import { fsys } from '../../util/files.ts';
import { hashOf, type StageCache, type StageHooks, type StageRun, type StageTiming } from './stages.ts';

/** A stage starting, served from the cache, finished or failed (for a page's stage list). */
export interface StageEvent {
  name: string;
  key: string;
  state: 'running' | 'cached' | 'done' | 'failed';
  wallS?: number;
  error?: unknown;
}

export class MemoryStageStore implements StageCache {
  readonly timings: StageTiming[] = [];
  readonly stagesDir: string;
  onCorrupt?: (file: string) => void;
  onStage?: (e: StageEvent) => void;
  private readonly memo = new Map<string, Promise<StageRun<unknown>>>();
  private tmpCount = 0;
  private readonly opened = performance.now();

  constructor(readonly root: string) {
    this.stagesDir = path.join(root, 'stages');
    fsys().mkdir(this.stagesDir);
  }

  /** No hooks are ever called: one process owns these stages, so none is held by another worker. */
  run<T>(name: string, inputs: unknown, compute: (dir: string) => Promise<T>, _hooks?: StageHooks): Promise<StageRun<T>> {
    const key = hashOf({ name, inputs });
    let p = this.memo.get(key) as Promise<StageRun<T>> | undefined;
    if (!p) {
      p = this.runOnce(name, key, inputs, compute);
      this.memo.set(key, p);
      p.catch(() => this.memo.delete(key));
    }
    return p;
  }

  /**
   * None: training checkpoints are written with node:fs (train/state.ts), and a page's run that is
   * cancelled mid-student retrains that student; finished stages are still reused.
   */
  checkpointDir(): null {
    return null;
  }

  /** Drops every finished stage. */
  clear(): void {
    fsys().rm(this.stagesDir);
    fsys().mkdir(this.stagesDir);
    this.memo.clear();
  }

  /** Finished stages held. */
  get count(): number {
    return fsys()
      .readdir(this.stagesDir)
      .filter((d) => !d.includes('.tmp-')).length;
  }

  private async runOnce<T>(name: string, key: string, inputs: unknown, compute: (dir: string) => Promise<T>): Promise<StageRun<T>> {
    const fs = fsys();
    const dir = path.join(this.stagesDir, `${name.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80)}-${key}`);
    const doneFile = path.join(dir, 'done.json');
    if (fs.exists(doneFile)) {
      try {
        const stored = JSON.parse(fs.readText(doneFile)) as { result: T; wallS: number };
        this.timings.push({ stage: name, key, cached: true, wallS: stored.wallS });
        this.onStage?.({ name, key, state: 'cached', wallS: stored.wallS });
        return { result: stored.result, dir, key, cached: true, wallS: stored.wallS };
      } catch {
        this.onCorrupt?.(doneFile);
      }
    }
    fs.rm(dir);
    const tmp = `${dir}.tmp-${++this.tmpCount}`;
    fs.mkdir(tmp);
    this.onStage?.({ name, key, state: 'running' });
    const t0 = performance.now();
    let result: T;
    try {
      result = await compute(tmp);
    } catch (e) {
      fs.rm(tmp);
      this.onStage?.({ name, key, state: 'failed', error: e });
      throw e;
    }
    const wallS = (performance.now() - t0) / 1000;
    const record = JSON.stringify({ name, inputs, result, wallS, computedBy: { host: 'browser', pid: 0, token: 'memory' } }, null, 2) + '\n';
    fs.writeFile(path.join(tmp, 'done.json'), record);
    fs.rename(tmp, dir);
    this.timings.push({ stage: name, key, cached: false, wallS, startS: (t0 - this.opened) / 1000 });
    this.onStage?.({ name, key, state: 'done', wallS });
    return { result, dir, key, cached: false, wallS };
  }
}
