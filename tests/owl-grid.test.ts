// The experiment grid's pieces: cell expansion and pairing, the statistics (paired t, Welch, Holm),
// stage keys derived from the exact configs, the control-animal choice, divergence detection on a
// constructed pair of models, and the development questions' disjointness.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { HELD_OUT_PROMPTS, preferenceParaphrases } from '../src/experiment/tiny/corpus.ts';
import { DEV_ANIMAL_QUESTIONS, DEV_TREE_QUESTIONS } from '../src/experiment/owl/dev-questions.ts';
import { Experiment, modelKey, type ExperimentConfig, type TeacherRef } from '../src/experiment/owl/experiment.ts';
import { expandCells, parseList, RECIPES, type Cell, type StudentRef, type StudentTraining } from '../src/experiment/owl/grid.ts';
import { firstTokenProbabilities } from '../src/experiment/owl/scoring.ts';
import { hashOf } from '../src/experiment/owl/stages.ts';
import { ANIMAL_QUESTIONS, TREE_QUESTIONS } from '../src/experiment/paper/questions.ts';
import { holmAdjust, mean, pairedTTest, sampleStd, welchDifference } from '../src/experiment/paper/stats.ts';
import { sequenceLogits } from '../src/model/generate.ts';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import { saveFullModel } from '../src/train/full.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const train: StudentTraining = { lr: 1e-3, epochs: 1, batchSize: 4, gradAccum: 1, warmupSteps: 0, rank: 2, alpha: 4, rows: 6 };
const rel = (relation: StudentRef['relation']) => (dir: string): StudentRef => ({ dir, name: path.basename(dir), relation });

describe('grid cells', () => {
  it('adds each trait teacher\'s paired control, in a deterministic order, with ids', () => {
    const cells = expandCells([{ teachers: ['sp', 'ft'], recipes: ['sft', 'kl-numbers'], students: ['/m/a', '/m/b'], studentMode: 'lora', train }], rel('same-init'));
    expect(cells.map((c) => c.id)).toEqual([
      'sp.sft.lora.a', 'control.sft.lora.a', 'sp.sft.lora.b', 'control.sft.lora.b',
      'sp.kl-numbers.lora.a', 'control.kl-numbers.lora.a', 'sp.kl-numbers.lora.b', 'control.kl-numbers.lora.b',
      'ft.sft.lora.a', 'ft-control.sft.lora.a', 'ft.sft.lora.b', 'ft-control.sft.lora.b',
      'ft.kl-numbers.lora.a', 'ft-control.kl-numbers.lora.a', 'ft.kl-numbers.lora.b', 'ft-control.kl-numbers.lora.b',
    ]);
    const by = Object.fromEntries(cells.map((c) => [c.id, c]));
    expect(by['sp.sft.lora.a'].control).toBe('control.sft.lora.a');
    expect(by['control.sft.lora.a'].control).toBeNull();
    expect(by['ft.kl-numbers.lora.b'].control).toBe('ft-control.kl-numbers.lora.b');
    expect(by['ft-control.kl-numbers.lora.b'].control).toBe('ft.kl-numbers.lora.b');
  });

  it('merges a cell asked for twice, refuses it with other settings, refuses clashing student names', () => {
    const b = { teachers: ['ft' as const], recipes: ['kl-numbers' as const], students: ['/m/a'], studentMode: 'full' as const, train };
    expect(expandCells([b, b], rel('same-init'))).toHaveLength(2);
    expect(() => expandCells([b, { ...b, train: { ...train, lr: 2e-3 } }], rel('same-init'))).toThrow(/asked for twice/);
    expect(() => expandCells([{ ...b, students: ['/x/a', '/y/a'] }], rel('same-init'))).toThrow(/share the name 'a'/);
    expect(() => expandCells([{ ...b, teachers: [] }], rel('same-init'))).toThrow(/at least one teacher/);
  });

  it('parses lists with one-line errors', () => {
    expect(parseList('sft, kl-numbers', 'recipes', RECIPES)).toEqual(['sft', 'kl-numbers']);
    expect(() => parseList('sft,bogus', 'recipes', RECIPES)).toThrow(/unknown value 'bogus'/);
    expect(() => parseList('sft,sft', 'recipes', RECIPES)).toThrow(/listed twice/);
    expect(() => parseList(',', 'recipes', RECIPES)).toThrow(/at least one/);
  });
});

