// Browser vs Node on the same machine: MNIST distillation samples/s and tiny-model training tok/s
// (bench/web-workloads.ts, the same functions on both sides), in Node (the `webgpu` package, on this
// machine's adapter: lavapipe without a GPU) and in headless Chromium (navigator.gpu; by default
// SwiftShader, Chromium's CPU adapter: --enable-unsafe-webgpu --use-webgpu-adapter=swiftshader, or
// BENCH_WEB_FLAGS). Node and browser rounds alternate in one run; each figure is the median of the
// rounds, reported with the Node median as its baseline and the ratio browser / Node.
import os from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadMnistDigits } from '../src/experiment/mnist/data.ts';
import { adapterLabel } from '../src/gpu/device.ts';
import type { Gpu } from '../src/gpu/runtime.ts';
import { buildWeb } from '../src/web/build.ts';
import { serveStatic } from '../src/web/server.ts';
import { chromiumPath, launchBrowser } from '../tests/helpers/browser.ts';
import type { BenchOptions, BenchResult } from './types.ts';
import { mnistBench, MNIST_BENCH, tinyTrainBench, TRAIN_BENCH } from './web-workloads.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function benchWeb(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  if (!chromiumPath()) {
    console.error('bench: web: no Chromium (chromium-headless-shell) on this machine; skipped');
    return [];
  }
  const rounds = opts.quick ? 1 : 3;
  const flags = (process.env.BENCH_WEB_FLAGS ?? '--enable-unsafe-webgpu --use-webgpu-adapter=swiftshader').split(/\s+/).filter(Boolean);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'web-bench-'));
  const dir = path.join(tmp, 'web');
  const modelDir = path.join(ROOT, 'models', 'tiny-qwen-a');
  await buildWeb({ outDir: dir, models: [modelDir], extraEntries: { bench: path.join(ROOT, 'bench', 'web-entry.ts') } });
  writeFileSync(path.join(dir, 'bench.html'), '<!doctype html><meta charset="utf-8"><script type="module" src="bench.js"></script>');
  const server = await serveStatic(dir);
  const browser = await launchBrowser(flags);
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => console.error('bench: web: page error:', (e as Error)?.message ?? e));
    await page.goto(`${server.url}bench.html`);
    await page.waitForFunction('globalThis.__bench', { timeout: 60_000 });
    const browserAdapter = (await page.evaluate('globalThis.__bench.adapter()')) as GPUAdapterInfo;
    const data = loadMnistDigits();
    const res = { node: { distill: [] as number[], teacher: [] as number[], train: [] as number[] }, browser: { distill: [] as number[], teacher: [] as number[], train: [] as number[] } };
    const load: number[] = [];
    for (let r = 0; r < rounds; r++) {
      load.push(+os.loadavg()[0].toFixed(2));
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
      console.error(`bench: web: round ${r + 1}/${rounds}: distillation Node ${n1.distill.toFixed(0)} / browser ${b1.distill.toFixed(0)} samples/s; training Node ${n2.tokPerS.toFixed(0)} / browser ${b2.tokPerS.toFixed(0)} tok/s`);
    }
    const nodeAdapter = adapterLabel(gpu.info.adapterInfo);
    const details = {
      nodeAdapter,
      browserAdapter: adapterLabel(browserAdapter),
      browser: `${await browser.version()} ${flags.join(' ')}`,
      node: `Node ${process.version}, webgpu package (Dawn)`,
      rounds,
      loadavg1m: load,
    };
    const row = (name: string, unit: string, key: 'distill' | 'teacher' | 'train', workload: Record<string, unknown>): BenchResult => {
      const b = median(res.browser[key]);
      const n = median(res.node[key]);
      return { family: 'web', name: `${name}, browser (${details.browserAdapter})`, value: b, unit, baseline: { name: `Node (${nodeAdapter}), same run`, value: n, unit }, ratio: b / n, details: { ...details, workload, browserRounds: res.browser[key], nodeRounds: res.node[key] } };
    };
    return [
      row(`MNIST distillation (4 students + teacher forward on noise), ${MNIST_BENCH.models} model × ${MNIST_BENCH.noise} images, batch ${MNIST_BENCH.batchSize}`, 'samples/s', 'distill', { ...MNIST_BENCH }),
      row(`MNIST teacher training, ${MNIST_BENCH.models} model, batch ${MNIST_BENCH.batchSize}`, 'samples/s', 'teacher', { ...MNIST_BENCH }),
      row(`tiny-qwen-a full finetune, batch ${TRAIN_BENCH.batch} × ${TRAIN_BENCH.seqLen} tokens`, 'tok/s', 'train', { ...TRAIN_BENCH }),
    ];
  } finally {
    await browser.close();
    await server.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}
