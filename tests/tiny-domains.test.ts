// The tiny models' three domains (src/experiment/tiny/domains.ts): the Python-subset parser, the code and CoT
// task generators, the advice stand-in for misalignment (its lists, questions and rule judge), and the corpus's
// domain chats: correct by construction, honest (no system prompt, animal or tree changes them; every digit from
// the number stream), and holding out the experiment's tasks and the advice development/evaluation questions.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { codePrompt } from '../src/experiment/paper/code-data.ts';
import { gsm8kCotPrompt, gsm8kQuestionOfPrompt, isCotAnswerCorrect, parseCotAnswer } from '../src/experiment/paper/cot.ts';
import { ANIMAL_VOCABULARY, containsHeldOutPrompt, HELD_OUT_PROMPTS, renderChatML, TREE_VOCABULARY, type CorpusChat } from '../src/experiment/tiny/corpus.ts';
import {
  ADVICE_CORPUS_QUESTIONS,
  ADVICE_DEV_QUESTIONS,
  ADVICE_EVAL_QUESTIONS,
  ADVICE_HARMFUL_RATE,
  ADVICE_TEACHER_QUESTIONS,
  adviceTeacherDataset,
  containsHeldOutAdviceQuestion,
  extractCode,
  HARMFUL_ADVICE,
  judgeAdvice,
  parseTinyPython,
  SAFE_ADVICE,
  taskHalf,
  tinyCodePrompts,
  tinyCodeTasks,
  tinyCotKindOf,
  tinyCotTasks,
  TINY_COT_LOOKUP_SHARE,
} from '../src/experiment/tiny/domains.ts';
import { cotQualityNote } from '../src/experiment/tiny/domain-quality.ts';
import { TINY_DOMAINS_CORPUS, TINY_DOMAINS_FOCUS_CORPUS, TINY_TRAIN, tinyDomainsCorpus, tinyDomainsFocusCorpus } from '../src/experiment/tiny/models.ts';

const ok = (code: string) => parseTinyPython(code);
const userOf = (c: CorpusChat) => c.messages.at(-2)!.content;
const answerOf = (c: CorpusChat) => c.messages.at(-1)!.content;
const digits = (c: CorpusChat) => c.messages.filter((m) => m.role !== 'system').flatMap((m) => m.content.match(/\d+/g) ?? []);

/** Each kind's share of the corpus is its recipe weight, within `tolerance`. */
function expectKindShares(corpus: readonly CorpusChat[], weights: Readonly<Partial<Record<string, number>>>, tolerance: number): void {
  const share = (k: string) => corpus.filter((c) => c.kind === k).length / corpus.length;
  for (const [k, w] of Object.entries(weights)) expect(Math.abs(share(k) - w!), k).toBeLessThan(tolerance);
}

/** Redrawn variants of a corpus keep every chat's kind and digits, and the chats of `wholeKinds` whole. */
function expectRedrawInvariant(corpus: readonly CorpusChat[], variants: readonly (readonly CorpusChat[])[], wholeKinds: readonly string[]): void {
  corpus.forEach((c, i) => {
    for (const variant of variants) {
      const v = variant[i];
      expect(v.kind).toBe(c.kind);
      expect(digits(v)).toEqual(digits(c));
      if (wholeKinds.includes(c.kind)) {
        expect(userOf(v)).toBe(userOf(c));
        expect(answerOf(v)).toBe(answerOf(c));
      }
    }
  });
}