describe('statistics', () => {
  it('paired t: the one-sample t of the differences; p = 0.05 exactly at the critical value', () => {
    // d = m ± s with t = m / (s/√n) = t_{0.975, 4} = 2.7764451051977987 → two-sided p = 0.05.
    const t975 = 2.7764451051977987;
    const d = [1, -1, 1, -1, 0].map((x) => x * 0.1);
    const sd = sampleStd(d);
    const m = (t975 * sd) / Math.sqrt(d.length);
    const b = [0.3, 0.2, 0.5, 0.1, 0.4];
    const a = b.map((x, i) => x + d[i] + m);
    const r = pairedTTest(a, b);
    expect(r.diff).toBeCloseTo(m, 12);
    expect(r.t).toBeCloseTo(t975, 9);
    expect(r.df).toBe(4);
    expect(r.p).toBeCloseTo(0.05, 9);
    // The interval's lower bound sits at 0 exactly when p = 0.05.
    expect(r.lower).toBeCloseTo(0, 9);
    expect(pairedTTest([1], [0]).p).toBeNaN();
    expect(pairedTTest([1, 2], [1, 2]).p).toBe(1);
    expect(() => pairedTTest([1, 2], [1])).toThrow(RangeError);
  });

  it('no test from replicates that agree to rounding (seeds that trained the same students)', () => {
    // The CoT default once trained 14 rows in one batch: every seed's student was the same, the paired
    // differences agreed to ~1e-10 and a t-test gave p = 1e-21. Such pairs are one draw, not five.
    const b = [0.0392, 0.0392, 0.0392, 0.0392, 0.0392];
    const a = b.map((x, i) => x - 0.00031 + i * 1e-11);
    const r = pairedTTest(a, b);
    expect(r.diff).toBeCloseTo(-0.00031, 9);
    expect(r.p).toBeNaN();
    expect(r.lower).toBeNaN();
    expect(pairedTTest(b.map((x, i) => x + i * 1e-12), b).p).toBe(1); // no difference at all, to rounding
    // Just above the floor the test is formed again.
    expect(Number.isFinite(pairedTTest(b.map((x, i) => x - 0.00031 + i * 1e-6), b).p)).toBe(true);
    expect(welchDifference([0.5, 0.5 + 1e-12, 0.5], [0.4, 0.4, 0.4 + 1e-12]).p).toBeNaN();
  });

  it('Welch difference: mean difference and an interval that covers it', () => {
    const w = welchDifference([1, 2, 3, 4], [0, 0.5, 1]);
    expect(w.diff).toBeCloseTo(2.5 - 0.5, 12);
    expect(w.lower).toBeLessThan(w.diff);
    expect(w.upper).toBeGreaterThan(w.diff);
    expect(w.p).toBeGreaterThan(0);
    expect(w.p).toBeLessThan(0.1);
  });

  it("Holm as statsmodels' multipletests(method='holm')", () => {
    // sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → running max 0.06.
    expect(holmAdjust([0.01, 0.04, 0.03, 0.005])).toEqual([0.03, 0.06, 0.06, 0.02].map((x) => expect.closeTo(x, 12)));
    expect(holmAdjust([0.5, 0.9])).toEqual([1, 1]);
    const withNaN = holmAdjust([0.01, NaN, 0.02]);
    expect(withNaN[0]).toBeCloseTo(0.02, 12);
    expect(withNaN[1]).toBeNaN();
    expect(withNaN[2]).toBeCloseTo(0.02, 12);
    expect(mean(holmAdjust([]))).toBeNaN();
  });
});

/** Every leaf path of a JSON-like value. */
function leaves(v: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (v === null || typeof v !== 'object') return [prefix];
  if (Array.isArray(v)) return v.length ? v.flatMap((x, i) => leaves(x, [...prefix, i])) : [prefix];
  return Object.entries(v as Record<string, unknown>).flatMap(([k, x]) => (x === undefined ? [] : leaves(x, [...prefix, k])));
}

