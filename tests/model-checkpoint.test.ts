import { afterAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SeedStreamRng } from '../src/util/rng.ts';
import { loadWeightsF32, loadWeightsF64, tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { randomTensorValues } from '../src/model/init.ts';
import { expectedTensors, parseConfig } from '../src/model/config.ts';
import { referenceForward } from '../src/model/reference.ts';
import { roundThrough } from '../src/model/safetensors.ts';
import { UserError } from '../src/util/errors.ts';

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'ckpt-'));
afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

describe('SeedStreamRng', () => {
  it('is deterministic per (seed, stream) and streams differ', () => {
    const a = new SeedStreamRng(42, 'x');
    const b = new SeedStreamRng(42, 'x');
    const xs = Array.from({ length: 5 }, () => a.nextU32());
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual(xs);
    expect(new SeedStreamRng(42, 'y').nextU32()).not.toBe(xs[0]);
    expect(new SeedStreamRng(43, 'x').nextU32()).not.toBe(xs[0]);
    expect(new SeedStreamRng(42 + 2 ** 32, 'x').nextU32()).not.toBe(xs[0]); // high seed bits matter
  });
  it('uniform in [0,1) and normal has mean 0, variance 1', () => {
    const r = new SeedStreamRng(1);
    const n = 100_000;
    let s = 0, s2 = 0, umin = 1, umax = 0;
    for (let i = 0; i < n; i++) {
      const u = r.uniform();
      umin = Math.min(umin, u);
      umax = Math.max(umax, u);
      const z = r.normal();
      s += z;
      s2 += z * z;
    }
    expect(umin).toBeGreaterThanOrEqual(0);
    expect(umax).toBeLessThan(1);
    // 5 standard errors: sd(mean) = 1/√n ≈ 0.0032, sd(var estimate) = √(2/n) ≈ 0.0045
    expect(Math.abs(s / n)).toBeLessThan(0.016);
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.023);
  });
});

describe('writeRandomCheckpoint / loadWeights', () => {
  it('single-file and sharded checkpoints hold identical weights; config.json written', async () => {
    const cfgJson = tinyConfigJson('qwen3');
    const one = path.join(tmp, 'one');
    const three = path.join(tmp, 'three');
    const r1 = await writeRandomCheckpoint(one, cfgJson, { dtype: 'F32', seed: 5 });
    const r3 = await writeRandomCheckpoint(three, cfgJson, { dtype: 'F32', seed: 5, shards: 3 });
    expect(r1.files).toEqual(['config.json', 'model.safetensors']);
    expect(r3.files).toEqual([
      'config.json',
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
    ]);
    const written = JSON.parse(await fsp.readFile(path.join(one, 'config.json'), 'utf8'));
    expect(written.model_type).toBe('qwen3');
    expect(written.head_dim).toBe(16);
    const a = await loadWeightsF64(one);
    const b = await loadWeightsF64(three);
    expect(a.warnings).toEqual([]);
    expect([...a.weights.keys()].sort()).toEqual(expectedTensors(a.config).map((e) => e.name).sort());
    for (const [k, v] of a.weights) expect(Array.from(b.weights.get(k)!)).toEqual(Array.from(v));
    const n = a.weights.get('model.layers.1.self_attn.k_norm.weight')!;
    expect(Array.from(n)).toEqual(Array.from(randomTensorValues('model.layers.1.self_attn.k_norm.weight', [16], 5)));
  });
  it('BF16/F16 checkpoints hold the rounded values; different seeds give different weights', async () => {
    for (const dtype of ['BF16', 'F16'] as const) {
      const dir = path.join(tmp, dtype);
      await writeRandomCheckpoint(dir, tinyConfigJson('llama'), { dtype, seed: 9 });
      const { weights } = await loadWeightsF32(dir);
      const name = 'model.layers.0.mlp.up_proj.weight';
      const want = roundThrough(dtype, randomTensorValues(name, [48, 32], 9));
      expect(Array.from(weights.get(name)!)).toEqual(Array.from(want));
      expect(JSON.parse(await fsp.readFile(path.join(dir, 'config.json'), 'utf8')).torch_dtype).toBe('float32'); // kept from cfgJson
    }
    expect(randomTensorValues('a', [4], 1)).not.toEqual(randomTensorValues('a', [4], 2));
  });
  it('random weights have the documented scales', () => {
    const w = randomTensorValues('model.layers.0.mlp.down_proj.weight', [64, 400], 3);
    const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
    // target 1/√400 = 0.05; 25600 samples → relative sd of the estimate ≈ 0.4%, allow 3%
    expect(Math.abs(std / 0.05 - 1)).toBeLessThan(0.03);
    const norm = randomTensorValues('model.norm.weight', [1000], 3);
    expect(Math.abs(norm.reduce((s, x) => s + x, 0) / 1000 - 1)).toBeLessThan(0.02); // mean 1, sd 0.1/√1000
  });
  it('rewriting a directory removes stale shards', async () => {
    const dir = path.join(tmp, 'rewrite');
    await writeRandomCheckpoint(dir, tinyConfigJson('llama'), { dtype: 'F32', seed: 1, shards: 2 });
    await writeRandomCheckpoint(dir, tinyConfigJson('llama'), { dtype: 'F32', seed: 1 });
    expect((await fsp.readdir(dir)).sort()).toEqual(['config.json', 'model.safetensors']);
  });
  it('extra tensors become warnings; config/weights mismatch is a UserError', async () => {
    const dir = path.join(tmp, 'extra');
    await writeRandomCheckpoint(dir, tinyConfigJson('qwen2'), {
      dtype: 'F32',
      seed: 1,
      extraTensors: [{ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [4], data: new Float32Array(4) },
        { name: 'model.visual.proj', dtype: 'F32', shape: [2], data: new Float32Array(2) }],
    });
    const { warnings } = await loadWeightsF64(dir);
    expect(warnings).toEqual(['unexpected tensor model.visual.proj (ignored)']);
    await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(tinyConfigJson('qwen2', { intermediate_size: 50 })));
    const err = await loadWeightsF64(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/wrong shape: model\.layers\.0\.mlp\.gate_proj\.weight is \[48, 32\], expected \[50, 32\]/);
  });
  it('rejects an unsupported config before writing anything', async () => {
    const dir = path.join(tmp, 'bad');
    await expect(writeRandomCheckpoint(dir, { ...tinyConfigJson('llama'), hidden_act: 'gelu' }, { dtype: 'F32', seed: 1 })).rejects.toThrow(UserError);
    await expect(fsp.stat(dir)).rejects.toThrow();
  });
});