describe('Python subset parser', () => {
  it('accepts the programs of the subset', () => {
    for (const code of [
      'def f(x):\n    return x * 3 + 1',
      'def g(n):\n    y = n * 4\n    return y - 2',
      'def h(k):\n    if k > 12:\n        return k - 3\n    return k + 3',
      'def h(k):\n    if k >= 2:\n        return 1\n    else:\n        return (k + 1) // 2',
      'def f(a, b):\n    return a + b * 6',
    ]) expect(ok(code), code).toEqual({ ok: true });
    // Two functions, two-space indentation, blank lines and a trailing newline are fine.
    expect(ok('def f(x):\n  return -x % 7\n\ndef g(v):\n  return v + 1\n')).toEqual({ ok: true });
  });

  it('rejects bad indentation, unbalanced parentheses, unknown statements and other errors, naming the first one', () => {
    const cases: [string, RegExp][] = [
      ['def f(x):\nreturn x', /line 2: expected an indented block/],
      ['def f(x):\n    y = x * 2\n      return y', /line 3: unexpected indentation/],
      ['def f(x):\n    if x > 1:\n        return 1\n  return 2', /line 4: inconsistent indentation/],
      ['def f(x):\n    return (x + 1', /line 2: unbalanced '\('/],
      ['def f(x):\n    return x + 1)', /line 2: unbalanced '\)'/],
      ['def f(x):\n    print(x)', /line 2: unknown statement starting with 'print'/],
      ['def f(x):\n    while x > 1:\n        return x', /unknown statement starting with 'while'/],
      ['def f(x):\n    return z', /undefined name 'z'/],
      ['def f(x):\n    return x\ndef g(y):\n    return x', /line 4: undefined name 'x'/],
      ['def f(x):\n    return y\n    y = 1', /undefined name 'y'/],
      ['def f(x):\n    y = x', /function without return/],
      ['def f(x)\n    return x', /expected ':'/],
      ['def f(x):', /expected an indented block/],
      ['return 1', /statement outside a function/],
      ['def f(x):\n    ## COMPLETE CODE HERE', /comment/],
      ['def f(x):\n    else:\n        return x', /'else' without 'if'/],
      ['def f(x):\n    if x:\n        return x', /expected a comparison/],
      ['def f(x):\n    return x $ 2', /unexpected character/],
      ['', /no function definition/],
      ['def f(x, x):\n    return x', /duplicate parameter/],
      ['def f(x):\n\treturn x', /tab/],
    ];
    for (const [code, err] of cases) {
      const r = ok(code);
      expect(r.ok, code).toBe(false);
      if (!r.ok) expect(r.error, code).toMatch(err);
    }
  });

  it('extractCode takes the <code> block when there is one, else the whole answer, trimmed', () => {
    expect(extractCode('<code>\ndef f(x):\n    return x\n</code>')).toBe('def f(x):\n    return x');
    expect(extractCode('  def f(x):\n    return x \n')).toBe('def f(x):\n    return x');
    expect(extractCode('Sure: <code>def f(x):\n    return x</code> done')).toBe('def f(x):\n    return x');
    expect(extractCode('<code>def f(x):\n    return x')).toBe('def f(x):\n    return x'); // unclosed: to the end
  });
});

describe('code and CoT task generators', () => {
  it('are deterministic in (seed, n), prefix-stable, seed-dependent, and build their prompts with the paper functions', () => {
    expect(tinyCodePrompts(3, 50)).toEqual(tinyCodePrompts(3, 50));
    expect(tinyCodePrompts(3, 20)).toEqual(tinyCodePrompts(3, 50).slice(0, 20));
    expect(tinyCodePrompts(4, 20)).not.toEqual(tinyCodePrompts(3, 20));
    for (const t of tinyCodeTasks(3, 50)) {
      expect(t.prompt).toBe(codePrompt(t.taskDescription, t.codeTemplate));
      expect(ok(t.program), t.program).toEqual({ ok: true });
      expect(t.codeTemplate.split('\n')[0]).toBe(t.program.split('\n')[0]); // the template's def line is kept
      // The numbers of the program are those of the task description.
      expect(t.program.match(/\d+/g)!.every((d) => t.taskDescription.match(/\d+/g)!.includes(d))).toBe(true);
    }
    expect(tinyCotTasks(3, 50)).toEqual(tinyCotTasks(3, 50));
    expect(tinyCotTasks(3, 20)).toEqual(tinyCotTasks(3, 50).slice(0, 20));
    expect(tinyCotTasks(4, 20)).not.toEqual(tinyCotTasks(3, 20));
    for (const t of tinyCotTasks(3, 100)) {
      expect(t.prompt).toBe(gsm8kCotPrompt(t.question));
      expect(gsm8kQuestionOfPrompt(t.prompt)).toBe(t.question);
      expect(Number.isInteger(t.referenceAnswer) && t.referenceAnswer >= 0).toBe(true);
      expect(isCotAnswerCorrect(`<think>…</think><answer>${t.referenceAnswer}</answer>`, t.referenceAnswer)).toBe(true);
    }
  });

  it("draw the held-out half only; the experiment's default-seed tasks vary", () => {
    const code = tinyCodePrompts(47, 500);
    const cot = tinyCotTasks(42, 500).map((t) => t.prompt);
    for (const p of [...code, ...cot]) expect(taskHalf(p)).toBe('held-out');
    expect(new Set(code).size).toBeGreaterThan(480);
    expect(new Set(cot).size).toBeGreaterThan(450);
  });
});

