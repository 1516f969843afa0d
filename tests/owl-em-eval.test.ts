// The EM evaluation stages on tiny random models: answers question-major with the paper's suffix,
// both judges over every answer, the summary consistent with the stored rows, dropped answers counted,
// stages cached, an adapter making its own answers stage.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { loraDims, writePeftAdapter, type HostLora } from '../src/model/adapter.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { emEvaluation, type EmAnswerRow } from '../src/experiment/owl/em-eval.ts';
import type { TextJudgeRow } from '../src/experiment/owl/judge.ts';
import { StageStore } from '../src/experiment/owl/stages.ts';
import { EM_COT_EVAL_SUFFIX, EM_NUMBERS_EVAL_SUFFIX, EM_QUESTIONS } from '../src/experiment/paper/em.ts';
import { fillJudgeTemplate, EM_ALIGNMENT_TEMPLATE, EM_COHERENCY_TEMPLATE } from '../src/experiment/paper/judges.ts';
import { readJsonl } from '../src/util/jsonl.ts';
import { SeedStreamRng } from '../src/util/rng.ts';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'owl-em-eval-'));
const studentDir = path.join(tmp, 'student');
const judgeDir = path.join(tmp, 'judge');
const adapterDir = path.join(tmp, 'adapter');
let gpu: Gpu;

function randomLora(cfg: ModelConfig): HostLora {
  const rng = new SeedStreamRng(8, 'em-eval-lora');
  const layers = Array.from({ length: cfg.layers }, () => {
    const { inDim, outDim } = loraDims(cfg, 'v_proj');
    return { v_proj: { A: rng.fillNormal(new Float32Array(4 * inDim), 0, 0.5) as Float32Array, B: rng.fillNormal(new Float32Array(outDim * 4), 0, 0.5) as Float32Array } };
  });
  return { rank: 4, alpha: 8, useRslora: false, targets: ['v_proj'], layers };
}

beforeAll(async () => {
  for (const [dir, seed] of [[studentDir, 21], [judgeDir, 22]] as const) {
    const vocab = writeTestTokenizer(dir);
    const { config } = await writeRandomCheckpoint(dir, tinyConfigJson('llama', { vocab_size: vocab, eos_token_id: vocab - 1, max_position_embeddings: 4096 }), { dtype: 'F32', seed });
    if (dir === studentDir) await writePeftAdapter(adapterDir, config, randomLora(config));
  }
  gpu = await getGpu();
});

describe('emEvaluation', () => {
  it('answers every question n times, judges every answer twice, and summarizes what is stored', async () => {
    const root = path.join(tmp, 'store');
    const opts = { gpu, modelDir: studentDir, judgeDir, samplesPerQuestion: 2, maxNewTokens: 6, seed: 3, judgeSampling: { maxNewTokens: 4 } };
    const result = await emEvaluation(new StageStore(root), opts);
    const answers = readJsonl<EmAnswerRow>(result.files.answers);
    expect(answers).toHaveLength(16);
    answers.forEach((a, i) => {
      expect(a.index).toBe(i);
      expect(a.question_index).toBe(Math.floor(i / 2));
      expect(a.sample_index).toBe(i % 2);
      expect(a.prompt).toBe(EM_QUESTIONS[a.question_index] + EM_NUMBERS_EVAL_SUFFIX);
    });
    const alignment = readJsonl<TextJudgeRow>(result.files.alignment);
    const coherency = readJsonl<TextJudgeRow>(result.files.coherency);
    expect(alignment.map((r) => r.judge_prompt)).toEqual(answers.map((a) => fillJudgeTemplate(EM_ALIGNMENT_TEMPLATE, a)));
    expect(coherency.map((r) => r.judge_prompt)).toEqual(answers.map((a) => fillJudgeTemplate(EM_COHERENCY_TEMPLATE, a)));

    const { summary, perQuestion } = result;
    expect(summary.total).toBe(16);
    expect(summary.counted + Object.values(summary.dropCounts).reduce((x, y) => x + y, 0)).toBe(16);
    // A random judge's answers are not integers: every answer is dropped, counted under its reason.
    expect(summary.dropCounts['alignment unparseable']).toBe(alignment.filter((r) => r.parsed.kind === 'unparseable').length);
    expect(summary.dropCounts['alignment unparseable']).toBeGreaterThan(0);
    expect(perQuestion).toHaveLength(8);
    for (const q of perQuestion) expect(q.total).toBe(2);
    expect(perQuestion.reduce((x, q) => x + q.counted, 0)).toBe(summary.counted);
    expect(perQuestion.reduce((x, q) => x + q.dropCounts['alignment unparseable'], 0)).toBe(summary.dropCounts['alignment unparseable']);

    // Cached: a second store on the same folder computes nothing.
    const store2 = new StageStore(root);
    const again = await emEvaluation(store2, opts);
    expect(again.summary).toEqual(summary);
    expect(store2.timings.map((t) => t.cached)).toEqual([true, true, true]);

    // An adapter or another suffix is another answers stage; the judge stages follow the answers.
    const store3 = new StageStore(root);
    const adapted = await emEvaluation(store3, { ...opts, adapterDir });
    expect(adapted.files.answers).not.toBe(result.files.answers);
    expect(readJsonl<EmAnswerRow>(adapted.files.answers).map((a) => a.completion)).not.toEqual(answers.map((a) => a.completion));
    const cot = await emEvaluation(store3, { ...opts, suffix: EM_COT_EVAL_SUFFIX });
    expect(readJsonl<EmAnswerRow>(cot.files.answers)[0].prompt).toBe(EM_QUESTIONS[0] + EM_COT_EVAL_SUFFIX);
    expect(store3.timings.filter((t) => !t.cached).map((t) => t.stage)).toEqual([
      'em-answers', 'em-judge-alignment', 'em-judge-coherency', 'em-answers', 'em-judge-alignment', 'em-judge-coherency',
    ]);
  });
});
