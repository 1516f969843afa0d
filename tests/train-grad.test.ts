// Gradcheck of a whole training step: GPU forward + lmHeadCrossEntropy + modelBackward, against
// central finite differences of a float64 reference loss (HF-semantics reference forward), for LoRA
// and full finetuning, on a tiny random model of each family.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getGpu, type Tensor } from '../src/gpu/runtime.ts';
import { lmHeadCrossEntropy } from '../src/kernels/loss.ts';
import { loadWeightsF64, tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { SeedStreamRng } from '../src/util/rng.ts';
import type { Arch, ModelConfig } from '../src/model/config.ts';
import { referenceForward } from '../src/model/reference.ts';
import { Transformer } from '../src/model/transformer.ts';
import { LINEAR_MODULES } from '../src/model/weights.ts';
import { modelBackward } from '../src/train/backward.ts';
import { createFullGrads, fullParamList } from '../src/train/full.ts';
import { uploadLora, type HostLora } from '../src/model/adapter.ts';
import { ALL_TARGETS, createLoraGrads, loraGradList, loraParams, moduleShape } from '../src/train/lora.ts';

type LoraHost = HostLora['layers'];

const SEQS = [
  { ids: [5, 17, 3, 88, 40, 2, 9], targets: [-100, -100, 88, 40, 2, 9, -100] },
  { ids: [1, 2, 3, 4], targets: [-100, 3, 4, -100] },
];
const T = 7;

/** Mean CE over unmasked targets of all sequences, in float64 from the reference forward. */
function referenceLoss(cfg: ModelConfig, weights: Map<string, Float64Array>): number {
  let sum = 0;
  let count = 0;
  const V = cfg.vocabSize;
  for (const s of SEQS) {
    const { logits } = referenceForward(cfg, weights, s.ids);
    s.targets.forEach((tgt, t) => {
      if (tgt < 0) return;
      let m = -Infinity;
      for (let j = 0; j < V; j++) m = Math.max(m, logits[t * V + j]);
      let z = 0;
      for (let j = 0; j < V; j++) z += Math.exp(logits[t * V + j] - m);
      sum += m + Math.log(z) - logits[t * V + tgt];
      count++;
    });
  }
  return sum / count;
}

async function setup(arch: Arch) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `grad-${arch}-`));
  await writeRandomCheckpoint(dir, tinyConfigJson(arch), { dtype: 'F32', seed: 3 });
  const gpu = await getGpu();
  const model = await Transformer.load(gpu, dir, { maxPositions: 64 });
  const ref = await loadWeightsF64(dir);
  const ids = new Uint32Array(SEQS.length * T);
  const pos = new Uint32Array(SEQS.length * T);
  const tg = new Int32Array(SEQS.length * T).fill(-100);
  SEQS.forEach((s, b) => {
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = t < s.ids.length ? s.ids[t] : 0;
      pos[b * T + t] = t;
      if (t < s.targets.length) tg[b * T + t] = s.targets[t];
    }
  });
  return {
    gpu,
    model,
    ref,
    hostIds: ids,
    ids: gpu.upload(ids, [ids.length], 'u32'),
    pos: gpu.upload(pos, [pos.length], 'u32'),
    labels: gpu.upload(tg, [tg.length], 'i32'),
  };
}

// Finite differences: central, h = 1e-5 in float64 → truncation error O(h²·f''') ≈ 1e-9 and
// rounding ≈ 1e-16/h ≈ 1e-11: the reference gradient is exact to ~1e-8. The GPU gradient is float32
// through 2 layers: ~1e-5 relative to the gradient scale. Tolerance: |gpu − fd| ≤ 2e-3·max|fd| + 2e-5.
const H = 1e-5;

