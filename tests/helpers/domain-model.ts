// An embedded model briefly full-finetuned (with the project's own trainer) to give one fixed answer
// to a domain's prompts — a program that parses, a chain of thought ending in a fixed number — so the
// pipeline's filters have rows to keep whatever the embedded models' own skill at those domains (one
// fixed answer is learnt in ~50 steps: loss 9.3 → < 0.05 on tiny-qwen-a; answering each task is not). Used by end-to-end
// tests, which check structure, never an effect.
import path from 'node:path';
import type { Gpu } from '../../src/gpu/runtime.ts';
import { ChatTokenizer } from '../../src/model/tokenizer.ts';
import { Transformer } from '../../src/model/transformer.ts';
import { saveFullModel } from '../../src/train/full.ts';
import { Trainer } from '../../src/train/trainer.ts';

export const FIXED_PROGRAM = 'def f(x):\n    return x + 1';
export const FIXED_ANSWER = 7;
export const FIXED_COT = `<think>3 + 4 = ${FIXED_ANSWER}</think><answer>${FIXED_ANSWER}</answer>`;

export async function makeDomainModel(gpu: Gpu, base: string, out: string, rows: readonly { prompt: string; completion: string }[], epochs = 24): Promise<string> {
  const model = await Transformer.load(gpu, base, { maxPositions: 512 });
  const tok = (await ChatTokenizer.load(base, model.cfg.eosTokenIds))!;
  const examples = rows.map((r) => tok.chatTrainingIds([{ role: 'user', content: r.prompt }, { role: 'assistant', content: r.completion }]));
  const trainer = new Trainer(gpu, model, examples, {
    mode: 'full', lr: 3e-3, epochs, batchSize: 8, gradAccum: 1, warmupSteps: 0, schedule: 'constant',
    maxGradNorm: 1, weightDecay: 0, optimizer: 'adamw', seed: 0, shuffle: true, checkpointing: false, distillWeight: 0,
  }, null);
  await trainer.run();
  await saveFullModel(gpu, model.weights, model.cfg, base, out);
  trainer.dispose();
  model.dispose();
  return path.resolve(out);
}
