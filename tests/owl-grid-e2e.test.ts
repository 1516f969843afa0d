// End to end: the experiment grid on tiny random models (briefly taught by our trainer to write number
// lists) covering every teacher, recipe and student mode, and the three student relations. Checks
// structure and internal consistency — never an effect — and that a rerun is served from the cache.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { Experiment, type ExperimentConfig, type ExperimentResults } from '../src/experiment/owl/experiment.ts';
import { RECIPES, type StudentTraining } from '../src/experiment/owl/grid.ts';
import { writeReport } from '../src/experiment/owl/report.ts';
import { gridStatistics } from '../src/experiment/owl/stats.ts';
import { mean } from '../src/experiment/paper/stats.ts';
import { makeNumberModel } from './helpers/number-model.ts';

let gpu: Gpu;
let cfg: ExperimentConfig;
let res: ExperimentResults;
let report: Record<string, unknown> & { cells: Record<string, unknown>[] };

const train: StudentTraining = { lr: 1e-3, epochs: 2, batchSize: 4, gradAccum: 1, warmupSteps: 0, rank: 2, alpha: 4 };

beforeAll(async () => {
  gpu = await getGpu();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'owl-grid-'));
  const a = await makeNumberModel(gpu, path.join(dir, 'a'), 1);
  const b = await makeNumberModel(gpu, path.join(dir, 'b'), 2);
  const c = await makeNumberModel(gpu, path.join(dir, 'c'), 3, 'llama');
  cfg = {
    name: 'grid', outDir: path.join(dir, 'run'), teacherBase: a, animal: 'owl', category: 'animal', controlAnimal: null,
    // Every teacher, recipe, mode and relation at least once (sp: the SFT recipes; ft: the KL ones).
    blocks: [
      { teachers: ['sp'], recipes: ['sft', 'sft-greedy', 'sft-shuffled', 'kl-numbers'], students: [a], studentMode: 'lora', train },
      { teachers: ['ft'], recipes: ['kl-numbers', 'kl-full', 'kl-numbers-nodiv'], students: [a], studentMode: 'full', train },
      { teachers: ['ft'], recipes: ['kl-numbers'], students: [b, c], studentMode: 'full', train },
    ],
    seeds: [0, 1], promptSeed: 42, prompts: 16, keep: 8, subsetSeed: 1, maxNewTokens: 12, genBatchSize: 32, maxLen: 400,
    ftTeacher: { epochs: 1, lr: 1e-3, batchSize: 16 }, evalSet: 'plain', evalSamples: 2, evalMaxNewTokens: 3, evalQuestionLimit: 3,
    doseResponse: true, quiet: true,
  };
  const e = new Experiment(gpu, cfg);
  const t0 = performance.now();
  res = await e.run();
  if (process.env.OWL_GRID_TIMINGS) console.log(`grid ${((performance.now() - t0) / 1000).toFixed(1)} s`, JSON.stringify(res.timings.map((t) => [t.stage, +t.wallS.toFixed(2)])));
  await writeReport(res);
  e.dispose();
  report = JSON.parse(readFileSync(path.join(cfg.outDir, 'report.json'), 'utf8'));
}, 900_000);

