// Grid manifests and shards without a GPU: validation with one-line errors naming the field, the
// deterministic expansion to cells (ids with the trait, and the teacher base where there are several),
// the mapping onto ExperimentConfig, sharding (every cell exactly once for n = 1…7, a cell with its
// paired control), and --shard auto from Slurm's and Kubernetes' variables.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseManifest, gridExperiments } from '../src/experiment/owl/manifest.ts';
import { expandGrid, parseShard, shardGroups, type RelationOf } from '../src/experiment/owl/shard.ts';
import { TINY, TINY_MAX_NEW_TOKENS } from '../src/experiment/owl/presets.ts';

const FILE = '/grids/fig3.json';
const rel: RelationOf = (exp, dir) => ({ dir, name: path.basename(dir), relation: dir === exp.teacherBase ? 'same-init' : path.basename(dir).startsWith('qwen') ? 'cross-init' : 'cross-arch' });

const BIG = {
  name: 'fig3',
  teacherBases: ['../m/qwen-a', '../m/llama'],
  traits: ['owl', 'eagle', { name: 'oak', category: 'tree', controlAnimal: 'maple' }],
  seeds: [0, 1, 2],
  settings: { prompts: 100, keep: 50, evalQuestionLimit: 3 },
  teachers: ['sp'],
  recipes: ['sft'],
  students: ['../m/qwen-a', '../m/qwen-b', '../m/llama'],
  train: { lr: 1e-3 },
  blocks: [{ teachers: ['ft'], recipes: ['kl-numbers'], students: ['../m/qwen-a'], studentModes: ['full'], traits: ['owl'], teacherBases: ['../m/qwen-a'] }],
  cells: [{ trait: 'eagle', teacherBase: '../m/llama', teacher: 'sp', recipe: 'sft-greedy', student: '../m/llama', studentMode: 'full', train: { epochs: 2 } }],
};

