// The transformer forward on the GPU (Qwen2/2.5, Qwen3, Llama/SmolLM2), following HF transformers:
// pre-norm decoder layers (RMSNorm → attention with RoPE and GQA → residual → RMSNorm → SwiGLU MLP →
// residual), final RMSNorm, LM head (tied or not). Two modes share the layer code:
//  - full-sequence forward over a right-padded batch [B, T] (training, scoring, prefill), optionally
//    saving what the backward pass needs;
//  - one-token decode steps against a KV cache (sampling).
// LoRA adapters, when given, add s·(x·Aᵀ)·Bᵀ to the targeted projections.
import { ChunkedMatrix, GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { attention, attentionDecode, KvCache, type AttentionDims } from '../kernels/attention.ts';
import { addInPlace, dropout, swiglu, transpose2d } from '../kernels/elementwise.ts';
import { embed } from '../kernels/embedding.ts';
import { matmul, matmulChunk, matmulSegmented } from '../kernels/matmul.ts';
import { rmsnorm } from '../kernels/norm.ts';
import { createRopeTable, rope, ropeInvFreq, type RopeTable } from '../kernels/rope.ts';
import type { ModelConfig } from './config.ts';
import { disposeWeights, LINEAR_MODULES, loadModelFolder, type LayerWeights, type LinearModule, type ModelWeights } from './weights.ts';

/** One LoRA pair for one projection of one layer: A [r, in], B [out, r]. */
export interface LoraPair {
  A: Tensor;
  B: Tensor;
}

/** A LoRA adapter on the GPU: per layer, per targeted module. */
export interface LoraWeights {
  rank: number;
  /** The scaling s applied to x·Aᵀ·Bᵀ: alpha/r, or alpha/√r with rsLoRA. */
  scale: number;
  targets: LinearModule[];
  layers: Partial<Record<LinearModule, LoraPair>>[];
  /** Dropout on the LoRA branch's input during training (PEFT's lora_dropout); 0/undefined = none. */
  dropout?: number;
  /**
   * Bumped by whoever changes A/B (the trainer, after each optimizer step): merged weights
   * W' = W + s·B·A cached for one version are rebuilt for the next.
   */
  version?: number;
}

/**
 * K LoRA adapters of one shape stacked over one frozen base (joint training of K students, or
 * generation with a different adapter per sequence): per layer and module A [K, r, in], B [K, out, r].
 * The rows being run pick their adapter through `seg` (set by the caller before each forward or
 * backward): one u32 per `rowsPerSeg` rows (8: tiles of a joint batch whose segments start at
 * multiples of 8 rows; 1: one entry per row, e.g. decode steps). `segments` (training) gives each
 * adapter's row range for the weight gradients. The LoRA branch runs as segmented matmuls
 * (matmulSegmented); the adapters are never merged into the base weights.
 */
export interface MultiLora {
  multi: true;
  rank: number;
  scale: number;
  targets: LinearModule[];
  layers: Partial<Record<LinearModule, LoraPair>>[];
  seg: Tensor | null;
  rowsPerSeg: 8 | 1;
  segments?: { start: number; rows: number }[];
  /**
   * Per layer and module, each adapter merged into the base: W [K, out, in] = W + s·B_k·A_k and, with
   * transposed weights, WT [K, in, out] (Transformer.mergeMulti; refreshed after every update). When
   * set, the forward's projection and the backward's input gradient are one segmented matmul each
   * (the same products a single merged adapter runs), and only u = x·A_kᵀ and dy·B_k stay separate.
   */
  merged?: Partial<Record<LinearModule, { W: Tensor; WT?: Tensor }>>[];
}

/** Either adapter kind a forward takes. */
export type AnyLora = LoraWeights | MultiLora;

export function isMultiLora(l: AnyLora | null | undefined): l is MultiLora {
  return !!l && (l as MultiLora).multi === true;
}

/** Training context: enables LoRA dropout with masks keyed by (seed, micro-batch, layer, module). */
export interface TrainContext {
  seed: number;
  /** Global micro-batch counter (distinct masks for every micro-batch). */
  micro: number;
}

const MODULE_INDEX: Record<LinearModule, number> = { q_proj: 0, k_proj: 1, v_proj: 2, o_proj: 3, gate_proj: 4, up_proj: 5, down_proj: 6 };

/** The dropout mask key of one LoRA module in one micro-batch. */
export function loraDropoutKey(ctx: TrainContext, layer: number, module: LinearModule): [number, number] {
  return [(Math.imul(ctx.seed >>> 0, 0x9e3779b1) ^ ctx.micro) >>> 0, (layer * 16 + MODULE_INDEX[module] + 1) >>> 0];
}

/** What the backward pass of one layer needs from its forward. */
export interface LayerActivations {
  /** Layer input (residual stream) [N, H]. */
  x: Tensor;
  xn1: Tensor;
  rstd1: Tensor;
  /** qwen3: q and k before their q/k-norm (the norm's backward needs them); q before RoPE is never kept, the backward rotates the gradient instead. */
  qPreNorm?: Tensor;
  kPreNorm?: Tensor;
  qRstd?: Tensor;
  kRstd?: Tensor;
  /** q, k after RoPE; v. */
  q: Tensor;
  k: Tensor;
  v: Tensor;
  attn: Tensor;
  lse: Tensor;
  /** Residual after attention [N, H]. */
  h: Tensor;
  xn2: Tensor;
  rstd2: Tensor;
  gate: Tensor;
  up: Tensor;
  act: Tensor;
  /** x·Aᵀ per LoRA-targeted module [N, r] (x after LoRA dropout when training with dropout). */
  loraU: Partial<Record<LinearModule, Tensor>>;
  /** Dropout mask keys per module (training with LoRA dropout). */
  loraDropKeys?: Partial<Record<LinearModule, [number, number]>>;
}

export interface ForwardOptions {
  lora?: AnyLora | null;
  /** Keep per-layer activations for the backward pass. */
  save?: boolean;
  /** Training context (LoRA dropout); absent at inference. */
  train?: TrainContext;
  /** Gradient checkpointing (with save): keep only each layer's input; the backward recomputes the rest. */
  checkpoint?: boolean;
}

export interface ForwardResult {
  /** Final-normed hidden states [B·T, hidden]. */
  hidden: Tensor;
  /** Pre-final-norm hidden [B·T, hidden] and its rstd (saved for backward). */
  preNorm?: Tensor;
  finalRstd?: Tensor;
  acts?: LayerActivations[];
  /** With checkpointing: each layer's input [B·T, hidden]. */
  layerInputs?: Tensor[];
}

export class Transformer {
  readonly rope: RopeTable;
  /**
   * Keep [in, out] copies of the projection weights and compute x·W as A·B: on lavapipe that form runs
   * about twice as fast as x·Wᵀ (coalesced vec4 loads of B). Only valid while the weights are frozen
   * (inference, LoRA); full finetuning turns it off. Default: on for software adapters.
   */
  private transposedWeights: boolean;
  private readonly wT = new Map<Tensor, Tensor>();
  private readonly merged = new Map<LoraPair, { W: Tensor; WT?: Tensor; version: number }>();
  private mergedFor: LoraWeights | null = null;
  private constructor(
    readonly gpu: Gpu,
    readonly cfg: ModelConfig,
    readonly weights: ModelWeights,
    readonly maxPositions: number,
    readonly warnings: string[] = [],
  ) {
    const inv = ropeInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling ?? undefined);
    this.rope = createRopeTable(gpu, inv, maxPositions);
    this.transposedWeights = gpu.isSoftware;
  }

  /** Full finetuning changes the weights in place: drop (and stop making) transposed copies. */
  setWeightsMutable(mutable: boolean): void {
    this.transposedWeights = !mutable && this.gpu.isSoftware;
    if (mutable) {
      this.dropTransposed();
      this.releaseMerged();
    }
  }

  private dropTransposed(): void {
    for (const t of this.wT.values()) t.dispose();
    this.wT.clear();
  }

  private weightT(w: Tensor): Tensor {
    let t = this.wT.get(w);
    if (!t) {
      t = transpose2d(this.gpu, w);
      this.wT.set(w, t);
    }
    return t;
  }

  /** Loads a Hugging Face model folder (config.json + safetensors), validating every tensor. */
  static async load(gpu: Gpu, dir: string, opts: { maxPositions?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<Transformer> {
    const { cfg, weights, warnings } = await loadModelFolder(gpu, dir, opts.onProgress);
    return new Transformer(gpu, cfg, weights, Math.min(opts.maxPositions ?? 4096, cfg.maxPositionEmbeddings || 4096), warnings);
  }

  static fromWeights(gpu: Gpu, cfg: ModelConfig, weights: ModelWeights, maxPositions = 2048): Transformer {
    return new Transformer(gpu, cfg, weights, maxPositions);
  }

  dispose(): void {
    this.releaseMerged();
    this.dropTransposed();
    disposeWeights(this.weights);
    this.rope.dispose();
  }

  /**
   * W' = W + s·B·A for one LoRA pair (and its [in, out] copy when transposed weights are in use),
   * cached per adapter version. x·W'ᵀ equals x·Wᵀ + s·(x·Aᵀ)·Bᵀ up to float rounding (exactly W when
   * B = 0) and costs one matmul instead of three thin ones, which on lavapipe are dominated by
   * per-workgroup overhead.
   */
  mergedWeight(w: Tensor, pair: LoraPair, lora: LoraWeights): { W: Tensor; WT?: Tensor } {
    // One adapter at a time: switching adapters (e.g. evaluating students one after another) frees
    // the previous adapter's merged weights.
    if (this.mergedFor !== lora) {
      this.releaseMerged();
      this.mergedFor = lora;
    }
    const version = lora.version ?? 0;
    const hit = this.merged.get(pair);
    if (hit && hit.version === version) return hit;
    if (hit) {
      hit.W.dispose();
      hit.WT?.dispose();
    }
    const gpu = this.gpu;
    const W = gpu.empty(w.shape, 'f32', 'lora_merged');
    gpu.copy(w, W, w.size);
    matmul(gpu, pair.B, pair.A, { accumulate: true, out: W, alpha: lora.scale });
    let WT: Tensor | undefined;
    if (this.transposedWeights) {
      WT = gpu.empty([w.shape[1], w.shape[0]], 'f32', 'lora_merged_t');
      gpu.copy(this.weightT(w), WT, w.size);
      matmul(gpu, pair.A, pair.B, { transA: true, transB: true, accumulate: true, out: WT, alpha: lora.scale });
    }
    const entry = { W, WT, version };
    this.merged.set(pair, entry);
    return entry;
  }

  /**
   * (Re)computes multi.merged: every adapter k merged into the base, exactly as mergedWeight does for
   * one adapter (copy W, then W += s·B_k·A_k; the [in, out] copy from the transposed base with
   * s·A_kᵀ·B_kᵀ), so a joint student's products equal a single student's. `views` are the adapters'
   * LoraWeights views (A_k, B_k). Call after every optimizer update.
   */
  mergeMulti(multi: MultiLora, views: readonly LoraWeights[]): void {
    const gpu = this.gpu;
    const K = views.length;
    if (!multi.merged) multi.merged = multi.layers.map(() => ({}));
    multi.layers.forEach((pairs, l) => {
      for (const mod of Object.keys(pairs) as LinearModule[]) {
        const w = this.weights.layers[l][LINEAR_MODULES[mod].key as keyof LayerWeights] as Tensor;
        const [outDim, inDim] = w.shape;
        let e = multi.merged![l][mod];
        if (!e) {
          e = { W: gpu.empty([K, outDim, inDim], 'f32', 'multilora.merged'), WT: this.transposedWeights ? gpu.empty([K, inDim, outDim], 'f32', 'multilora.merged_t') : undefined };
          multi.merged![l][mod] = e;
        }
        views.forEach((v, k) => {
          const p = v.layers[l][mod]!;
          const Wk = e!.W.view([outDim, inDim], k * outDim * inDim);
          gpu.copy(w, Wk, w.size);
          matmul(gpu, p.B, p.A, { accumulate: true, out: Wk, alpha: multi.scale });
          if (e!.WT) {
            const WTk = e!.WT.view([inDim, outDim], k * outDim * inDim);
            gpu.copy(this.weightT(w), WTk, w.size);
            matmul(gpu, p.A, p.B, { transA: true, transB: true, accumulate: true, out: WTk, alpha: multi.scale });
          }
        });
      }
    });
  }

  /** Drops merged LoRA weights (call when an adapter is disposed). */
  releaseMerged(): void {
    for (const m of this.merged.values()) {
      m.W.dispose();
      m.WT?.dispose();
    }
    this.merged.clear();
    this.mergedFor = null;
  }

  /** The weight to multiply by for the input gradient: W' when LoRA is merged, else W (both [out, in]). */
  inputGradWeight(layer: number, module: LinearModule, lora: AnyLora | null | undefined, dropoutActive: boolean): { w: Tensor; merged: boolean } {
    const lw = this.weights.layers[layer];
    const w = lw[LINEAR_MODULES[module].key as keyof LayerWeights] as Tensor;
    const pair = lora?.layers[layer]?.[module];
    if (!pair || !lora || dropoutActive || isMultiLora(lora)) return { w, merged: false };
    return { w: this.mergedWeight(w, pair, lora).W, merged: true };
  }

  /**
   * y = x·Wᵀ (+ b) (+ s·(x·Aᵀ)·Bᵀ). With LoRA and no dropout the adapter is merged into the weight;
   * u = x·Aᵀ is still computed when `needU` (training: dB needs it).
   */
  linear(x: Tensor, layer: number, module: LinearModule, lora: AnyLora | null | undefined, out?: Tensor, train?: TrainContext, needU = false): { y: Tensor; u?: Tensor; dropKey?: [number, number] } {
    const lw = this.weights.layers[layer];
    const spec = LINEAR_MODULES[module];
    const w = lw[spec.key as keyof LayerWeights] as Tensor;
    const bias = lw[spec.bias as keyof LayerWeights] as Tensor | undefined;
    if (isMultiLora(lora)) return this.multiLinear(x, w, bias, lora.layers[layer]?.[module], lora, out, needU, layer, module);
    const pair = lora?.layers[layer]?.[module];
    const dropoutActive = !!(train && lora?.dropout && lora.dropout > 0);
    if (pair && lora && !dropoutActive) {
      const m = this.mergedWeight(w, pair, lora);
      const y = m.WT ? matmul(this.gpu, x, m.WT, { bias, out }) : matmul(this.gpu, x, m.W, { transB: true, bias, out });
      return { y, u: needU ? matmul(this.gpu, x, pair.A, { transB: true }) : undefined };
    }
    const y = this.transposedWeights ? matmul(this.gpu, x, this.weightT(w), { bias, out }) : matmul(this.gpu, x, w, { transB: true, bias, out });
    if (!pair || !lora) return { y };
    let xa = x;
    let dropKey: [number, number] | undefined;
    if (dropoutActive) {
      dropKey = loraDropoutKey(train!, layer, module);
      xa = dropout(this.gpu, x, lora.dropout!, dropKey);
    }
    const u = matmul(this.gpu, xa, pair.A, { transB: true });
    if (xa !== x) xa.dispose();
    matmul(this.gpu, u, pair.B, { transB: true, accumulate: true, out: y, alpha: lora.scale });
    return { y, u, dropKey };
  }

  /**
   * linear() with a MultiLora: the shared base product plus s·(x·A_segᵀ)·B_segᵀ per row segment, or one
   * segmented product with the merged weights when the MultiLora carries them.
   */
  private multiLinear(x: Tensor, w: Tensor, bias: Tensor | undefined, pair: LoraPair | undefined, lora: MultiLora, out: Tensor | undefined, needU: boolean, layer = 0, module: LinearModule = 'q_proj'): { y: Tensor; u?: Tensor } {
    const m = pair ? lora.merged?.[layer]?.[module] : undefined;
    if (pair && !lora.seg) throw new GpuError('MultiLora: no segment table set for the rows being run');
    const o = { rowsPerSeg: lora.rowsPerSeg };
    if (m) {
      const y = m.WT ? matmulSegmented(this.gpu, x, m.WT, lora.seg!, { ...o, bias, out }) : matmulSegmented(this.gpu, x, m.W, lora.seg!, { ...o, transB: true, bias, out });
      return { y, u: needU ? matmulSegmented(this.gpu, x, pair!.A, lora.seg!, { ...o, transB: true }) : undefined };
    }
    const y = this.transposedWeights ? matmul(this.gpu, x, this.weightT(w), { bias, out }) : matmul(this.gpu, x, w, { transB: true, bias, out });
    if (!pair) return { y };
    const u = matmulSegmented(this.gpu, x, pair.A, lora.seg!, { ...o, transB: true });
    matmulSegmented(this.gpu, u, pair.B, lora.seg!, { ...o, transB: true, accumulate: true, out: y, alpha: lora.scale });
    if (needU) return { y, u };
    u.dispose();
    return { y };
  }

  /** q/k/v projections, qwen3 q/k norm, RoPE. */
  private qkv(x: Tensor, layer: number, positions: Tensor, lora: AnyLora | null | undefined, save: boolean, train?: TrainContext) {
    const cfg = this.cfg;
    const lw = this.weights.layers[layer];
    const loraU: Partial<Record<LinearModule, Tensor>> = {};
    const loraDropKeys: Partial<Record<LinearModule, [number, number]>> = {};
    const qp = this.linear(x, layer, 'q_proj', lora, undefined, train, save);
    const kp = this.linear(x, layer, 'k_proj', lora, undefined, train, save);
    const vp = this.linear(x, layer, 'v_proj', lora, undefined, train, save);
    if (qp.u) loraU.q_proj = qp.u;
    if (kp.u) loraU.k_proj = kp.u;
    if (vp.u) loraU.v_proj = vp.u;
    if (qp.dropKey) loraDropKeys.q_proj = qp.dropKey;
    if (kp.dropKey) loraDropKeys.k_proj = kp.dropKey;
    if (vp.dropKey) loraDropKeys.v_proj = vp.dropKey;
    let q = qp.y;
    let k = kp.y;
    let qPreNorm: Tensor | undefined, kPreNorm: Tensor | undefined, qRstd: Tensor | undefined, kRstd: Tensor | undefined;
    if (cfg.qkNorm) {
      const N = x.shape[0];
      // Outputs allocated with the [N, heads·D] shape so the returned tensors own their buffers.
      const qOut = this.gpu.empty([N, cfg.heads * cfg.headDim], 'f32', 'q_normed');
      const kOut = this.gpu.empty([N, cfg.kvHeads * cfg.headDim], 'f32', 'k_normed');
      const qn = rmsnorm(this.gpu, q.reshape([N * cfg.heads, cfg.headDim]), lw.qNorm!, cfg.rmsNormEps, {
        saveRstd: save,
        out: qOut.reshape([N * cfg.heads, cfg.headDim]),
      });
      const kn = rmsnorm(this.gpu, k.reshape([N * cfg.kvHeads, cfg.headDim]), lw.kNorm!, cfg.rmsNormEps, {
        saveRstd: save,
        out: kOut.reshape([N * cfg.kvHeads, cfg.headDim]),
      });
      if (save) {
        qPreNorm = q;
        kPreNorm = k;
        qRstd = qn.rstd;
        kRstd = kn.rstd;
      } else {
        q.dispose();
        k.dispose();
      }
      q = qOut;
      k = kOut;
    }
    rope(this.gpu, q, positions, this.rope, { inPlace: true });
    rope(this.gpu, k, positions, this.rope, { inPlace: true });
    return { q, k, v: vp.y, loraU, loraDropKeys, qPreNorm, kPreNorm, qRstd, kRstd };
  }

  /** MLP: down(silu(gate(x))·up(x)). */
  private mlp(xn: Tensor, layer: number, lora: AnyLora | null | undefined, train?: TrainContext, save = false) {
    const g = this.linear(xn, layer, 'gate_proj', lora, undefined, train, save);
    const u = this.linear(xn, layer, 'up_proj', lora, undefined, train, save);
    const act = swiglu(this.gpu, g.y, u.y);
    const d = this.linear(act, layer, 'down_proj', lora, undefined, train, save);
    const loraU: Partial<Record<LinearModule, Tensor>> = {};
    const loraDropKeys: Partial<Record<LinearModule, [number, number]>> = {};
    if (g.u) loraU.gate_proj = g.u;
    if (u.u) loraU.up_proj = u.u;
    if (d.u) loraU.down_proj = d.u;
    if (g.dropKey) loraDropKeys.gate_proj = g.dropKey;
    if (u.dropKey) loraDropKeys.up_proj = u.dropKey;
    if (d.dropKey) loraDropKeys.down_proj = d.dropKey;
    return { gate: g.y, up: u.y, act, out: d.y, loraU, loraDropKeys };
  }

  /**
   * One decoder layer over [N, hidden] rows. Returns the layer output (a new tensor) and, with
   * `save`, what the backward pass needs (the input x is then kept inside the activations).
   */
  layerForward(x: Tensor, l: number, positions: Tensor, dims: AttentionDims, lora: AnyLora | null | undefined, save: boolean, train?: TrainContext): { next: Tensor; acts?: LayerActivations } {
    const { gpu, cfg } = this;
    const N = x.shape[0];
    const lw = this.weights.layers[l];
    const n1 = rmsnorm(gpu, x, lw.inputNorm, cfg.rmsNormEps, { saveRstd: save });
    const qkv = this.qkv(n1.y, l, positions, lora, save, train);
    const att = attention(gpu, qkv.q, qkv.k, qkv.v, dims);
    const o = this.linear(att.out, l, 'o_proj', lora, undefined, train, save);
    const h = gpu.empty([N, cfg.hidden], 'f32', 'residual');
    gpu.copy(x, h, N * cfg.hidden);
    addInPlace(gpu, h, o.y);
    o.y.dispose();
    const n2 = rmsnorm(gpu, h, lw.postNorm, cfg.rmsNormEps, { saveRstd: save });
    const m = this.mlp(n2.y, l, lora, train, save);
    const next = gpu.empty([N, cfg.hidden], 'f32', 'residual');
    gpu.copy(h, next, N * cfg.hidden);
    addInPlace(gpu, next, m.out);
    m.out.dispose();
    if (!save) {
      for (const t of [n1.y, qkv.q, qkv.k, qkv.v, att.out, att.lse, h, n2.y, m.gate, m.up, m.act]) t.dispose();
      for (const t of Object.values({ ...qkv.loraU, ...m.loraU })) t?.dispose();
      o.u?.dispose();
      return { next };
    }
    const loraU = { ...qkv.loraU, ...m.loraU };
    if (o.u) loraU.o_proj = o.u;
    const loraDropKeys = { ...qkv.loraDropKeys, ...m.loraDropKeys };
    if (o.dropKey) loraDropKeys.o_proj = o.dropKey;
    return {
      next,
      acts: {
        x,
        xn1: n1.y,
        rstd1: n1.rstd!,
        qPreNorm: qkv.qPreNorm,
        kPreNorm: qkv.kPreNorm,
        qRstd: qkv.qRstd,
        kRstd: qkv.kRstd,
        q: qkv.q,
        k: qkv.k,
        v: qkv.v,
        attn: att.out,
        lse: att.lse,
        h,
        xn2: n2.y,
        rstd2: n2.rstd!,
        gate: m.gate,
        up: m.up,
        act: m.act,
        loraU,
        loraDropKeys,
      },
    };
  }

  attentionDims(batch: number, seqLen: number): AttentionDims {
    const cfg = this.cfg;
    return { batch, seqLen, heads: cfg.heads, kvHeads: cfg.kvHeads, headDim: cfg.headDim };
  }

  /**
   * Full-sequence forward over a right-padded batch: ids and positions u32 [B·T]. Returns the final
   * normed hidden states; with `save`, every layer's activations for the backward pass; with
   * `checkpoint` (gradient checkpointing), only each layer's input, recomputed in the backward.
   */
  forward(ids: Tensor, positions: Tensor, batch: number, seqLen: number, opts: ForwardOptions = {}): ForwardResult {
    const { gpu, cfg } = this;
    const N = batch * seqLen;
    if (ids.size !== N || positions.size !== N) throw new GpuError(`forward: ids/positions must have B·T = ${N} elements`);
    const save = !!opts.save;
    const checkpoint = save && !!opts.checkpoint;
    let x = embed(gpu, this.weights.embed, ids);
    const acts: LayerActivations[] = [];
    const layerInputs: Tensor[] = [];
    const dims = this.attentionDims(batch, seqLen);
    for (let l = 0; l < cfg.layers; l++) {
      const r = this.layerForward(x, l, positions, dims, opts.lora, save && !checkpoint, opts.train);
      if (r.acts) acts.push(r.acts);
      else if (checkpoint) layerInputs.push(x);
      else x.dispose();
      x = r.next;
    }
    const fin = rmsnorm(gpu, x, this.weights.finalNorm, cfg.rmsNormEps, { saveRstd: save });
    if (save) return { hidden: fin.y, preNorm: x, finalRstd: fin.rstd, acts: checkpoint ? undefined : acts, layerInputs: checkpoint ? layerInputs : undefined };
    x.dispose();
    return { hidden: fin.y };
  }

  /** Logits of hidden rows for vocab chunk c: [rows, chunkRows]. */
  logitsChunk(hidden: Tensor, chunk: number): Tensor {
    return matmulChunk(this.gpu, hidden, this.weights.lmHead, chunk);
  }

  get lmHead(): ChunkedMatrix {
    return this.weights.lmHead;
  }

  /**
   * Full logits [rows, vocab] read back to the CPU, vocab chunk by vocab chunk and in row blocks
   * that keep each logits block under the binding limit (151,936-word vocabularies).
   */
  async logitsToHost(hidden: Tensor): Promise<Float32Array> {
    const gpu = this.gpu;
    const T = hidden.shape[0];
    const H = this.cfg.hidden;
    const V = this.cfg.vocabSize;
    const head = this.weights.lmHead;
    const out = new Float32Array(T * V);
    // Rows per block: a multiple of 64 keeps every view offset (r0·H·4 bytes) 256-byte aligned.
    const widest = head.chunkRows(0);
    const fit = Math.floor(gpu.limits.maxStorageBufferBindingSize / (widest * 4));
    const rowsPerBlock = fit >= T ? T : Math.max(64, Math.floor(fit / 64) * 64);
    if (rowsPerBlock > fit) throw new GpuError(`logits: a block of 64 rows × ${widest} columns exceeds the binding limit`);
    for (let r0 = 0; r0 < T; r0 += rowsPerBlock) {
      const rows = Math.min(rowsPerBlock, T - r0);
      const xs = rows === T ? hidden : hidden.view([rows, H], r0 * H);
      for (let c = 0; c < head.chunks.length; c++) {
        const lc = this.logitsChunk(xs, c);
        const data = await gpu.readF32(lc);
        lc.dispose();
        const cr = head.chunkRows(c);
        const c0 = c * head.rowsPerChunk;
        for (let r = 0; r < rows; r++) out.set(data.subarray(r * cr, (r + 1) * cr), (r0 + r) * V + c0);
      }
    }
    return out;
  }

  // ------------------------------------------------------------------ KV-cache decoding

  createCache(batch: number, maxLen: number): KvCache {
    const cfg = this.cfg;
    if (maxLen > this.maxPositions) throw new GpuError(`createCache: ${maxLen} positions exceed the RoPE table (${this.maxPositions})`);
    return new KvCache(this.gpu, { layers: cfg.layers, batch, maxLen, kvHeads: cfg.kvHeads, headDim: cfg.headDim });
  }

  /**
   * Inference forward through every layer (residual stream updated in place, nothing saved):
   * `attend(layer, q, k, v)` is where prefill and decode differ (KV-cache writes, attention kind).
   * Returns the final normed hidden states.
   */
  private inferenceLayers(ids: Tensor, positions: Tensor, lora: AnyLora | null | undefined, attend: (l: number, q: Tensor, k: Tensor, v: Tensor) => Tensor): Tensor {
    const { gpu, cfg } = this;
    const x = embed(gpu, this.weights.embed, ids);
    for (let l = 0; l < cfg.layers; l++) {
      const lw = this.weights.layers[l];
      const n1 = rmsnorm(gpu, x, lw.inputNorm, cfg.rmsNormEps);
      const qkv = this.qkv(n1.y, l, positions, lora, false);
      const att = attend(l, qkv.q, qkv.k, qkv.v);
      const o = this.linear(att, l, 'o_proj', lora);
      addInPlace(gpu, x, o.y);
      const n2 = rmsnorm(gpu, x, lw.postNorm, cfg.rmsNormEps);
      const m = this.mlp(n2.y, l, lora);
      addInPlace(gpu, x, m.out);
      for (const t of [n1.y, qkv.q, qkv.k, qkv.v, att, o.y, n2.y, m.gate, m.up, m.act, m.out]) t.dispose();
      for (const t of Object.values({ ...qkv.loraU, ...m.loraU })) t?.dispose();
      o.u?.dispose();
    }
    const fin = rmsnorm(gpu, x, this.weights.finalNorm, cfg.rmsNormEps);
    x.dispose();
    return fin.y;
  }

  /**
   * Prefill: full forward over right-padded prompts [B, T] writing each layer's k/v rows for
   * t < promptLens[b] into the cache; returns final hidden states of every position [B·T, hidden].
   */
  prefill(cache: KvCache, ids: Tensor, positions: Tensor, promptLens: Tensor, batch: number, seqLen: number, lora?: AnyLora | null): Tensor {
    const dims = this.attentionDims(batch, seqLen);
    const hidden = this.inferenceLayers(ids, positions, lora, (l, q, k, v) => {
      cache.prefill(this.gpu, l, k, v, promptLens, seqLen);
      const att = attention(this.gpu, q, k, v, dims);
      att.lse.dispose();
      return att.out;
    });
    cache.setLens(this.gpu, promptLens);
    return hidden;
  }

  /**
   * One decode step: ids u32 [B] (the newest token of each sequence) at positions = cache.lens.
   * Appends k/v, advances the cache lengths, returns final hidden states [B, hidden].
   */
  decodeStep(cache: KvCache, ids: Tensor, lora?: AnyLora | null, maxAttendLen?: number): Tensor {
    const hidden = this.inferenceLayers(ids, cache.lens, lora, (l, q, k, v) => {
      cache.append(this.gpu, l, k, v);
      return attentionDecode(this.gpu, q, cache, l, cache.lens, { maxAttendLen });
    });
    cache.advance(this.gpu, 1);
    return hidden;
  }
}