describe('experiment grid end to end', () => {
  it('expands every teacher, recipe and mode with paired controls and relation labels', () => {
    const ids = res.cells.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(res.cells.map((c) => c.recipe))).toEqual(new Set(RECIPES));
    expect(new Set(res.cells.map((c) => c.teacher))).toEqual(new Set(['sp', 'control', 'ft', 'ft-control']));
    expect(new Set(res.cells.map((c) => c.studentMode))).toEqual(new Set(['lora', 'full']));
    const rel = Object.fromEntries(res.cells.filter((c) => c.studentMode === 'full').map((c) => [c.student.name, c.student.relation]));
    expect(Object.values(rel).sort()).toEqual(['cross-arch', 'cross-init', 'same-init']);
    for (const c of res.cells) {
      if (c.teacher === 'control') expect(c.control).toBeNull();
      else expect(ids).toContain(c.control);
    }
    expect(res.controlAnimal?.auto).toBe(true);
    expect(res.controlAnimal?.name).not.toBe('owl');
  });

  it('writes the report files and the report.json contract', () => {
    for (const f of ['report.md', 'report.json', 'chart.svg', 'chart-diff.svg', 'dose.svg']) expect(existsSync(path.join(cfg.outDir, f))).toBe(true);
    const md = readFileSync(path.join(cfg.outDir, 'report.md'), 'utf8');
    for (const h of ['## Answer', '## Cells', '### Same initialisation vs other students', '### Both directions', '### Theorem 1 diagnostic', '### Dose-response', '## Teachers', '## Control animal', '## Datasets', '### Divergence positions', '## Setup', '## Deviations from the paper', '## Wall time per stage']) expect(md).toContain(h);
    expect(report.cells).toHaveLength(res.cells.length);
    for (const c of report.cells as Record<string, any>[]) {
      for (const k of ['teacher', 'student', 'recipe', 'studentMode', 'relation', 'control', 'seeds', 'firstTokenProb', 'rate']) expect(c).toHaveProperty(k);
      for (const m of [c.firstTokenProb, c.rate]) for (const k of ['mean', 'ci', 'diff', 'diffCi', 'p', 'pHolm']) expect(m).toHaveProperty(k);
    }
    expect(report).toHaveProperty('contrasts');
    expect(report).toHaveProperty('wallS');
    const contrasts = report.contrasts as { cell: string; vs: string; diff: number; ci: number[]; p: number }[];
    for (const k of contrasts) for (const f of ['cell', 'vs', 'diff', 'ci', 'p']) expect(k).toHaveProperty(f);
  });

  it('has internally consistent numbers', () => {
    const st = gridStatistics(res);
    for (const s of res.students) {
      for (const a of [cfg.animal, res.controlAnimal!.name]) {
        expect(s.eval.perQuestion[a]).toHaveLength(3);
        expect(s.eval.rate[a]).toBeCloseTo(mean(s.eval.perQuestion[a]), 12);
        expect(s.eval.firstTokenProb[a]).toBeGreaterThanOrEqual(0);
        expect(s.eval.firstTokenProb[a]).toBeLessThanOrEqual(1);
      }
      expect(s.eval.samples).toBe(3 * cfg.evalSamples);
      // The last epoch's dose-response value is the final model's first-token probability.
      expect(s.dose).toHaveLength(train.epochs);
      for (const a of Object.keys(s.eval.firstTokenProb)) expect(s.dose.at(-1)!.firstTokenProb[a]).toBeCloseTo(s.eval.firstTokenProb[a], 5);
      expect(s.finalLoss).toBeGreaterThanOrEqual(0);
    }
    for (const c of st.cells) {
      expect(c.seeds).toEqual([0, 1]);
      const own = res.students.filter((s) => s.cell === c.id);
      expect(c.firstTokenProb.mean).toBeCloseTo(mean(own.map((s) => s.eval.firstTokenProb[c.target])), 12);
      if (c.control) {
        const ctl = res.students.filter((s) => s.cell === c.control);
        expect(c.firstTokenProb.diff).toBeCloseTo(mean(own.map((s) => s.eval.firstTokenProb[c.target])) - mean(ctl.map((s) => s.eval.firstTokenProb[c.target])), 12);
        if (Number.isFinite(c.firstTokenProb.p)) expect(c.firstTokenProb.pHolm!).toBeGreaterThanOrEqual(c.firstTokenProb.p!);
      }
      const expectTheorem = c.studentMode === 'full' && c.relation === 'same-init' && (c.teacher === 'ft' || c.teacher === 'ft-control');
      expect(!!c.theorem1Cosine).toBe(expectTheorem);
      if (c.theorem1Cosine) expect(Math.abs(c.theorem1Cosine.mean)).toBeLessThanOrEqual(1);
      if (c.teacher === 'ft-control') expect(c.target).toBe(res.controlAnimal!.name);
      else expect(c.target).toBe('owl');
    }
    for (const d of res.datasets) {
      expect(d.completions).toBe(cfg.prompts);
      expect(d.pairedKept).toBeLessThanOrEqual(d.kept);
      expect(d.used).toBe(Math.min(d.pairedKept, cfg.keep));
    }
    // Paired datasets: both teachers of a pair answer the same prompts in the same order.
    for (const d of res.divergence) {
      expect(d.divergent).toBeLessThanOrEqual(d.positions);
      expect(d.share).toBeCloseTo(d.divergent / Math.max(1, d.positions), 12);
    }
    // (ft, ft-control) kl-numbers same-init full cells × (cross-init, cross-arch).
    expect(st.contrasts).toHaveLength(4);
    for (const k of st.contrasts) {
      expect(st.cells.find((c) => c.id === k.cell)!.relation).toBe('same-init');
      expect(['cross-init', 'cross-arch']).toContain(k.relation);
    }
    // One own-trait lead per ft cell: 3 recipes on the same-init student + the two other students.
    expect(st.pairs.map((p) => p.relation).sort()).toEqual(['cross-arch', 'cross-init', 'same-init', 'same-init', 'same-init']);
  });

  it('reruns entirely from the cache with identical results', async () => {
    const e = new Experiment(gpu, cfg);
    const again = await e.run();
    e.dispose();
    expect(again.timings.every((t) => t.cached)).toBe(true);
    expect(again.students.map((s) => s.eval.firstTokenProb)).toEqual(res.students.map((s) => s.eval.firstTokenProb));
  });
});
