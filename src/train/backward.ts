// Explicit per-layer backward of the transformer (llm.c style), for LoRA and full finetuning.
// Base weights in LoRA mode are frozen: only input gradients flow through them, never weight grads.
import { GpuError, type Gpu, type Tensor } from '../gpu/runtime.ts';
import { attentionBackward } from '../kernels/attention.ts';
import { addInPlace, dropout, swigluBackward } from '../kernels/elementwise.ts';
import { embedBackward, type EmbedGradIndex } from '../kernels/embedding.ts';
import { matmul, matmulSegmented } from '../kernels/matmul.ts';
import { rmsnormBackward } from '../kernels/norm.ts';
import { ropeBackward } from '../kernels/rope.ts';
import { isMultiLora, type AnyLora, type MultiLora, type ForwardResult, type LayerActivations, type TrainContext, type Transformer } from '../model/transformer.ts';
import { LINEAR_MODULES, type LayerWeights, type LinearModule, type ModelWeights } from '../model/weights.ts';

/** Gradient buffers of a LoRA adapter, same structure as LoraWeights.layers. */
export type LoraGrads = Partial<Record<LinearModule, { dA: Tensor; dB: Tensor }>>[];

/** Gradient buffers for full finetuning: one per parameter, same structure as ModelWeights. */
export type FullGrads = ModelWeights;

export interface BackwardOptions {
  lora?: AnyLora | null;
  loraGrads?: LoraGrads;
  fullGrads?: FullGrads;
  /** Token ids on the CPU (embedding gradient in full mode). */
  embedIndex?: EmbedGradIndex | ArrayLike<number>;
  /** The forward's training context (LoRA dropout masks are regenerated from it). */
  train?: TrainContext;
  positions: Tensor;
  batch: number;
  seqLen: number;
}

class Ones {
  private t: Tensor | null = null;
  constructor(private readonly gpu: Gpu) {}
  /** A [1, n] row of ones (bias gradients are column sums: ones · dy). */
  get(n: number): Tensor {
    if (!this.t || this.t.size < n) {
      this.t?.dispose();
      this.t = this.gpu.upload(new Float32Array(n).fill(1), [1, n], 'f32', 'ones');
    }
    return this.t.size === n ? this.t : this.t.view([1, n]);
  }
  dispose(): void {
    this.t?.dispose();
  }
}

/**
 * Backward of y = x·Wᵀ + b (+ s·(x·Aᵀ)·Bᵀ) given dy: returns dx (new, or accumulated into dxOut);
 * accumulates dW/db (full) or dA/dB (LoRA) into the gradient buffers.
 */
function linearBackward(
  model: Transformer,
  ones: Ones,
  l: number,
  module: LinearModule,
  xIn: Tensor,
  dy: Tensor,
  acts: LayerActivations,
  opts: BackwardOptions,
  dxOut?: Tensor,
): Tensor {
  const gpu = model.gpu;
  const spec = LINEAR_MODULES[module];
  if (isMultiLora(opts.lora)) return multiLinearBackward(model, l, module, xIn, dy, acts, opts, dxOut);
  const lora = opts.lora;
  const dropoutActive = !!(opts.train && lora?.dropout && lora.dropout > 0);
  // With a merged adapter, dy·W' already holds the LoRA branch's input gradient s·(dy·B)·A.
  const gw = model.inputGradWeight(l, module, opts.lora, dropoutActive);
  const dx = matmul(gpu, dy, gw.w, dxOut ? { out: dxOut, accumulate: true } : {});
  const full = opts.fullGrads?.layers[l];
  if (full) {
    const dW = full[spec.key as keyof LayerWeights] as Tensor;
    matmul(gpu, dy, xIn, { transA: true, accumulate: true, out: dW });
    const db = full[spec.bias as keyof LayerWeights] as Tensor | undefined;
    if (db) matmul(gpu, ones.get(dy.shape[0]), dy, { accumulate: true, out: db.reshape([1, db.size]) });
  }
  const pair = lora?.layers[l]?.[module];
  const grads = opts.loraGrads?.[l]?.[module];
  if (pair && grads && lora) {
    const s = lora.scale;
    const u = acts.loraU[module];
    if (!u) throw new GpuError(`backward: LoRA activation for layer ${l} ${module} was not saved`);
    const g = matmul(gpu, dy, pair.B); // [N, r]
    matmul(gpu, dy, u, { transA: true, alpha: s, accumulate: true, out: grads.dB }); // [out, r]
    const key = acts.loraDropKeys?.[module];
    const p = lora.dropout ?? 0;
    if (key && p > 0) {
      // u = dropout(x)·Aᵀ: dA uses the dropped input, dx gets the mask applied (same key → same mask).
      const xd = dropout(gpu, xIn, p, key);
      matmul(gpu, g, xd, { transA: true, alpha: s, accumulate: true, out: grads.dA }); // [r, in]
      xd.dispose();
      const gA = matmul(gpu, g, pair.A); // [N, in]
      const gAd = dropout(gpu, gA, p, key);
      addInPlace(gpu, dx, gAd, s);
      gA.dispose();
      gAd.dispose();
    } else {
      matmul(gpu, g, xIn, { transA: true, alpha: s, accumulate: true, out: grads.dA }); // [r, in]
      if (!gw.merged) matmul(gpu, g, pair.A, { alpha: s, accumulate: true, out: dx }); // [N, in]
    }
    g.dispose();
  }
  return dx;
}

