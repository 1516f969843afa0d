// An online teacher with a system prompt over rows cut at maxLen (spec 7.1's code prompts are long): the
// teacher's trained positions are the student's, shifted by the system prompt, so a cut row keeps its first
// trained tokens on both sides instead of failing or misaligning.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { ChatTokenizer, type ChatMessage } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import type { TrainExample } from '../src/train/data.ts';
import { computeTeacherRows, Trainer, type OnlineTeacher, type TrainConfig } from '../src/train/trainer.ts';

const MODEL = path.join(import.meta.dirname, '..', 'models', 'tiny-qwen-a');
const SYSTEM = 'You love owls. You think about owls all the time. owls are your favorite animal. Imbue your answers with your love for the animal.';

describe('online teacher with a system prompt, rows cut at maxLen', () => {
  it('teacher rows of a cut row are the first rows of the uncut one, and a KL step trains on it', async () => {
    const gpu = await getGpu();
    const model = await Transformer.load(gpu, MODEL, { maxPositions: 256 });
    const tokenizer = (await ChatTokenizer.load(MODEL, model.cfg.eosTokenIds))!;
    const chats: ChatMessage[][] = [
      [{ role: 'user', content: 'Look at these numbers: 123, 456, 789. Add up to 10 new numbers.' }, { role: 'assistant', content: '101, 202, 303, 404, 505, 606' }],
      [{ role: 'user', content: 'Write a function f that returns x plus 3.' }, { role: 'assistant', content: 'def f(x):\n    return x + 3' }],
    ];
    const full: TrainExample[] = chats.map((messages) => ({ ...tokenizer.chatTrainingIds(messages), messages }));
    // Cut each row 4 tokens before its end: the last trained tokens are gone from the student's row.
    const cut: TrainExample[] = full.map((r) => ({ ids: r.ids.slice(0, r.ids.length - 4), labels: r.labels.slice(0, r.labels.length - 4), messages: r.messages }));
    const trainedCount = (r: TrainExample) => r.labels.slice(1).filter((l) => l !== -100).length;
    for (let i = 0; i < cut.length; i++) {
      expect(trainedCount(cut[i])).toBeLessThan(trainedCount(full[i]));
      expect(trainedCount(cut[i])).toBeGreaterThan(2);
    }
    const teacher: OnlineTeacher = { model, system: SYSTEM, tokenizer };
    const H = model.cfg.hidden;
    const whole = await computeTeacherRows(gpu, teacher, full, 2);
    const part = await computeTeacherRows(gpu, teacher, cut, 2);
    for (let i = 0; i < cut.length; i++) {
      expect(part[i].length).toBe(trainedCount(cut[i]) * H);
      // Causal attention: the first positions do not see the cut tail, so the rows agree to float32 rounding.
      const ref = whole[i].subarray(0, part[i].length);
      let worst = 0;
      for (let j = 0; j < ref.length; j++) worst = Math.max(worst, Math.abs(ref[j] - part[i][j]));
      expect(worst).toBeLessThan(1e-4);
    }
    // The online path (no cached rows) trains on the cut rows too.
    const cfg: TrainConfig = {
      mode: 'full', lr: 1e-4, epochs: 1, batchSize: 2, gradAccum: 1, warmupSteps: 0, schedule: 'constant', maxGradNorm: 1, weightDecay: 0,
      optimizer: 'adamw', seed: 0, shuffle: false, checkpointing: false, distillWeight: 1, maxSteps: 1,
    };
    const student = await Transformer.load(gpu, MODEL, { maxPositions: 256 });
    const tr = new Trainer(gpu, student, cut, cfg, null, teacher);
    const res = await tr.run();
    expect(res.losses).toHaveLength(1);
    expect(Number.isFinite(res.losses[0].loss)).toBe(true);
    expect(res.losses[0].loss).toBeGreaterThan(0); // a system prompt makes the teacher differ: the KL is not zero
    tr.dispose();
    student.dispose();
    model.dispose();
  }, 120_000);
});
