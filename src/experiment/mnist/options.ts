// The MNIST experiment's options as flags (scripts/mnist.ts is its CLI).
import { choiceFlag, numberFlag, parseFlags, requiredFlag } from '../../util/cli.ts';
import { UserError } from '../../util/errors.ts';
import type { DatasetName } from './data.ts';
import type { MnistConfig } from './experiment.ts';

export interface MnistCliOptions {
  config: Partial<MnistConfig>;
  dataset: DatasetName;
  dataDir?: string;
  name?: string;
  out?: string;
}

const FLAGS = {
  models: { type: 'string' },
  'epochs-teacher': { type: 'string' },
  'epochs-student': { type: 'string' },
  lr: { type: 'string' },
  'batch-size': { type: 'string' },
  aux: { type: 'string' },
  noise: { type: 'string' },
  seed: { type: 'string' },
  hidden: { type: 'string' },
  'group-size': { type: 'string' },
  dataset: { type: 'string' },
  'data-dir': { type: 'string' },
  name: { type: 'string' },
  out: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Parses argv (without node and script); null for --help. Every bad value is a one-line UserError. */
export function parseMnistArgs(argv: string[]): MnistCliOptions | null {
  const f = parseFlags(argv, FLAGS);
  if (f.help) return null;
  const o: MnistCliOptions = { config: {}, dataset: choiceFlag(f.dataset, 'dataset', ['mnist', 'fashion'] as const, 'mnist') };
  const int = (name: keyof typeof FLAGS, min: number) => (f[name] === undefined ? undefined : numberFlag(f[name], name, 0, { min, integer: true }));
  const set = <K extends keyof MnistConfig>(k: K, v: MnistConfig[K] | undefined) => {
    if (v !== undefined) o.config[k] = v;
  };
  set('models', int('models', 1));
  // An untrained teacher or student measures nothing: at least one epoch each.
  set('epochsTeacher', int('epochs-teacher', 1));
  set('epochsStudent', int('epochs-student', 1));
  set('lr', f.lr === undefined ? undefined : numberFlag(f.lr, 'lr', 0, { min: 0, exclusiveMin: true }));
  set('batchSize', int('batch-size', 1));
  set('aux', int('aux', 1));
  set('noise', int('noise', 1));
  set('seed', int('seed', 0));
  set('hidden', int('hidden', 1));
  set('groupSize', int('group-size', 1));
  if (f['data-dir'] !== undefined) {
    if (o.dataset !== 'fashion') throw new UserError('--data-dir is the Fashion-MNIST folder; it needs --dataset fashion');
    o.dataDir = f['data-dir'];
  }
  if (f.name !== undefined) {
    if (!/^[A-Za-z0-9._-]+$/.test(f.name)) throw new UserError(`--name must be letters, digits, '.', '_' or '-', got '${f.name}'`);
    if (f.out !== undefined) throw new UserError('give --name or --out, not both');
    o.name = f.name;
  }
  if (f.out !== undefined) o.out = requiredFlag(f.out, 'out');
  return o;
}