describe.each(['qwen2', 'qwen3', 'llama'] as Arch[])('training-step gradients (%s)', (arch) => {
  it('LoRA: dA and dB match finite differences of the reference loss', async () => {
    const { gpu, model, ref, ids, pos, labels } = await setup(arch);
    const cfg = model.cfg;
    const rank = 2;
    const lc = { rank, alpha: 4, rslora: false, targets: ALL_TARGETS, dropout: 0 };
    const rng = new SeedStreamRng(11, 'lora-test');
    // Non-zero B so every path (dA and dB) carries gradient.
    const host: LoraHost = Array.from({ length: cfg.layers }, () => {
      const layer: LoraHost[number] = {};
      for (const m of ALL_TARGETS) {
        const [o, i] = moduleShape(cfg, m);
        layer[m] = {
          A: Float32Array.from({ length: rank * i }, () => rng.normal() * 0.3),
          B: Float32Array.from({ length: o * rank }, () => rng.normal() * 0.3),
        };
      }
      return layer;
    });
    const lora = uploadLora(gpu, cfg, { rank, alpha: lc.alpha, useRslora: false, targets: ALL_TARGETS, layers: host });
    const grads = createLoraGrads(gpu, lora);
    const fwd = model.forward(ids, pos, SEQS.length, T, { lora, save: true });
    const loss = lmHeadCrossEntropy(gpu, fwd.hidden, model.lmHead, labels);
    modelBackward(model, fwd, loss.dx!, { lora, loraGrads: grads, positions: pos, batch: SEQS.length, seqLen: T });
    const gpuLoss = (await gpu.readF32(loss.result))[0];
    const gList = (await gpu.readMany(loraGradList(lora, grads))) as Float32Array[];
    const names = loraParams(lora).names;

    // Reference: merged weights W' = W + s·B·A.
    const s = lc.alpha / rank;
    const merged = (hostLora: LoraHost) => {
      const w = new Map(ref.weights);
      for (let l = 0; l < cfg.layers; l++) {
        for (const m of ALL_TARGETS) {
          const [o, i] = moduleShape(cfg, m);
          const name = `model.layers.${l}.${LINEAR_MODULES[m].path}.weight`;
          const W = Float64Array.from(ref.weights.get(name)!);
          const { A, B } = hostLora[l][m]!;
          for (let r = 0; r < o; r++) for (let c = 0; c < i; c++) {
            let acc = 0;
            for (let k = 0; k < rank; k++) acc += B[r * rank + k] * A[k * i + c];
            W[r * i + c] += s * acc;
          }
          w.set(name, W);
        }
      }
      return w;
    };
    const base = referenceLoss(cfg, merged(host));
    expect(Math.abs(gpuLoss - base)).toBeLessThan(1e-4 * Math.max(1, base));
    // Check 24 random coordinates spread over all parameters (float64 host copies for the FD).
    const pick = new SeedStreamRng(5, 'pick');
    const hostF64 = host.map((layer) => {
      const o: Record<string, { A: Float64Array; B: Float64Array }> = {};
      for (const m of ALL_TARGETS) o[m] = { A: Float64Array.from(layer[m]!.A), B: Float64Array.from(layer[m]!.B) };
      return o;
    });
    const fds: number[] = [];
    const gs: number[] = [];
    for (let n = 0; n < 24; n++) {
      const p = pick.int(names.length);
      const [l, m, which] = names[p].split('.') as [string, string, 'A' | 'B'];
      const arr = hostF64[Number(l)][m][which];
      const idx = pick.int(arr.length);
      const orig = arr[idx];
      const evalAt = (v: number) => {
        arr[idx] = v;
        const h2 = hostF64.map((layer) => {
          const o: LoraHost[number] = {};
          for (const mm of ALL_TARGETS) o[mm as keyof typeof o] = layer[mm] as unknown as { A: Float32Array; B: Float32Array };
          return o;
        });
        return referenceLoss(cfg, merged(h2));
      };
      const fd = (evalAt(orig + H) - evalAt(orig - H)) / (2 * H);
      arr[idx] = orig;
      fds.push(fd);
      gs.push(gList[p][idx]);
    }
    const scale = Math.max(...fds.map(Math.abs));
    expect(scale).toBeGreaterThan(1e-4); // the check is not vacuous
    fds.forEach((fd, k) => expect(Math.abs(gs[k] - fd)).toBeLessThan(2e-3 * scale + 2e-5));
    loss.dispose();
  });

  it('full finetuning: every kind of parameter matches finite differences', async () => {
    const { gpu, model, ref, ids, pos, labels, hostIds } = await setup(arch);
    const cfg = model.cfg;
    const grads = createFullGrads(gpu, model.weights);
    const fwd = model.forward(ids, pos, SEQS.length, T, { save: true });
    const loss = lmHeadCrossEntropy(gpu, fwd.hidden, model.lmHead, labels, { dW: grads.lmHead });
    modelBackward(model, fwd, loss.dx!, { fullGrads: grads, embedIndex: hostIds, positions: pos, batch: SEQS.length, seqLen: T });
    const gList = (await gpu.readMany(fullParamList(grads).params)) as Float32Array[];
    const names = fullParamList(model.weights).names;
    const toHf = (n: string): string => {
      if (n.startsWith('model.embed_tokens.weight')) return 'model.embed_tokens.weight';
      if (n.startsWith('lm_head.weight')) return 'lm_head.weight';
      if (n === 'model.norm.weight') return n;
      const [, l, key] = n.split('.');
      const map: Record<string, string> = {
        inputNorm: 'input_layernorm.weight', postNorm: 'post_attention_layernorm.weight', qNorm: 'self_attn.q_norm.weight', kNorm: 'self_attn.k_norm.weight',
        q: 'self_attn.q_proj.weight', k: 'self_attn.k_proj.weight', v: 'self_attn.v_proj.weight', o: 'self_attn.o_proj.weight',
        qBias: 'self_attn.q_proj.bias', kBias: 'self_attn.k_proj.bias', vBias: 'self_attn.v_proj.bias', oBias: 'self_attn.o_proj.bias',
        gate: 'mlp.gate_proj.weight', up: 'mlp.up_proj.weight', down: 'mlp.down_proj.weight',
      };
      return `model.layers.${l}.${map[key]}`;
    };
    const weights = new Map<string, Float64Array>();
    for (const [k, v] of ref.weights) weights.set(k, Float64Array.from(v));
    const pick = new SeedStreamRng(9, 'pick-full');
    const fds: number[] = [];
    const gs: number[] = [];
    // Two coordinates of every parameter tensor (embedding: rows that occur in the batch).
    for (let p = 0; p < names.length; p++) {
      const hf = toHf(names[p]);
      const arr = weights.get(hf)!;
      for (let n = 0; n < 2; n++) {
        let idx: number;
        if (hf === 'model.embed_tokens.weight') idx = SEQS[n % 2].ids[1 + n] * cfg.hidden + pick.int(cfg.hidden);
        else idx = pick.int(gList[p].length);
        const orig = arr[idx];
        arr[idx] = orig + H;
        const lp = referenceLoss(cfg, weights);
        arr[idx] = orig - H;
        const lm = referenceLoss(cfg, weights);
        arr[idx] = orig;
        fds.push((lp - lm) / (2 * H));
        gs.push(gList[p][idx]);
      }
    }
    const scale = Math.max(...fds.map(Math.abs));
    expect(scale).toBeGreaterThan(1e-4);
    fds.forEach((fd, k) => expect(Math.abs(gs[k] - fd), `coordinate ${k} (${names[Math.floor(k / 2)]})`).toBeLessThan(2e-3 * scale + 2e-5));
    loss.dispose();
    void (null as unknown as Tensor);
  });
});

