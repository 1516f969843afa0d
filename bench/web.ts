// Browser vs Node on the same machine and adapter kind: MNIST distillation samples/s and tiny-model
// training tok/s (bench/web-workloads.ts), in Node (the `webgpu` package) and in headless Chromium
// (navigator.gpu), alternating Node / browser rounds in one run; the ratio browser / Node of the
// medians goes to bench/results/web.json and the README.
//
//   npx tsx bench/web.ts [--rounds N] [--browser-flags "..."]   (default: SwiftShader, the CPU adapter)
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadMnistDigits } from '../src/experiment/mnist/data.ts';
import { adapterLabel } from '../src/gpu/device.ts';
import { getGpu } from '../src/gpu/runtime.ts';
import { numberFlag, parseFlags } from '../src/util/cli.ts';
import { runCli } from '../src/util/errors.ts';
import { buildWeb } from '../src/web/build.ts';
import { serveStatic } from '../src/web/server.ts';
import { launchBrowser } from '../tests/helpers/browser.ts';
import { mnistBench, tinyTrainBench, MNIST_BENCH, TRAIN_BENCH } from './web-workloads.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), { rounds: { type: 'string' }, 'browser-flags': { type: 'string' }, out: { type: 'string' } });
  const rounds = numberFlag(f.rounds, 'rounds', 3, { min: 1, integer: true });
  const flags = String(f['browser-flags'] ?? '--enable-unsafe-webgpu --use-webgpu-adapter=swiftshader').split(/\s+/).filter(Boolean);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'web-bench-'));
  await buildWeb({ outDir: dir, models: [path.join(ROOT, 'models', 'tiny-qwen-a')], extraEntries: { bench: path.join(ROOT, 'bench', 'web-entry.ts') } });
  writeFileSync(path.join(dir, 'bench.html'), '<!doctype html><meta charset="utf-8"><script type="module" src="bench.js"></script>');
  const server = await serveStatic(dir);
  const browser = await launchBrowser(flags);
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page error:', (e as Error).message));
  await page.goto(`${server.url}bench.html`);
  await page.waitForFunction('globalThis.__bench');
  const gpu = await getGpu({ log: false });
  const data = loadMnistDigits();
  const modelDir = path.join(ROOT, 'models', 'tiny-qwen-a');
  const browserAdapter = (await page.evaluate('globalThis.__bench.adapter()')) as { vendor: string; architecture: string; description: string };
  const res = { node: { distill: [] as number[], teacher: [] as number[], train: [] as number[] }, browser: { distill: [] as number[], teacher: [] as number[], train: [] as number[] } };
  const load: number[] = [];
  for (let r = 0; r < rounds; r++) {
    load.push(os.loadavg()[0]);
    const n1 = await mnistBench(gpu, data);
    const b1 = (await page.evaluate("globalThis.__bench.run('mnist')")) as { distill: number; teacher: number };
    const n2 = await tinyTrainBench(gpu, modelDir);
    const b2 = (await page.evaluate("globalThis.__bench.run('train')")) as { tokPerS: number };
    res.node.distill.push(n1.distill);
    res.node.teacher.push(n1.teacher);
    res.node.train.push(n2.tokPerS);
    res.browser.distill.push(b1.distill);
    res.browser.teacher.push(b1.teacher);
    res.browser.train.push(b2.tokPerS);
    console.error(`round ${r + 1}/${rounds}: distill node ${n1.distill.toFixed(0)} / browser ${b1.distill.toFixed(0)} samples/s; train node ${n2.tokPerS.toFixed(0)} / browser ${b2.tokPerS.toFixed(0)} tok/s`);
  }
  await browser.close();
  await server.close();
  const m = (xs: number[]) => +median(xs).toFixed(1);
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavg1m: load },
    node: { adapter: adapterLabel(gpu.info.adapterInfo), runtime: `Node ${process.version}, webgpu package (Dawn)` },
    browser: { adapter: adapterLabel(browserAdapter), runtime: `${await browser.version()} ${flags.join(' ')}` },
    workloads: { mnist: { ...MNIST_BENCH, metric: 'distillation: noise images × models per second through 4 students + the teacher forward (seconds.students)' }, train: { ...TRAIN_BENCH, model: 'tiny-qwen-a', mode: 'full finetune' } },
    rounds,
    medians: {
      mnistDistillSamplesPerS: { node: m(res.node.distill), browser: m(res.browser.distill), ratio: +(median(res.browser.distill) / median(res.node.distill)).toFixed(3) },
      mnistTeacherSamplesPerS: { node: m(res.node.teacher), browser: m(res.browser.teacher), ratio: +(median(res.browser.teacher) / median(res.node.teacher)).toFixed(3) },
      tinyTrainTokPerS: { node: m(res.node.train), browser: m(res.browser.train), ratio: +(median(res.browser.train) / median(res.node.train)).toFixed(3) },
    },
    raw: res,
  };
  const file = path.resolve(String(f.out ?? path.join(ROOT, 'bench', 'results', 'web.json')));
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  console.log(JSON.stringify(out.medians, null, 2));
  console.log(`wrote ${file}`);
}

await runCli(main);