describe('grid manifest: traits and data domains', () => {
  const VARIANTS = {
    name: 'variants',
    teacherBase: '../m/qwen-a',
    traits: ['owl', { kind: 'misalignment' }],
    data: ['numbers', 'cot'],
    teachers: ['ft'],
    recipes: ['sft'],
    students: ['../m/qwen-a', '../m/qwen-b'],
    studentModes: ['full'],
  };

  it('runs each trait × data domain as an experiment, the plain one keeping its original configuration', () => {
    const exps = gridExperiments(parseManifest(VARIANTS, FILE), '/out');
    expect(exps.map((e) => e.id)).toEqual(['owl', 'owl.cot', 'misalignment', 'misalignment.cot']);
    expect(exps[0].cfg).not.toHaveProperty('trait');
    expect(exps[0].cfg.maxNewTokens).toBe(TINY.maxNewTokens);
    expect(exps[1].cfg).toMatchObject({ trait: 'preference', data: 'cot', maxNewTokens: TINY_MAX_NEW_TOKENS.cot, judgeModel: null });
    expect(exps[3].cfg).toMatchObject({ trait: 'misalignment', data: 'cot', misalignment: { misaligned: null, aligned: null }, evalMaxNewTokens: 24 });
    const cells = expandGrid(exps, rel).cells.filter((c) => c.exp.id === 'misalignment');
    expect(cells.map((c) => [c.cell.id, c.cell.control])).toEqual([
      ['ft.sft.full.qwen-a', 'ft-control.sft.full.qwen-a'],
      ['ft-control.sft.full.qwen-a', null],
      ['ft.sft.full.qwen-b', 'ft-control.sft.full.qwen-b'],
      ['ft-control.sft.full.qwen-b', null],
    ]);
  });

  it('refuses what cannot run, naming the experiment or field', () => {
    expect(() => gridExperiments(parseManifest({ ...VARIANTS, data: 'code' }, FILE), '/o')).toThrow(/experiment misalignment\.code: --data code goes with --trait preference/);
    expect(() => gridExperiments(parseManifest({ ...VARIANTS, teachers: ['sp'] }, FILE), '/o')).toThrow(/experiment misalignment: .*finetuned teachers only/);
    expect(() => gridExperiments(parseManifest({ ...VARIANTS, recipes: ['kl-numbers'] }, FILE), '/o')).toThrow(/experiment owl\.cot: recipe kl-numbers works on number lists only/);
    expect(() => parseManifest({ ...VARIANTS, data: ['numbers', 'poems'] }, FILE)).toThrow(/data\[1\]: unknown value "poems"/);
    expect(() => parseManifest({ ...VARIANTS, traits: [{ kind: 'misalignment', misalignedData: 'insecure.jsonl' }] }, FILE)).toThrow(/traits\[0\]\.alignedData: give both/);
    expect(() => parseManifest({ ...VARIANTS, traits: [{ kind: 'misalignment', category: 'tree' }] }, FILE)).toThrow(/traits\[0\]\.category: unknown field/);
    expect(() => parseManifest({ ...VARIANTS, traits: [{ kind: 'misalignment', truthfulqa: 'no-such-tqa.csv' }] }, FILE)).toThrow(/traits\[0\]\.truthfulqa: .*no-such-tqa\.csv: file not found/);
  });

  it("gives a misalignment trait's truthfulqa items to its experiments only", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'manifest-tqa-'));
    try {
      writeFileSync(path.join(dir, 'tqa.jsonl'), JSON.stringify({ question: 'Q?', best_answer: 'R', best_incorrect_answer: 'W' }) + '\n');
      const m = parseManifest({ ...VARIANTS, traits: ['owl', { kind: 'misalignment', truthfulqa: 'tqa.jsonl' }] }, path.join(dir, 'grid.json'));
      const exps = gridExperiments(m, '/out');
      for (const e of exps) {
        if (e.id.startsWith('misalignment')) expect(e.cfg.truthfulqa).toEqual([{ question: 'Q?', correct: 'R', incorrect: 'W' }]);
        else expect(e.cfg).not.toHaveProperty('truthfulqa');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('grid manifest', () => {
  it('maps onto one ExperimentConfig per trait × teacher base, with preset defaults and per-block training', () => {
    const m = parseManifest(BIG, FILE);
    expect(m.teacherBases).toEqual(['/m/qwen-a', '/m/llama']);
    const exps = gridExperiments(m, '/out');
    expect(exps.map((e) => e.id)).toEqual(['owl@qwen-a', 'owl@llama', 'eagle@qwen-a', 'eagle@llama', 'oak@qwen-a', 'oak@llama']);
    const oak = exps[4].cfg;
    expect(oak).toMatchObject({ animal: 'oak', category: 'tree', controlAnimal: 'maple', teacherBase: '/m/qwen-a', seeds: [0, 1, 2], prompts: 100, keep: 50, evalQuestionLimit: 3, maxNewTokens: TINY.maxNewTokens, outDir: '/out/experiments/oak@qwen-a' });
    expect(oak.blocks).toEqual([{ teachers: ['sp'], recipes: ['sft'], students: ['/m/qwen-a', '/m/qwen-b', '/m/llama'], studentMode: 'lora', train: { ...TINY.train.lora, lr: 1e-3 } }]);
    expect(exps[0].cfg.blocks).toHaveLength(2);
    expect(exps[0].cfg.blocks[1]).toMatchObject({ teachers: ['ft'], studentMode: 'full', train: TINY.train.full });
    expect(exps[3].cfg.blocks[1]).toMatchObject({ teachers: ['sp'], recipes: ['sft-greedy'], students: ['/m/llama'], studentMode: 'full', train: { ...TINY.train.full, epochs: 2 } });
  });

  it('expands to the same cells in the same order every time, ids naming the trait (and the base where there are several)', () => {
    const a = expandGrid(gridExperiments(parseManifest(BIG, FILE), '/out'), rel);
    const b = expandGrid(gridExperiments(parseManifest(structuredClone(BIG), FILE), '/elsewhere'), rel);
    expect(b.cells.map((c) => c.id)).toEqual(a.cells.map((c) => c.id));
    expect(b.groups.map((g) => g.id)).toEqual(a.groups.map((g) => g.id));
    const ids = a.cells.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.slice(0, 4)).toEqual(['owl@qwen-a/sp.sft.lora.qwen-a', 'owl@qwen-a/control.sft.lora.qwen-a', 'owl@qwen-a/sp.sft.lora.qwen-b', 'owl@qwen-a/control.sft.lora.qwen-b']);
    expect(ids).toContain('owl@qwen-a/ft-control.kl-numbers.full.qwen-a');
    expect(ids).toContain('eagle@llama/sp.sft-greedy.full.llama');
    // 6 experiments × 3 students × (sp + control) + the ft pair + the explicit cell's pair.
    expect(ids).toHaveLength(6 * 3 * 2 + 2 + 2);
    for (const g of a.groups) {
      expect(g.cells).toHaveLength(2);
      expect(g.cells[0].cell.control).toBe(g.cells[1].cell.id);
    }
    const single = expandGrid(gridExperiments(parseManifest({ ...BIG, teacherBases: undefined, teacherBase: '../m/qwen-a', blocks: undefined, cells: undefined }, FILE), '/o'), rel);
    expect(single.cells[0].id).toBe('owl/sp.sft.lora.qwen-a');
  });

  it('refuses a bad manifest in one line naming the field', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ ...BIG, traits: ['owl', 'Owl!'] }, /fig3\.json: traits\[1\]: must be a plain name/],
      [{ ...BIG, traits: ['owl', 'owl'] }, /traits\[1\]: 'owl' is listed twice/],
      [{ ...BIG, recipes: ['sft', 'bogus'] }, /^\/grids\/fig3\.json: recipes\[1\]: unknown value "bogus" \(allowed: sft, /],
      [{ ...BIG, blocks: [{ ...BIG.blocks[0], studentModes: ['half'] }] }, /blocks\[0\]\.studentModes\[0\]: unknown value "half"/],
      [{ ...BIG, seeds: [0, 0] }, /seeds\[1\]: 0 is listed twice/],
      [{ ...BIG, seeds: [-1] }, /seeds\[0\]: must be an integer ≥ 0/],
      [{ ...BIG, settings: { prompts: 0 } }, /settings\.prompts: must be an integer ≥ 1, got 0/],
      [{ ...BIG, settings: { promts: 5 } }, /settings\.promts: unknown field/],
      [{ ...BIG, train: { lr: -1 } }, /^[^\n]*: train\.lr: must be a number > 0/],
      [{ ...BIG, colour: 'red' }, /: colour: unknown field/],
      [{ ...BIG, cells: [{ ...BIG.cells[0], trait: 'cat' }] }, /cells\[0\]\.trait\[0\]: 'cat' is not one of the manifest's traits/],
      [{ ...BIG, cells: [{ teacher: 'sp', recipe: 'sft' }] }, /cells\[0\]\.student: required/],
      [{ ...BIG, teacherBases: ['../m/a', '../n/a'] }, /teacherBases\[1\]: two teacher bases share the folder name 'a'/],
      [{ ...BIG, teacherBase: '../m/a' }, /teacherBase: give teacherBase or teacherBases, not both/],
      [{ ...BIG, traits: undefined }, /traits: required/],
      [{ ...BIG, traits: [{ name: 'oak', category: 'shrub' }] }, /traits\[0\]\.category: unknown value "shrub"/],
      [{ name: 'x', teacherBase: 'a', traits: ['owl'] }, /cells: the manifest has no cells/],
      [{ ...BIG, slurm: { gpus: -1 } }, /slurm\.gpus: must be an integer ≥ 0/],
      [{ ...BIG, k8s: { image: 'has space' } }, /k8s\.image: must be a container image reference/],
    ];
    for (const [json, re] of bad) {
      let msg = '';
      try {
        parseManifest(json, FILE);
      } catch (e) {
        msg = (e as Error).message;
        expect((e as Error).name).toBe('UserError');
      }
      expect(msg, JSON.stringify(json).slice(0, 120)).toMatch(re);
      expect(msg).not.toContain('\n');
    }
  });
});

