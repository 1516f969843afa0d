// Checkpoints are one atomic unit: a manifest (sizes, hashes, steps) written last, verified on resume,
// with fallback past an interrupted or damaged newer checkpoint; resume refuses another config or data.
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { Transformer } from '../src/model/transformer.ts';
import type { TrainExample } from '../src/train/data.ts';
import { ALL_TARGETS, initLoraHost } from '../src/train/lora.ts';
import { configDiff, findCheckpoint, writeCheckpoint } from '../src/train/state.ts';
import { Trainer, type TrainConfig } from '../src/train/trainer.ts';
import { UserError } from '../src/util/errors.ts';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'ckpt-'));

function oneLineError(fn: () => unknown, re: RegExp): void {
  let err: unknown = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  expect((err as Error).message).toMatch(re);
  expect((err as Error).message).not.toContain('\n');
}

describe('checkpoint files', () => {
  it('keeps the newest complete checkpoint; an interrupted write is ignored with a note', async () => {
    const root = tmp();
    await writeCheckpoint(root, { 'state.bin': new Uint8Array([1, 2]), 'state.json': '{"step":1}' }, { step: 1, optimizerStep: 1 });
    const second = await writeCheckpoint(root, { 'state.bin': new Uint8Array([3, 4, 5]), 'state.json': '{"step":2}' }, { step: 2, optimizerStep: 2 }, async (d) => writeFileSync(path.join(d, 'adapter_model.safetensors'), 'w'));
    expect(readdirSync(root)).toEqual(['ckpt-000002']);
    const m = JSON.parse(readFileSync(path.join(second, 'manifest.json'), 'utf8'));
    expect(m).toMatchObject({ version: 2, step: 2, optimizerStep: 2 });
    expect(Object.keys(m.files).sort()).toEqual(['adapter_model.safetensors', 'state.bin', 'state.json']);
    expect(m.files['state.bin'].size).toBe(3);
    // A kill while writing leaves a hidden temp folder without a manifest.
    mkdirSync(path.join(root, '.ckpt-000003.tmp-99-abcd'));
    writeFileSync(path.join(root, '.ckpt-000003.tmp-99-abcd', 'state.bin'), 'partial');
    const found = findCheckpoint(root);
    expect(found.dir).toBe(second);
    expect(found.notes).toEqual([`ignored ${path.join(root, '.ckpt-000003.tmp-99-abcd')} (a checkpoint whose writing was interrupted)`]);
    // The next save removes the leftover.
    await writeCheckpoint(root, { 'state.bin': new Uint8Array([6]), 'state.json': '{"step":3}' }, { step: 3, optimizerStep: 3 });
    expect(readdirSync(root)).toEqual(['ckpt-000003']);
  });

  it('a mismatched pair (state.json of one save, state.bin of another) is refused, naming the file', async () => {
    const root = tmp();
    const a = await writeCheckpoint(tmp(), { 'state.bin': new Uint8Array([1]), 'state.json': '{"step":15}' }, { step: 15, optimizerStep: 15 });
    const b = await writeCheckpoint(root, { 'state.bin': new Uint8Array([2]), 'state.json': '{"step":45}' }, { step: 45, optimizerStep: 45 });
    copyFileSync(path.join(a, 'state.json'), path.join(b, 'state.json'));
    oneLineError(() => findCheckpoint(root), /^no usable checkpoint in .*: .*ckpt-000001\/state\.json: content differs from its manifest \(damaged or replaced\)$/);
  });

  it('falls back past a damaged newest checkpoint to the previous complete one', async () => {
    const root = tmp();
    const a = await writeCheckpoint(root, { 'state.bin': new Uint8Array([1, 1]), 'state.json': '{"step":1}' }, { step: 1, optimizerStep: 1 });
    const keep = path.join(tmp(), 'copy');
    cpSync(a, keep, { recursive: true });
    const b = await writeCheckpoint(root, { 'state.bin': new Uint8Array([2, 2]), 'state.json': '{"step":2}' }, { step: 2, optimizerStep: 2 });
    cpSync(keep, a, { recursive: true }); // as if killed between the rename and the cleanup
    writeFileSync(path.join(b, 'state.bin'), new Uint8Array([9, 9]));
    const found = findCheckpoint(root);
    expect(found.dir).toBe(a);
    expect(found.notes[0]).toMatch(/^skipped .*ckpt-000002: .*state\.bin: content differs from its manifest/);
    writeFileSync(path.join(b, 'manifest.json'), '{"version": 2, ');
    expect(findCheckpoint(root).notes[0]).toMatch(/manifest\.json: corrupt checkpoint manifest \(not valid JSON\)/);
  });

  it('an old-format state without a manifest, or none, is one line', () => {
    const root = tmp();
    oneLineError(() => findCheckpoint(root), /no training state to resume from/);
    writeFileSync(path.join(root, 'state.json'), '{}');
    oneLineError(() => findCheckpoint(root), /written by an older version \(no checkpoint manifest\) and cannot be verified/);
  });

  it('configDiff names each differing field', () => {
    expect(configDiff({ lr: 2e-4, epochs: 3, maxSteps: undefined, lora: { rank: 8 } }, { lr: 1e-3, epochs: 3, maxSteps: 5, lora: { rank: 8 } })).toEqual(['lr 0.0002 → 0.001', 'maxSteps unset → 5']);
  });
});

const BASE: TrainConfig = {
  mode: 'lora',
  lora: { rank: 4, alpha: 8, rslora: false, targets: ALL_TARGETS, dropout: 0 },
  lr: 5e-3,
  epochs: 2,
  batchSize: 3,
  gradAccum: 1,
  warmupSteps: 1,
  schedule: 'linear',
  maxGradNorm: 1,
  weightDecay: 0,
  optimizer: 'adamw',
  seed: 0,
  shuffle: true,
  checkpointing: false,
  distillWeight: 0,
};

function examples(n: number, shift = 0): TrainExample[] {
  return Array.from({ length: n }, (_, i) => {
    const ids = Array.from({ length: 6 }, (_, k) => ((i * 7 + k * 3 + shift) % 90) + 3);
    return { ids, labels: ids.map((t, k) => (k < 2 ? -100 : t)) };
  });
}

describe('Trainer.loadState', () => {
  it('refuses a checkpoint of another training config or other data, naming what differs', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ckpt-model-'));
    await writeRandomCheckpoint(dir, tinyConfigJson('qwen2'), { dtype: 'F32', seed: 3 });
    const gpu = await getGpu();
    const model = await Transformer.load(gpu, dir, { maxPositions: 32 });
    const data = examples(6);
    const init = initLoraHost(model.cfg, BASE.lora!, 1);
    const state = tmp();
    const t = new Trainer(gpu, model, data, BASE, init);
    await t.run({ saveEvery: 2, save: (tr) => tr.saveState(state).then(() => undefined) });
    t.dispose();
    const other = new Trainer(gpu, model, data, { ...BASE, lr: 1e-3, epochs: 3 }, init);
    oneLineError(() => other.loadState(state), /ckpt-\d+: the checkpoint was made with another training config \(epochs 2 → 3, lr 0\.005 → 0\.001\); resume with the same settings or start over$/);
    other.dispose();
    const changed = new Trainer(gpu, model, examples(6, 1), BASE, init);
    oneLineError(() => changed.loadState(state), /made on other training data \(6 rows then, 6 now, same count, different content\)/);
    changed.dispose();
    const same = new Trainer(gpu, model, data, BASE, init);
    expect(same.loadState(state)).toMatchObject({ step: 2, notes: [] });
    same.dispose();
    model.dispose();
  });
});
