// Loading a Hugging Face model folder onto the GPU: config, validation of every tensor against the
// config, then tensors streamed one at a time (peak host memory ≈ one tensor, never a whole shard).
import path from 'node:path';
import { ChunkedMatrix, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { UserError } from '../util/errors.ts';
import { fsys } from '../util/files.ts';
import { checkTensors, loadConfig, type ModelConfig } from './config.ts';
import { SafetensorsCheckpoint } from './safetensors.ts';

export interface LayerWeights {
  inputNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  qBias?: Tensor;
  kBias?: Tensor;
  vBias?: Tensor;
  oBias?: Tensor;
  qNorm?: Tensor;
  kNorm?: Tensor;
  postNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
  gateBias?: Tensor;
  upBias?: Tensor;
  downBias?: Tensor;
}

export interface ModelWeights {
  /** [vocab, hidden], split by rows under the binding limit. */
  embed: ChunkedMatrix;
  /** The LM head [vocab, hidden]: the same object as `embed` when the embeddings are tied. */
  lmHead: ChunkedMatrix;
  finalNorm: Tensor;
  layers: LayerWeights[];
}

/** The projection names LoRA can target, with their HF module paths. */
export const LINEAR_MODULES = {
  q_proj: { key: 'q', bias: 'qBias', path: 'self_attn.q_proj' },
  k_proj: { key: 'k', bias: 'kBias', path: 'self_attn.k_proj' },
  v_proj: { key: 'v', bias: 'vBias', path: 'self_attn.v_proj' },
  o_proj: { key: 'o', bias: 'oBias', path: 'self_attn.o_proj' },
  gate_proj: { key: 'gate', bias: 'gateBias', path: 'mlp.gate_proj' },
  up_proj: { key: 'up', bias: 'upBias', path: 'mlp.up_proj' },
  down_proj: { key: 'down', bias: 'downBias', path: 'mlp.down_proj' },
} as const;
export type LinearModule = keyof typeof LINEAR_MODULES;

const LAYER_TENSORS: [keyof LayerWeights, string][] = [
  ['inputNorm', 'input_layernorm.weight'],
  ['q', 'self_attn.q_proj.weight'],
  ['k', 'self_attn.k_proj.weight'],
  ['v', 'self_attn.v_proj.weight'],
  ['o', 'self_attn.o_proj.weight'],
  ['qBias', 'self_attn.q_proj.bias'],
  ['kBias', 'self_attn.k_proj.bias'],
  ['vBias', 'self_attn.v_proj.bias'],
  ['oBias', 'self_attn.o_proj.bias'],
  ['qNorm', 'self_attn.q_norm.weight'],
  ['kNorm', 'self_attn.k_norm.weight'],
  ['postNorm', 'post_attention_layernorm.weight'],
  ['gate', 'mlp.gate_proj.weight'],
  ['up', 'mlp.up_proj.weight'],
  ['down', 'mlp.down_proj.weight'],
  ['gateBias', 'mlp.gate_proj.bias'],
  ['upBias', 'mlp.up_proj.bias'],
  ['downBias', 'mlp.down_proj.bias'],
];

/** Reads a tensor from any source (checkpoint or in-memory map), converted to float32. */
export type TensorReader = (name: string) => Promise<Float32Array>;

/** Uploads weights whose names follow HF's layout, reading each tensor only when it is needed.
 * `maxChunkBytes` caps the embedding / LM-head chunks below the adapter's binding limit (tests use it to
 * exercise the chunked path on adapters whose limit would hold the whole matrix). */
export async function uploadWeights(
  gpu: Gpu,
  cfg: ModelConfig,
  has: (name: string) => boolean,
  read: TensorReader,
  onTensor?: () => void,
  opts: { maxChunkBytes?: number } = {},
): Promise<ModelWeights> {
  const up = async (name: string, shape: number[]): Promise<Tensor> => {
    const data = await read(name);
    const t = gpu.upload(data, shape, 'f32', name);
    onTensor?.();
    return t;
  };
  const embedData = await read('model.embed_tokens.weight');
  const embed = gpu.uploadChunked(embedData, cfg.vocabSize, cfg.hidden, 'model.embed_tokens.weight', opts.maxChunkBytes);
  onTensor?.();
  let lmHead = embed;
  if (!cfg.tieWordEmbeddings) {
    lmHead = gpu.uploadChunked(await read('lm_head.weight'), cfg.vocabSize, cfg.hidden, 'lm_head.weight', opts.maxChunkBytes);
    onTensor?.();
  }
  const layers: LayerWeights[] = [];
  const shapes = layerShapes(cfg);
  for (let i = 0; i < cfg.layers; i++) {
    const lw: Partial<LayerWeights> = {};
    for (const [key, suffix] of LAYER_TENSORS) {
      const name = `model.layers.${i}.${suffix}`;
      if (!has(name)) continue;
      lw[key] = await up(name, shapes[key]);
    }
    layers.push(lw as LayerWeights);
  }
  const finalNorm = await up('model.norm.weight', [cfg.hidden]);
  return { embed, lmHead, finalNorm, layers };
}

export function layerShapes(cfg: ModelConfig): Record<keyof LayerWeights, number[]> {
  const { hidden: H, heads, kvHeads, headDim: D, intermediate: I } = cfg;
  return {
    inputNorm: [H],
    q: [heads * D, H],
    k: [kvHeads * D, H],
    v: [kvHeads * D, H],
    o: [H, heads * D],
    qBias: [heads * D],
    kBias: [kvHeads * D],
    vBias: [kvHeads * D],
    oBias: [H],
    qNorm: [D],
    kNorm: [D],
    postNorm: [H],
    gate: [I, H],
    up: [I, H],
    down: [H, I],
    gateBias: [I],
    upBias: [I],
    downBias: [H],
  };
}

export interface LoadedModelFiles {
  cfg: ModelConfig;
  weights: ModelWeights;
  warnings: string[];
  dir: string;
}

/** Loads config + safetensors of a model folder onto the GPU, validating everything first. */
export async function loadModelFolder(gpu: Gpu, dir: string, onProgress?: (done: number, total: number) => void): Promise<LoadedModelFiles> {
  if (!fsys().stat(dir)?.isDirectory) throw new UserError(`${dir}: model folder not found`);
  if (!fsys().exists(path.join(dir, 'config.json'))) throw new UserError(`${dir}: no config.json in the model folder`);
  const cfg = await loadConfig(dir);
  const ckpt = await SafetensorsCheckpoint.open(dir);
  try {
    const warnings = checkTensors(cfg, ckpt.shapes(), ckpt.source);
    const total = ckpt.names().filter((n) => !warnings.some((w) => w.includes(n))).length;
    let done = 0;
    const weights = await uploadWeights(
      gpu,
      cfg,
      (n) => ckpt.has(n),
      async (n) => (await ckpt.readTensor(n)).data,
      () => onProgress?.(++done, total),
    );
    await gpu.sync();
    return { cfg, weights, warnings, dir };
  } finally {
    await ckpt.close();
  }
}

export function disposeWeights(w: ModelWeights): void {
  w.embed.dispose();
  if (w.lmHead !== w.embed) w.lmHead.dispose();
  w.finalNorm.dispose();
  for (const l of w.layers) for (const t of Object.values(l)) (t as Tensor | undefined)?.dispose();
}
