// The browser side of bench/web.ts: the same workloads on navigator.gpu, files from the page's folder.
import { mnistDigitsDataset, parseMnistDigitsFile } from '../src/experiment/mnist/data.ts';
import { Gpu } from '../src/gpu/runtime.ts';
import { fsys, useFileSystem } from '../src/util/files.ts';
import { MemoryFileSystem } from '../src/util/files-memory.ts';
import { mnistBench, tinyTrainBench } from './web-workloads.ts';

useFileSystem(new MemoryFileSystem());

async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function run(which: 'mnist' | 'train') {
  const gpu = await Gpu.create({ log: false });
  try {
    if (which === 'mnist') return await mnistBench(gpu, mnistDigitsDataset(parseMnistDigitsFile(await bytes('data/mnist-digits.bin'))));
    fsys().mkdir('/models/tiny-qwen-a');
    for (const f of ['config.json', 'model.safetensors']) fsys().writeFile(`/models/tiny-qwen-a/${f}`, await bytes(`models/tiny-qwen-a/${f}`));
    return await tinyTrainBench(gpu, '/models/tiny-qwen-a');
  } finally {
    gpu.destroy();
  }
}

(globalThis as { __bench?: unknown }).__bench = { run, adapter: async () => { const g = await Gpu.create({ log: false }); const a = g.info.adapterInfo; g.destroy(); return a; } };