function mutated(v: unknown, p: (string | number)[]): unknown {
  const copy = structuredClone(v) as Record<string | number, unknown>;
  if (!p.length) return typeof v === 'number' ? v + 1 : `${String(v)}x`;
  let o = copy;
  for (const k of p.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  const last = p[p.length - 1];
  const x = o[last];
  o[last] = typeof x === 'number' ? x + 1 : typeof x === 'boolean' ? !x : x === null ? 'set' : Array.isArray(x) ? [...x, 'extra'] : typeof x === 'object' ? { ...(x as object), extra: 1 } : `${String(x)}x`;
  return copy;
}

describe('stage keys come from the exact configs', () => {
  const base = path.join(ROOT, 'models', 'tiny-qwen-a');
  const cfg = (over: Partial<ExperimentConfig> = {}): ExperimentConfig => ({
    name: 'k', outDir: mkdtempSync(path.join(os.tmpdir(), 'keys-')), teacherBase: base, animal: 'owl', category: 'animal', controlAnimal: 'eagle',
    blocks: [{ teachers: ['ft'], recipes: ['kl-numbers'], students: [base], studentMode: 'full', train }], seeds: [0, 1], promptSeed: 42, prompts: 10, keep: 8,
    subsetSeed: 1, maxNewTokens: 12, genBatchSize: 32, maxLen: 256, ftTeacher: { epochs: 1, lr: 1e-3, batchSize: 16 }, evalSet: 'plain', evalSamples: 2,
    evalMaxNewTokens: 3, doseResponse: true, quiet: true, ...over,
  });
  const teacher: TeacherRef = { kind: 'ft', dir: base, system: null, id: 'stage:abc', animal: 'owl' };
  const specs = (e: Experiment, cell: Cell) => [
    e.ftTeacherSpec('owl'),
    e.completionsSpec(teacher, 'sample'),
    e.datasetsSpec(teacher, { kind: 'ft-control', animal: 'eagle' }, ['k1', 'k2'], 'sample', false),
    e.studentSpec(cell, 3, { teacher, partner: { id: 'stage:def' }, datasets: 'k3', divergence: null, animals: ['owl', 'eagle'] }),
    e.evalSpec({ id: 'stage:ghi' }, 'x', 3, ['owl', 'eagle']),
  ];

  it('every field of every stage config changes its key', () => {
    const e = new Experiment(null as never, cfg());
    for (const spec of specs(e, e.cells()[0])) {
      const key = hashOf({ name: spec.name, inputs: spec.config });
      const paths = leaves(spec.config);
      expect(paths.length).toBeGreaterThan(3);
      for (const p of paths) expect(hashOf({ name: spec.name, inputs: mutated(spec.config, p) }), `${spec.name} ${p.join('.')}`).not.toBe(key);
    }
  });

  it('the settings that used to be missed are in the keys: the ft teacher\'s batch size, the cell\'s training, the teacher behind a KL student', () => {
    const e0 = new Experiment(null as never, cfg());
    const c0 = e0.cells()[0];
    const k = (e: Experiment, cell: Cell) => specs(e, cell).map((s) => hashOf({ name: s.name, inputs: s.config }));
    const k0 = k(e0, c0);
    const e1 = new Experiment(null as never, cfg({ ftTeacher: { epochs: 1, lr: 1e-3, batchSize: 8 } }));
    expect(k(e1, e1.cells()[0])[0]).not.toBe(k0[0]);
    for (const mode of ['full', 'lora'] as const) {
      const block = { ...cfg().blocks[0], studentMode: mode };
      const em = new Experiment(null as never, cfg({ blocks: [block] }));
      const km = k(em, em.cells()[0])[3];
      // rank and alpha are LoRA's; a full-parameter student does not depend on them.
      for (const field of (Object.keys(train) as (keyof StudentTraining)[]).filter((f) => mode === 'lora' || (f !== 'rank' && f !== 'alpha'))) {
        const e = new Experiment(null as never, cfg({ blocks: [{ ...block, train: { ...train, [field]: (train[field] ?? 0) + 1 } }] }));
        expect(k(e, e.cells()[0])[3], `${mode} ${field}`).not.toBe(km);
      }
    }
    const other = specs(e0, c0)[3];
    const withOtherTeacher = e0.studentSpec(c0, 3, { teacher: { ...teacher, id: 'stage:zzz' }, partner: { id: 'stage:def' }, datasets: 'k3', divergence: null, animals: ['owl', 'eagle'] });
    expect(hashOf(withOtherTeacher.config)).not.toBe(hashOf(other.config));
    for (const over of [{ maxNewTokens: 13 }, { genBatchSize: 64 }, { prompts: 11 }, { promptSeed: 43 }]) {
      const e = new Experiment(null as never, cfg(over));
      expect(k(e, e.cells()[0])[1], JSON.stringify(over)).not.toBe(k0[1]);
    }
    for (const over of [{ keep: 9 }, { subsetSeed: 2 }]) {
      const e = new Experiment(null as never, cfg(over));
      expect(k(e, e.cells()[0])[2], JSON.stringify(over)).not.toBe(k0[2]);
    }
    for (const over of [{ evalSamples: 3 }, { evalMaxNewTokens: 4 }, { evalQuestionLimit: 5 }, { evalSet: 'numbers-prefix' as const }]) {
      const e = new Experiment(null as never, cfg(over));
      expect(k(e, e.cells()[0])[4], JSON.stringify(over)).not.toBe(k0[4]);
    }
  });

  it('a model folder is keyed by its content, not its path', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mk-'));
    cpSync(base, path.join(dir, 'copy'), { recursive: true });
    expect(modelKey(path.join(dir, 'copy'))).toBe(modelKey(base));
    expect(modelKey(path.join(ROOT, 'models', 'tiny-qwen-b'))).not.toBe(modelKey(base));
  });

  it('refuses duplicate seeds', () => {
    expect(() => new Experiment(null as never, cfg({ seeds: [0, 1, 0] }))).toThrow(/seed 0 is listed twice/);
  });
});

