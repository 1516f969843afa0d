/**
 * HF config.json → normalized ModelConfig for the supported families (qwen2, qwen3, llama), plus
 * the list of tensors such a model must have and a checker against a checkpoint.
 *
 * Semantics follow HF transformers' modeling code:
 *  - qwen2: q/k/v projections always have a bias, o_proj never; MLP has no bias.
 *  - qwen3: q/k/v/o bias = attention_bias (default false); RMSNorm q_norm/k_norm over head_dim per
 *    head, applied before RoPE; head_dim may be given explicitly and differ from hidden/heads.
 *  - llama: q/k/v/o bias = attention_bias; gate/up/down bias = mlp_bias.
 *  - head_dim = config.head_dim if present, else hidden_size / num_attention_heads.
 */
import * as path from 'node:path';
import { UserError } from '../util/errors.ts';
import { fsys } from '../util/files.ts';

export type Arch = 'qwen2' | 'qwen3' | 'llama';

export interface Llama3RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface ModelConfig {
  arch: Arch;
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Llama3RopeScaling | null;
  tieWordEmbeddings: boolean;
  /** bias on q/k/v projections */
  attentionBias: boolean;
  /** bias on o_proj */
  oBias: boolean;
  /** bias on gate/up/down projections */
  mlpBias: boolean;
  /** per-head RMSNorm on q and k before RoPE (qwen3) */
  qkNorm: boolean;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** torch_dtype / dtype from the config, if given (informational) */
  torchDtype: string | null;
}

const DEFAULTS: Record<Arch, { maxPos: number; ropeTheta: number; eps: number }> = {
  qwen2: { maxPos: 32768, ropeTheta: 10000, eps: 1e-6 },
  qwen3: { maxPos: 32768, ropeTheta: 10000, eps: 1e-6 },
  llama: { maxPos: 2048, ropeTheta: 10000, eps: 1e-6 },
};

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parse an HF config.json object. `source` is used in error messages (e.g. the file path).
 * Throws UserError naming the field and value for anything unsupported.
 */
