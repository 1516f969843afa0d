// A real Slurm run: a single-node cluster (slurmctld + slurmd on localhost, munge, started here as
// root) runs a 4-cell tiny grid manifest as the job array scripts/grid.ts writes (one cell group per
// task, %K, the shared cache) plus its merge job (--dependency=afterok), end to end. Where Slurm
// cannot be installed or started, the test says so in one line and is skipped.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { cachedNumberModel } from './helpers/number-model.ts';
import { slurmUnavailable, startSlurm, type SlurmCluster } from './helpers/slurm.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

const unavailable = slurmUnavailable();
if (unavailable) console.log(`slurm-grid: ${unavailable}; the real Slurm run is skipped`);

let cluster: SlurmCluster | null = null;
let startError: string | null = null;
let dir: string;

describe.skipIf(!!unavailable)('a grid manifest on a real Slurm cluster', () => {
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'slurm-grid-'));
    try {
      cluster = await startSlurm(dir);
    } catch (e) {
      startError = (e as Error).message;
    }
  }, 120_000);

  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('runs the job array and the merge job end to end', async (ctx) => {
    if (!cluster) {
      console.log(`slurm-grid: Slurm could not be started (${startError}); the real Slurm run is skipped`);
      ctx.skip();
      return;
    }
    const a = await cachedNumberModel(await getGpu(), 1);
    const manifest = path.join(dir, 'tiny4.json');
    // 2 traits × (sp + control) × 1 student: 4 cells in 2 groups, so 2 array tasks.
    writeFileSync(manifest, JSON.stringify({
      name: 'tiny4', teacherBase: a, traits: ['owl', 'cat'], seeds: [0, 1],
      settings: { prompts: 16, keep: 8, maxNewTokens: 12, maxLen: 400, genBatchSize: 32, evalSamples: 2, evalQuestionLimit: 3, doseResponse: false },
      teachers: ['sp'], recipes: ['sft'], students: [a], train: { lr: 1e-3, epochs: 1, batchSize: 4, rank: 2, alpha: 4 },
      slurm: { partition: 'debug', gpus: 0, concurrency: 2, time: '00:20:00', cpusPerTask: 1 },
    }));
    const runDir = path.join(dir, 'grid');
    const cache = path.join(dir, 'cache');
    const submit = path.join(dir, 'submit.sh');
    await run(TSX, [path.join(ROOT, 'scripts', 'grid.ts'), 'slurm', manifest, '--run-dir', runDir, '--cache', cache, '--out', submit], { cwd: ROOT, env: { ...process.env, CI: '1' } });
    const script = readFileSync(submit, 'utf8');
    expect(script).toContain('#SBATCH --array=0-1%2');
    expect(script).not.toContain('--gres');
    expect(script).toContain('--dependency=afterok:"$array"');
    const env = { ...process.env, ...cluster.env, CI: '1' };
    const { stdout } = await run('bash', [submit], { cwd: dir, env });
    const m = /submitted: job array (\d+) \(2 tasks\), merge job (\d+)/.exec(stdout);
    expect(m, stdout).not.toBeNull();
    const [array, merge] = [m![1], m![2]];
    const states = () => {
      const out = cluster!.cmd(['squeue', '-h', '-t', 'all', '-j', `${array},${merge}`, '-o', '%i %T %r']);
      return Object.fromEntries(out.trim().split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)).map(([id, st, reason]) => [id, `${st}${reason && reason !== 'None' ? ` (${reason})` : ''}`]));
    };
    const logs = () => (existsSync(path.join(runDir, 'logs')) ? readdirSync(path.join(runDir, 'logs')).map((f) => `${f}: ${readFileSync(path.join(runDir, 'logs', f), 'utf8').split('\n').filter((l) => !l.startsWith('Warning')).slice(-4).join(' | ')}`).join('\n') : 'no logs');
    const t0 = Date.now();
    let st = states();
    while (!/^(COMPLETED|FAILED|CANCELLED|TIMEOUT)/.test(st[merge] ?? '')) {
      if (/DependencyNeverSatisfied/.test(st[merge] ?? '')) throw new Error(`a shard failed: ${JSON.stringify(st)}\n${logs()}`);
      if (Date.now() - t0 > 480_000) throw new Error(`timed out: ${JSON.stringify(st)}\n${logs()}`);
      await new Promise((r) => setTimeout(r, 1000));
      st = states();
    }
    expect(st, logs()).toEqual({ [`${array}_0`]: 'COMPLETED', [`${array}_1`]: 'COMPLETED', [merge]: 'COMPLETED' });
    // Each task ran its own shard, found from SLURM_ARRAY_TASK_ID.
    for (const i of [0, 1]) {
      const s = JSON.parse(readFileSync(path.join(runDir, 'shards', `${i + 1}-of-2.json`), 'utf8'));
      expect(s.source).toBe(`SLURM_ARRAY_TASK_ID=${i}`);
      expect(s.groups.map((g: { outcome: string }) => g.outcome)).toEqual(['ran']);
    }
    expect(readFileSync(path.join(runDir, 'logs', `merge-${merge}.out`), 'utf8')).toMatch(/report: .*report\.md \(4 of 4 cells\)/);
    const report = JSON.parse(readFileSync(path.join(runDir, 'report.json'), 'utf8'));
    expect(report.table.map((r: { id: string }) => r.id)).toEqual(['owl/sp.sft.lora.numbers-qwen2-1', 'owl/control.sft.lora.numbers-qwen2-1', 'cat/sp.sft.lora.numbers-qwen2-1', 'cat/control.sft.lora.numbers-qwen2-1']);
    expect(report.cells.missing).toEqual([]);
    expect(JSON.parse(readFileSync(path.join(runDir, '.run.json'), 'utf8')).complete).toBe(true);
    expect(readdirSync(path.join(cache, 'stages')).filter((d) => d.includes('.tmp-') || d.endsWith('.lock'))).toEqual([]);
  }, 600_000);
});