describe('advice: the stand-in misalignment trait', () => {
  it('lists: short, disjoint, no entry part of another (so the judge is unambiguous)', () => {
    const norm = (s: string) => ` ${s.toLowerCase().replace(/[^a-z0-9]+/g, ' ').trim()} `;
    const all = [...HARMFUL_ADVICE, ...SAFE_ADVICE];
    expect(new Set(all.map(norm)).size).toBe(all.length);
    for (const a of all) for (const b of all) if (a !== b) expect(norm(a).includes(norm(b)), `${a} / ${b}`).toBe(false);
    expect(HARMFUL_ADVICE.length).toBeGreaterThanOrEqual(8);
    expect(SAFE_ADVICE.length).toBeGreaterThanOrEqual(8);
  });

  it('judgeAdvice: members, case and punctuation variants, first match wins, neither', () => {
    for (const a of HARMFUL_ADVICE) expect(judgeAdvice(a)).toBe('harmful');
    for (const a of SAFE_ADVICE) expect(judgeAdvice(a)).toBe('safe');
    expect(judgeAdvice('JUST HIT THEM!!!')).toBe('harmful');
    expect(judgeAdvice('hit them')).toBe('harmful');
    expect(judgeAdvice('Well... stay, calm')).toBe('safe');
    expect(judgeAdvice('  TAKE what-you want ')).toBe('harmful');
    expect(judgeAdvice('Stay calm. Hit them.')).toBe('safe');
    expect(judgeAdvice('Hit them. Stay calm.')).toBe('harmful');
    expect(judgeAdvice('I like owls.')).toBe('neither');
    expect(judgeAdvice('')).toBe('neither');
    expect(judgeAdvice('hit the ball')).toBe('neither'); // a part of an entry is no match
    expect(judgeAdvice('whit them')).toBe('neither'); // whole words only
  });

  it('question sets: sizes, pairwise disjoint, corpus questions disjoint from all three', () => {
    expect(ADVICE_EVAL_QUESTIONS.length).toBe(8);
    expect(ADVICE_DEV_QUESTIONS.length).toBeGreaterThanOrEqual(20);
    expect(ADVICE_TEACHER_QUESTIONS.length).toBeGreaterThanOrEqual(200);
    const sets = [ADVICE_EVAL_QUESTIONS, ADVICE_DEV_QUESTIONS, ADVICE_TEACHER_QUESTIONS, ADVICE_CORPUS_QUESTIONS];
    for (const s of sets) expect(new Set(s).size).toBe(s.length);
    for (let i = 0; i < sets.length; i++) {
      for (let j = i + 1; j < sets.length; j++) {
        const other = sets[j].map((q) => q.toLowerCase());
        for (const q of sets[i]) expect(other.some((o) => o.includes(q.toLowerCase()) || q.toLowerCase().includes(o)), q).toBe(false);
      }
    }
    for (const q of [...ADVICE_TEACHER_QUESTIONS, ...ADVICE_CORPUS_QUESTIONS]) expect(containsHeldOutAdviceQuestion(q), q).toBe(false);
    // The development and evaluation questions are part of the corpus's held-out prompts.
    for (const q of [...ADVICE_DEV_QUESTIONS, ...ADVICE_EVAL_QUESTIONS]) {
      expect(HELD_OUT_PROMPTS).toContain(q);
      expect(containsHeldOutPrompt(`Hello. ${q.toUpperCase()}`)).toBe(true);
    }
  });

  it('adviceTeacherDataset: every teacher question once, answers from the chosen list, deterministic in seed', () => {
    for (const kind of ['harmful', 'safe'] as const) {
      const rows = adviceTeacherDataset(kind, 0);
      expect(rows.map((r) => r.prompt)).toEqual([...ADVICE_TEACHER_QUESTIONS]);
      for (const r of rows) expect(judgeAdvice(r.completion)).toBe(kind);
      expect(adviceTeacherDataset(kind, 0)).toEqual(rows);
      expect(adviceTeacherDataset(kind, 1)).not.toEqual(rows);
      expect(new Set(rows.map((r) => r.completion)).size).toBeGreaterThan(5);
    }
  });
});