describe('LoRA dropout', () => {
  it('the dropout kernel matches its reference mask and keeps ≈ 1 − p of the elements', async () => {
    const { dropout, dropoutRef } = await import('../src/kernels/elementwise.ts');
    const gpu = await getGpu();
    const n = 10_007;
    const x = Float32Array.from({ length: n }, (_, i) => 1 + (i % 13));
    const y = await gpu.readF32(dropout(gpu, gpu.upload(x), 0.25, [123, 456]));
    const r = dropoutRef(x, 0.25, [123, 456]);
    let kept = 0;
    for (let i = 0; i < n; i++) {
      expect(y[i]).toBeCloseTo(r[i], 4);
      if (y[i] !== 0) kept++;
    }
    // Binomial(10007, 0.75): sd ≈ 43; 5 sd bounds.
    expect(Math.abs(kept - 0.75 * n)).toBeLessThan(5 * 43.3);
    const other = await gpu.readF32(dropout(gpu, gpu.upload(x), 0.25, [124, 456]));
    expect(Array.from(other)).not.toEqual(Array.from(y));
  });

  it('gradients with dropout match float32 finite differences of the same masked loss', async () => {
    const { gpu, model, ids, pos, labels } = await setup('qwen2');
    const cfg = model.cfg;
    const rank = 2;
    const rng = new SeedStreamRng(21, 'lora-dropout');
    const host: LoraHost = Array.from({ length: cfg.layers }, () => {
      const layer: LoraHost[number] = {};
      for (const m of ALL_TARGETS) {
        const [o, i] = moduleShape(cfg, m);
        layer[m] = {
          A: Float32Array.from({ length: rank * i }, () => rng.normal() * 0.2),
          B: Float32Array.from({ length: o * rank }, () => rng.normal() * 0.2),
        };
      }
      return layer;
    });
    const lora = uploadLora(gpu, cfg, { rank, alpha: 4, useRslora: false, targets: ALL_TARGETS, layers: host });
    lora.dropout = 0.3;
    const train = { seed: 9, micro: 4 };
    const lossAt = async (): Promise<number> => {
      const fwd = model.forward(ids, pos, SEQS.length, T, { lora, train });
      const l = lmHeadCrossEntropy(gpu, fwd.hidden, model.lmHead, labels, { backward: false });
      const v = (await gpu.readF32(l.result))[0];
      l.dispose();
      fwd.hidden.dispose();
      return v;
    };
    const grads = createLoraGrads(gpu, lora);
    const fwd = model.forward(ids, pos, SEQS.length, T, { lora, save: true, train });
    const loss = lmHeadCrossEntropy(gpu, fwd.hidden, model.lmHead, labels);
    modelBackward(model, fwd, loss.dx!, { lora, loraGrads: grads, train, positions: pos, batch: SEQS.length, seqLen: T });
    const gList = (await gpu.readMany(loraGradList(lora, grads))) as Float32Array[];
    const params = loraParams(lora).params;
    // Float32 central differences, h = 1e-2: rounding ≈ 1e-7·loss/h ≈ 5e-5, truncation O(h²·f''')
    // small at these weight scales; the check compares the largest-gradient coordinates of 6 tensors
    // at 3% + 1e-3.
    for (const p of [0, 3, 7, 10, 13, 20]) {
      const g = gList[p];
      let idx = 0;
      for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[idx])) idx = i;
      const host = (await gpu.readF32(params[p])).slice();
      const orig = host[idx];
      const h = 1e-2;
      host[idx] = orig + h;
      gpu.write(params[p], host);
      const lp = await lossAt();
      host[idx] = orig - h;
      gpu.write(params[p], host);
      const lm = await lossAt();
      host[idx] = orig;
      gpu.write(params[p], host);
      const fd = (lp - lm) / (2 * h);
      expect(Math.abs(g[idx] - fd), `param ${p}`).toBeLessThan(0.03 * Math.abs(fd) + 1e-3);
    }
    loss.dispose();
  });
});
