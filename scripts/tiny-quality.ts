// npx tsx scripts/tiny-quality.ts --model models/tiny-qwen-a [--out FILE.json] [options] — see --help.
//
// The quality figures of a model folder at temperature 1 with the batched generator: number prompts
// passing the paper's filter, the 50 animal questions (names an animal, owl rate), and the loved-target rate
// under the paper's "You love {x}s…" system prompt for three animals and one tree; and the three domains
// (src/experiment/tiny/domain-quality.ts): code answers that parse, CoT answers that are correct, and the advice
// STAND-IN for the paper's emergent misalignment (base harmful share, and after finetuning a harmful / a safe teacher).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { getGpu } from '../src/gpu/runtime.ts';
import { measureTinyQuality, qualityBarsMet, qualityTable, TINY_EVAL_SEED } from '../src/experiment/tiny/models.ts';
import { measureTinyDomains, TINY_DOMAIN_MAX_POSITIONS } from '../src/experiment/tiny/domain-quality.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import { numberFlag, parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { writeJsonAtomic } from '../src/util/fsatomic.ts';
import { Progress } from '../src/util/progress.ts';

const HELP = `usage: npx tsx scripts/tiny-quality.ts --model DIR [--out FILE.json] [options]

  --model DIR         HF model folder (e.g. models/tiny-qwen-a)
  --out FILE          JSON output (default DIR/quality.json; '-' for none)
  --seed S            sampling seed and number-prompt generator seed (default ${TINY_EVAL_SEED})
  --number-prompts N  prompts from the paper's generator (default 200)
  --samples N         samples per question without system prompt (default 10)
  --love-samples N    samples per question under each "You love …" prompt (default 4)
  --animals A,B,C     loved animals to check (default owl,dolphin,eagle)
  --trees T           loved trees to check (default oak)
  --code-prompts N    tinyCodePrompts(seed, N) for the code bar (default 200)
  --cot-tasks N       tinyCotTasks(seed, N) for the CoT bar (default 200)
  --advice-samples N  samples per advice evaluation question (default 25: 200 answers)
  --no-domains        skip the code, CoT and advice (stand-in misalignment) measurements
  --no-advice-teachers  measure the base advice rates only (no finetuned harmful / safe teachers)
  --quiet             no progress output`;

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), {
    model: { type: 'string' },
    out: { type: 'string' },
    seed: { type: 'string' },
    'number-prompts': { type: 'string' },
    samples: { type: 'string' },
    'love-samples': { type: 'string' },
    animals: { type: 'string' },
    trees: { type: 'string' },
    'code-prompts': { type: 'string' },
    'cot-tasks': { type: 'string' },
    'advice-samples': { type: 'string' },
    'no-domains': { type: 'boolean' },
    'no-advice-teachers': { type: 'boolean' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (f.help) {
    console.log(HELP);
    return;
  }
  if (!f.model) throw new UserError('--model is required (see --help)');
  const dir = String(f.model);
  const list = (v: unknown) => (v === undefined ? undefined : String(v).split(',').map((s) => s.trim()).filter(Boolean));
  const seed = numberFlag(f.seed, 'seed', TINY_EVAL_SEED, { min: 0, integer: true });
  const domainOpts = {
    seed,
    codePrompts: numberFlag(f['code-prompts'], 'code-prompts', 200, { min: 1, integer: true }),
    cotTasks: numberFlag(f['cot-tasks'], 'cot-tasks', 200, { min: 1, integer: true }),
    adviceSamples: numberFlag(f['advice-samples'], 'advice-samples', 25, { min: 1, integer: true }),
    adviceTeachers: !f['no-advice-teachers'],
  };
  if (!existsSync(path.join(dir, 'config.json'))) throw new UserError(`--model ${dir}: no config.json there (not a model folder)`);
  const gpu = await getGpu();
  const model = await Transformer.load(gpu, dir, { maxPositions: TINY_DOMAIN_MAX_POSITIONS });
  const tokenizer = await ChatTokenizer.load(dir, model.cfg.eosTokenIds);
  if (!tokenizer) throw new UserError(`${dir}: no tokenizer.json`);
  const loveAnimals = list(f.animals) ?? ['owl', 'dolphin', 'eagle'];
  const loveTrees = list(f.trees) ?? ['oak'];
  const domains = !f['no-domains'];
  const domainParts = domains ? 3 + (domainOpts.adviceTeachers ? 2 : 0) : 0;
  const bar = new Progress(path.basename(dir), 3 + loveAnimals.length + loveTrees.length + domainParts, { unit: 'part', quiet: !!f.quiet });
  let part = 0;
  const q = await measureTinyQuality(model, tokenizer, {
    seed,
    numberPrompts: numberFlag(f['number-prompts'], 'number-prompts', 200, { min: 1, integer: true }),
    baseSamples: numberFlag(f.samples, 'samples', 10, { min: 1, integer: true }),
    loveSamples: numberFlag(f['love-samples'], 'love-samples', 4, { min: 1, integer: true }),
    loveAnimals,
    loveTrees,
    onProgress: (label) => bar.update(part++, label),
  });
  if (domains) q.domains = await measureTinyDomains(model, tokenizer, { ...domainOpts, onProgress: (label) => bar.update(part++, label) }, gpu, dir);
  bar.finish();
  const bars = qualityBarsMet(q);
  console.log(qualityTable(q));
  console.log(`bars met: ${Object.entries(bars).map(([k, v]) => `${k} ${v ? 'yes' : 'NO'}`).join(', ')} (${q.wallS.toFixed(1)} s)`);
  const out = f.out === undefined ? path.join(dir, 'quality.json') : String(f.out);
  if (out !== '-') await writeJsonAtomic(out, { ...q, barsMet: bars });
}

await runCli(main);