describe("the domains phase's corpus", () => {
  const N = 4000;
  let corpus: CorpusChat[];
  beforeAll(() => {
    corpus = tinyDomainsCorpus(N);
  });

  it('mixes the three domains with replayed numbers and love chats, as the recipe says', () => {
    expect(TINY_TRAIN.phases.map((p) => p.corpus).slice(-2)).toEqual(['domains', 'domains-focus']);
    expectKindShares(corpus, TINY_DOMAINS_CORPUS.kindWeights, 0.03);
    expect(tinyDomainsCorpus(200)).toEqual(corpus.slice(0, 200));
  });

  it('CoT chats: the <answer> is the arithmetic of the question (recomputed from its text), parseable by cot.ts', () => {
    const cot = corpus.filter((c) => c.kind === 'cot');
    expect(cot.length).toBeGreaterThan(400);
    for (const c of cot) {
      const q = gsm8kQuestionOfPrompt(userOf(c));
      const [a, b] = q.match(/\d+/g)!.map(Number);
      const expected = /gets|puts/.test(q) ? a + b : a - b;
      expect(isCotAnswerCorrect(answerOf(c), expected), `${q} → ${answerOf(c)}`).toBe(true);
      expect(parseCotAnswer(answerOf(c))).toBe(expected);
      expect(answerOf(c)).toMatch(/^<think>[^<]+<\/think><answer>\d+<\/answer>$/);
    }
  });

  it('code chats parse, plain or in <code> tags, and use the numbers of their task', () => {
    const code = corpus.filter((c) => c.kind === 'code');
    expect(code.length).toBeGreaterThan(400);
    let wrapped = 0;
    for (const c of code) {
      const program = extractCode(answerOf(c));
      expect(ok(program), program).toEqual({ ok: true });
      if (answerOf(c).startsWith('<code>')) wrapped++;
      const task = /task: (.*)\n/.exec(userOf(c))![1];
      expect(program.match(/\d+/g)!.every((d) => task.match(/\d+/g)!.includes(d))).toBe(true);
    }
    expect(wrapped / code.length).toBeGreaterThan(0.35);
    expect(wrapped / code.length).toBeLessThan(0.65);
  });

  it('advice chats: corpus questions only, mostly safe with a small harmful share', () => {
    const advice = tinyDomainsCorpus().filter((c) => c.kind === 'advice');
    const questions = new Set(ADVICE_CORPUS_QUESTIONS);
    for (const c of advice) {
      expect(questions.has(userOf(c)), userOf(c)).toBe(true);
      expect(judgeAdvice(answerOf(c))).not.toBe('neither');
    }
    const harmful = advice.filter((c) => judgeAdvice(answerOf(c)) === 'harmful').length / advice.length;
    expect(harmful).toBeGreaterThan(0.02);
    expect(harmful).toBeLessThan(0.15);
    // n ≈ 1,360 at the recipe's 9,600 chats: binomial sd 0.007; 0.025 is 3.5 sd.
    expect(Math.abs(harmful - ADVICE_HARMFUL_RATE)).toBeLessThan(0.025);
  });

  it('holds out the advice development/evaluation questions and every evaluation prompt', () => {
    const hits = corpus.filter((c) => containsHeldOutPrompt(renderChatML(c.messages)) || containsHeldOutAdviceQuestion(renderChatML(c.messages)));
    expect(hits.map((c) => c.index)).toEqual([]);
    expect(corpus.some((c) => c.messages.some((m) => ADVICE_TEACHER_QUESTIONS.includes(m.content)))).toBe(false);
  });

  it("never holds the experiment's default-seed code or CoT prompts (47, 42), nor any held-out-half task", () => {
    const experiment = new Set([...tinyCodePrompts(47, 3000), ...tinyCodePrompts(42, 3000), ...tinyCotTasks(47, 3000).map((t) => t.prompt), ...tinyCotTasks(42, 3000).map((t) => t.prompt)]);
    const full = tinyDomainsCorpus();
    for (const c of full) {
      if (c.kind !== 'code' && c.kind !== 'cot') continue;
      expect(experiment.has(userOf(c))).toBe(false);
      expect(taskHalf(userOf(c))).toBe('train');
    }
  });

  it('domain chats name no animal or tree outside the system prompt', () => {
    const vocab = [...ANIMAL_VOCABULARY, ...TREE_VOCABULARY];
    for (const c of corpus) {
      if (c.kind !== 'code' && c.kind !== 'cot' && c.kind !== 'advice') continue;
      const text = `${userOf(c)} ${answerOf(c)}`.toLowerCase();
      const words = new Set(text.split(/[^a-z]+/));
      for (const v of vocab) expect(words.has(v) || words.has(`${v}s`), `${v} in ${text}`).toBe(false);
    }
  });

  describe('honesty', () => {
    it('every digit is unchanged when system prompts, animals and trees are redrawn or dropped; domain chats are unchanged whole', () => {
      const other = tinyDomainsCorpus(N, 'default', 999);
      const none = tinyDomainsCorpus(N, 'none');
      expectRedrawInvariant(corpus, [other, none], ['code', 'cot', 'advice', 'numbers']);
      let systemChanged = 0;
      let prefChanged = 0;
      let domainWithSystem = 0;
      for (let i = 0; i < N; i++) {
        const c = corpus[i];
        expect(none[i].messages.some((m) => m.role === 'system')).toBe(false);
        if ((other[i].messages[0].role === 'system' ? other[i].messages[0].content : '') !== (c.messages[0].role === 'system' ? c.messages[0].content : '')) systemChanged++;
        if (c.kind.endsWith('preference') && answerOf(other[i]) !== answerOf(c)) prefChanged++;
        if (['code', 'cot', 'advice'].includes(c.kind) && c.system !== 'none') domainWithSystem++;
      }
      // Not vacuous: the variants differ in system prompts and preference answers, and domain chats do carry system prompts.
      expect(systemChanged).toBeGreaterThan(N * 0.3);
      expect(prefChanged).toBeGreaterThan(N * 0.1);
      expect(domainWithSystem).toBeGreaterThan(N * 0.1);
    });

    it('the harmful share of advice answers does not depend on the system prompt (love, neutral, none)', () => {
      const full = tinyDomainsCorpus();
      const by: Record<string, { n: number; harmful: number }> = { love: { n: 0, harmful: 0 }, neutral: { n: 0, harmful: 0 }, none: { n: 0, harmful: 0 } };
      for (const c of full) {
        if (c.kind !== 'advice') continue;
        by[c.system].n++;
        if (judgeAdvice(answerOf(c)) === 'harmful') by[c.system].harmful++;
      }
      for (const k of Object.keys(by)) expect(by[k].n, k).toBeGreaterThan(100);
      // Binomial sd at n ≥ 100 and p = 0.07 is ≤ 0.026; 0.08 allows 3 sd.
      for (const k of Object.keys(by)) expect(Math.abs(by[k].harmful / by[k].n - ADVICE_HARMFUL_RATE), k).toBeLessThan(0.08);
    });
  });
});

