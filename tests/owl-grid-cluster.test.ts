// A grid manifest run as a cluster would run it, on tiny models: 3 shards on one shared cache (two
// of them at once), one shard killed with SIGKILL mid-stage while another waits for that stage and
// then reclaims it, --status while it is held, and the merge of the shards equal (report.json, every
// number) to a single-machine run of the same grid; no stage is computed twice.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { cachedNumberModel } from './helpers/number-model.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const OWL = path.join(ROOT, 'scripts', 'owl.ts');

interface Proc {
  proc: ChildProcess;
  stdout: string;
  stderr: string;
  done: Promise<{ code: number | null; signal: string | null }>;
}

function owl(args: string[], env: Record<string, string> = {}): Proc {
  // node --import tsx: one process, so its pid is the worker's (what kill -9 and the locks see).
  const proc = spawn(process.execPath, ['--import', 'tsx', OWL, ...args], { cwd: ROOT, env: { ...process.env, CI: '1', DEBUG: '', ...env } });
  const p: Proc = { proc, stdout: '', stderr: '', done: null as never };
  proc.stdout!.on('data', (d) => (p.stdout += d));
  proc.stderr!.on('data', (d) => (p.stderr += d));
  p.done = new Promise((resolve) => proc.on('close', (code, signal) => resolve({ code, signal })));
  return p;
}

async function ok(p: Proc): Promise<Proc> {
  const r = await p.done;
  expect(r.code, p.stderr.slice(-3000)).toBe(0);
  return p;
}

async function until(what: string, cond: () => boolean, timeoutMs = 240_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A report.json without what differs between runs by design (wall times, the run folder). */
function comparable(file: string): unknown {
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) if (!['timings', 'wallS', 'outDir'].includes(k)) o[k] = strip(x);
      return o;
    }
    return v;
  };
  return strip(JSON.parse(readFileSync(file, 'utf8')));
}

let dir: string;
let manifest: string;

beforeAll(async () => {
  const gpu = await getGpu();
  const a = await cachedNumberModel(gpu, 1);
  const b = await cachedNumberModel(gpu, 2);
  dir = mkdtempSync(path.join(os.tmpdir(), 'owl-cluster-'));
  manifest = path.join(dir, 'tiny8.json');
  // 2 traits × (sp + control) × 2 students = 8 cells in 4 groups.
  writeFileSync(manifest, JSON.stringify({
    name: 'tiny8', teacherBase: a, traits: ['owl', 'cat'], seeds: [0, 1],
    settings: { prompts: 16, keep: 8, maxNewTokens: 12, maxLen: 400, genBatchSize: 32, evalSamples: 2, evalQuestionLimit: 3, doseResponse: false },
    teachers: ['sp'], recipes: ['sft'], students: [a, b], studentModes: ['lora'], train: { lr: 1e-3, epochs: 1, batchSize: 4, rank: 2, alpha: 4 },
  }, null, 2));
}, 600_000);

