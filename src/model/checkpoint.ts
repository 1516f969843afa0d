/**
 * Seeded random HF-style checkpoints for tests (config.json + safetensors, single or sharded), and
 * a loader that turns a checkpoint folder into the weight map the reference forward takes.
 *
 * Every tensor's values depend only on (seed, tensor name), never on sharding or write order, so
 * the same seed gives the same model whether written as one file or several.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { writeJsonAtomic } from '../util/fsatomic.ts';
import { checkTensors, expectedTensors, loadConfig, parseConfig, type Arch, type ModelConfig } from './config.ts';
import {
  openSafetensors,
  writeSafetensors,
  writeShardedSafetensors,
  type FloatDtype,
  type WriteTensor,
} from './safetensors.ts';

// ------------------------------------------------------------------------------------------------
// PRNG: splitmix32 seeding + xoshiro128**, Box–Muller normals
// ------------------------------------------------------------------------------------------------

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a 32-bit hash of a string (to derive per-tensor seeds). */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;

  /** seed: any number (integer part used, mixed with the optional stream string). */
  constructor(seed: number, stream = '') {
    const st = { s: (Math.trunc(seed) ^ Math.imul(hashString(stream), 0x27d4eb2f)) | 0 };
    // mix in the high bits of large seeds too
    st.s = (st.s + Math.trunc(seed / 4294967296)) | 0;
    this.a = splitmix32(st);
    this.b = splitmix32(st);
    this.c = splitmix32(st);
    this.d = splitmix32(st);
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** uniform 32-bit unsigned integer */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** uniform in [0, 1) with 53 random bits */
  uniform(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** standard normal (Box–Muller) */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u1 = 0;
    while (u1 === 0) u1 = this.uniform();
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  fillNormal(out: Float32Array | Float64Array, mean = 0, std = 1): typeof out {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

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
 * Values of one random tensor. Matrices [out, in] ~ N(0, (scale/√in)²); embeddings ~ N(0, scale²);
 * biases ~ N(0, (0.5·scale)²); norm weights ~ 1 + N(0, 0.1²) (non-trivial so a missing ·weight
 * in a kernel shows up).
 */
export function randomTensorValues(name: string, shape: number[], seed: number, scale = 1): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const rng = new Rng(seed, name);
  const out = new Float32Array(n);
  if (/norm\.weight$/.test(name)) return rng.fillNormal(out, 1, 0.1) as Float32Array;
  if (name.endsWith('.bias')) return rng.fillNormal(out, 0, 0.5 * scale) as Float32Array;
  if (name === 'model.embed_tokens.weight') return rng.fillNormal(out, 0, scale) as Float32Array;
  const inDim = shape[shape.length - 1] ?? 1;
  return rng.fillNormal(out, 0, scale / Math.sqrt(inDim)) as Float32Array;
}

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

