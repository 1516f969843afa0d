// Wall time of an 8-cell tiny grid (2 traits × sp/control × 2 students, 2 seeds; tests/owl-grid-cluster's
// manifest) run by 1 worker (owl.ts --grid --shard 1/1) and by 2 workers on one machine and one shared
// cache (--shard 1/2 and 2/2 at once), each from an empty cache, process start included, repeated with
// the order alternating. Writes bench/results/grid-workers.json.
//   npx tsx bench/grid-workers.ts [--reps N]
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getGpu } from '../src/gpu/runtime.ts';
import { cachedNumberModel } from '../tests/helpers/number-model.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const reps = Number(process.argv[process.argv.indexOf('--reps') + 1] || 3);

function owl(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts', 'owl.ts'), ...args, '--quiet'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`owl.ts ${args.join(' ')}: ${err.slice(-500)}`))));
  });
}

const gpu = await getGpu();
const a = await cachedNumberModel(gpu, 1);
const b = await cachedNumberModel(gpu, 2);
const dir = mkdtempSync(path.join(os.tmpdir(), 'grid-workers-'));
const manifest = path.join(dir, 'tiny8.json');
writeFileSync(manifest, JSON.stringify({
  name: 'tiny8', teacherBase: a, traits: ['owl', 'cat'], seeds: [0, 1],
  settings: { prompts: 16, keep: 8, maxNewTokens: 12, maxLen: 400, genBatchSize: 32, evalSamples: 2, evalQuestionLimit: 3, doseResponse: false },
  teachers: ['sp'], recipes: ['sft'], students: [a, b], studentModes: ['lora'], train: { lr: 1e-3, epochs: 1, batchSize: 4, rank: 2, alpha: 4 },
}));
const runs: { workers: number; wallS: number; load: number }[] = [];
const time = async (workers: number, k: number) => {
  const out = path.join(dir, `w${workers}-${k}`);
  const common = ['--grid', manifest, '--out', out, '--cache', path.join(dir, `cache-w${workers}-${k}`)];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: workers }, (_, i) => owl([...common, '--shard', `${i + 1}/${workers}`])));
  const wallS = (performance.now() - t0) / 1000;
  runs.push({ workers, wallS, load: os.loadavg()[0] });
  console.log(`${workers} worker(s): ${wallS.toFixed(1)} s (load ${os.loadavg()[0].toFixed(1)})`);
};
for (let k = 0; k < reps; k++) {
  for (const w of k % 2 ? [2, 1] : [1, 2]) await time(w, k);
}
const median = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)];
const one = median(runs.filter((r) => r.workers === 1).map((r) => r.wallS));
const two = median(runs.filter((r) => r.workers === 2).map((r) => r.wallS));
const result = { what: '8-cell tiny grid, 1 worker vs 2 workers on one machine and one shared cache', cpus: os.cpus().length, adapter: 'see webgpu line', reps, runs, medianS: { oneWorker: one, twoWorkers: two }, ratio: one / two };
writeFileSync(path.join(ROOT, 'bench', 'results', 'grid-workers.json'), JSON.stringify(result, null, 2) + '\n');
console.log(`median: 1 worker ${one.toFixed(1)} s, 2 workers ${two.toFixed(1)} s, ratio ${(one / two).toFixed(2)}`);
