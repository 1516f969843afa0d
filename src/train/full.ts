// Full finetuning: gradient buffers mirroring every parameter, and the flat parameter lists the
// optimizer works on (the tied LM head is the embedding: it appears once).
import path from 'node:path';
import { ChunkedMatrix, type Gpu, type Tensor } from '../gpu/runtime.ts';
import type { ModelConfig } from '../model/config.ts';
import { writeSafetensors, type WriteTensor } from '../model/safetensors.ts';
import type { LayerWeights, ModelWeights } from '../model/weights.ts';
import { fsys } from '../util/files.ts';

function zerosLike(gpu: Gpu, t: Tensor, label: string): Tensor {
  return gpu.zeros(t.shape, 'f32', label);
}

function zerosLikeChunked(gpu: Gpu, m: ChunkedMatrix, label: string): ChunkedMatrix {
  return new ChunkedMatrix(m.rows, m.cols, m.rowsPerChunk, m.chunks.map((c, i) => zerosLike(gpu, c, `${label}[${i}]`)));
}

/** Zeroed gradient buffers with the structure of the weights (tied head shares the embedding's). */
export function createFullGrads(gpu: Gpu, w: ModelWeights): ModelWeights {
  const embed = zerosLikeChunked(gpu, w.embed, 'grad.embed');
  const lmHead = w.lmHead === w.embed ? embed : zerosLikeChunked(gpu, w.lmHead, 'grad.lm_head');
  return {
    embed,
    lmHead,
    finalNorm: zerosLike(gpu, w.finalNorm, 'grad.norm'),
    layers: w.layers.map((l) => {
      const g: Partial<LayerWeights> = {};
      for (const [k, t] of Object.entries(l) as [keyof LayerWeights, Tensor | undefined][]) if (t) g[k] = zerosLike(gpu, t, `grad.${k}`);
      return g as LayerWeights;
    }),
  };
}

/** Every parameter tensor once, in a fixed order (names are HF names). */
export function fullParamList(w: ModelWeights): { params: Tensor[]; names: string[] } {
  const params: Tensor[] = [];
  const names: string[] = [];
  w.embed.chunks.forEach((c, i) => {
    params.push(c);
    names.push(`model.embed_tokens.weight#${i}`);
  });
  if (w.lmHead !== w.embed) {
    w.lmHead.chunks.forEach((c, i) => {
      params.push(c);
      names.push(`lm_head.weight#${i}`);
    });
  }
  w.layers.forEach((l, i) => {
    for (const [k, t] of Object.entries(l) as [string, Tensor | undefined][]) {
      if (!t) continue;
      params.push(t);
      names.push(`layers.${i}.${k}`);
    }
  });
  params.push(w.finalNorm);
  names.push('model.norm.weight');
  return { params, names };
}

/** Records zeroing of every gradient buffer (between optimizer steps). */
export function zeroGrads(gpu: Gpu, grads: readonly Tensor[]): void {
  for (const g of grads) gpu.fill(g, 0);
}

/**
 * Writes the model's current weights as a complete HF folder: config.json (copied), model.safetensors
 * (float32, HF names; the tied head written once as the embedding), and the tokenizer files copied.
 */
export async function saveFullModel(gpu: Gpu, w: ModelWeights, cfg: ModelConfig, sourceDir: string, outDir: string): Promise<void> {
  fsys().mkdir(outDir);
  const names = layerTensorNames();
  const readMatrix = async (m: ChunkedMatrix): Promise<Float32Array> => {
    const parts = (await gpu.readMany(m.chunks)) as Float32Array[];
    const out = new Float32Array(m.rows * m.cols);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  const tensors: WriteTensor[] = [{ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [cfg.vocabSize, cfg.hidden], data: () => readMatrix(w.embed) }];
  if (w.lmHead !== w.embed) tensors.push({ name: 'lm_head.weight', dtype: 'F32', shape: [cfg.vocabSize, cfg.hidden], data: () => readMatrix(w.lmHead) });
  w.layers.forEach((l, i) => {
    for (const [k, t] of Object.entries(l) as [keyof LayerWeights, Tensor | undefined][]) {
      if (!t) continue;
      tensors.push({ name: `model.layers.${i}.${names[k]}`, dtype: 'F32', shape: [...t.shape], data: () => gpu.readF32(t) });
    }
  });
  tensors.push({ name: 'model.norm.weight', dtype: 'F32', shape: [cfg.hidden], data: () => gpu.readF32(w.finalNorm) });
  await writeSafetensors(path.join(outDir, 'model.safetensors'), tensors, { format: 'pt' });
  const fs = fsys();
  const cfgJson = JSON.parse(fs.readText(path.join(sourceDir, 'config.json'))) as Record<string, unknown>;
  cfgJson.torch_dtype = 'float32';
  await fs.writeFileAtomic(path.join(outDir, 'config.json'), JSON.stringify(cfgJson, null, 2) + '\n');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json', 'chat_template.jinja']) {
    if (fs.exists(path.join(sourceDir, f)) && path.resolve(sourceDir) !== path.resolve(outDir)) fs.copyFile(path.join(sourceDir, f), path.join(outDir, f));
  }
}

function layerTensorNames(): Record<keyof LayerWeights, string> {
  return {
    inputNorm: 'input_layernorm.weight',
    q: 'self_attn.q_proj.weight',
    k: 'self_attn.k_proj.weight',
    v: 'self_attn.v_proj.weight',
    o: 'self_attn.o_proj.weight',
    qBias: 'self_attn.q_proj.bias',
    kBias: 'self_attn.k_proj.bias',
    vBias: 'self_attn.v_proj.bias',
    oBias: 'self_attn.o_proj.bias',
    qNorm: 'self_attn.q_norm.weight',
    kNorm: 'self_attn.k_norm.weight',
    postNorm: 'post_attention_layernorm.weight',
    gate: 'mlp.gate_proj.weight',
    up: 'mlp.up_proj.weight',
    down: 'mlp.down_proj.weight',
    gateBias: 'mlp.gate_proj.bias',
    upBias: 'mlp.up_proj.bias',
    downBias: 'mlp.down_proj.bias',
  };
}