/**
 * linearBackward with a MultiLora (frozen base, adapter per row segment): dx = dy·W + s·(dy·B_seg)·A_seg,
 * and each segment's dB_k += s·dy_kᵀ·u_k, dA_k += s·(dy_k·B_k)ᵀ·x_k over its own rows (one matmul per
 * segment on row views; segments start at multiples of 8 rows).
 */
function multiLinearBackward(model: Transformer, l: number, module: LinearModule, xIn: Tensor, dy: Tensor, acts: LayerActivations, opts: BackwardOptions, dxOut?: Tensor): Tensor {
  const gpu = model.gpu;
  const lora = opts.lora as MultiLora;
  if (opts.fullGrads) throw new GpuError('backward: a MultiLora trains adapters only (no full gradients)');
  const w = model.weights.layers[l][LINEAR_MODULES[module].key as keyof LayerWeights] as Tensor;
  const pair = lora.layers[l]?.[module];
  const merged = pair ? lora.merged?.[l]?.[module] : undefined;
  // With merged weights dy·W'_seg already holds the LoRA branch's input gradient (as a merged single adapter).
  const dx = merged
    ? matmulSegmented(gpu, dy, merged.W, lora.seg!, { rowsPerSeg: lora.rowsPerSeg, ...(dxOut ? { out: dxOut, accumulate: true } : {}) })
    : matmul(gpu, dy, w, dxOut ? { out: dxOut, accumulate: true } : {});
  const grads = opts.loraGrads?.[l]?.[module];
  if (!pair || !grads) return dx;
  const u = acts.loraU[module];
  if (!u) throw new GpuError(`backward: LoRA activation for layer ${l} ${module} was not saved`);
  if (!lora.seg || !lora.segments) throw new GpuError('backward: the MultiLora has no segment table or segments');
  const s = lora.scale;
  const r = lora.rank;
  const [out, inDim] = w.shape;
  const o = { rowsPerSeg: lora.rowsPerSeg };
  const g = matmulSegmented(gpu, dy, pair.B, lora.seg, o); // [N, r]
  lora.segments.forEach(({ start, rows }, k) => {
    if (rows === 0) return;
    const [dyk, uk, gk, xk] = [dy, u, g, xIn].map((t) => rowBlock(gpu, t, start, rows));
    matmul(gpu, dyk, uk, { transA: true, alpha: s, accumulate: true, out: grads.dB.view([out, r], k * out * r) });
    matmul(gpu, gk, xk, { transA: true, alpha: s, accumulate: true, out: grads.dA.view([r, inDim], k * r * inDim) });
    for (const [b, t] of [[dyk, dy], [uk, u], [gk, g], [xk, xIn]]) if (b !== t && !b.isDisposed) b.dispose();
  });
  if (!merged) matmulSegmented(gpu, g, pair.A, lora.seg, { ...o, accumulate: true, out: dx, alpha: s });
  g.dispose();
  return dx;
}

/**
 * Rows [start, start + rows) of a [N, C] tensor: a view when its byte offset is aligned for binding,
 * else a copy (e.g. rank-4 LoRA activations: 8 rows are 128 bytes). Copies are owned by the caller.
 */
function rowBlock(gpu: Gpu, t: Tensor, start: number, rows: number): Tensor {
  const C = t.shape[1];
  if (start === 0 && rows === t.shape[0]) return t.reshape([rows, C]);
  if ((t.offset + start * C * 4) % gpu.limits.minStorageBufferOffsetAlignment === 0) return t.view([rows, C], start * C);
  const c = gpu.empty([rows, C], 'f32', 'rows');
  gpu.copy(t, c, rows * C, start * C, 0);
  return c;
}

function disposeActs(a: LayerActivations, keepInput: boolean): void {
  const ts = [a.xn1, a.rstd1, a.qPreNorm, a.kPreNorm, a.qRstd, a.kRstd, a.q, a.k, a.v, a.attn, a.lse, a.h, a.xn2, a.rstd2, a.gate, a.up, a.act];
  if (!keepInput) ts.push(a.x);
  for (const t of ts) t?.dispose();
  for (const t of Object.values(a.loraU)) t?.dispose();
}

/**
 * Backward from dHidden (gradient w.r.t. the final normed hidden states [B·T, hidden]) through every
 * layer, accumulating LoRA or full gradients. Consumes (disposes) the forward's activations.
 */