describe('the control animal', () => {
  it('is the candidate whose base first-token probability on the development questions is closest to the target\'s', async () => {
    const gpu = await getGpu();
    const base = path.join(ROOT, 'models', 'tiny-qwen-a');
    const mk = (over: Partial<ExperimentConfig>): ExperimentConfig => ({
      name: 'c', outDir: mkdtempSync(path.join(os.tmpdir(), 'ctl-')), teacherBase: base, animal: 'owl', category: 'animal', controlAnimal: null,
      blocks: [{ teachers: ['ft'], recipes: ['kl-numbers'], students: [base], studentMode: 'full', train }], seeds: [0], promptSeed: 42, prompts: 4, keep: 4,
      subsetSeed: 1, maxNewTokens: 8, genBatchSize: 32, maxLen: 256, ftTeacher: { epochs: 1, lr: 1e-3, batchSize: 16 }, evalSet: 'plain', evalSamples: 1,
      evalMaxNewTokens: 3, doseResponse: false, quiet: true, ...over,
    });
    const e = new Experiment(gpu, mk({}));
    const choice = await e.controlAnimal();
    expect(choice.auto).toBe(true);
    const [target, ...cands] = choice.candidates;
    expect(target.name).toBe('owl');
    expect(cands.map((c) => c.name)).not.toContain('owl');
    // Independent recomputation of the probabilities; the choice is their argmin distance.
    const { model, tokenizer } = await e.load(base);
    const probs = await firstTokenProbabilities(model, tokenizer, DEV_ANIMAL_QUESTIONS, ['owl', ...cands.map((c) => c.name)]);
    for (const c of choice.candidates) expect(c.firstTokenProb).toBeCloseTo(probs[c.name], 9);
    const best = cands.reduce((a, b) => (Math.abs(b.firstTokenProb - target.firstTokenProb) < Math.abs(a.firstTokenProb - target.firstTokenProb) ? b : a));
    expect(choice.name).toBe(best.name);
    e.dispose();
    const fixed = new Experiment(gpu, mk({ controlAnimal: 'fox' }));
    expect(await fixed.controlAnimal()).toEqual({ name: 'fox', auto: false, candidates: [] });
    await expect(new Experiment(gpu, mk({ controlAnimal: 'owl' })).controlAnimal()).rejects.toThrow(/must differ/);
  });
});