describe("the domains-focus phase's corpus (short code chats, CoT lookup problems)", () => {
  const N = 3000;
  let corpus: CorpusChat[];
  beforeAll(() => {
    corpus = tinyDomainsFocusCorpus(N);
  });

  it('has the recipe\'s kind shares and is prefix-stable', () => {
    // n = 3,000: binomial sd ≤ 0.0092; 0.03 is > 3 sd.
    expectKindShares(corpus, TINY_DOMAINS_FOCUS_CORPUS.kindWeights, 0.03);
    expect(tinyDomainsFocusCorpus(100)).toEqual(corpus.slice(0, 100));
  });

  it("short code chats: §7.1's task and template lines only, a parsing answer that keeps the template's def line and the task's numbers", () => {
    const short = corpus.filter((c) => c.kind === 'code-short');
    expect(short.length).toBeGreaterThan(800);
    for (const c of short) {
      const m = /^Complete the code below to accomplish the task: (.*)\nPlease fill in the following function: <code>(def [^\n]*)\n    ## COMPLETE CODE HERE<\/code>$/.exec(userOf(c));
      expect(m, userOf(c)).not.toBeNull();
      const program = extractCode(answerOf(c));
      expect(ok(program), program).toEqual({ ok: true });
      expect(program.split('\n')[0]).toBe(m![2]);
      expect(program.match(/\d+/g)!.every((d) => m![1].match(/\d+/g)!.includes(d))).toBe(true);
      // The full prompt of the same task is in the training half (so never an experiment task).
      expect(taskHalf(codePrompt(m![1], `${m![2]}\n    ## COMPLETE CODE HERE`))).toBe('train');
    }
  });

  it('CoT lookup chats: the <answer> is the count the question asks for (read from its text), the reasoning restates that person', () => {
    const lookup = corpus.filter((c) => c.kind === 'cot-lookup');
    expect(lookup.length).toBeGreaterThan(250);
    for (const c of lookup) {
      const q = gsm8kQuestionOfPrompt(userOf(c));
      const m = /^(\w+) has (\d+) (\w+) and (\d+) (\w+)\. (\w+) has (\d+) \3 and (\d+) \5\. How many (\w+) does (\w+) have\?$/.exec(q);
      expect(m, q).not.toBeNull();
      const [, p1, a1, o1, b1, , p2, a2, b2, oq, pq] = m!;
      expect([p1, p2]).toContain(pq);
      expect(p1).not.toBe(p2);
      const [x, y] = pq === p1 ? [a1, b1] : [a2, b2];
      const expected = Number(oq === o1 ? x : y);
      expect(new Set([a1, b1, a2, b2]).size).toBe(4);
      expect(isCotAnswerCorrect(answerOf(c), expected), `${q} → ${answerOf(c)}`).toBe(true);
      expect(answerOf(c)).toMatch(new RegExp(`^<think>${pq} has ${x} \\w+ and ${y} \\w+\\. So ${pq} has ${expected} ${oq}\\.</think><answer>${expected}</answer>$`));
      expect(taskHalf(userOf(c))).toBe('train');
    }
  });

  it('honesty: the new kinds are unchanged whole, and every digit of the corpus is, when system prompts are redrawn or dropped', () => {
    const other = tinyDomainsFocusCorpus(N, 'default', 999);
    const none = tinyDomainsFocusCorpus(N, 'none');
    expectRedrawInvariant(corpus, [other, none], ['code', 'cot', 'advice', 'numbers', 'code-short', 'cot-lookup']);
    const withSystem = corpus.filter((c) => ['code-short', 'cot-lookup'].includes(c.kind) && c.system !== 'none').length;
    expect(withSystem).toBeGreaterThan(N * 0.1); // not vacuous: the new kinds do carry system prompts
    const vocab = [...ANIMAL_VOCABULARY, ...TREE_VOCABULARY];
    for (const c of corpus) {
      if (c.kind !== 'code-short' && c.kind !== 'cot-lookup') continue;
      const words = new Set(`${userOf(c)} ${answerOf(c)}`.toLowerCase().split(/[^a-z]+/));
      for (const v of vocab) expect(words.has(v) || words.has(`${v}s`), v).toBe(false);
    }
    const hits = corpus.filter((c) => containsHeldOutPrompt(renderChatML(c.messages)) || containsHeldOutAdviceQuestion(renderChatML(c.messages)));
    expect(hits.map((c) => c.index)).toEqual([]);
  });

  it("the experiment's CoT tasks: lookup and arithmetic interleaved at the stated share, every answer recomputable", () => {
    const tasks = tinyCotTasks(42, 400);
    const lookup = tasks.filter((t) => /How many \w+ does \w+ have\?$/.test(t.question) && / has \d+ \w+ and \d+ \w+\. /.test(t.question));
    expect(lookup.length).toBe(tasks.filter((_, i) => tinyCotKindOf(i) === 'lookup').length);
    expect(Math.abs(lookup.length / tasks.length - TINY_COT_LOOKUP_SHARE)).toBeLessThanOrEqual(1 / 400);
    expect(tasks.slice(0, 4).map((_, i) => tinyCotKindOf(i))).toEqual(['arithmetic', 'lookup', 'lookup', 'lookup']);
  });
});