export function modelBackward(model: Transformer, fwd: ForwardResult, dHidden: Tensor, opts: BackwardOptions): void {
  const { gpu, cfg } = model;
  if (!fwd.preNorm || !fwd.finalRstd) throw new GpuError('backward: the forward was not run with save');
  const ones = new Ones(gpu);
  const full = opts.fullGrads;
  const N = opts.batch * opts.seqLen;
  const dims = model.attentionDims(opts.batch, opts.seqLen);
  const frozenNorms = !full;
  // d(pre-final-norm hidden)
  let dX = rmsnormBackward(gpu, fwd.preNorm, model.weights.finalNorm, fwd.finalRstd, dHidden, {
    skipDWeight: frozenNorms,
    dWeight: full?.finalNorm,
  }).dx;
  fwd.preNorm.dispose();
  fwd.finalRstd.dispose();
  for (let l = cfg.layers - 1; l >= 0; l--) {
    let acts: LayerActivations;
    if (fwd.acts) acts = fwd.acts[l];
    else if (fwd.layerInputs) {
      // Gradient checkpointing: recompute this layer's activations from its saved input.
      const r = model.layerForward(fwd.layerInputs[l], l, opts.positions, dims, opts.lora, true, opts.train);
      r.next.dispose();
      acts = r.acts!;
    } else throw new GpuError('backward: no saved activations');
    const lw = model.weights.layers[l];
    const fl = full?.layers[l];
    // MLP: out = h + down(silu(gate)·up)
    const dAct = linearBackward(model, ones, l, 'down_proj', acts.act, dX, acts, opts);
    const { dGate, dUp } = swigluBackward(gpu, acts.gate, acts.up, dAct);
    dAct.dispose();
    const dXn2 = linearBackward(model, ones, l, 'gate_proj', acts.xn2, dGate, acts, opts);
    linearBackward(model, ones, l, 'up_proj', acts.xn2, dUp, acts, opts, dXn2);
    dGate.dispose();
    dUp.dispose();
    // dH = dX + rmsnorm'(dXn2), accumulated into dX in place.
    rmsnormBackward(gpu, acts.h, lw.postNorm, acts.rstd2, dXn2, { dx: dX, skipDWeight: frozenNorms, dWeight: fl?.postNorm });
    dXn2.dispose();
    // Attention: h = x + o(attn(q, k, v))
    const dAttn = linearBackward(model, ones, l, 'o_proj', acts.attn, dX, acts, opts);
    const { dq, dk, dv } = attentionBackward(gpu, acts.q, acts.k, acts.v, acts.attn, acts.lse, dAttn, dims);
    dAttn.dispose();
    ropeBackward(gpu, dq, opts.positions, model.rope, { inPlace: true });
    ropeBackward(gpu, dk, opts.positions, model.rope, { inPlace: true });
    let dqIn = dq;
    let dkIn = dk;
    if (cfg.qkNorm) {
      // Gradients accumulated into zeroed [N, heads·D] tensors so they own their buffers.
      const D = cfg.headDim;
      dqIn = gpu.zeros([N, cfg.heads * D], 'f32', 'dq_prenorm');
      dkIn = gpu.zeros([N, cfg.kvHeads * D], 'f32', 'dk_prenorm');
      rmsnormBackward(gpu, acts.qPreNorm!.reshape([N * cfg.heads, D]), lw.qNorm!, acts.qRstd!, dq.reshape([N * cfg.heads, D]), {
        dx: dqIn.reshape([N * cfg.heads, D]),
        skipDWeight: frozenNorms,
        dWeight: fl?.qNorm,
      });
      rmsnormBackward(gpu, acts.kPreNorm!.reshape([N * cfg.kvHeads, D]), lw.kNorm!, acts.kRstd!, dk.reshape([N * cfg.kvHeads, D]), {
        dx: dkIn.reshape([N * cfg.kvHeads, D]),
        skipDWeight: frozenNorms,
        dWeight: fl?.kNorm,
      });
      dq.dispose();
      dk.dispose();
    }
    const dXn1 = linearBackward(model, ones, l, 'q_proj', acts.xn1, dqIn, acts, opts);
    linearBackward(model, ones, l, 'k_proj', acts.xn1, dkIn, acts, opts, dXn1);
    linearBackward(model, ones, l, 'v_proj', acts.xn1, dv, acts, opts, dXn1);
    dqIn.dispose();
    dkIn.dispose();
    dv.dispose();
    rmsnormBackward(gpu, acts.x, lw.inputNorm, acts.rstd1, dXn1, { dx: dX, skipDWeight: frozenNorms, dWeight: fl?.inputNorm });
    dXn1.dispose();
    disposeActs(acts, false);
  }
  if (full) {
    if (!opts.embedIndex) throw new GpuError('backward: full finetuning needs the token ids on the CPU (embedIndex)');
    embedBackward(gpu, opts.embedIndex, dX, full.embed);
  }
  dX.dispose();
  ones.dispose();
}