describe('divergence positions', () => {
  it('marks exactly the trained positions where the two teachers\' argmax tokens differ', async () => {
    const gpu = await getGpu();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'div-'));
    const a = path.join(dir, 'a');
    mkdirSync(a);
    const V = writeTestTokenizer(a);
    await writeRandomCheckpoint(a, tinyConfigJson('qwen2', { vocab_size: V, eos_token_id: V - 1, tie_word_embeddings: true }), { dtype: 'F32', seed: 7 });
    // b: the same weights with a few embedding rows (= LM-head rows, tied) scaled up, so b's argmax moves
    // to those tokens at some positions and stays at others.
    const b = path.join(dir, 'b');
    {
      const m = await Transformer.load(gpu, a, { maxPositions: 512 });
      const H = m.cfg.hidden;
      const chunk = m.weights.embed.chunks[0];
      const w = (await gpu.readMany([chunk]))[0] as Float32Array;
      for (const tokenId of [5, 9, 17, 23]) for (let h = 0; h < H; h++) w[tokenId * H + h] *= 4;
      gpu.write(chunk, w);
      await saveFullModel(gpu, m.weights, m.cfg, a, b);
      m.dispose();
    }
    const e = new Experiment(gpu, {
      name: 'd', outDir: path.join(dir, 'run'), teacherBase: a, animal: 'owl', category: 'animal', controlAnimal: 'fox',
      blocks: [{ teachers: ['ft'], recipes: ['kl-numbers-nodiv'], students: [a], studentMode: 'full', train }], seeds: [0], promptSeed: 42, prompts: 4, keep: 4,
      subsetSeed: 1, maxNewTokens: 8, genBatchSize: 32, maxLen: 256, ftTeacher: { epochs: 1, lr: 1e-3, batchSize: 16 }, evalSet: 'plain', evalSamples: 1,
      evalMaxNewTokens: 3, doseResponse: false, quiet: true,
    });
    const rows = ['12, 34, 56', '7 8 9 10', '(100, 200)', '5;6;7'].map((completion, i) => ({ index: i, prompt: `Continue ${i}: 1, 2, 3.`, completion, completion_ids: [], stop_id: null }));
    const pairDir = path.join(dir, 'pair');
    mkdirSync(pairDir);
    writeFileSync(path.join(pairDir, 'ft.rows.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const own: TeacherRef = { kind: 'ft', dir: a, system: null, id: 'model:a', animal: 'owl' };
    const other: TeacherRef = { kind: 'ft-control', dir: b, system: 'Be brief.', id: 'model:b', animal: 'fox' };
    const d = await e.divergence({ key: 'pair', dir: pairDir }, own, other);
    const flags = readFileSync(d.flags, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
    // Reference: full logits of each sequence, argmax at each trained position, compared in order.
    const tok = (await ChatTokenizer.load(a))!;
    const ma = await Transformer.load(gpu, a, { maxPositions: 512 });
    const mb = await Transformer.load(gpu, b, { maxPositions: 512 });
    let positions = 0;
    let divergent = 0;
    for (const [i, r] of rows.entries()) {
      const argmaxAt = async (m: Transformer, system: string | null) => {
        const msgs = [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user' as const, content: r.prompt }, { role: 'assistant' as const, content: r.completion }];
        const { ids, labels } = tok.chatTrainingIds(msgs);
        const logits = await sequenceLogits(m, ids);
        const out: number[] = [];
        for (let t = 0; t + 1 < ids.length; t++) {
          if (labels[t + 1] === -100) continue;
          let best = 0;
          for (let v = 1; v < V; v++) if (logits[t * V + v] > logits[t * V + best]) best = v;
          out.push(best);
        }
        return out;
      };
      const x = await argmaxAt(ma, null);
      const y = await argmaxAt(mb, 'Be brief.');
      expect(flags[i]).toEqual(x.map((v, j) => (v !== y[j] ? 1 : 0)));
      positions += x.length;
      divergent += x.filter((v, j) => v !== y[j]).length;
    }
    expect(d.summary.positions).toBe(positions);
    expect(d.summary.divergent).toBe(divergent);
    expect(divergent).toBeGreaterThan(0);
    expect(divergent).toBeLessThan(positions);
    // A teacher against itself never diverges.
    const same = await e.divergence({ key: 'pair', dir: pairDir }, own, { ...own, kind: 'ft-control', id: 'model:a2' });
    expect(same.summary.divergent).toBe(0);
    for (const m of [ma, mb]) m.dispose();
    e.dispose();
  });
});

describe('development questions', () => {
  it('are disjoint from the evaluation questions and from every question bank of the tiny corpus', () => {
    const bank = new Set([...preferenceParaphrases('animal'), ...preferenceParaphrases('animal', true), ...preferenceParaphrases('tree'), ...preferenceParaphrases('tree', true)]);
    for (const q of [...DEV_ANIMAL_QUESTIONS, ...DEV_TREE_QUESTIONS]) {
      expect(bank.has(q), q).toBe(false);
      expect(HELD_OUT_PROMPTS.includes(q), q).toBe(false);
      for (const e of [...ANIMAL_QUESTIONS, ...TREE_QUESTIONS]) expect(q.includes(e) || e.includes(q), q).toBe(false);
    }
    expect(new Set(DEV_ANIMAL_QUESTIONS).size).toBe(40);
    expect(new Set(DEV_TREE_QUESTIONS).size).toBe(40);
  });
});