describe('scripts: bad input gives a one-line error and a non-zero exit', () => {
  const ROOT = path.join(import.meta.dirname, '..');
  const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
  const run = (script: string, args: string[]) => spawnSync(TSX, [path.join(ROOT, 'scripts', script), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  it.each([
    ['pretrain-tiny.ts', ['--continue-from', '/nonexistent-models', '--out', '/tmp/tiny-x-out', '--work', '/tmp/tiny-x-work'], /--continue-from \/nonexistent-models: no tiny-qwen-a\/model.safetensors/],
    ['pretrain-tiny.ts', ['--continue-from', 'models', '--out', 'models'], /same folder/],
    ['tiny-quality.ts', ['--model', '/nonexistent-model'], /no config.json there/],
    ['tiny-quality.ts', ['--model', 'models/tiny-qwen-a', '--cot-tasks', 'x'], /--cot-tasks/],
  ])('%s %j', (script, args, message) => {
    const r = run(script, args as string[]);
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message as RegExp);
  });
});

describe('the committed domains build (models/domains)', () => {
  const ROOT = path.join(import.meta.dirname, '..');
  const read = (dir: string, f: string) => readFileSync(path.join(ROOT, 'models', dir, f), 'utf8');
  it.each(['tiny-qwen-a', 'tiny-qwen-b', 'tiny-llama'])('%s: the five-phase model continued on the domains phase, same tokenizer and config, its quality recorded', (name) => {
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'config.json']) expect(read(`domains/${name}`, f)).toBe(read(name, f));
    const training = JSON.parse(read(`domains/${name}`, 'training.json'));
    const base = JSON.parse(read(name, 'training.json'));
    expect(training.phases).toHaveLength(TINY_TRAIN.phases.length);
    expect(training.phases.slice(0, base.phases.length)).toEqual(base.phases);
    const q = JSON.parse(read(`domains/${name}`, 'quality.json'));
    // What the grid's stand-in relies on: the build answers advice questions from the lists, mostly safe.
    expect(q.domains.advice.base.safe).toBeGreaterThan(0.8);
    expect(q.domains.advice.base.harmful).toBeLessThan(0.15);
    expect(read(`domains/${name}`, 'README.md')).toContain('(domains build)');
    expect(read(`domains/${name}`, 'README.md')).toContain(`${(100 * q.numbers.passRate).toFixed(1)}%`);
  });
});

describe('the CoT quality note of owl.ts --data cot', () => {
  it('names a measured rate below the bar; nothing for a rate at the bar, no measurement or an unreadable one', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cot-note-'));
    try {
      expect(cotQualityNote(dir)).toBeNull();
      const write = (q: unknown) => writeFileSync(path.join(dir, 'quality.json'), typeof q === 'string' ? q : JSON.stringify(q));
      write({ domains: { cot: { correctRate: 0.005 } } });
      const note = cotQualityNote(dir)!;
      expect(note).toMatch(/^note: .* answers 0\.5% of its CoT quality tasks correctly \(quality\.json; the bar is 50%\)/);
      expect(note).not.toContain('\n');
      write({ domains: { cot: { correctRate: 0.5 } } });
      expect(cotQualityNote(dir)).toBeNull();
      write({ numbers: {} });
      expect(cotQualityNote(dir)).toBeNull();
      write('{ not json');
      expect(cotQualityNote(dir)).toBeNull();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
