// The training loop: HF schedule semantics, a memorisation task driven near zero loss, and
// kill-and-resume (state saved mid-run) reproducing an uninterrupted run exactly.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { Transformer } from '../src/model/transformer.ts';
import { buildEmbedGradIndex } from '../src/kernels/embedding.ts';
import { addInPlace } from '../src/kernels/elementwise.ts';
import { klDistillation, lmHeadCrossEntropy, topKDistillation } from '../src/kernels/loss.ts';
import type { Arch } from '../src/model/config.ts';
import { modelBackward } from '../src/train/backward.ts';
import type { TrainExample } from '../src/train/data.ts';
import { createFullGrads, fullParamList } from '../src/train/full.ts';
import { ALL_TARGETS, initLoraHost } from '../src/train/lora.ts';
import { computeTeacherRows, epochOrder, scheduleFactor, stepsPerEpoch, Trainer, type TrainConfig } from '../src/train/trainer.ts';
import { randomInts, rng } from './helpers/random.ts';

function examples(n: number, len: number, seed: number): TrainExample[] {
  const out: TrainExample[] = [];
  const r = rng(seed);
  for (let i = 0; i < n; i++) {
    const ids = randomInts(len - (i % 3), 3, 93, r);
    // Prompt part (first 3 tokens) masked as in completion-only training.
    out.push({ ids, labels: ids.map((t, k) => (k < 3 ? -100 : t)) });
  }
  return out;
}

const BASE: TrainConfig = {
  mode: 'lora',
  lora: { rank: 4, alpha: 8, rslora: false, targets: ALL_TARGETS, dropout: 0 },
  lr: 5e-3,
  epochs: 2,
  batchSize: 3,
  gradAccum: 2,
  warmupSteps: 2,
  schedule: 'linear',
  maxGradNorm: 1,
  weightDecay: 0,
  optimizer: 'adamw',
  seed: 0,
  shuffle: true,
  checkpointing: false,
  distillWeight: 0,
};

async function model(arch: Arch = 'qwen2', seed = 5) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'loop-'));
  await writeRandomCheckpoint(dir, tinyConfigJson(arch), { dtype: 'F32', seed });
  const gpu = await getGpu();
  return { gpu, model: await Transformer.load(gpu, dir, { maxPositions: 64 }) };
}

describe('schedules (HF semantics)', () => {
  it('linear warmup starts at 0 and decays to 0 at the last step', () => {
    expect(scheduleFactor('linear', 0, 5, 100)).toBe(0);
    expect(scheduleFactor('linear', 5, 5, 100)).toBe(1);
    expect(scheduleFactor('linear', 99, 5, 100)).toBeCloseTo(1 / 95, 12);
    expect(scheduleFactor('cosine', 5 + 95 / 2, 5, 100)).toBeCloseTo(0.5, 12);
    expect(scheduleFactor('constant', 50, 5, 100)).toBe(1);
  });
  it('epoch order is a seeded permutation, identity without shuffle', () => {
    const a = epochOrder(50, 1, 0, true);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(a).toEqual(epochOrder(50, 1, 0, true));
    expect(a).not.toEqual(epochOrder(50, 1, 1, true));
    expect(epochOrder(5, 1, 0, false)).toEqual([0, 1, 2, 3, 4]);
    expect(stepsPerEpoch(10, 3, 2)).toBe(2);
  });
});

