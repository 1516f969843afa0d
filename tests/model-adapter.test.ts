// PEFT LoRA adapters: folder round trip, validation against the base model, and the GPU forward with
// an adapter vs the float64 reference run on merged weights W' = W + s·B·A.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  disposeLora,
  loadPeftAdapter,
  loraDims,
  loraScale,
  loraToHost,
  peftKey,
  readPeftAdapterHost,
  writePeftAdapter,
  type HostLora,
} from '../src/model/adapter.ts';
import { loadWeightsF64, tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { SeedStreamRng } from '../src/util/rng.ts';
import { parseConfig, type ModelConfig } from '../src/model/config.ts';
import { generate, sequenceLogits } from '../src/model/generate.ts';
import { referenceForward, type Weights } from '../src/model/reference.ts';
import { writeSafetensors } from '../src/model/safetensors.ts';
import { Transformer } from '../src/model/transformer.ts';
import { LINEAR_MODULES, type LinearModule } from '../src/model/weights.ts';
import { UserError } from '../src/util/errors.ts';

const ALL = Object.keys(LINEAR_MODULES) as LinearModule[];
// Same budget as tests/model-forward.test.ts: float32 GPU vs float64 reference through 2 small
// layers gives ~1e-5; semantic errors (wrong scale, transposed A/B, missing module) give ≥ 0.1.
const TOL = 2e-3;

function randomLora(cfg: ModelConfig, rank: number, alpha: number, opts: { targets?: LinearModule[]; layers?: number[]; zeroB?: boolean; std?: number; rslora?: boolean; seed?: number } = {}): HostLora {
  const rng = new SeedStreamRng(opts.seed ?? 3, 'lora');
  const targets = opts.targets ?? ALL;
  const which = opts.layers ?? Array.from({ length: cfg.layers }, (_, i) => i);
  const std = opts.std ?? 0.3;
  const layers = Array.from({ length: cfg.layers }, (_, l) => {
    const pairs: HostLora['layers'][number] = {};
    if (!which.includes(l)) return pairs;
    for (const m of targets) {
      const { inDim, outDim } = loraDims(cfg, m);
      const A = rng.fillNormal(new Float32Array(rank * inDim), 0, std) as Float32Array;
      const B = opts.zeroB ? new Float32Array(outDim * rank) : (rng.fillNormal(new Float32Array(outDim * rank), 0, std) as Float32Array);
      pairs[m] = { A, B };
    }
    return pairs;
  });
  return { rank, alpha, useRslora: !!opts.rslora, targets, layers };
}

/** Reference weights with every adapted projection merged: W' = W + s·B·A (float64). */
function mergeLora(cfg: ModelConfig, base: Weights, lora: HostLora): Weights {
  const out = new Map(base);
  const s = loraScale(lora.alpha, lora.rank, lora.useRslora);
  lora.layers.forEach((pairs, l) => {
    for (const [m, p] of Object.entries(pairs) as [LinearModule, { A: Float32Array; B: Float32Array }][]) {
      const { inDim, outDim } = loraDims(cfg, m);
      const name = `model.layers.${l}.${LINEAR_MODULES[m].path}.weight`;
      const w = Float64Array.from(base.get(name)!);
      for (let o = 0; o < outDim; o++) {
        for (let k = 0; k < lora.rank; k++) {
          const b = s * p.B[o * lora.rank + k];
          for (let i = 0; i < inDim; i++) w[o * inDim + i] += b * p.A[k * inDim + i];
        }
      }
      out.set(name, w);
    }
  });
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const argmax = (row: ArrayLike<number>) => {
  let bi = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[bi]) bi = i;
  return bi;
};

let gpu: Gpu;
let model: Transformer;
let cfg: ModelConfig;
let ref: Weights;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'adapter-'));

beforeAll(async () => {
  const dir = path.join(tmp, 'model');
  await writeRandomCheckpoint(dir, tinyConfigJson('qwen2'), { dtype: 'F32', seed: 11 });
  gpu = await getGpu();
  model = await Transformer.load(gpu, dir, { maxPositions: 128 });
  cfg = model.cfg;
  ref = (await loadWeightsF64(dir)).weights;
});