describe('a grid on a cluster', () => {
  it('3 shards on one cache, one killed mid-stage and reclaimed, merge = the single-machine run', async () => {
    const single = path.join(dir, 'single');
    await ok(owl(['--grid', manifest, '--out', single, '--quiet']));
    const out = path.join(dir, 'sharded');
    const cache = path.join(dir, 'cache');
    const common = ['--grid', manifest, '--out', out, '--cache', cache];
    // Groups: owl·a, owl·b | cat·a | cat·b. Shards 2 and 3 share cat's completions.
    const s1 = owl([...common, '--shard', '1/3', '--quiet']);
    const s2 = owl([...common, '--shard', '2/3'], { SUBLIMINAL_HOLD_AT: 'stage:completions-sp-sample' });
    await until('shard 2 to hold the cat completions', () => s2.stderr.includes('hold: stage:completions-sp-sample'));
    const s3 = owl([...common, '--shard', '3/3']);
    await until('shard 3 to wait for that stage', () => /waiting for stage completions-sp-sample: another worker computes it \(pid \d+/.test(s3.stderr));
    const st = owl([...common, '--status']);
    await ok(st);
    expect(st.stdout).toMatch(new RegExp(`running  cat/sp\\.sft\\.lora\\.numbers-qwen2-1  \\(pid ${s2.proc.pid} on `));
    expect(st.stdout).toMatch(/running  cat\/sp\.sft\.lora\.numbers-qwen2-2 /);
    const held = readdirSync(path.join(cache, 'stages')).filter((d) => d.startsWith('completions-sp-sample-'));
    expect(held.some((d) => d.includes('.tmp-'))).toBe(true);
    s2.proc.kill('SIGKILL');
    expect((await s2.done).signal).toBe('SIGKILL');
    await ok(s3);
    expect(s3.stderr).toMatch(/reclaiming stage completions-sp-sample: its worker is gone/);
    await ok(s1);
    // The killed shard left nothing trusted: only finished stages, no temporary folder or lock.
    expect(readdirSync(path.join(cache, 'stages')).filter((d) => d.includes('.tmp-') || d.endsWith('.lock'))).toEqual([]);
    const mid = owl([...common, '--status']);
    await ok(mid);
    expect(mid.stdout).toMatch(/^grid tiny8: 6 done, 0 running, 2 missing \(of 8 cells in 4 groups\)/);
    expect(mid.stdout).toMatch(/missing  cat\/sp\.sft\.lora\.numbers-qwen2-1\n/);
    // A partial merge lists what is missing.
    const part = await ok(owl([...common, '--merge']));
    expect(part.stdout).toMatch(/\(6 of 8 cells; not finished: cat\/sp\.sft\.lora\.numbers-qwen2-1, cat\/control\.sft\.lora\.numbers-qwen2-1\)/);
    expect(readFileSync(path.join(out, 'report.md'), 'utf8')).toContain('## Missing cells');
    // The rerun of the killed shard.
    await ok(owl([...common, '--shard', '2/3', '--quiet']));
    const fin = await ok(owl([...common, '--status']));
    expect(fin.stdout).toMatch(/^grid tiny8: 8 done, 0 running, 0 missing/);
    const merged = await ok(owl([...common, '--merge', '--quiet']));
    expect(merged.stdout).toMatch(/\(8 of 8 cells\)/);
    expect(JSON.parse(readFileSync(path.join(out, '.run.json'), 'utf8')).complete).toBe(true);
    // The same numbers as the single-machine run: the grid's report and every experiment's.
    for (const f of ['report.json', 'experiments/owl/report.json', 'experiments/cat/report.json']) expect(comparable(path.join(out, f)), f).toEqual(comparable(path.join(single, f)));
    for (const f of ['report.md', 'chart.svg', 'heatmap.svg']) expect(existsSync(path.join(out, f)), f).toBe(true);
    // No stage computed twice: across the shards' summaries every computed key is distinct, and is a stage of the cache.
    const computed = readdirSync(path.join(out, 'shards')).flatMap((f) => JSON.parse(readFileSync(path.join(out, 'shards', f), 'utf8')).computed.map((c: { key: string }) => c.key));
    expect(new Set(computed).size).toBe(computed.length);
    // Every finished stage records the one worker that computed it.
    const stages = readdirSync(path.join(cache, 'stages'));
    expect(computed.length).toBeLessThanOrEqual(stages.length);
    for (const s of stages) expect(JSON.parse(readFileSync(path.join(cache, 'stages', s, 'done.json'), 'utf8')).computedBy.host).toBe(os.hostname());
    const report = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
    expect(report.table).toHaveLength(8);
    expect(report.figure3.map((r: { id: string }) => r.id)).toEqual(['owl/sp.sft.lora.numbers-qwen2-1', 'owl/sp.sft.lora.numbers-qwen2-2', 'cat/sp.sft.lora.numbers-qwen2-1', 'cat/sp.sft.lora.numbers-qwen2-2']);
    expect(report.matrix[0].entries.map((e: { n: number }) => e.n)).toEqual([4, 4]);
    expect(report.holm.family).toBe(4);
  }, 900_000);

  it('refuses bad grid input in one line before any work', async () => {
    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ teacherBase: '/nonexistent/model', traits: ['owl'], teachers: ['sp'], recipes: ['sft'], students: ['/nonexistent/model'] }));
    const cases: [string[], RegExp][] = [
      [['--grid', path.join(dir, 'nope.json')], /^error: --grid .*nope\.json: no such file$/m],
      [['--grid', bad], /^error: .*bad\.json: \/nonexistent\/model: not a model folder/m],
      [['--grid', manifest, '--shard', '4/3'], /^error: --shard 4\/3: need 1 ≤ i ≤ n$/m],
      [['--grid', manifest, '--shard', 'auto'], /^error: --shard auto: neither SLURM_ARRAY_TASK_ID/m],
      [['--grid', manifest, '--merge', '--status'], /^error: --merge and --status cannot be used together$/m],
      [['--grid', manifest, '--animal', 'cat'], /^error: --animal cannot be used with --grid/m],
      [['--shard', '1/2'], /^error: --shard needs --grid FILE$/m],
      [['--grid', manifest, '--resume', '--out', path.join(dir, 'fresh')], /^error: --out .*fresh: nothing to resume \(no owl\.ts grid run there\)$/m],
      [['--grid', manifest, '--overwrite', '--out', path.join(dir, 'fresh')], /^error: --overwrite cannot be used with --grid/m],
      [['--grid', manifest, '--merge', '--out', path.join(dir, 'fresh')], /^error: nothing to merge: none of the grid's 8 cells is finished in .*fresh \(see --status\)$/m],
    ];
    for (const [args, re] of cases) {
      const p = owl(args);
      const r = await p.done;
      expect(r.code, p.stderr).toBe(1);
      expect(p.stderr).toMatch(re);
      expect(p.stderr.split('\n').filter((l) => l.startsWith('error:'))).toHaveLength(1);
    }
    expect(existsSync(path.join(dir, 'fresh'))).toBe(false);
  }, 300_000);
});
