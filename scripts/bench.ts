// npm run bench [-- --quick] [--only matmul,loss] [--out bench/results]
// Runs every benchmark family present in bench/, writes bench/results/<family>.json (with the machine
// and adapter) and prints a table. Figures come with the ratio to a baseline measured in the same run.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { getGpu } from '../src/gpu/runtime.ts';
import { writeFileAtomic } from '../src/util/fsatomic.ts';
import type { BenchOptions, BenchResult } from '../bench/types.ts';

const FAMILIES: { family: string; file: string; fn: string }[] = [
  { family: 'runtime', file: 'runtime.ts', fn: 'benchRuntime' },
  { family: 'matmul', file: 'matmul.ts', fn: 'benchMatmul' },
  { family: 'rowwise', file: 'rowwise.ts', fn: 'benchRowwise' },
  { family: 'attention', file: 'attention.ts', fn: 'benchAttention' },
  { family: 'loss', file: 'loss.ts', fn: 'benchLoss' },
  { family: 'mnist', file: 'mnist.ts', fn: 'benchMnist' },
  { family: 'model', file: 'model.ts', fn: 'benchModel' },
  { family: 'train', file: 'train.ts', fn: 'benchTrain' },
  { family: 'students', file: 'students.ts', fn: 'benchStudents' },
  { family: 'web', file: 'web.ts', fn: 'benchWeb' },
];

const HELP = `usage: npm run bench -- [--quick] [--only FAMILY,...] [--out DIR] [--table]
Runs the WebGPU benchmarks and writes DIR/<family>.json (default bench/results).
--table prints the results already in DIR as one markdown table (no benchmark is run).
Families: ${FAMILIES.map((f) => f.family).join(', ')}`;

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        out: { type: 'string', default: 'bench/results' },
        table: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    process.exit(2);
  }
  if (args.help) {
    console.log(HELP);
    return;
  }
  if (args.table) {
    printTable(args.out);
    return;
  }
  const only = args.only ? new Set(args.only.split(',')) : null;
  if (only) {
    for (const f of only) {
      if (!FAMILIES.some((x) => x.family === f)) {
        console.error(`error: unknown benchmark family '${f}' (known: ${FAMILIES.map((x) => x.family).join(', ')})`);
        process.exit(2);
      }
    }
  }
  const gpu = await getGpu();
  const opts: BenchOptions = { quick: args.quick };
  const machine = {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    adapter: `${gpu.info.adapterInfo.vendor} ${gpu.info.adapterInfo.architecture} ${gpu.info.adapterInfo.description}`.trim(),
    software: gpu.isSoftware,
    poll: gpu.info.poll,
    date: new Date().toISOString(),
  };
  mkdirSync(args.out, { recursive: true });
  const rows: BenchResult[] = [];
  for (const f of FAMILIES) {
    if (only && !only.has(f.family)) continue;
    const file = path.join(import.meta.dirname, '..', 'bench', f.file);
    if (!existsSync(file)) continue;
    const mod = (await import(file)) as Record<string, (g: typeof gpu, o: BenchOptions) => Promise<BenchResult[]>>;
    const fn = mod[f.fn];
    if (typeof fn !== 'function') continue;
    console.error(`bench: ${f.family}…`);
    const t0 = performance.now();
    const results = await fn(gpu, opts);
    const wallS = (performance.now() - t0) / 1000;
    await writeFileAtomic(path.join(args.out, `${f.family}.json`), JSON.stringify({ machine, quick: args.quick, wallS, results }, null, 2) + '\n');
    rows.push(...results);
    for (const r of results) console.log(formatRow(r));
  }
}

/** One markdown table of every result file in dir, with the machine each was measured on. */
function printTable(dir: string): void {
  if (!existsSync(dir)) throw new Error(`${dir}: no benchmark results (run npm run bench first)`);
  console.log('| family | what | figure | baseline (same run) | ratio | machine, date |');
  console.log('|---|---|---|---|---|---|');
  for (const f of FAMILIES) {
    const file = path.join(dir, `${f.family}.json`);
    if (!existsSync(file)) continue;
    const data = JSON.parse(readFileSync(file, 'utf8')) as { machine: { adapter: string; cores: number; date: string }; quick: boolean; results: BenchResult[] };
    const m = `${data.machine.adapter.split(':')[0]}, ${data.machine.cores} cores, ${data.machine.date.slice(0, 10)}${data.quick ? ' (quick)' : ''}`;
    for (const r of data.results) {
      const base = r.baseline ? `${r.baseline.name}: ${fmt(r.baseline.value)} ${r.baseline.unit}` : '';
      console.log(`| ${r.family} | ${r.name} | ${fmt(r.value)} ${r.unit} | ${base} | ${r.ratio !== undefined ? '×' + fmt(r.ratio) : ''} | ${m} |`);
    }
  }
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function formatRow(r: BenchResult): string {
  const base = r.baseline ? ` | ${r.baseline.name}: ${fmt(r.baseline.value)} ${r.baseline.unit}` : '';
  const ratio = r.ratio !== undefined ? ` | ×${fmt(r.ratio)}` : '';
  return `| ${r.family} | ${r.name} | ${fmt(r.value)} ${r.unit}${base}${ratio} |`;
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    if (process.env.DEBUG) console.error(err);
    process.exit(1);
  },
);
