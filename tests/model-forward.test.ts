// GPU transformer forward vs the float64 reference (HF semantics), for each family, on random
// checkpoints written in HF folder format: full-sequence logits, batched = one-by-one, and
// KV-cache decode = full forward.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import type { Arch } from '../src/model/config.ts';
import { loadWeightsF64, tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { referenceForward } from '../src/model/reference.ts';
import { Transformer } from '../src/model/transformer.ts';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function setup(arch: Arch, dtype: 'F32' | 'BF16' | 'F16' = 'F32', shards = 1, overrides: Record<string, unknown> = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `fwd-${arch}-`));
  await writeRandomCheckpoint(dir, tinyConfigJson(arch, overrides), { dtype, seed: 7, shards });
  const gpu = await getGpu();
  const model = await Transformer.load(gpu, dir, { maxPositions: 256 });
  const ref = await loadWeightsF64(dir);
  return { gpu, model, ref, dir };
}

function batchInputs(gpu: Gpu, seqs: number[][], T: number) {
  const ids = new Uint32Array(seqs.length * T);
  const pos = new Uint32Array(seqs.length * T);
  seqs.forEach((s, b) => {
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = t < s.length ? s[t] : 0; // right padding with token 0
      pos[b * T + t] = t;
    }
  });
  return { ids: gpu.upload(ids, [ids.length], 'u32'), pos: gpu.upload(pos, [pos.length], 'u32') };
}

// Tolerance: float32 GPU vs float64 reference through 2 layers of O(1)-scaled activations; logits
// are O(1–10). Observed errors are ~1e-5; 2e-3 absolute leaves room for accumulation-order
// differences while still catching any semantic error (wrong RoPE layout, bias, norm eps, GQA
// grouping produce errors of order 0.1–1).
const TOL = 2e-3;

describe.each(['qwen2', 'qwen3', 'llama'] as Arch[])('GPU forward (%s)', (arch) => {
  it('matches the float64 reference, batched with ragged lengths', async () => {
    const { gpu, model, ref } = await setup(arch);
    const V = model.cfg.vocabSize;
    const seqs = [
      [5, 17, 3, 88, 40, 2, 9, 61, 33, 12, 70],
      [1, 2, 3],
      [50],
    ];
    const T = 11;
    const { ids, pos } = batchInputs(gpu, seqs, T);
    const { hidden } = model.forward(ids, pos, seqs.length, T);
    const logits = await model.logitsToHost(hidden);
    for (const [b, s] of seqs.entries()) {
      const r = referenceForward(ref.config, ref.weights, s);
      const got = logits.subarray(b * T * V, (b * T + s.length) * V);
      expect(maxAbsDiff(got, r.logits)).toBeLessThan(TOL);
    }
    hidden.dispose();
    ids.dispose();
    pos.dispose();
    model.dispose();
  });

  it('decode with the KV cache equals the full forward', async () => {
    const { gpu, model, ref } = await setup(arch);
    const V = model.cfg.vocabSize;
    const prompts = [[3, 9, 27, 81], [4, 16]];
    const cont = [[11, 22, 33], [44, 55, 66]]; // tokens fed one by one
    const T = 4;
    const cache = model.createCache(2, 16);
    const { ids, pos } = batchInputs(gpu, prompts, T);
    const lens = gpu.upload(Uint32Array.from(prompts.map((p) => p.length)), [2], 'u32');
    model.prefill(cache, ids, pos, lens, 2, T).dispose();
    for (let step = 0; step < 3; step++) {
      const stepIds = gpu.upload(Uint32Array.from(cont.map((c) => c[step])), [2], 'u32');
      const h = model.decodeStep(cache, stepIds);
      const logits = await model.logitsToHost(h);
      for (let b = 0; b < 2; b++) {
        const seq = [...prompts[b], ...cont[b].slice(0, step + 1)];
        const r = referenceForward(ref.config, ref.weights, seq);
        const last = r.logits.subarray((seq.length - 1) * V, seq.length * V);
        expect(maxAbsDiff(logits.subarray(b * V, (b + 1) * V), last)).toBeLessThan(TOL);
      }
      h.dispose();
      stepIds.dispose();
    }
    cache.dispose();
    model.dispose();
  });
});

describe('GPU forward: dtypes and shards', () => {
  it.each([
    ['BF16', 1],
    ['F16', 3],
  ] as const)('%s weights in %i shard(s) load and match the reference', async (dtype, shards) => {
    const { gpu, model, ref } = await setup('qwen2', dtype, shards);
    const V = model.cfg.vocabSize;
    const s = [7, 8, 9, 10, 11];
    const { ids, pos } = batchInputs(gpu, [s], s.length);
    const { hidden } = model.forward(ids, pos, 1, s.length);
    const logits = await model.logitsToHost(hidden);
    const r = referenceForward(ref.config, ref.weights, s);
    expect(logits.length).toBe(s.length * V);
    expect(maxAbsDiff(logits, r.logits)).toBeLessThan(TOL);
    model.dispose();
  });
});
