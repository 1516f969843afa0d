// Training data validation: every bad teacher_topk and every chat token past the model's vocabulary is one
// line naming the file and line, before any training.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { examplesDigest, loadTrainingData } from '../src/train/data.ts';
import { UserError } from '../src/util/errors.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'data-'));
let n = 0;

function file(rows: unknown[]): string {
  const f = path.join(dir, `d${n++}.jsonl`);
  writeFileSync(f, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return f;
}

function loadError(f: string, tok: ChatTokenizer | null = null, vocab = 100): string {
  try {
    loadTrainingData(f, tok, vocab, 64);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}

const ok = { input_ids: [1, 2, 3], labels: [-100, 2, 3] };
const topk = (indices: unknown, logprobs: unknown) => ({ ...ok, teacher_topk: { indices, logprobs } });

describe('teacher_topk', () => {
  it('accepts valid rows (varying k per position)', () => {
    const f = file([topk([[5, 6], [7], []], [[-0.1, -2.5], [0], []])]);
    const d = loadTrainingData(f, null, 100, 64);
    expect(d.examples[0].teacherTopK!.indices[0]).toEqual([5, 6]);
  });

  it('each malformed case is one line naming file:line and the position', () => {
    const cases: [unknown, RegExp][] = [
      [topk([[5], [100], [1]], [[-1], [-1], [-1]]), /:2: "teacher_topk" position 1: index 100 outside the vocabulary \[0, 100\)$/],
      [topk([[5], [-1], [1]], [[-1], [-1], [-1]]), /:2: "teacher_topk" position 1: index -1 outside the vocabulary/],
      [topk([[5], ['7'], [1]], [[-1], [-1], [-1]]), /:2: "teacher_topk" position 1: index "7" is not an integer$/],
      [topk([[5], [1.5], [1]], [[-1], [-1], [-1]]), /position 1: index 1\.5 is not an integer/],
      [topk([[5], [null], [1]], [[-1], [-1], [-1]]), /position 1: index null is not an integer/],
      [topk([[5], [6], [1]], [[-1], [null], [-1]]), /:2: "teacher_topk" position 1: log-prob null is not a finite number$/],
      [topk([[5], [6], [1]], [[-1], ['x'], [-1]]), /position 1: log-prob "x" is not a finite number/],
      [topk([[5], [6], [1]], [[-1], [0.5], [-1]]), /:2: "teacher_topk" position 1: log-prob 0\.5 is positive \(a log-probability is ≤ 0\)$/],
      [topk([[5, 6], [6], [1]], [[-0.1, -0.2], [-1], [-1]]), /position 0: probabilities sum to 1\.7236 \(> 1; are these logits, not log-probs\?\)/],
      [topk([[5, 6], [6], [1]], [[-1], [-1], [-1]]), /:2: "teacher_topk" position 0 has 2 indices but 1 log-probs$/],
      [topk([[5, 5], [6], [1]], [[-1, -2], [-1], [-1]]), /position 0: index 5 listed twice/],
      [topk([5, 6, 7], [-1, -1, -1]), /:2: "teacher_topk" position 0 is not a list/],
      [topk([[5], [6]], [[-1], [-1]]), /:2: "teacher_topk" has 2 positions, the sequence has 3$/],
      [topk([[5], [6], [1]], [[-1], [-1]]), /has 3 index lists but 2 log-prob lists/],
      [{ ...ok, teacher_topk: [[1]] }, /:2: "teacher_topk" must be \{"indices"/],
      [{ ...ok, teacher_topk: null }, /:2: "teacher_topk" must be \{"indices"/],
    ];
    for (const [row, re] of cases) {
      const f = file([ok, row]);
      const m = loadError(f);
      expect(m.startsWith(`${f}:2: `), m).toBe(true);
      expect(m).toMatch(re);
    }
  });
});

describe('chat rows and the model vocabulary', () => {
  it('a tokenizer larger than the embedding (vocab_size) is refused at the first row using an id past it', async () => {
    const tokDir = path.join(dir, 'tok');
    const V = writeTestTokenizer(tokDir);
    const tok = (await ChatTokenizer.load(tokDir))!;
    const f = file([{ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }] }]);
    expect(loadTrainingData(f, tok, V, 64).examples).toHaveLength(1);
    // The chat template's special tokens sit at the top of the vocabulary.
    expect(loadError(f, tok, V - 3)).toBe(`${f}:1: the chat tokenizes to id ${V - 2}, outside the model's vocabulary [0, ${V - 3}) (config.json vocab_size is smaller than the tokenizer's)`);
  });
});

describe('examplesDigest', () => {
  it('changes with ids, labels and teacher data', () => {
    const a = [{ ids: [1, 2], labels: [-100, 2] }];
    expect(examplesDigest(a)).toBe(examplesDigest([{ ids: [1, 2], labels: [-100, 2] }]));
    expect(examplesDigest(a)).not.toBe(examplesDigest([{ ids: [1, 3], labels: [-100, 3] }]));
    expect(examplesDigest(a)).not.toBe(examplesDigest([{ ids: [1, 2], labels: [1, 2] }]));
    expect(examplesDigest(a)).not.toBe(examplesDigest([{ ...a[0], teacherTopK: { indices: [[1], []], logprobs: [[-1], []] } }]));
  });
});