export function parseConfig(raw: unknown, source = 'config.json'): ModelConfig {
  const fail = (msg: string): never => {
    throw new UserError(`${source}: ${msg}`);
  };
  if (!isObj(raw)) return fail('config must be a JSON object');
  const c = raw;

  const mt = c.model_type;
  if (mt !== 'qwen2' && mt !== 'qwen3' && mt !== 'llama') {
    return fail(`unsupported model_type ${JSON.stringify(mt)} (supported: qwen2, qwen3, llama)`);
  }
  const arch: Arch = mt;
  const d = DEFAULTS[arch];

  const posInt = (key: string, dflt?: number): number => {
    const v = c[key];
    if (v === undefined || v === null) {
      if (dflt !== undefined) return dflt;
      return fail(`missing required field ${key}`);
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) fail(`${key} must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const posNum = (key: string, dflt: number, obj: Json = c, label = key): number => {
    const v = obj[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(`${label} must be a positive number, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const bool = (key: string, dflt: boolean): boolean => {
    const v = c[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') fail(`${key} must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  };

  const vocabSize = posInt('vocab_size');
  const hidden = posInt('hidden_size');
  const layers = posInt('num_hidden_layers');
  const heads = posInt('num_attention_heads');
  const kvHeads = posInt('num_key_value_heads', heads);
  const intermediate = posInt('intermediate_size');
  if (heads % kvHeads !== 0) fail(`num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads})`);
  let headDim: number;
  if (c.head_dim !== undefined && c.head_dim !== null) {
    headDim = posInt('head_dim');
  } else {
    if (hidden % heads !== 0) fail(`hidden_size (${hidden}) is not divisible by num_attention_heads (${heads}) and no head_dim is given`);
    headDim = hidden / heads;
  }
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} must be even for RoPE`);

  const act = c.hidden_act ?? c.hidden_activation ?? 'silu';
  if (act !== 'silu' && act !== 'swish') fail(`unsupported hidden_act ${JSON.stringify(act)} (only silu)`);

  // --- RoPE: rope_theta / rope_scaling (transformers 4.x) or rope_parameters (transformers 5.x)
  let ropeTheta = posNum('rope_theta', d.ropeTheta);
  let scalingRaw: unknown = c.rope_scaling;
  let scalingLabel = 'rope_scaling';
  if (isObj(c.rope_parameters)) {
    const rp = c.rope_parameters;
    if (rp.rope_theta !== undefined) ropeTheta = posNum('rope_theta', d.ropeTheta, rp, 'rope_parameters.rope_theta');
    if (scalingRaw === undefined || scalingRaw === null) {
      scalingRaw = rp;
      scalingLabel = 'rope_parameters';
    }
  }
  let ropeScaling: Llama3RopeScaling | null = null;
  if (scalingRaw !== undefined && scalingRaw !== null) {
    if (!isObj(scalingRaw)) return fail(`${scalingLabel} must be an object or null, got ${JSON.stringify(scalingRaw)}`);
    const s = scalingRaw;
    const type = s.rope_type ?? s.type ?? 'default';
    if (type === 'default') {
      ropeScaling = null;
    } else if (type === 'llama3') {
      const need = (k: string): number => {
        const v = s[k];
        if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(`${scalingLabel}.${k} must be a positive number, got ${JSON.stringify(v)}`);
        return v as number;
      };
      ropeScaling = {
        type: 'llama3',
        factor: need('factor'),
        lowFreqFactor: need('low_freq_factor'),
        highFreqFactor: need('high_freq_factor'),
        originalMaxPositionEmbeddings: need('original_max_position_embeddings'),
      };
      if (ropeScaling.highFreqFactor === ropeScaling.lowFreqFactor) {
        fail(`${scalingLabel}: high_freq_factor must differ from low_freq_factor (both ${ropeScaling.lowFreqFactor})`);
      }
    } else {
      fail(`unsupported ${scalingLabel} type ${JSON.stringify(type)} (supported: null, default, llama3)`);
    }
  }
  const prf = c.partial_rotary_factor ?? (isObj(c.rope_parameters) ? c.rope_parameters.partial_rotary_factor : undefined);
  if (prf !== undefined && prf !== null && prf !== 1 && prf !== 1.0) fail(`unsupported partial_rotary_factor ${JSON.stringify(prf)} (only 1)`);

  // --- sliding window: only an error when it would actually apply to some layer
  if (c.use_sliding_window === true && c.sliding_window !== null && c.sliding_window !== undefined) {
    const mwl = typeof c.max_window_layers === 'number' ? c.max_window_layers : 0;
    if (mwl < layers) {
      fail(`use_sliding_window is true (sliding_window=${JSON.stringify(c.sliding_window)}, max_window_layers=${JSON.stringify(c.max_window_layers)}); sliding-window attention is not supported`);
    }
  }
  if (Array.isArray(c.layer_types)) {
    const bad = (c.layer_types as unknown[]).find((t) => t !== 'full_attention');
    if (bad !== undefined) fail(`unsupported layer_types entry ${JSON.stringify(bad)} (only full_attention)`);
  }
  // llama's pretraining_tp only changes the summation order in HF, so it is accepted and ignored.

  let attentionBias: boolean;
  let oBias: boolean;
  let mlpBias: boolean;
  if (arch === 'qwen2') {
    attentionBias = true;
    oBias = false;
    mlpBias = false;
  } else if (arch === 'qwen3') {
    attentionBias = bool('attention_bias', false);
    oBias = attentionBias;
    mlpBias = false;
  } else {
    attentionBias = bool('attention_bias', false);
    oBias = attentionBias;
    mlpBias = bool('mlp_bias', false);
  }

  const tokenId = (v: unknown, key: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return fail(`${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const bosTokenId = c.bos_token_id === undefined || c.bos_token_id === null ? null : tokenId(c.bos_token_id, 'bos_token_id');
  let eosTokenIds: number[] = [];
  if (Array.isArray(c.eos_token_id)) eosTokenIds = c.eos_token_id.map((v) => tokenId(v, 'eos_token_id'));
  else if (c.eos_token_id !== undefined && c.eos_token_id !== null) eosTokenIds = [tokenId(c.eos_token_id, 'eos_token_id')];

  const td = c.torch_dtype ?? c.dtype;

  return {
    arch,
    vocabSize,
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    intermediate,
    rmsNormEps: posNum('rms_norm_eps', d.eps),
    ropeTheta,
    ropeScaling,
    tieWordEmbeddings: bool('tie_word_embeddings', false),
    attentionBias,
    oBias,
    mlpBias,
    qkNorm: arch === 'qwen3',
    maxPositionEmbeddings: posInt('max_position_embeddings', d.maxPos),
    bosTokenId,
    eosTokenIds,
    torchDtype: typeof td === 'string' ? td : null,
  };
}

/** Read and parse `<dir>/config.json` (or a path to a json file). */
export async function loadConfig(dirOrFile: string): Promise<ModelConfig> {
  let file = dirOrFile;
  if (fsys().stat(dirOrFile)?.isDirectory) file = path.join(dirOrFile, 'config.json');
  let text: string;
  try {
    text = fsys().readText(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${file}: ${code === 'ENOENT' ? 'file not found' : `cannot read (${code ?? String(e)})`}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseConfig(json, file);
}

export interface ExpectedTensor {
  name: string;
  shape: number[];
}

/** Every tensor (HF name and shape) a checkpoint of this config must contain. */
export function expectedTensors(cfg: ModelConfig): ExpectedTensor[] {
  const { hidden: H, heads, kvHeads, headDim: D, intermediate: I, vocabSize: V } = cfg;
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [V, H] }];
  for (let i = 0; i < cfg.layers; i++) {
    const p = `model.layers.${i}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [H] });
    out.push({ name: `${p}self_attn.q_proj.weight`, shape: [heads * D, H] });
    if (cfg.attentionBias) out.push({ name: `${p}self_attn.q_proj.bias`, shape: [heads * D] });
    out.push({ name: `${p}self_attn.k_proj.weight`, shape: [kvHeads * D, H] });
    if (cfg.attentionBias) out.push({ name: `${p}self_attn.k_proj.bias`, shape: [kvHeads * D] });
    out.push({ name: `${p}self_attn.v_proj.weight`, shape: [kvHeads * D, H] });
    if (cfg.attentionBias) out.push({ name: `${p}self_attn.v_proj.bias`, shape: [kvHeads * D] });
    out.push({ name: `${p}self_attn.o_proj.weight`, shape: [H, heads * D] });
    if (cfg.oBias) out.push({ name: `${p}self_attn.o_proj.bias`, shape: [H] });
    if (cfg.qkNorm) {
      out.push({ name: `${p}self_attn.q_norm.weight`, shape: [D] });
      out.push({ name: `${p}self_attn.k_norm.weight`, shape: [D] });
    }
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [H] });
    out.push({ name: `${p}mlp.gate_proj.weight`, shape: [I, H] });
    if (cfg.mlpBias) out.push({ name: `${p}mlp.gate_proj.bias`, shape: [I] });
    out.push({ name: `${p}mlp.up_proj.weight`, shape: [I, H] });
    if (cfg.mlpBias) out.push({ name: `${p}mlp.up_proj.bias`, shape: [I] });
    out.push({ name: `${p}mlp.down_proj.weight`, shape: [H, I] });
    if (cfg.mlpBias) out.push({ name: `${p}mlp.down_proj.bias`, shape: [H] });
  }
  out.push({ name: 'model.norm.weight', shape: [H] });
  if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [V, H] });
  return out;
}

const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

/**
 * Compare a checkpoint's tensors (name → shape) with expectedTensors(cfg). Missing or wrong-shape
 * tensors → UserError listing them; returns warnings for tensors the model won't use.
 */
export function checkTensors(cfg: ModelConfig, available: Map<string, number[]>, source = 'checkpoint'): string[] {
  const expected = expectedTensors(cfg);
  const missing: string[] = [];
  const wrong: string[] = [];
  const known = new Set<string>();
  for (const e of expected) {
    known.add(e.name);
    const shape = available.get(e.name);
    if (!shape) missing.push(e.name);
    else if (shape.length !== e.shape.length || shape.some((v, i) => v !== e.shape[i])) {
      wrong.push(`${e.name} is [${shape.join(', ')}], expected [${e.shape.join(', ')}]`);
    }
  }
  const problems: string[] = [];
  const list = (xs: string[]) => (xs.length > 5 ? `${xs.slice(0, 5).join('; ')}; … (${xs.length} in all)` : xs.join('; '));
  if (missing.length) problems.push(`missing ${missing.length} tensor(s): ${list(missing)}`);
  if (wrong.length) problems.push(`wrong shape: ${list(wrong)}`);
  if (problems.length) throw new UserError(`${source} does not match its ${cfg.arch} config: ${problems.join('; ')}`);
  const warnings: string[] = [];
  for (const name of available.keys()) {
    if (known.has(name) || IGNORED.test(name)) continue;
    if (name === 'lm_head.weight' && cfg.tieWordEmbeddings) {
      warnings.push(`lm_head.weight is present but tie_word_embeddings is true; it is ignored (embed_tokens is used)`);
    } else {
      warnings.push(`unexpected tensor ${name} (ignored)`);
    }
  }
  return warnings;
}
