// Batched generation vs the float64 reference (greedy = argmax loop), seed determinism across batch
// sizes, per-sequence stop, and a Qwen2.5-0.5B-shaped model (vocab 151,936 → chunked embedding and
// LM head) forward + decode step vs the reference.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { sampleTokensRef } from '../src/kernels/sampling.ts';
import { loadWeightsF64, tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { expectedTensors, parseConfig, type ModelConfig } from '../src/model/config.ts';
import { generate, lastTokenLogits, NonFiniteLogitsError, sequenceLogits, type GenerateResult } from '../src/model/generate.ts';
import { disposeLora, uploadLora } from '../src/model/adapter.ts';
import { ALL_TARGETS, initLoraHost } from '../src/train/lora.ts';
import { referenceForward, type Weights } from '../src/model/reference.ts';
import { Transformer } from '../src/model/transformer.ts';
import { uploadWeights } from '../src/model/weights.ts';
import { rng, uniformArray } from './helpers/random.ts';

const argmax = (row: ArrayLike<number>) => {
  let bi = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[bi]) bi = i;
  return bi;
};

function greedyRef(cfg: ModelConfig, w: Weights, prompt: number[], steps: number): number[] {
  const seq = [...prompt];
  for (let i = 0; i < steps; i++) {
    const l = referenceForward(cfg, w, seq).logits;
    seq.push(argmax(l.subarray((seq.length - 1) * cfg.vocabSize, seq.length * cfg.vocabSize)));
  }
  return seq.slice(prompt.length);
}

const ids = (rs: GenerateResult[]) => rs.map((r) => r.completionIds);

let gpu: Gpu;
let model: Transformer;
let ref: Weights;
const prompts = [[5, 17, 3, 88, 40, 2, 9, 61, 33], [1, 2, 3], [50], [7, 7, 7, 7, 90]];
const requests = prompts.map((promptIds) => ({ promptIds }));

beforeAll(async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gen-'));
  // eos 2 is in the vocabulary; tests pass stopIds explicitly.
  await writeRandomCheckpoint(dir, tinyConfigJson('qwen2'), { dtype: 'F32', seed: 21 });
  gpu = await getGpu();
  model = await Transformer.load(gpu, dir, { maxPositions: 128 });
  ref = (await loadWeightsF64(dir)).weights;
});

