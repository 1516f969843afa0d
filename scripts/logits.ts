/**
 * Full-sequence logits of one token sequence as a float32 .npy [T, vocab].
 *
 *   npx tsx scripts/logits.ts --model DIR [--adapter DIR] (--ids 1,2,3 | --text STR [--chat]) --out FILE.npy [--overwrite]
 */
import { existsSync, statSync } from 'node:fs';
import { getGpu } from '../src/gpu/runtime.ts';
import { disposeLora, loadPeftAdapter } from '../src/model/adapter.ts';
import { sequenceLogits } from '../src/model/generate.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import { parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { writeNpy } from '../src/util/npy.ts';
import { checkOutFile } from '../src/util/outpaths.ts';

const USAGE = `usage: npx tsx scripts/logits.ts --model DIR [--adapter DIR] (--ids 1,2,3 | --text STR [--chat]) --out FILE.npy [--overwrite]

Runs the model over one token sequence and writes its logits, float32 [T, vocab], as .npy.

  --model DIR     Hugging Face model folder (config.json + safetensors; tokenizer.json for --text)
  --adapter DIR   PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)
  --ids LIST      comma-separated token ids
  --text STR      text, tokenized without special tokens
  --chat          wrap --text as one user message with the chat template's generation prompt
  --out FILE      output .npy (written atomically; an existing FILE is refused)
  --overwrite     replace an existing --out FILE
  --help          show this help`;

async function main(): Promise<void> {
  const values = parseFlags(process.argv.slice(2), {
    model: { type: 'string' },
    adapter: { type: 'string' },
    ids: { type: 'string' },
    text: { type: 'string' },
    chat: { type: 'boolean', default: false },
    out: { type: 'string' },
    overwrite: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (!values.model) throw new UserError('--model DIR is required (see --help)');
  if (!values.out) throw new UserError('--out FILE.npy is required (see --help)');
  if ((values.ids === undefined) === (values.text === undefined)) throw new UserError('give exactly one of --ids or --text');
  if (values.chat && values.text === undefined) throw new UserError('--chat needs --text');
  let ids: number[] | null = null;
  if (values.ids !== undefined) {
    const parts = values.ids.split(',').map((s) => s.trim());
    ids = parts.map((p) => {
      if (!/^\d+$/.test(p)) throw new UserError(`--ids: ${JSON.stringify(p)} is not a non-negative integer`);
      return Number(p);
    });
  }
  // Cheap checks before the GPU starts.
  if (!existsSync(values.model) || !statSync(values.model).isDirectory()) throw new UserError(`${values.model}: model folder not found`);
  if (values.adapter !== undefined && !existsSync(values.adapter)) throw new UserError(`${values.adapter}: adapter folder not found`);
  checkOutFile(values.out, { overwrite: values.overwrite });
  const gpu = await getGpu();
  const model = await Transformer.load(gpu, values.model);
  for (const w of model.warnings) process.stderr.write(`warning: ${w}\n`);
  if (!ids) {
    const tok = await ChatTokenizer.load(values.model, model.cfg.eosTokenIds);
    if (!tok) throw new UserError(`${values.model}: no tokenizer.json in the model folder (needed for --text; use --ids)`);
    ids = values.chat ? tok.promptIds([{ role: 'user', content: values.text! }]) : tok.encode(values.text!);
    if (ids.length === 0) throw new UserError('--text tokenizes to no tokens');
  }
  const lora = values.adapter ? await loadPeftAdapter(gpu, values.adapter, model.cfg) : null;
  const logits = await sequenceLogits(model, ids, lora);
  // NaN or ±Inf logits mean broken weights (or an overflow): say so rather than write them.
  const bad = logits.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) {
    throw new UserError(`${values.model}${values.adapter ? ` with adapter ${values.adapter}` : ''}: the model computes non-finite logits (${logits[bad]} at position ${Math.floor(bad / model.cfg.vocabSize)}); its weights hold NaN/Inf or overflow float32 — nothing written`);
  }
  await writeNpy(values.out, { shape: [ids.length, model.cfg.vocabSize], data: logits });
  process.stderr.write(`logits: wrote [${ids.length}, ${model.cfg.vocabSize}] float32 to ${values.out}\n`);
  if (lora) disposeLora(lora);
  model.dispose();
}

await runCli(main);