describe('PEFT adapter folders', () => {
  it('write → read round trip is exact (config and tensors)', async () => {
    const lora = randomLora(cfg, 4, 16, { targets: ['q_proj', 'v_proj', 'down_proj'], layers: [1], rslora: true });
    const dir = path.join(tmp, 'roundtrip');
    await writePeftAdapter(dir, cfg, lora, { baseModelNameOrPath: 'Qwen/Qwen2.5-7B-Instruct', loraDropout: 0.05 });
    const back = await readPeftAdapterHost(dir, cfg);
    expect(back.rawConfig).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 16, use_rslora: true, bias: 'none', fan_in_fan_out: false, lora_dropout: 0.05, base_model_name_or_path: 'Qwen/Qwen2.5-7B-Instruct', layers_to_transform: [1] });
    expect(back.lora.rank).toBe(4);
    expect(back.lora.alpha).toBe(16);
    expect(back.lora.useRslora).toBe(true);
    expect(back.lora.targets.sort()).toEqual(['down_proj', 'q_proj', 'v_proj']);
    expect(back.lora.layers[0]).toEqual({});
    for (const m of lora.targets) {
      expect(back.lora.layers[1][m]!.A).toEqual(lora.layers[1][m]!.A);
      expect(back.lora.layers[1][m]!.B).toEqual(lora.layers[1][m]!.B);
    }
    // GPU upload and read back is exact too; the scale is alpha/√r with rsLoRA.
    const w = await loadPeftAdapter(gpu, dir, cfg);
    expect(w.scale).toBe(16 / 2);
    const host = await loraToHost(gpu, w, 16, true);
    expect(host.layers[1].down_proj!.B).toEqual(lora.layers[1].down_proj!.B);
    disposeLora(w);
  });

  it('B = 0 reproduces the base logits exactly', async () => {
    const dir = path.join(tmp, 'zero');
    await writePeftAdapter(dir, cfg, randomLora(cfg, 8, 16, { zeroB: true }));
    const lora = await loadPeftAdapter(gpu, dir, cfg);
    const ids = [5, 17, 3, 88, 40, 2, 9];
    const base = await sequenceLogits(model, ids);
    const adapted = await sequenceLogits(model, ids, lora);
    expect(maxAbsDiff(base, adapted)).toBe(0);
    disposeLora(lora);
  });

  it.each([false, true])('random A, B match the reference on merged weights (rsLoRA %s)', async (rslora) => {
    const host = randomLora(cfg, 4, 8, { rslora, seed: rslora ? 5 : 6 });
    const dir = path.join(tmp, `rand-${rslora}`);
    await writePeftAdapter(dir, cfg, host);
    const lora = await loadPeftAdapter(gpu, dir, cfg);
    const ids = [5, 17, 3, 88, 40, 2, 9, 61];
    const got = await sequenceLogits(model, ids, lora);
    const want = referenceForward(cfg, mergeLora(cfg, ref, host), ids).logits;
    const base = referenceForward(cfg, ref, ids).logits;
    expect(maxAbsDiff(base, want)).toBeGreaterThan(0.1); // the adapter matters
    expect(maxAbsDiff(got, want)).toBeLessThan(TOL);
    disposeLora(lora);
  });

  it('greedy decoding with an adapter follows the merged reference', async () => {
    const host = randomLora(cfg, 2, 4, { targets: ['q_proj', 'k_proj', 'o_proj', 'up_proj'], seed: 9 });
    const lora = (await import('../src/model/adapter.ts')).uploadLora(gpu, cfg, host);
    const merged = mergeLora(cfg, ref, host);
    const prompt = [4, 8, 15, 16];
    const [res] = await generate(model, [{ promptIds: prompt }], { greedy: true, maxNewTokens: 5, seed: 0, lora });
    const seq = [...prompt];
    for (let i = 0; i < 5; i++) {
      const l = referenceForward(cfg, merged, seq).logits;
      seq.push(argmax(l.subarray((seq.length - 1) * cfg.vocabSize)));
    }
    expect(res.completionIds).toEqual(seq.slice(prompt.length));
    disposeLora(lora);
  });
});

describe('PEFT adapter validation', () => {
  const expectUserError = async (p: Promise<unknown>, re: RegExp) => {
    const err = await p.then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(re);
  };

  it('rejects an adapter for another base model (shapes)', async () => {
    const other = parseConfig(tinyConfigJson('qwen3'));
    const dir = path.join(tmp, 'other-base');
    await writePeftAdapter(dir, other, randomLora(other, 4, 8));
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), new RegExp(`${ADAPTER_WEIGHTS_FILE}: layer 0 \\w+_proj: .*another base model`));
  });

  it('rejects a layer index out of range', async () => {
    const deeper = parseConfig(tinyConfigJson('qwen2', { num_hidden_layers: 3 }));
    const dir = path.join(tmp, 'deeper');
    await writePeftAdapter(dir, deeper, randomLora(deeper, 2, 4, { layers: [2], targets: ['q_proj'] }));
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /layer 2 is out of range for the base model \(2 layers\)/);
  });

  it('rejects unknown modules, missing halves, bad configs and missing files', async () => {
    const dir = path.join(tmp, 'bad');
    await writePeftAdapter(dir, cfg, randomLora(cfg, 2, 4, { targets: ['q_proj'] }));
    const wfile = path.join(dir, ADAPTER_WEIGHTS_FILE);
    const cfile = path.join(dir, ADAPTER_CONFIG_FILE);
    const good = await readPeftAdapterHost(dir, cfg);
    const A = good.lora.layers[0].q_proj!.A;
    await writeSafetensors(wfile, [{ name: 'base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight', dtype: 'F32', shape: [2, 32], data: A }]);
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /unknown module self_attn\.qkv_proj/);
    await writeSafetensors(wfile, [{ name: peftKey(0, 'q_proj', 'A'), dtype: 'F32', shape: [2, 32], data: A }]);
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /layer 0 q_proj: lora_B is missing/);
    await writeSafetensors(wfile, [{ name: 'base_model.model.lm_head.weight', dtype: 'F32', shape: [2, 32], data: A }]);
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /unexpected tensor 'base_model\.model\.lm_head\.weight'/);
    writeFileSync(cfile, JSON.stringify({ ...good.rawConfig, peft_type: 'IA3' }));
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /adapter_config\.json: peft_type is "IA3"/);
    writeFileSync(cfile, JSON.stringify({ ...good.rawConfig, use_dora: true }));
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /DoRA/);
    writeFileSync(cfile, '{not json');
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /adapter_config\.json: not valid JSON/);
    await expectUserError(loadPeftAdapter(gpu, path.join(tmp, 'nope'), cfg), /adapter folder not found/);
    writeFileSync(wfile, 'garbage');
    writeFileSync(cfile, JSON.stringify(good.rawConfig));
    await expectUserError(loadPeftAdapter(gpu, dir, cfg), /adapter_model\.safetensors/);
  });
});