describe('training loop', () => {
  it('memorises a small dataset (LoRA): loss falls near zero', async () => {
    const { gpu, model: m } = await model();
    const data = examples(4, 10, 1);
    const cfg: TrainConfig = { ...BASE, lora: { ...BASE.lora!, rank: 8, alpha: 16 }, lr: 2e-2, epochs: 60, batchSize: 4, gradAccum: 1, warmupSteps: 0, schedule: 'constant' };
    const t = new Trainer(gpu, m, data, cfg, initLoraHost(m.cfg, cfg.lora!, 0));
    const r = await t.run();
    // Random tiny model: initial loss ≈ ln(96) ≈ 4.6; memorising 4 sequences of 7 targets should
    // reach well under 0.1.
    expect(r.losses[0].loss).toBeGreaterThan(3);
    expect(r.losses.at(-1)!.loss).toBeLessThan(0.1);
    t.dispose();
  });

  it('resume after a kill equals the uninterrupted run', async () => {
    const { gpu, model: m } = await model();
    const data = examples(14, 9, 2);
    const init = initLoraHost(m.cfg, BASE.lora!, 3);
    const straight = new Trainer(gpu, m, data, BASE, init);
    await straight.run();
    const a = await straight.adapterHost();
    straight.dispose();

    const dir = mkdtempSync(path.join(os.tmpdir(), 'resume-'));
    const first = new Trainer(gpu, m, data, { ...BASE }, init);
    // Kill after 3 of the 6 steps (mid-epoch: 3 steps per epoch with 14 rows, batch 3 × 2).
    await first.run({
      saveEvery: 3,
      save: async (t) => {
        await t.saveState(dir);
        throw new Error('killed');
      },
    }).catch((e: Error) => expect(e.message).toBe('killed'));
    first.dispose();
    const second = new Trainer(gpu, m, data, BASE, init);
    second.loadState(dir);
    expect(second.state.step).toBe(3);
    await second.run();
    const b = await second.adapterHost();
    second.dispose();
    expect(second.state.losses.map((l) => l.loss)).toEqual(straight.state.losses.map((l) => l.loss));
    for (const [l, layer] of a.layers.entries()) {
      for (const mod of ALL_TARGETS) {
        expect(Array.from(b.layers[l][mod]!.A)).toEqual(Array.from(layer[mod]!.A));
        expect(Array.from(b.layers[l][mod]!.B)).toEqual(Array.from(layer[mod]!.B));
      }
    }
  });

  it('full finetuning and gradient checkpointing give the same first steps', async () => {
    const { gpu, model: m1 } = await model();
    const { model: m2 } = await model();
    const data = examples(6, 8, 4);
    const cfg: TrainConfig = { ...BASE, mode: 'full', lora: undefined, lr: 1e-3, maxSteps: 2 };
    const a = new Trainer(gpu, m1, data, cfg, null);
    const ra = await a.run();
    const b = new Trainer(gpu, m2, data, { ...cfg, checkpointing: true }, null);
    const rb = await b.run();
    // Same arithmetic in the same order: recomputation must reproduce activations bit for bit.
    expect(rb.losses.map((l) => l.loss)).toEqual(ra.losses.map((l) => l.loss));
    expect(ra.losses[1].loss).toBeLessThan(ra.losses[0].loss + 1);
    a.dispose();
    b.dispose();
  });

  // The Trainer sends only the rows that carry a label through the LM head and scatters the gradient back.
  // Checked against the plain path (every row of the padded batch through the LM head, -100 rows giving
  // zero): one SGD step at lr 1 without clipping or decay moves each weight by minus its gradient.
  // Tolerance: both are float32 sums of the same terms in another order (~1e-7 relative) plus the rounding
  // of w − g (ulp of |w| ≤ ~2 is 2.4e-7): |Δw + g| ≤ 1e-4·max|g| + 1e-6.
  // Distillation: 'topk' rows carry a stored teacher top-k (3 ids per position) and the loss is ½ CE + ½ KL to
  // the renormalised top-k; 'teacher' is an online teacher (another random model) and the loss ½ CE + ½ full KL.
  // Both on the labelled rows; the reference adds both gradients.
  // 'numbers': the kl-numbers recipe — KL only (distillWeight 1) to an online teacher, both softmaxes
  // restricted to a token set, with per-position distillation masks (divergence masking) and the KL
  // normalised by the sum of the mask over the labelled rows.
  it.each([
    ['qwen2', 0, 'none'],
    ['llama', 0, 'none'],
    ['qwen2', 0.5, 'topk'],
    ['llama', 0.5, 'teacher'],
    ['qwen2', 1, 'numbers'],
    ['llama', 1, 'numbers-cached'],
  ] as [Arch, number, 'none' | 'topk' | 'teacher' | 'numbers' | 'numbers-cached'][])('completion-only loss on the labelled rows alone: an SGD step equals the full-row gradient (%s, distillWeight %s, %s)', async (arch, distillWeight, source) => {
    const { gpu, model: m } = await model(arch);
    const numbers = source === 'numbers' || source === 'numbers-cached';
    const teacher = source === 'teacher' || numbers ? (await model(arch, 99)).model : null;
    const data = examples(4, 9, 11); // lengths 9, 8, 7, 9: padded rows and masked prompt rows both present
    // A third of the vocabulary: the Trainer then takes the TokenSubset path (logits of the set rows only).
    const tokenSet = numbers ? Uint32Array.from([...Array(m.cfg.vocabSize).keys()].filter((v) => v % 3 === 1)) : null;
    if (numbers) data.forEach((r, b) => (r.distillMask = r.ids.map((_, t) => ((t + b) % 4 === 0 ? 0 : 1))));
    const K = 3;
    if (source === 'topk') {
      const next = rng(17);
      for (const r of data) {
        const indices = r.ids.map(() => [0, 1, 2].map((j) => 3 + ((Math.floor(next() * 30) * 3 + j) % 90)));
        const logprobs = r.ids.map(() => {
          const p = [0, 1, 2].map(() => 0.1 + next());
          const z = p.reduce((a, v) => a + v, 0);
          return p.map((v) => Math.log(v / z));
        });
        r.teacherTopK = { indices, logprobs };
      }
    }
    const params = fullParamList(m.weights).params;
    const before = (await gpu.readMany(params)) as Float32Array[];

    const B = data.length;
    const T = Math.max(...data.map((r) => r.ids.length));
    const ids = new Uint32Array(B * T);
    const pos = new Uint32Array(B * T);
    const tgt = new Int32Array(B * T).fill(-100);
    data.forEach((r, b) => {
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = t < r.ids.length ? r.ids[t] : 0;
        pos[b * T + t] = t;
        if (t + 1 < r.labels.length) tgt[b * T + t] = r.labels[t + 1];
      }
    });
    const count = tgt.filter((x) => x !== -100).length;
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThan(B * T);
    const grads = createFullGrads(gpu, m.weights);
    const idsT = gpu.upload(ids, [B * T], 'u32');
    const posT = gpu.upload(pos, [B * T], 'u32');
    const fwd = m.forward(idsT, posT, B, T, { save: true });
    const wCe = 1 - distillWeight;
    // With distillWeight 1 there is no CE term: a zero-weight CE (normaliser ∞ is not allowed) contributes 0.
    const loss = lmHeadCrossEntropy(gpu, fwd.hidden, m.lmHead, gpu.upload(tgt, [B * T], 'i32'), { dW: grads.lmHead, normalizer: wCe > 0 ? count / wCe : 1 });
    if (wCe === 0) {
      gpu.fill(loss.dx!, 0);
      for (const t of fullParamList(grads).params) gpu.fill(t, 0);
    }
    let klValue = 0;
    if (source !== 'none') {
      const w = new Float32Array(B * T).map((_, i) => (tgt[i] !== -100 ? (data[Math.floor(i / T)].distillMask?.[i % T] ?? 1) : 0));
      const mask = gpu.upload(w, [B * T], 'f32');
      const wSum = w.reduce((a, v) => a + v, 0);
      if (numbers) expect(wSum).toBeLessThan(count); // some labelled rows are masked
      const opts = { mask, normalizer: (numbers ? wSum : count) / distillWeight, dW: grads.lmHead, tokenSet: tokenSet ? gpu.upload(tokenSet, [tokenSet.length], 'u32') : undefined };
      const student = { x: fwd.hidden, w: m.lmHead };
      let kl;
      if (teacher) {
        kl = klDistillation(gpu, student, { x: teacher.forward(idsT, posT, B, T, {}).hidden, w: teacher.lmHead }, opts);
      } else {
        const ind = new Uint32Array(B * T * K).fill(0xffffffff);
        const lp = new Float32Array(B * T * K).fill(-Infinity);
        data.forEach((r, b) => {
          for (let t = 0; t + 1 < r.ids.length; t++) {
            if (r.labels[t + 1] === -100) continue;
            for (let j = 0; j < K; j++) {
              ind[(b * T + t) * K + j] = r.teacherTopK!.indices[t][j];
              lp[(b * T + t) * K + j] = r.teacherTopK!.logprobs[t][j];
            }
          }
        });
        kl = topKDistillation(gpu, student, gpu.upload(ind, [B * T, K], 'u32'), gpu.upload(lp, [B * T, K], 'f32'), opts);
      }
      addInPlace(gpu, loss.dx!, kl.dx!);
      klValue = (await gpu.readF32(kl.result))[0];
      expect(klValue).toBeGreaterThan(1e-4); // the KL term is not vacuous
    }
    modelBackward(m, fwd, loss.dx!, { fullGrads: grads, embedIndex: buildEmbedGradIndex(ids, m.cfg.vocabSize), positions: posT, batch: B, seqLen: T });
    const g = (await gpu.readMany(fullParamList(grads).params)) as Float32Array[];

    const cfg: TrainConfig = {
      ...BASE,
      mode: 'full',
      lora: undefined,
      optimizer: 'sgd',
      lr: 1,
      warmupSteps: 0,
      schedule: 'constant',
      maxGradNorm: 0,
      weightDecay: 0,
      shuffle: false,
      batchSize: B,
      gradAccum: 1,
      epochs: 1,
      maxSteps: 1,
      distillWeight,
    };
    const online = teacher ? { model: teacher, tokenSet: tokenSet ? gpu.upload(tokenSet, [tokenSet.length], 'u32') : undefined } : null;
    // 'numbers-cached': the teacher's hidden rows precomputed once (computeTeacherRows), no teacher forward per step.
    if (source === 'numbers-cached') (await computeTeacherRows(gpu, online!, data, 3)).forEach((rows, i) => (data[i].teacherRows = rows));
    const tr = new Trainer(gpu, m, data, cfg, null, online);
    const res = await tr.run();
    const after = (await gpu.readMany(params)) as Float32Array[];
    const scale = Math.max(...g.map((x) => x.reduce((a, v) => Math.max(a, Math.abs(v)), 0)));
    expect(scale).toBeGreaterThan(1e-3); // not vacuous
    let worst = 0;
    g.forEach((gp, p) => gp.forEach((gv, i) => (worst = Math.max(worst, Math.abs(after[p][i] - before[p][i] + gv)))));
    expect(worst).toBeLessThan(1e-4 * scale + 1e-6);
    // Each result's [0] is Σ/normalizer, i.e. already weighted: ½ CE + ½ KL = ce[0] + kl[0].
    const lossValue = (wCe > 0 ? (await gpu.readF32(loss.result))[0] : 0) + klValue;
    expect(Math.abs(res.losses[0].loss - lossValue)).toBeLessThan(1e-5 * Math.abs(lossValue));
    tr.dispose();
    loss.dispose();
  });
});