/**
 * Golden logits from HF transformers 5.18 / torch 2.13 (float64 model, eager attention), computed
 * offline on checkpoints written by writeRandomCheckpoint(dir, cfg, {dtype: 'F32', seed: 7}). To
 * make HF a pure float64 computation its three internal float32 steps were patched to float64:
 * RMSNorm's `.to(torch.float32)`, softmax's `dtype=torch.float32`, and the rotary cos/sin (fed
 * with float64 inv_freq). Observed agreement with referenceForward(ropePrecision: 'f64') was
 * ≤ 2.3e-14 on logits of magnitude ≤ 26, so 1e-11 leaves room for summation-order changes while
 * still catching any real semantic difference (those show up at ≥ 1e-3).
 * These values also pin SeedStreamRng/randomTensorValues/tinyConfigJson: if those change, regenerate.
 */
const GOLDEN: [string, Record<string, unknown>, [number, number, number][]][] = [
  ['qwen2', tinyConfigJson('qwen2'), [[0, 0, -4.403340077631915], [0, 1, 5.763435108737484], [5, 50, 2.6206544019954388], [11, 95, 0.8183036548897769], [11, 7, 14.58546313058947]]],
  ['qwen3', tinyConfigJson('qwen3'), [[0, 0, -4.594302395338617], [0, 1, -9.902217496476421], [5, 50, -7.066694254560683], [11, 95, 4.688139863129156], [11, 7, 14.401803847421592]]],
  ['qwen3 + attention_bias, untied', tinyConfigJson('qwen3', { attention_bias: true, tie_word_embeddings: false }),
    [[0, 0, 2.250514372233076], [0, 1, 0.8797149558104723], [5, 50, 0.3861933290117884], [11, 95, -0.14365695672007592], [11, 7, -2.2117629687841083]]],
  ['llama (llama3 rope scaling)', tinyConfigJson('llama'), [[0, 0, 0.9944071616599957], [0, 1, -0.41586204150671313], [5, 50, 0.8965547259675878], [11, 95, -0.03917539092779291], [11, 7, 0.4732090707970938]]],
  ['llama + attention/mlp bias, tied', tinyConfigJson('llama', { attention_bias: true, mlp_bias: true, rope_scaling: null, tie_word_embeddings: true }),
    [[0, 0, -8.286863803715814], [0, 1, 1.4918703361272854], [5, 50, -0.3756300928943923], [11, 95, 8.106983924716964], [11, 7, 13.953335313379261]]],
];

describe('agreement with HF transformers (golden values)', () => {
  const ids = [5, 17, 3, 90, 42, 42, 0, 63, 1, 2, 88, 7];
  for (const [name, cfgJson, golden] of GOLDEN) {
    it(name, async () => {
      const dir = path.join(tmp, 'golden-' + name.replace(/\W+/g, '_'));
      await writeRandomCheckpoint(dir, cfgJson, { dtype: 'F32', seed: 7 });
      const { config, weights } = await loadWeightsF64(dir);
      expect(config).toEqual(parseConfig(cfgJson));
      const { logits } = referenceForward(config, weights, ids, { ropePrecision: 'f64' });
      for (const [t, v, want] of golden) expect(Math.abs(logits[t * config.vocabSize + v] - want)).toBeLessThan(1e-11);
    });
  }
});