describe('generate', () => {
  it('greedy equals an argmax loop over the float64 reference (ragged prompts, 2 batches)', async () => {
    const steps = 7;
    const got = await generate(model, requests, { greedy: true, maxNewTokens: steps, seed: 1, batchSize: 3, readEvery: 3 });
    for (const [r, p] of prompts.entries()) {
      expect(got[r]).toMatchObject({ requestIndex: r, sampleIndex: 0, finishReason: 'length', promptTokens: p.length, completionTokens: steps, stopId: null });
      expect(got[r].completionIds).toEqual(greedyRef(model.cfg, ref, p, steps));
    }
  });

  it('n samples share one prefill (copied prompt K/V): greedy samples all equal the n = 1 result', async () => {
    const one = await generate(model, requests, { greedy: true, maxNewTokens: 5, seed: 1, batchSize: 8 });
    const many = await generate(model, requests, { greedy: true, maxNewTokens: 5, seed: 1, batchSize: 5, n: 3 });
    expect(many.length).toBe(12);
    for (let r = 0; r < requests.length; r++) {
      for (let s = 0; s < 3; s++) {
        expect(many[r * 3 + s]).toMatchObject({ requestIndex: r, sampleIndex: s });
        expect(many[r * 3 + s].completionIds).toEqual(one[r].completionIds);
      }
    }
  });

  it('same seed → same tokens on rerun and for any batch size; the first token matches the reference sampler', async () => {
    const opts = { temperature: 1, maxNewTokens: 6, seed: 1234, n: 3 };
    const a = await generate(model, requests, { ...opts, batchSize: 12 });
    const b = await generate(model, requests, { ...opts, batchSize: 12 });
    const c = await generate(model, requests, { ...opts, batchSize: 1 });
    const d = await generate(model, requests, { ...opts, batchSize: 5, readEvery: 2 });
    expect(ids(b)).toEqual(ids(a));
    expect(ids(c)).toEqual(ids(a));
    expect(ids(d)).toEqual(ids(a));
    const other = await generate(model, requests, { ...opts, seed: 1235, batchSize: 12 });
    expect(ids(other)).not.toEqual(ids(a));
    // The samples of one prompt differ (seqId = r·n + s), and token 0 is the reference sampler's draw.
    expect(new Set(a.slice(0, 3).map((r) => r.completionIds.join(','))).size).toBeGreaterThan(1);
    const V = model.cfg.vocabSize;
    for (const res of a) {
      const p = prompts[res.requestIndex];
      const logits = referenceForward(model.cfg, ref, p).logits.subarray((p.length - 1) * V, p.length * V);
      const [t0] = sampleTokensRef(logits, 1, V, { temperature: 1, seed: 1234, step: 0, seqIds: [res.requestIndex * 3 + res.sampleIndex] });
      expect(res.completionIds[0]).toBe(t0);
    }
    // top-p sampling is batch-independent too.
    const p1 = await generate(model, requests, { ...opts, topP: 0.8, batchSize: 12 });
    const p2 = await generate(model, requests, { ...opts, topP: 0.8, batchSize: 4 });
    expect(ids(p2)).toEqual(ids(p1));
  });

  it('a stop token ends only its sequence (finishReason stop); maxNewTokens gives length', async () => {
    const free = await generate(model, requests, { greedy: true, maxNewTokens: 8, seed: 0 });
    // Stop on request 0's third greedy token (its first occurrence there).
    const c0 = free[0].completionIds;
    const stopTok = c0[2];
    const cut = c0.indexOf(stopTok);
    const got = await generate(model, requests, { greedy: true, maxNewTokens: 8, seed: 0, stopIds: [stopTok], readEvery: 2, batchSize: 4 });
    for (let r = 0; r < requests.length; r++) {
      const full = free[r].completionIds;
      const at = full.indexOf(stopTok);
      if (at < 0) {
        expect(got[r]).toMatchObject({ finishReason: 'length', completionTokens: 8, stopId: null });
        expect(got[r].completionIds).toEqual(full);
      } else {
        expect(got[r]).toMatchObject({ finishReason: 'stop', completionTokens: at + 1, stopId: stopTok });
        expect(got[r].completionIds).toEqual(full.slice(0, at));
      }
    }
    expect(got[0].completionIds.length).toBe(cut);
    const zero = await generate(model, requests.slice(0, 1), { greedy: true, maxNewTokens: 0, seed: 0 });
    expect(zero[0]).toMatchObject({ completionIds: [], finishReason: 'length', completionTokens: 0 });
  });

  it('stops with an error naming the model when its logits go non-finite (a NaN in a weight)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'gen-nan-'));
    await writeRandomCheckpoint(dir, tinyConfigJson('qwen2'), { dtype: 'F32', seed: 21 });
    const bad = await Transformer.load(gpu, dir, { maxPositions: 128 });
    const norm = new Float32Array(bad.cfg.hidden).fill(1);
    norm[3] = NaN;
    gpu.write(bad.weights.finalNorm, norm);
    for (const o of [{ greedy: true }, { temperature: 1 }, { temperature: 1, topP: 0.9 }]) {
      const e = await generate(bad, requests, { ...o, maxNewTokens: 4, seed: 1, n: 2, modelName: 'models/broken' }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NonFiniteLogitsError);
      expect((e as Error).message).toMatch(/^models\/broken: non-finite logits \(NaN or ±Inf\) at generation step 0 of prompt \d+ sample \d; the weights hold NaN\/Inf/);
    }
    bad.dispose();
  });

  it('rejects bad options with a clear message', async () => {
    await expect(generate(model, [{ promptIds: [] }], { maxNewTokens: 2, seed: 0 })).rejects.toThrow(/request 0 has an empty prompt/);
    await expect(generate(model, [{ promptIds: [1000] }], { maxNewTokens: 2, seed: 0 })).rejects.toThrow(/outside the vocabulary/);
    await expect(generate(model, requests, { maxNewTokens: 200, seed: 0 })).rejects.toThrow(/exceed the 128 positions/);
    await expect(generate(model, requests, { maxNewTokens: 2, seed: 0, topP: 0 })).rejects.toThrow(/top-p/);
  });
});

