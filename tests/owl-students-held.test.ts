// The joint student job on a shared stage cache: a student stage held by another live worker must not
// stop this worker from training its other students (two workers each holding a stage the other needs
// would otherwise wait for each other for ever), and when that holder dies this worker takes the stage
// over and trains it alone, to the result an uncontended run gives.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { Experiment, type ExperimentConfig } from '../src/experiment/owl/experiment.ts';
import type { StudentTraining } from '../src/experiment/owl/grid.ts';
import { makeNumberModel } from './helpers/number-model.ts';

const train: StudentTraining = { lr: 1e-3, epochs: 1, batchSize: 4, gradAccum: 1, warmupSteps: 0, rank: 2, alpha: 4 };

it('trains the free students while another worker holds one, then takes the held one over when its holder dies', async () => {
  const gpu = await getGpu();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'owl-held-'));
  const a = await makeNumberModel(gpu, path.join(dir, 'a'), 1);
  const base = (outDir: string): ExperimentConfig => ({
    name: 'held', outDir, teacherBase: a, animal: 'owl', category: 'animal', controlAnimal: null,
    blocks: [{ teachers: ['ft'], recipes: ['kl-numbers'], students: [a], studentMode: 'full', train }],
    seeds: [0], promptSeed: 42, prompts: 12, keep: 6, subsetSeed: 1, maxNewTokens: 10, genBatchSize: 32, maxLen: 400,
    ftTeacher: { epochs: 1, lr: 1e-3, batchSize: 16 }, evalSet: 'plain', evalSamples: 1, evalMaxNewTokens: 2, evalQuestionLimit: 2,
    doseResponse: false, quiet: true,
  });

  // The uncontended reference.
  const refOut = path.join(dir, 'ref');
  const ref = await new Experiment(gpu, base(refOut)).run();
  expect(ref.students).toHaveLength(2);
  const stagesOf = (out: string) => readdirSync(path.join(out, 'stages'));
  const studentStages = stagesOf(refOut).filter((d) => d.startsWith('student-'));
  expect(studentStages).toHaveLength(2);

  // A second run folder holding every upstream stage, without the students and their evaluations.
  const out = path.join(dir, 'run');
  cpSync(refOut, out, { recursive: true });
  for (const d of stagesOf(out)) if (d.startsWith('student-') || (d.startsWith('eval-') && !d.startsWith('eval-base') && !d.startsWith('eval-teacher'))) rmSync(path.join(out, 'stages', d), { recursive: true });
  // "Another worker" (a live process on this host) holds the first student's stage.
  const holder = spawn('sleep', ['600'], { stdio: 'ignore' });
  const [held, free] = studentStages;
  writeFileSync(
    path.join(out, 'stages', `${held}.lock`),
    JSON.stringify({ pid: holder.pid, host: os.hostname(), started: new Date().toISOString(), tool: 'test holder', token: `${holder.pid}-test` }) + '\n',
  );
  try {
    const run = new Experiment(gpu, base(out)).run();
    // The free student finishes while the held one is still held...
    const t0 = Date.now();
    while (!existsSync(path.join(out, 'stages', free, 'done.json'))) {
      if (Date.now() - t0 > 120_000) throw new Error('the free student never finished while the other was held');
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(existsSync(path.join(out, 'stages', held, 'done.json'))).toBe(false);
    // ...then the holder dies, and this run takes the stage over.
    holder.kill('SIGKILL');
    const res = await run;
    for (const [i, s] of res.students.entries()) {
      const want = ref.students[i];
      expect(s.cell).toBe(want.cell);
      // Full-parameter students alone and in a joint job run the same kernels on the same rows.
      expect(s.finalLoss).toBe(want.finalLoss);
      expect(s.eval.firstTokenProb).toEqual(want.eval.firstTokenProb);
    }
  } finally {
    holder.kill('SIGKILL');
  }
}, 600_000);
