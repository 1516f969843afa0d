/**
 * Batched sampling from a model (optionally with a PEFT LoRA adapter), one JSON line per completion.
 *
 *   npx tsx scripts/generate.ts --model DIR [--adapter DIR] [--system STR] (--prompt STR | --prompts FILE.jsonl)
 *     [--n N] [--temperature T] [--top-p P] [--greedy] [--max-new-tokens N] [--seed S] [--batch-size B] [--out FILE.jsonl [--overwrite]]
 */
import { existsSync, statSync } from 'node:fs';
import { getGpu } from '../src/gpu/runtime.ts';
import { disposeLora, loadPeftAdapter } from '../src/model/adapter.ts';
import { generate } from '../src/model/generate.ts';
import { ChatTokenizer, type ChatMessage } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import { numberFlag, parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { writeFileAtomic } from '../src/util/fsatomic.ts';
import { readJsonlFile } from '../src/util/jsonl.ts';
import { checkOutFile } from '../src/util/outpaths.ts';
import { Progress } from '../src/util/progress.ts';

const USAGE = `usage: npx tsx scripts/generate.ts --model DIR [--adapter DIR] [--system STR] (--prompt STR | --prompts FILE.jsonl)
         [--n N] [--temperature T] [--top-p P] [--greedy] [--max-new-tokens N] [--seed S] [--batch-size B] [--out FILE.jsonl [--overwrite]]

Samples completions with the model's chat template and writes one JSON line per completion:
  {"prompt", "completion", "prompt_tokens", "completion_tokens", "finish_reason", "index", "sample"}
(index = prompt line, sample = 0..n-1; rows with "messages" also echo them).

  --model DIR            Hugging Face model folder (config.json, safetensors, tokenizer.json)
  --adapter DIR          PEFT LoRA adapter folder
  --system STR           system message put before each prompt (not for "messages" rows)
  --prompt STR           one user prompt
  --prompts FILE         JSONL, one {"prompt": "..."} or {"messages": [{"role", "content"}, ...]} per line
  --n N                  samples per prompt (default 1)
  --temperature T        softmax temperature ≥ 0 (default 1; 0 = greedy)
  --top-p P              nucleus mass in (0, 1] (default 1)
  --greedy               argmax decoding
  --max-new-tokens N     default 256
  --seed S               integer seed (default 0); (seed, prompt, sample, step) fixes every token
  --batch-size B         sequences decoded together (default 64)
  --out FILE             write JSONL atomically to FILE instead of stdout (an existing FILE is refused)
  --overwrite            replace an existing --out FILE
  --help                 show this help`;

interface PromptRow {
  prompt: string;
  messages: ChatMessage[] | null;
}

function readPrompts(file: string): PromptRow[] {
  const rows: PromptRow[] = [];
  readJsonlFile(file).forEach(({ line, value: obj }) => {
    const where = `${file}:${line}`;
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new UserError(`${where}: expected a JSON object with "prompt" or "messages"`);
    const o = obj as Record<string, unknown>;
    if (typeof o.prompt === 'string') {
      rows.push({ prompt: o.prompt, messages: null });
      return;
    }
    if (Array.isArray(o.messages) && o.messages.length > 0) {
      const messages = o.messages.map((m, j) => {
        const mm = m as Record<string, unknown>;
        if (typeof m !== 'object' || m === null || !['system', 'user', 'assistant'].includes(mm.role as string) || typeof mm.content !== 'string') {
          throw new UserError(`${where}: messages[${j}] must be {"role": "system"|"user"|"assistant", "content": "..."}`);
        }
        return { role: mm.role, content: mm.content } as ChatMessage;
      });
      const lastUser = [...messages].reverse().find((m) => m.role === 'user');
      rows.push({ prompt: lastUser?.content ?? messages[messages.length - 1].content, messages });
      return;
    }
    throw new UserError(`${where}: expected a string "prompt" or a non-empty "messages" list`);
  });
  if (rows.length === 0) throw new UserError(`${file}: no prompts`);
  return rows;
}

async function main(): Promise<void> {
  const values = parseFlags(process.argv.slice(2), {
    model: { type: 'string' },
    adapter: { type: 'string' },
    system: { type: 'string' },
    prompt: { type: 'string' },
    prompts: { type: 'string' },
    n: { type: 'string' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    greedy: { type: 'boolean', default: false },
    'max-new-tokens': { type: 'string' },
    seed: { type: 'string' },
    'batch-size': { type: 'string' },
    out: { type: 'string' },
    overwrite: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (!values.model) throw new UserError('--model DIR is required (see --help)');
  if ((values.prompt === undefined) === (values.prompts === undefined)) throw new UserError('give exactly one of --prompt or --prompts');
  const n = numberFlag(values.n, 'n', 1, { min: 1, integer: true });
  const temperature = numberFlag(values.temperature, 'temperature', 1, { min: 0 });
  const topP = numberFlag(values['top-p'], 'top-p', 1, { min: 0, exclusiveMin: true, max: 1 });
  const maxNewTokens = numberFlag(values['max-new-tokens'], 'max-new-tokens', 256, { min: 0, integer: true });
  const seed = numberFlag(values.seed, 'seed', 0, { min: 0, max: 2 ** 53 - 1, integer: true });
  const batchSize = numberFlag(values['batch-size'], 'batch-size', 64, { min: 1, integer: true });
  if (values.greedy && values.temperature !== undefined) throw new UserError('give --greedy or --temperature, not both');
  if (values.overwrite && values.out === undefined) throw new UserError('--overwrite replaces the --out file; give --out');
  const rows = values.prompts !== undefined ? readPrompts(values.prompts) : [{ prompt: values.prompt!, messages: null }];

  // Cheap checks before the GPU starts.
  if (!existsSync(values.model) || !statSync(values.model).isDirectory()) throw new UserError(`${values.model}: model folder not found`);
  if (values.adapter !== undefined && !existsSync(values.adapter)) throw new UserError(`${values.adapter}: adapter folder not found`);
  if (values.out !== undefined) checkOutFile(values.out, { overwrite: values.overwrite });
  const gpu = await getGpu();
  const model = await Transformer.load(gpu, values.model);
  for (const w of model.warnings) process.stderr.write(`warning: ${w}\n`);
  const tok = await ChatTokenizer.load(values.model, model.cfg.eosTokenIds);
  if (!tok) throw new UserError(`${values.model}: no tokenizer.json in the model folder`);
  const requests = rows.map((r) => {
    const messages: ChatMessage[] = r.messages ?? [...(values.system !== undefined ? [{ role: 'system' as const, content: values.system }] : []), { role: 'user', content: r.prompt }];
    return { promptIds: tok.promptIds(messages) };
  });
  const lora = values.adapter ? await loadPeftAdapter(gpu, values.adapter, model.cfg) : null;
  const stopIds = [...new Set([...tok.stopIds, ...model.cfg.eosTokenIds])];
  const progress = new Progress('generate', requests.length * n, { unit: 'seq' });
  const results = await generate(model, requests, {
    n, temperature, topP, greedy: values.greedy, maxNewTokens, seed, batchSize, stopIds, lora,
    modelName: `${values.model}${values.adapter ? ` with adapter ${values.adapter}` : ''}`,
    onProgress: (p) => progress.update(p.done, `batch ${p.batch}/${p.batches}, ${p.tokens} tokens`),
  });
  progress.finish();
  const lines = results.map((r) => {
    const row = rows[r.requestIndex];
    return JSON.stringify({
      prompt: row.prompt,
      ...(row.messages ? { messages: row.messages } : {}),
      completion: tok.decode(r.completionIds),
      prompt_tokens: r.promptTokens,
      completion_tokens: r.completionTokens,
      finish_reason: r.finishReason,
      index: r.requestIndex,
      sample: r.sampleIndex,
    });
  });
  const text = lines.join('\n') + '\n';
  if (values.out) await writeFileAtomic(values.out, text);
  else await new Promise<void>((resolve, reject) => process.stdout.write(text, (e) => (e ? reject(e) : resolve())));
  if (lora) disposeLora(lora);
  model.dispose();
}

await runCli(main);
