// npx tsx scripts/pretrain-tiny.ts [--only tiny-qwen-a,...] [--out models] [--work runs/tiny-pretrain] [--resume] — see --help.
//
// Rebuilds the embedded tiny chat models from seeds (the pipeline is src/experiment/tiny/pretrain.ts): synthetic
// corpus → byte-level BPE tokenizer (shared) → seeded initial weights → full pretraining → HF folder in
// OUT/<name>/ → quality measurement → README.md model card.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { TINY_MODEL_NAMES, type TinyModelName } from '../src/experiment/tiny/models.ts';
import { pretrainAll } from '../src/experiment/tiny/pretrain.ts';
import { numberFlag, parseFlags, requiredFlag } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { checkOutDir } from '../src/util/outpaths.ts';
import { runLock } from '../src/util/runfolder.ts';

const HELP = `usage: npx tsx scripts/pretrain-tiny.ts [--only NAMES] [--out DIR] [--work DIR] [--continue-from DIR] [--resume] [--skip-quality] [--quiet]

Rebuilds the embedded tiny chat models from seeds (corpus, tokenizer, init, pretraining, quality, model card).
The models committed in models/ were built by the first five phases of this recipe on the 2-core lavapipe machine (the
machine line of each model card); a rebuild on another adapter differs in rounding, so it is another draw of the recipe
whose number and naming figures can differ by a few points (docs/tiny-models-recipe.md). The five phases take 34 min for a
qwen model alone on that machine (measured) and ~45 for the llama; the sixth and seventh (domains, domains-focus)
phases, ~11 and ~8 min for a qwen, are in models/domains only (their figures: docs/tiny-models-recipe.md). Use --out
elsewhere to compare without overwriting them.

  --only NAMES     comma-separated subset of ${TINY_MODEL_NAMES.join(',')} (default: all, one after another)
  --out DIR        where the HF folders go (default models)
  --work DIR       corpus, tokenizer, initial weights, resumable training state (default runs/tiny-pretrain)
  --continue-from DIR
                   continued pretraining: start each model from DIR/<name> (e.g. models) after the phases its
                   training.json lists (models/: 5, models/domains: 7) and train only the recipe's later phases;
                   DIR's tokenizer must be this recipe's. models/domains was made in two steps, each copied from
                   --out after checking it: --continue-from models (phase 6, when the recipe had six), then
                   --continue-from models/domains --out runs/tiny-v18b/out --work runs/tiny-v18b (phase 7)
  --resume         continue each model from its last saved state in --work (after a kill): finished phases
                   are kept, the running one resumes from its last 50-step checkpoint (refused when its
                   training settings or data changed, and when --work holds no training state); without it
                   every phase trains again from the start, replacing the state in --work
  --skip-quality   train and save only (no quality measurement; the model card says so)
  --max-steps N    stop each phase after N optimizer steps (smoke tests and speed checks; each phase's
                   schedule is fitted to N steps)
  --quiet          no progress output`;

function readdirSafe(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), {
    only: { type: 'string' },
    out: { type: 'string' },
    work: { type: 'string' },
    resume: { type: 'boolean' },
    'skip-quality': { type: 'boolean' },
    'max-steps': { type: 'string' },
    'continue-from': { type: 'string' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (f.help) {
    console.log(HELP);
    return;
  }
  const names = f.only !== undefined ? String(f.only).split(',').map((s) => s.trim()).filter(Boolean) : [...TINY_MODEL_NAMES];
  if (names.length === 0) throw new UserError(`--only: give at least one of ${TINY_MODEL_NAMES.join(', ')}`);
  for (const n of names) if (!TINY_MODEL_NAMES.includes(n as TinyModelName)) throw new UserError(`--only: unknown model '${n}' (known: ${TINY_MODEL_NAMES.join(', ')})`);
  const out = f.out !== undefined ? requiredFlag(f.out, 'out') : 'models';
  const work = f.work !== undefined ? requiredFlag(f.work, 'work') : 'runs/tiny-pretrain';
  const maxSteps = f['max-steps'] === undefined ? undefined : numberFlag(f['max-steps'], 'max-steps', 1, { min: 1, integer: true });
  const quiet = !!f.quiet;
  const continueFrom = f['continue-from'] === undefined ? undefined : requiredFlag(f['continue-from'], 'continue-from');
  if (continueFrom !== undefined) {
    for (const n of names) if (!existsSync(path.join(continueFrom, n, 'model.safetensors'))) throw new UserError(`--continue-from ${continueFrom}: no ${n}/model.safetensors there`);
    if (path.resolve(continueFrom) === path.resolve(out)) throw new UserError('--continue-from and --out are the same folder: write the continued models elsewhere and copy them after checking them');
  }
  // --resume continues this tool's own training state, so there must be some (phase folders in --work).
  if (f.resume && !names.some((n) => readdirSafe(path.join(work, n)).some((e) => e.startsWith('phase-')))) throw new UserError(`--work ${work}: nothing to resume (no pretrain-tiny.ts training state there for ${names.join(', ')})`);
  // Both folders are checked before the corpus is written; one run at a time per work folder.
  checkOutDir(out, '--out');
  checkOutDir(work, '--work');
  const { lock } = await runLock(work, 'pretrain-tiny.ts');
  try {
    await pretrainAll(names as TinyModelName[], out, work, maxSteps, !!f.resume, !!f['skip-quality'], quiet, continueFrom);
  } finally {
    await lock.release();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await runCli(main);