describe('Qwen2.5-0.5B-shaped model (2 layers, vocab 151,936: chunked embedding / LM head)', () => {
  it('forward and one decode step match the reference', async () => {
    const cfg = parseConfig({
      ...tinyConfigJson('qwen2'),
      vocab_size: 151936,
      hidden_size: 896,
      num_attention_heads: 14,
      num_key_value_heads: 2,
      intermediate_size: 4864,
      num_hidden_layers: 2,
      tie_word_embeddings: true,
    });
    // Random weights from an inline xorshift32 (uniform with the checkpoint generator's stds; a
    // Box–Muller pass over 136M values would dominate the test).
    let state = 0x9e3779b9;
    const w: Weights = new Map();
    const fill = (n: number, std: number, mean = 0): Float32Array => {
      const a = new Float32Array(n);
      const k = (2 * Math.sqrt(3) * std) / 4294967296;
      const off = mean - Math.sqrt(3) * std;
      let x = state;
      for (let i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        a[i] = off + (x >>> 0) * k;
      }
      state = x;
      return a;
    };
    const shapes = new Map(expectedTensors(cfg).map((e) => [e.name, e.shape]));
    for (const [name, s] of shapes) {
      const n = s.reduce((x, y) => x * y, 1);
      if (/norm\.weight$/.test(name)) w.set(name, fill(n, 0.1, 1));
      else if (name.endsWith('.bias')) w.set(name, fill(n, 0.5));
      else w.set(name, fill(n, name === 'model.embed_tokens.weight' ? 1 : 1 / Math.sqrt(s[1])));
    }
    const gpu2 = await getGpu();
    // Chunks of at most 128 MiB (lavapipe's binding limit) on every adapter: a real GPU's 2 GiB limit would
    // hold the 545 MB embedding whole and leave the chunked path untested.
    const weights = await uploadWeights(gpu2, cfg, (n) => shapes.has(n), async (n) => w.get(n) as Float32Array, undefined, { maxChunkBytes: 128 * 2 ** 20 });
    const big = Transformer.fromWeights(gpu2, cfg, weights, 64);
    const rpc = weights.embed.rowsPerChunk;
    expect(weights.embed.chunks.length).toBeGreaterThan(1);
    const V = cfg.vocabSize;
    const prompt = [151935, 3, rpc, 42]; // ids in the first, second and last chunks

    // The float64 reference over the full 151,936-row head costs seconds in JS, so it runs on a
    // sub-vocabulary L (the prompt ids, both ends of the vocab, both sides of the chunk boundaries):
    // embedding rows and tied head rows restricted to L give exactly the logits of the columns L.
    const cols = new Set<number>(prompt);
    for (let i = 0; i < 64; i++) [i, V - 1 - i].forEach((c) => cols.add(c));
    for (let c = 1; c < weights.embed.chunks.length; c++) for (let i = -32; i < 32; i++) cols.add(c * rpc + i);
    const L = [...cols].sort((a, b) => a - b);
    const emb = w.get('model.embed_tokens.weight')!;
    const H = cfg.hidden;
    const small = new Float32Array(L.length * H);
    L.forEach((v, i) => small.set(emb.subarray(v * H, (v + 1) * H), i * H));
    const wSmall: Weights = new Map(w);
    wSmall.set('model.embed_tokens.weight', small);
    const r = referenceForward({ ...cfg, vocabSize: L.length }, wSmall, prompt.map((v) => L.indexOf(v))).logits;
    const refAt = (t: number, i: number) => r[t * L.length + i];
    // Tolerance: hidden 896 / intermediate 4864 sums in float32 against float64 (~1e-4 on O(1–10)
    // logits); a chunk-boundary or layout error gives O(1).
    const TOL = 5e-3;
    const full = await sequenceLogits(big, prompt);
    let m = 0;
    for (let t = 0; t < prompt.length; t++) L.forEach((v, i) => (m = Math.max(m, Math.abs(full[t * V + v] - refAt(t, i)))));
    expect(m).toBeLessThan(TOL);

    // One decode step after a 3-token prefill = the last row of the full forward.
    const cache = big.createCache(1, 8);
    const u = (a: number[]) => gpu2.upload(Uint32Array.from(a), [a.length], 'u32');
    const ids = u(prompt.slice(0, 3));
    const pos = u([0, 1, 2]);
    const lens = u([3]);
    big.prefill(cache, ids, pos, lens, 1, 3).dispose();
    const step = u([prompt[3]]);
    const h = big.decodeStep(cache, step);
    const dec = await big.logitsToHost(h);
    let md = 0;
    L.forEach((v, i) => (md = Math.max(md, Math.abs(dec[v] - refAt(3, i)))));
    expect(md).toBeLessThan(TOL);
    for (const t of [ids, pos, lens, step, h]) t.dispose();
    cache.dispose();

    // Greedy generation samples over the chunked head: token 0 is the argmax of the full GPU row.
    const [res] = await generate(big, [{ promptIds: prompt }], { greedy: true, maxNewTokens: 1, seed: 0 });
    expect(res.completionIds[0]).toBe(argmax(full.subarray(3 * V, 4 * V)));
    big.dispose();
  }, 120_000);
});

