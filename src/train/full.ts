// Full finetuning: gradient buffers mirroring every parameter, and the flat parameter lists the
// optimizer works on (the tied LM head is the embedding: it appears once).
import { ChunkedMatrix, type Gpu, type Tensor } from '../gpu/runtime.ts';
import type { LayerWeights, ModelWeights } from '../model/weights.ts';

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
