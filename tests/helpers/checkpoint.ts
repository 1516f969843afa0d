/**
 * Seeded random HF-style checkpoints for tests and benchmarks (config.json + safetensors, single or
 * sharded), and a loader that turns a checkpoint folder into the weight map the reference forward takes.
 *
 * Every tensor's values depend only on (seed, tensor name) (randomTensorValues), never on sharding or
 * write order, so the same seed gives the same model whether written as one file or several.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { writeJsonAtomic } from '../../src/util/fsatomic.ts';
import { checkTensors, expectedTensors, loadConfig, parseConfig, type Arch, type ModelConfig } from '../../src/model/config.ts';
import { randomTensorValues } from '../../src/model/init.ts';
import {
  openSafetensors,
  writeSafetensors,
  writeShardedSafetensors,
  type FloatDtype,
  type WriteTensor,
} from '../../src/model/safetensors.ts';

// ------------------------------------------------------------------------------------------------
// tiny configs of each family
// ------------------------------------------------------------------------------------------------

/**
 * A small HF config.json object for `arch` (exercising the family's distinctive features: GQA,
 * qwen2 qkv bias, qwen3 explicit head_dim ≠ hidden/heads with q/k norm, llama3 rope scaling).
 */
export function tinyConfigJson(arch: Arch, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    model_type: arch,
    architectures: [arch === 'qwen2' ? 'Qwen2ForCausalLM' : arch === 'qwen3' ? 'Qwen3ForCausalLM' : 'LlamaForCausalLM'],
    vocab_size: 96,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 48,
    hidden_act: 'silu',
    max_position_embeddings: 512,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float32',
  };
  if (arch === 'qwen2') {
    Object.assign(base, { use_sliding_window: false, sliding_window: 4096, max_window_layers: 2, tie_word_embeddings: true, rope_theta: 1000000 });
  } else if (arch === 'qwen3') {
    Object.assign(base, { head_dim: 16, attention_bias: false, use_sliding_window: false, tie_word_embeddings: true, rope_theta: 1000000 });
  } else {
    Object.assign(base, {
      attention_bias: false,
      mlp_bias: false,
      rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    });
  }
  return { ...base, ...overrides };
}

// ------------------------------------------------------------------------------------------------
// writing random checkpoints
// ------------------------------------------------------------------------------------------------

export interface RandomCheckpointOptions {
  dtype: FloatDtype;
  seed: number;
  /** number of shards; 1 or undefined writes a single model.safetensors */
  shards?: number;
  /** multiplier on the std of matrices/embeddings/biases (default 1) */
  scale?: number;
  /** extra tensors to add (e.g. to test "unexpected tensor" warnings) */
  extraTensors?: WriteTensor[];
}

const DTYPE_NAME: Record<FloatDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * Write `<dir>/config.json` and seeded random weights for it (model.safetensors, or shards +
 * model.safetensors.index.json). Returns the parsed config and the files written.
 */
export async function writeRandomCheckpoint(
  dir: string,
  cfgJson: Record<string, unknown>,
  opts: RandomCheckpointOptions,
): Promise<{ config: ModelConfig; files: string[] }> {
  const cfg = parseConfig(cfgJson, 'writeRandomCheckpoint config');
  await fsp.mkdir(dir, { recursive: true });
  const json = { ...cfgJson };
  if (json.torch_dtype === undefined) json.torch_dtype = DTYPE_NAME[opts.dtype];
  await writeJsonAtomic(path.join(dir, 'config.json'), json);
  const scale = opts.scale ?? 1;
  const tensors: WriteTensor[] = expectedTensors(cfg).map((e) => ({
    name: e.name,
    dtype: opts.dtype,
    shape: e.shape,
    data: () => randomTensorValues(e.name, e.shape, opts.seed, scale),
  }));
  if (opts.extraTensors) tensors.push(...opts.extraTensors);
  // remove stale weight files from a previous write into the same dir
  for (const f of await fsp.readdir(dir)) {
    if (f.endsWith('.safetensors') || f === 'model.safetensors.index.json') await fsp.rm(path.join(dir, f));
  }
  const shards = opts.shards ?? 1;
  let files: string[];
  if (shards <= 1) {
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    files = ['model.safetensors'];
  } else {
    files = await writeShardedSafetensors(dir, tensors, { shards });
    files.push('model.safetensors.index.json');
  }
  return { config: cfg, files: ['config.json', ...files] };
}

// ------------------------------------------------------------------------------------------------
// loading
// ------------------------------------------------------------------------------------------------

export interface LoadedWeights<T extends Float32Array | Float64Array> {
  config: ModelConfig;
  weights: Map<string, T>;
  /** unexpected tensors etc. (see checkTensors) */
  warnings: string[];
}

async function loadWeightsAs<T extends Float32Array | Float64Array>(
  dir: string,
  conv: (a: Float32Array) => T,
): Promise<LoadedWeights<T>> {
  const config = await loadConfig(dir);
  const ckpt = await openSafetensors(dir);
  try {
    const warnings = checkTensors(config, ckpt.shapes(), dir);
    const weights = new Map<string, T>();
    for (const e of expectedTensors(config)) {
      const t = await ckpt.readTensor(e.name);
      weights.set(e.name, conv(t.data));
    }
    return { config, weights, warnings };
  } finally {
    await ckpt.close();
  }
}

/** Load every expected tensor of an HF folder as Float64Array (for the reference forward). */
export async function loadWeightsF64(dir: string): Promise<LoadedWeights<Float64Array>> {
  return loadWeightsAs(dir, (a) => Float64Array.from(a));
}

/** Same as loadWeightsF64 but keeps Float32Array (half the memory; reference accepts both). */
export async function loadWeightsF32(dir: string): Promise<LoadedWeights<Float32Array>> {
  return loadWeightsAs(dir, (a) => a);
}

