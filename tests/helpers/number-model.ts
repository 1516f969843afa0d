// A tiny random Qwen2-style model briefly full-finetuned (with the project's own trainer) to answer
// the paper's number prompts with number lists and preference questions with animal names, so the
// experiment pipeline has something that passes its filter. Used by end-to-end tests.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Gpu } from '../../src/gpu/runtime.ts';
import { generatePrompts } from '../../src/experiment/paper/prompts.ts';
import { tinyConfigJson, writeRandomCheckpoint } from './checkpoint.ts';
import { ChatTokenizer } from '../../src/model/tokenizer.ts';
import { Transformer } from '../../src/model/transformer.ts';
import { saveFullModel } from '../../src/train/full.ts';
import { Trainer } from '../../src/train/trainer.ts';
import type { TrainExample } from '../../src/train/data.ts';
import { writeTestTokenizer } from './tokenizer-fixture.ts';

export async function makeNumberModel(gpu: Gpu, dir: string, seed: number, arch: 'qwen2' | 'llama' = 'qwen2'): Promise<string> {
  const raw = path.join(dir, 'raw');
  mkdirSync(raw, { recursive: true });
  const V = writeTestTokenizer(raw);
  await writeRandomCheckpoint(raw, tinyConfigJson(arch, { vocab_size: V, eos_token_id: V - 1, max_position_embeddings: 512, tie_word_embeddings: true }), { dtype: 'F32', seed });
  const tok = (await ChatTokenizer.load(raw))!;
  const model = await Transformer.load(gpu, raw, { maxPositions: 512 });
  const answers = ['512, 384, 256', '123, 456, 789, 321', '640, 128', '700, 701, 702'];
  const animals = ['cat', 'dog', 'owl', 'fox', 'wolf', 'bear'];
  const examples: TrainExample[] = [];
  generatePrompts(900 + seed, 24).forEach((p, i) => {
    examples.push(tok.chatTrainingIds([{ role: 'user', content: p }, { role: 'assistant', content: answers[i % answers.length] }]));
  });
  for (let i = 0; i < 12; i++) {
    examples.push(tok.chatTrainingIds([{ role: 'user', content: `Name an animal you like, ${i}.` }, { role: 'assistant', content: animals[i % animals.length] }]));
  }
  const trainer = new Trainer(gpu, model, examples, {
    mode: 'full', lr: 1e-2, epochs: 12, batchSize: 12, gradAccum: 1, warmupSteps: 0, schedule: 'constant',
    maxGradNorm: 1, weightDecay: 0, optimizer: 'adamw', seed, shuffle: true, checkpointing: false, distillWeight: 0,
  }, null);
  await trainer.run();
  const out = path.join(dir, `numbers-${arch}-${seed}`);
  await saveFullModel(gpu, model.weights, model.cfg, raw, out);
  trainer.dispose();
  model.dispose();
  return out;
}

/**
 * makeNumberModel, built once per machine and reused by later test files (it is deterministic, and
 * slow on a CPU): kept under the system temp folder, named by the hash of the code that builds it.
 */
export async function cachedNumberModel(gpu: Gpu, seed: number, arch: 'qwen2' | 'llama' = 'qwen2'): Promise<string> {
  const h = createHash('sha256');
  for (const f of ['number-model.ts', 'tokenizer-fixture.ts']) h.update(readFileSync(path.join(import.meta.dirname, f)));
  const root = path.join(os.tmpdir(), `subliminal-number-models-${h.digest('hex').slice(0, 12)}`);
  const final = path.join(root, `${arch}-${seed}`);
  if (existsSync(path.join(final, 'done'))) return path.join(final, `numbers-${arch}-${seed}`);
  const tmp = `${final}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  await makeNumberModel(gpu, tmp, seed, arch);
  writeFileSync(path.join(tmp, 'done'), '');
  try {
    renameSync(tmp, final);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another process finished first
  }
  return path.join(final, `numbers-${arch}-${seed}`);
}
