// K LoRA adapters of one shape stacked into [K, …] tensors (MultiLora, see transformer.ts), with a
// LoraWeights view of each adapter for everything that works per adapter (optimizer, saving, merged
// single-adapter inference). Views start at k·r·in and k·out·r floats: 256-byte aligned when r·in and
// out·r are multiples of 64 (rank 8 and layer widths that are multiples of 8).
import { GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { loraDims, loraScale, type HostLora } from './adapter.ts';
import type { ModelConfig } from './config.ts';
import type { LoraPair, LoraWeights, MultiLora } from './transformer.ts';
import type { LinearModule } from './weights.ts';

/** The stacked adapters and a view of each. */
export interface StackedLora {
  multi: MultiLora;
  views: LoraWeights[];
}

function sameShape(a: { rank: number; targets: readonly LinearModule[] }, b: { rank: number; targets: readonly LinearModule[] }): boolean {
  return a.rank === b.rank && a.targets.length === b.targets.length && a.targets.every((t) => b.targets.includes(t));
}

function viewsOf(multi: MultiLora, count: number, layers: number): LoraWeights[] {
  return Array.from({ length: count }, (_, k) => ({
    rank: multi.rank,
    scale: multi.scale,
    targets: [...multi.targets],
    layers: Array.from({ length: layers }, (_, l) => {
      const out: Partial<Record<LinearModule, LoraPair>> = {};
      for (const [m, p] of Object.entries(multi.layers[l]) as [LinearModule, LoraPair | undefined][]) {
        if (!p) continue;
        const [, r, inDim] = p.A.shape;
        const [, outDim] = p.B.shape;
        out[m] = { A: p.A.view([r, inDim], k * r * inDim), B: p.B.view([outDim, r], k * outDim * r) };
      }
      return out;
    }),
    dropout: 0,
    version: 0,
  }));
}

/** Uploads K host adapters (same rank, alpha, rsLoRA and targets) as one MultiLora with per-adapter views. */
export function stackHostLoras(gpu: Gpu, cfg: ModelConfig, hosts: readonly HostLora[]): StackedLora {
  if (!hosts.length) throw new GpuError('stackHostLoras: no adapters');
  const h0 = hosts[0];
  for (const h of hosts) {
    if (!sameShape(h, h0) || h.alpha !== h0.alpha || h.useRslora !== h0.useRslora) throw new GpuError('stackHostLoras: adapters differ in rank, alpha, rsLoRA or targets');
  }
  const K = hosts.length;
  const r = h0.rank;
  const layers = Array.from({ length: cfg.layers }, (_, l) => {
    const out: Partial<Record<LinearModule, LoraPair>> = {};
    for (const m of h0.targets) {
      if (!h0.layers[l]?.[m]) continue;
      const { inDim, outDim } = loraDims(cfg, m);
      const A = new Float32Array(K * r * inDim);
      const B = new Float32Array(K * outDim * r);
      hosts.forEach((h, k) => {
        const p = h.layers[l]?.[m];
        if (!p || p.A.length !== r * inDim || p.B.length !== outDim * r) throw new GpuError(`stackHostLoras: adapter ${k} lacks layer ${l} ${m} or has another shape`);
        A.set(p.A, k * r * inDim);
        B.set(p.B, k * outDim * r);
      });
      out[m] = { A: gpu.upload(A, [K, r, inDim], 'f32', `multilora.${l}.${m}.A`), B: gpu.upload(B, [K, outDim, r], 'f32', `multilora.${l}.${m}.B`) };
    }
    return out;
  });
  const multi: MultiLora = { multi: true, rank: r, scale: loraScale(h0.alpha, r, h0.useRslora), targets: [...h0.targets], layers, seg: null, rowsPerSeg: 8 };
  return { multi, views: viewsOf(multi, K, cfg.layers) };
}

/** Copies K GPU adapters (same rank, scale and targets) into one MultiLora (e.g. to generate with all of them). */
export function stackLoras(gpu: Gpu, loras: readonly LoraWeights[]): MultiLora {
  if (!loras.length) throw new GpuError('stackLoras: no adapters');
  const l0 = loras[0];
  for (const l of loras) {
    if (!sameShape(l, l0) || Math.abs(l.scale - l0.scale) > 1e-12 * Math.abs(l0.scale) || l.layers.length !== l0.layers.length) {
      throw new GpuError('stackLoras: adapters differ in rank, scale, targets or layers');
    }
  }
  const K = loras.length;
  const layers = l0.layers.map((pairs, li) => {
    const out: Partial<Record<LinearModule, LoraPair>> = {};
    for (const [m, p0] of Object.entries(pairs) as [LinearModule, LoraPair | undefined][]) {
      if (!p0) continue;
      const [r, inDim] = p0.A.shape;
      const [outDim] = p0.B.shape;
      const A = gpu.empty([K, r, inDim], 'f32', `multilora.${li}.${m}.A`);
      const B = gpu.empty([K, outDim, r], 'f32', `multilora.${li}.${m}.B`);
      loras.forEach((l, k) => {
        const p = l.layers[li]?.[m];
        if (!p || p.A.size !== r * inDim || p.B.size !== outDim * r) throw new GpuError(`stackLoras: adapter ${k} lacks layer ${li} ${m} or has another shape`);
        gpu.copy(p.A, A, p.A.size, 0, k * r * inDim);
        gpu.copy(p.B, B, p.B.size, 0, k * outDim * r);
      });
      out[m] = { A, B };
    }
    return out;
  });
  return { multi: true, rank: l0.rank, scale: l0.scale, targets: [...l0.targets], layers, seg: null, rowsPerSeg: 8 };
}

/** Zeroed gradient buffers shaped like the stacked adapters, with per-adapter views (LoraGrads layout). */
export function stackedGrads(gpu: Gpu, multi: MultiLora, count: number): { stacked: Tensor[]; views: Partial<Record<LinearModule, { dA: Tensor; dB: Tensor }>>[][] ; multiGrads: Partial<Record<LinearModule, { dA: Tensor; dB: Tensor }>>[] } {
  const stacked: Tensor[] = [];
  const multiGrads = multi.layers.map((pairs) => {
    const out: Partial<Record<LinearModule, { dA: Tensor; dB: Tensor }>> = {};
    for (const [m, p] of Object.entries(pairs) as [LinearModule, LoraPair | undefined][]) {
      if (!p) continue;
      const dA = gpu.zeros(p.A.shape, 'f32', 'multilora.dA');
      const dB = gpu.zeros(p.B.shape, 'f32', 'multilora.dB');
      stacked.push(dA, dB);
      out[m] = { dA, dB };
    }
    return out;
  });
  const views = Array.from({ length: count }, (_, k) =>
    multiGrads.map((pairs) => {
      const out: Partial<Record<LinearModule, { dA: Tensor; dB: Tensor }>> = {};
      for (const [m, g] of Object.entries(pairs) as [LinearModule, { dA: Tensor; dB: Tensor } | undefined][]) {
        if (!g) continue;
        const [, r, inDim] = g.dA.shape;
        const [, outDim] = g.dB.shape;
        out[m] = { dA: g.dA.view([r, inDim], k * r * inDim), dB: g.dB.view([outDim, r], k * outDim * r) };
      }
      return out;
    }),
  );
  return { stacked, views, multiGrads };
}

export function disposeMultiLora(multi: MultiLora): void {
  for (const pairs of multi.layers) for (const p of Object.values(pairs)) {
    p?.A.dispose();
    p?.B.dispose();
  }
  for (const pairs of multi.merged ?? []) for (const m of Object.values(pairs)) {
    m?.W.dispose();
    m?.WT?.dispose();
  }
  multi.merged = undefined;
  multi.seg?.dispose();
  multi.seg = null;
}
