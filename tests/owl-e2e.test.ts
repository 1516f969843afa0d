// End to end: every stage of the owl pipeline on a tiny model (random init, briefly taught by our
// trainer to write number lists), tiny sizes. Checks the report's structure and internal
// consistency — never a particular effect — and that a rerun is served entirely from the cache.
import { cpSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { ARMS, OwlPipeline, type OwlConfig, type OwlResults } from '../src/experiment/owl.ts';
import { armStatistics, writeReport } from '../src/experiment/report.ts';
import { mean } from '../src/experiment/stats.ts';
import { makeNumberModel } from './helpers/number-model.ts';

let gpu: Gpu;
let cfg: OwlConfig;
let res: OwlResults;

beforeAll(async () => {
  gpu = await getGpu();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'owl-e2e-'));
  const a = await makeNumberModel(gpu, dir, 1);
  // The cross-model arm needs a second base; a copy exercises every code path at no training cost.
  const b = path.join(dir, 'model-b');
  cpSync(a, b, { recursive: true });
  cfg = {
    name: 'e2e', outDir: path.join(dir, 'run'), model: a, studentModel: a, crossModels: [b], animal: 'owl', category: 'animal',
    seeds: [0, 1], promptSeed: 42, prompts: 16, keep: 8, subsetSeed: 1, maxNewTokens: 12, genBatchSize: 32,
    teacherDecoding: 'sample', distill: 'tokens', topK: 8, epochs: 1, lr: 1e-3, rank: 2, alpha: 4, batchSize: 4, gradAccum: 1,
    maxLen: 400, warmupSteps: 1, ftTeacherEpochs: 1, ftTeacherLr: 1e-3, evalSet: 'plain', evalSamples: 2, evalMaxNewTokens: 3,
    evalQuestionLimit: 4, arms: [...ARMS], quiet: true,
  };
  const p = new OwlPipeline(gpu, cfg);
  res = await p.run();
  await writeReport(res);
  p.dispose();
}, 600_000);

describe('owl pipeline end to end', () => {
  it('runs every arm and writes report.md, report.json and chart.svg', () => {
    for (const f of ['report.md', 'report.json', 'chart.svg']) expect(existsSync(path.join(cfg.outDir, f))).toBe(true);
    const arms = new Set(res.models.map((m) => m.arm));
    for (const a of ['base', 'control-gen', 'treatment', 'ft-treatment', 'cross-model', 'cross-model-control', 'shuffled']) expect(arms.has(a)).toBe(true);
    const md = readFileSync(path.join(cfg.outDir, 'report.md'), 'utf8');
    for (const h of ['## Answer', '## Rates by arm', '## Teachers', '## Datasets', '## Setup', '## Deviations from the paper', '## Wall time per stage']) expect(md).toContain(h);
    expect(readFileSync(path.join(cfg.outDir, 'chart.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
  });

  it('has internally consistent numbers', () => {
    for (const m of res.models) {
      expect(m.eval.perQuestion).toHaveLength(4);
      expect(m.eval.rate).toBeCloseTo(mean(m.eval.perQuestion), 12);
      expect(m.eval.samples).toBe(4 * cfg.evalSamples);
      expect(m.eval.firstTokenProb).toBeGreaterThanOrEqual(0);
      expect(m.eval.firstTokenProb).toBeLessThanOrEqual(1);
      if (m.arm !== 'base') expect(m.trainLoss).toBeGreaterThan(0);
    }
    for (const d of res.datasets) {
      expect(d.completions).toBe(cfg.prompts);
      expect(d.kept).toBeLessThanOrEqual(d.completions);
      expect(d.used).toBe(Math.min(d.kept, cfg.keep));
      // Every rejected row has at least one reason.
      const reasons = Object.values(d.rejectCounts).reduce((a, b) => a + b, 0);
      expect(reasons).toBeGreaterThanOrEqual(d.completions - d.kept);
    }
    const stats = armStatistics(res);
    const treat = stats.find((s) => s.arm === 'treatment')!;
    expect(treat.seeds).toBe(2);
    expect(treat.rate.mean).toBeCloseTo(mean(res.models.filter((m) => m.arm === 'treatment').map((m) => m.eval.rate)), 12);
    const ctl = stats.find((s) => s.arm === 'control-gen')!;
    expect(treat.control).toBe(ctl.label);
    expect(treat.diff!.rate).toBeCloseTo(treat.rate.mean - ctl.rate.mean, 12);
    const json = JSON.parse(readFileSync(path.join(cfg.outDir, 'report.json'), 'utf8'));
    expect(json.models).toHaveLength(res.models.length);
    expect(json.stats).toHaveLength(stats.length);
  });

  it('reruns entirely from the cache with identical results', async () => {
    const p = new OwlPipeline(gpu, cfg);
    const again = await p.run();
    p.dispose();
    expect(again.timings.every((t) => t.cached)).toBe(true);
    expect(again.models.map((m) => m.eval.rate)).toEqual(res.models.map((m) => m.eval.rate));
  });
});