describe('shards', () => {
  const { cells, groups } = expandGrid(gridExperiments(parseManifest(BIG, FILE), '/out'), rel);

  it('cover every cell exactly once for n = 1…7, each cell with its paired control, groups sharing stages together', () => {
    expect(groups.length).toBe(cells.length / 2);
    for (let n = 1; n <= 7; n++) {
      const seen = new Map<string, number>();
      const shardOf = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        const mine = shardGroups(groups, i, n);
        expect(mine.length, `n=${n}`).toBeGreaterThanOrEqual(Math.floor(groups.length / n));
        expect(mine.length, `n=${n}`).toBeLessThanOrEqual(Math.ceil(groups.length / n));
        for (const g of mine) for (const c of g.cells) {
          seen.set(c.id, (seen.get(c.id) ?? 0) + 1);
          shardOf.set(c.cell.id + '|' + c.exp.id, i);
        }
        // Deterministic: the same call gives the same shard.
        expect(shardGroups(groups, i, n).map((g) => g.id)).toEqual(mine.map((g) => g.id));
      }
      expect([...seen.keys()].sort()).toEqual(cells.map((c) => c.id).sort());
      expect([...seen.values()].every((v) => v === 1)).toBe(true);
      for (const c of cells) if (c.cell.control) expect(shardOf.get(c.cell.control + '|' + c.exp.id)).toBe(shardOf.get(c.cell.id + '|' + c.exp.id));
    }
    // The finetuned pair's groups (one teacher, one dataset) are adjacent.
    const order = groups.map((g) => g.id);
    const ft = order.findIndex((id) => id.includes('/ft.'));
    expect(order[ft - 1]?.startsWith('owl@qwen-a/') || order[ft + 1]?.startsWith('owl@qwen-a/')).toBe(true);
    expect(shardGroups(groups.slice(0, 2), 4, 7)).toEqual([]);
  });

  it('--shard i/n and --shard auto (Slurm array, Kubernetes Indexed Job) with one-line errors', () => {
    expect(parseShard('2/4', {}, null)).toMatchObject({ index: 1, count: 4 });
    expect(parseShard('auto', { SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_MIN: '4', SLURM_ARRAY_TASK_MAX: '7', SLURM_ARRAY_TASK_COUNT: '4' }, null)).toMatchObject({ index: 1, count: 4 });
    // With an explicit count the task id is the 0-based index (a resubmitted single task keeps its shard).
    expect(parseShard('auto', { SLURM_ARRAY_TASK_ID: '3', SLURM_ARRAY_TASK_MIN: '3', SLURM_ARRAY_TASK_COUNT: '1' }, 8)).toMatchObject({ index: 3, count: 8 });
    expect(parseShard('auto', { JOB_COMPLETION_INDEX: '0' }, 3)).toMatchObject({ index: 0, count: 3, source: 'JOB_COMPLETION_INDEX=0' });
    const errs: [string, Record<string, string>, number | null, RegExp][] = [
      ['0/4', {}, null, /need 1 ≤ i ≤ n/],
      ['5/4', {}, null, /need 1 ≤ i ≤ n/],
      ['two', {}, null, /must be i\/n/],
      ['1/4', {}, 3, /disagrees with --shards 3/],
      ['auto', {}, null, /neither SLURM_ARRAY_TASK_ID .* nor JOB_COMPLETION_INDEX/],
      ['auto', { JOB_COMPLETION_INDEX: '1' }, null, /needs a shard count/],
      ['auto', { JOB_COMPLETION_INDEX: '3' }, 3, /outside the 3 shards/],
      ['auto', { SLURM_ARRAY_TASK_ID: 'x' }, 2, /SLURM_ARRAY_TASK_ID is 'x', not a number/],
      ['auto', { SLURM_ARRAY_TASK_ID: '4', SLURM_ARRAY_TASK_MIN: '0', SLURM_ARRAY_TASK_MAX: '12', SLURM_ARRAY_TASK_COUNT: '4' }, null, /not contiguous/],
    ];
    for (const [spec, env, n, re] of errs) expect(() => parseShard(spec, env, n)).toThrow(re);
  });
});