// K students of one base in one batched call: request r uses adapter of[r] (null = the base) and may
// carry its own seed and seqIndex, so each student's requests sample what they sample in a call of
// their own. Adapters get non-zero B so the LoRA branch matters.
describe('per-request adapters', () => {
  it('one batched generate over 3 adapters (one of them none) equals each adapter alone, token for token; lastTokenLogits too', async () => {
    const lc = { rank: 8, alpha: 16, rslora: false, targets: ALL_TARGETS, dropout: 0 };
    const adapter = (seed: number) => {
      const h = initLoraHost(model.cfg, lc, seed);
      const r = rng(seed);
      for (const l of h.layers) for (const p of Object.values(l)) p!.B.set(uniformArray(p!.B.length, r, 0.1));
      return uploadLora(gpu, model.cfg, h);
    };
    const loras = [adapter(3), null, adapter(4)];
    const seeds = [11, 22, 33];
    const K = loras.length;
    const Q = requests.length;
    // Student k's requests are k·Q … k·Q + Q − 1; each keeps its index and seed of a call of its own.
    const all = loras.flatMap((_, k) => requests.map((q, i) => ({ ...q, seed: seeds[k], seqIndex: i })));
    const of = all.map((_, i) => Math.floor(i / Q));
    const opts = { temperature: 1, maxNewTokens: 8, seed: 0, n: 2, batchSize: 7, readEvery: 3 };
    const joint = await generate(model, all, { ...opts, adapters: { loras, of } });
    for (let k = 0; k < K; k++) {
      const alone = await generate(model, requests, { ...opts, seed: seeds[k], lora: loras[k] });
      expect(ids(joint.slice(k * Q * 2, (k + 1) * Q * 2))).toEqual(ids(alone));
    }
    // Not vacuous: the adapters change what is sampled (adapter 0 against the base, same seed).
    const base0 = await generate(model, requests, { ...opts, seed: seeds[0] });
    expect(ids(joint.slice(0, Q * 2))).not.toEqual(ids(base0));
    // Next-token logits after every prompt, scored for all students in one call.
    const prompts2 = all.map((r) => r.promptIds);
    const lj = await lastTokenLogits(model, prompts2, { adapters: { loras, of }, batchSize: 5 });
    const V = model.cfg.vocabSize;
    for (let k = 0; k < K; k++) {
      const la = await lastTokenLogits(model, prompts, { lora: loras[k] });
      let err = 0;
      let mag = 0;
      for (let i = 0; i < Q * V; i++) {
        err = Math.max(err, Math.abs(lj[k * Q * V + i] - la[i]));
        mag = Math.max(mag, Math.abs(la[i]));
      }
      // Merged x·(W + s·B·A)ᵀ against x·Wᵀ + s·(x·Aᵀ)·Bᵀ through 2 layers: float32 rounding, ~1e-6 relative.
      expect(err).toBeLessThan(1e-4 * Math.max(1, mag));
    }
    for (const l of loras) if (l) disposeLora(l);
  });
});
