// LoRA adapters: PEFT's initialisation (A Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in); B = 0)
// from our own seeded RNG, gradient buffers, and flattening to parameter lists for the optimizer.
import type { Gpu, Tensor } from '../gpu/runtime.ts';
import type { HostLora } from '../model/adapter.ts';
import { SeedStreamRng } from '../util/rng.ts';
import type { ModelConfig } from '../model/config.ts';
import type { LoraWeights } from '../model/transformer.ts';
import { LINEAR_MODULES, layerShapes, type LinearModule, type LayerWeights } from '../model/weights.ts';
import type { LoraGrads } from './backward.ts';

export const ALL_TARGETS: LinearModule[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface LoraConfig {
  rank: number;
  alpha: number;
  rslora: boolean;
  targets: LinearModule[];
  dropout: number;
}

/** [out, in] of a targeted projection. */
export function moduleShape(cfg: ModelConfig, module: LinearModule): [number, number] {
  const s = layerShapes(cfg)[LINEAR_MODULES[module].key as keyof LayerWeights];
  return [s[0], s[1]];
}

/** PEFT's initialisation, deterministic from the seed (independent of the order modules are visited). */
export function initLoraHost(cfg: ModelConfig, lc: LoraConfig, seed: number): HostLora {
  const layers: HostLora['layers'] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const layer: HostLora['layers'][number] = {};
    for (const m of lc.targets) {
      const [o, i] = moduleShape(cfg, m);
      const rng = new SeedStreamRng(seed, `lora.${l}.${m}`);
      const bound = 1 / Math.sqrt(i);
      const A = new Float32Array(lc.rank * i);
      for (let k = 0; k < A.length; k++) A[k] = (2 * rng.uniform() - 1) * bound;
      layer[m] = { A, B: new Float32Array(o * lc.rank) };
    }
    layers.push(layer);
  }
  return { rank: lc.rank, alpha: lc.alpha, useRslora: lc.rslora, targets: [...lc.targets], layers };
}

/** Parameters in a fixed order (layer, target, A then B), matching loraGradList. */
export function loraParams(lora: LoraWeights): { params: Tensor[]; names: string[] } {
  const params: Tensor[] = [];
  const names: string[] = [];
  lora.layers.forEach((layer, l) => {
    for (const m of lora.targets) {
      const p = layer[m];
      if (!p) continue;
      params.push(p.A, p.B);
      names.push(`${l}.${m}.A`, `${l}.${m}.B`);
    }
  });
  return { params, names };
}

export function createLoraGrads(gpu: Gpu, lora: LoraWeights): LoraGrads {
  return lora.layers.map((layer) => {
    const g: LoraGrads[number] = {};
    for (const m of lora.targets) {
      const p = layer[m];
      if (p) g[m] = { dA: gpu.zeros(p.A.shape, 'f32', 'lora.dA'), dB: gpu.zeros(p.B.shape, 'f32', 'lora.dB') };
    }
    return g;
  });
}

export function loraGradList(lora: LoraWeights, grads: LoraGrads): Tensor[] {
  const out: Tensor[] = [];
  lora.layers.forEach((layer, l) => {
    for (const m of lora.targets) {
      if (!layer[m]) continue;
      const g = grads[l][m]!;
      out.push(g.dA, g.dB);
    }
  });
  return out;
}
