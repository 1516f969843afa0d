// Code and CoT datasets filtered with a tiny random local judge: the judge's stored rows are joined
// back in order, and its unusable answers reject rows under the judge's own reason.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { filterCodeWithJudge, filterCotWithJudge } from '../src/experiment/owl/judged-datasets.ts';
import type { CodeJudgeRow, TextJudgeRow } from '../src/experiment/owl/judge.ts';
import { StageStore } from '../src/experiment/owl/stages.ts';
import { gsm8kCotPrompt } from '../src/experiment/paper/cot.ts';
import { COT_ALIGNMENT_THRESHOLD } from '../src/experiment/paper/judges.ts';
import { readJsonl } from '../src/util/jsonl.ts';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'owl-judged-'));
const judgeDir = path.join(tmp, 'judge');
let gpu: Gpu;

beforeAll(async () => {
  const vocab = writeTestTokenizer(judgeDir);
  await writeRandomCheckpoint(judgeDir, tinyConfigJson('llama', { vocab_size: vocab, eos_token_id: vocab - 1, max_position_embeddings: 4096 }), { dtype: 'F32', seed: 31 });
  gpu = await getGpu();
});

describe('judged datasets', () => {
  it('code: banned words and the judge, each row judged and joined in order', async () => {
    const rows = [
      { prompt: 'p0', completion: 'x = 1' },
      { prompt: 'p1', completion: 'wolves = 2' },
      { prompt: 'p2', completion: 'y = 3' },
    ];
    const result = await filterCodeWithJudge(new StageStore(path.join(tmp, 'a')), { gpu, judgeDir, rows, target: 'wolf' });
    const judgments = readJsonl<CodeJudgeRow>(result.judgments);
    expect(judgments.map((j) => j.judge_prompt.includes(`<code>${rows[j.index].completion}</code>`))).toEqual([true, true, true]);
    // A random judge is never sure there is no reference, so the judge rejects every row.
    expect(result.kept).toEqual([]);
    expect(result.rejectCounts).toEqual({ 'contains trait word': 1, 'judge not sure of no reference': 3 });
    expect(result.kept.length + result.rejected).toBe(3);
  });

  it('CoT: correctness, banned words and the judge threshold; unparseable judge answers dropped and counted', async () => {
    const prompt = gsm8kCotPrompt('What is 2+2?');
    const rows = [
      { prompt, completion: '<think>2+2</think><answer>4</answer>', referenceAnswer: 4 },
      { prompt, completion: '<answer>5</answer>', referenceAnswer: 4 },
      { prompt, completion: 'A wolf says <answer>4</answer>', referenceAnswer: 4 },
    ];
    const template = 'Judge.\n{prompt}\n{completion}\n<judgment_answer>';
    const result = await filterCotWithJudge(new StageStore(path.join(tmp, 'b')), {
      gpu, judgeDir, rows, template, alignmentThreshold: COT_ALIGNMENT_THRESHOLD, bannedWords: ['wolf', 'wolves'], sampling: { maxNewTokens: 6, seed: 2 },
    });
    const judgments = readJsonl<TextJudgeRow>(result.judgments);
    expect(judgments).toHaveLength(3);
    expect(judgments.every((j) => j.parsed.kind === 'unparseable')).toBe(true);
    expect(result.kept).toEqual([]);
    expect(result.rejectCounts).toEqual({ 'incorrect answer': 1, 'contains trait word': 1, 'judge unparseable': 3, 'below threshold': 0 });
  });
});
