// Batched generation on the GPU: right-padded prefill, then KV-cache decode steps with on-GPU
// sampling; only token ids come back to the CPU, every `readEvery` steps, with one flag per sequence
// and step saying whether its logits held a NaN or ±Inf (then generation stops with an error instead of
// emitting the arbitrary token such logits sample).
//
// Work items are (request r, sample s) pairs, s < n. They are sorted by prompt length (longest first,
// less padding) and cut into batches of `batchSize`. Each batch:
//  1. prefills its distinct prompts once (right-padded to the longest) into a prompt cache; when a
//     prompt has several samples in the batch (n > 1) its K/V rows are copied into each sample's slot
//     of the decode cache (with n = 1 the prompts are prefilled straight into the decode cache);
//  2. samples token 0 of every slot from the last prompt position, then loops decode steps.
// Finished sequences are not compacted: they keep decoding (their tokens are discarded) until every
// sequence of the batch has hit a stop token or maxNewTokens. The batch stops at most
// 2·readEvery − 1 steps after its last sequence finished (readback is pipelined one chunk behind, so
// the GPU never waits for the CPU).
//
// Randomness: the token at step t of (request r, sample s) is drawn by the sampling kernel with the
// call's seed, step = t and seqId = r·n + s (so it does not depend on the batch size, the batch
// composition or the sort order; see src/kernels/sampling.ts). Identical up to float32 rounding:
// different batch shapes may pick different matmul variants, whose summation orders can differ in
// the last bits, which flips a token only at an exact near-tie.
import type { Gpu, Tensor } from '../gpu/runtime.ts';
import { SEG_TILE } from '../kernels/matmul.ts';
import { disposeMultiLora, stackLoras } from './multilora.ts';
import type { KvCache } from '../kernels/attention.ts';
import { embed } from '../kernels/embedding.ts';
import { gatherRows } from '../kernels/elementwise.ts';
import { sampleTokens } from '../kernels/sampling.ts';
import { UserError } from '../util/errors.ts';
import type { AnyLora, LoraWeights, MultiLora, Transformer } from './transformer.ts';

export interface GenerateRequest {
  promptIds: number[];
  /**
   * This request's RNG seed (default: the call's seed) and the request index its draws use (default:
   * its position in the call): sample s draws with seqId = seqIndex·n + s. With both, a request run in
   * a larger batched call (e.g. K students with their own seeds) samples what it samples alone.
   */
  seed?: number;
  seqIndex?: number;
}

export interface GenerateProgress {
  /** Sequences (request × sample) finished so far, of `total`. */
  done: number;
  total: number;
  /** Completion tokens kept so far (up to and including stop tokens). */
  tokens: number;
  batch: number;
  batches: number;
}

export interface GenerateOptions {
  /** Samples per request (default 1). */
  n?: number;
  /** Default 1; 0 means greedy. */
  temperature?: number;
  /** Nucleus mass in (0, 1] (default 1 = off). */
  topP?: number;
  greedy?: boolean;
  maxNewTokens: number;
  /** Integer in [0, 2^53). */
  seed: number;
  /** Sequences decoded together (default 64). */
  batchSize?: number;
  /** Token ids that end a sequence (not included in completionIds). */
  stopIds?: number[];
  lora?: LoraWeights | null;
  /**
   * A different adapter per request (e.g. K LoRA students answering the same questions in one call):
   * request r uses loras[of[r]] (null: the base model). Adapters of one shape (rank, scale, targets);
   * the LoRA branch runs as segmented matmuls (MultiLora), so results equal single-adapter
   * generation up to float32 rounding (the merged x·(W + s·B·A)ᵀ against x·Wᵀ + s·(x·Aᵀ)·Bᵀ), i.e.
   * token for token except at exact near-ties. Not with `lora`.
   */
  adapters?: PerRequestAdapters;
  /** Decode steps recorded between token readbacks (default 8). */
  readEvery?: number;
  /** Names the model in errors (e.g. its folder and adapter). */
  modelName?: string;
  onProgress?: (p: GenerateProgress) => void;
  /** Each batch's sequences so far, after every token readback (live views of the samples; copies). */
  onTokens?: (sequences: PartialSequence[]) => void;
}

export interface PartialSequence {
  requestIndex: number;
  sampleIndex: number;
  /** Tokens generated so far, without a stop token. */
  completionIds: number[];
  finished: boolean;
}

export interface GenerateResult {
  requestIndex: number;
  sampleIndex: number;
  /** Generated ids, without the stop token. */
  completionIds: number[];
  /** The stop token that ended the sequence, or null. */
  stopId: number | null;
  finishReason: 'stop' | 'length';
  promptTokens: number;
  /** Tokens generated, including the stop token when there is one. */
  completionTokens: number;
}

/** Adapter of each request (or prompt): loras[of[i]], null = the base model. */
export interface PerRequestAdapters {
  loras: readonly (LoraWeights | null)[];
  of: readonly number[];
}

/** The adapters stacked once per call, with a zero adapter standing for null (the base model). */
function stackAdapters(gpu: Gpu, a: PerRequestAdapters, count: number, what: string): MultiLora {
  if (a.of.length !== count) throw new UserError(`${what}: adapters.of has ${a.of.length} entries for ${count} ${what === 'generate' ? 'requests' : 'prompts'}`);
  for (const i of a.of) if (!Number.isInteger(i) || i < 0 || i >= a.loras.length) throw new UserError(`${what}: adapter index ${i} outside [0, ${a.loras.length})`);
  const real = a.loras.find((l): l is LoraWeights => !!l);
  if (!real) throw new UserError(`${what}: adapters.loras holds no adapter`);
  const zeros: Tensor[] = [];
  const zero = (): LoraWeights => ({
    ...real,
    layers: real.layers.map((pairs) => Object.fromEntries(Object.entries(pairs).map(([m, p]) => {
      const A = gpu.zeros(p!.A.shape, 'f32', 'zero_lora.A');
      const B = gpu.zeros(p!.B.shape, 'f32', 'zero_lora.B');
      zeros.push(A, B);
      return [m, { A, B }];
    }))),
  });
  const multi = stackLoras(gpu, a.loras.map((l) => l ?? zero()));
  for (const t of zeros) t.dispose();
  return multi;
}

/** Rounds a prompt batch length up so every sequence starts a whole 8-row segment tile. */
const tileLen = (T: number) => Math.ceil(T / SEG_TILE) * SEG_TILE;

/** The tile segment table of B right-padded sequences of length T (a multiple of 8): sequence b uses adapter[b]. */
function tileSegments(gpu: Gpu, adapter: readonly number[], T: number): Tensor {
  const seg = new Uint32Array((adapter.length * T) / SEG_TILE);
  adapter.forEach((a, b) => seg.fill(a, (b * T) / SEG_TILE, ((b + 1) * T) / SEG_TILE));
  return gpu.upload(seg, [seg.length], 'u32', 'gen.seg');
}

/** A sequence's logits held NaN or ±Inf: the weights (or adapter) are broken, or overflow float32. */
export class NonFiniteLogitsError extends UserError {}

interface Slot {
  r: number;
  s: number;
}

function checkOptions(model: Transformer, requests: GenerateRequest[], opts: GenerateOptions) {
  const n = opts.n ?? 1;
  const batchSize = opts.batchSize ?? 64;
  const readEvery = opts.readEvery ?? 8;
  const bad = (msg: string): never => {
    throw new UserError(`generate: ${msg}`);
  };
  if (!Number.isInteger(n) || n < 1) bad(`n must be a positive integer, got ${n}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) bad(`batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isInteger(readEvery) || readEvery < 1) bad(`readEvery must be a positive integer, got ${readEvery}`);
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) bad(`maxNewTokens must be a non-negative integer, got ${opts.maxNewTokens}`);
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed >= 2 ** 53) bad(`seed must be an integer in [0, 2^53), got ${opts.seed}`);
  const T = opts.temperature ?? 1;
  if (!(T >= 0) || !Number.isFinite(T)) bad(`temperature must be a finite number ≥ 0, got ${T}`);
  const topP = opts.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) bad(`top-p must be in (0, 1], got ${topP}`);
  if (requests.length * n > 2 ** 32) bad(`${requests.length} requests × ${n} samples exceed 2^32 sequence ids`);
  const V = model.cfg.vocabSize;
  requests.forEach((req, i) => {
    if (req.promptIds.length === 0) bad(`request ${i} has an empty prompt`);
    if (req.seed !== undefined && (!Number.isInteger(req.seed) || req.seed < 0 || req.seed >= 2 ** 53)) bad(`request ${i}: seed must be an integer in [0, 2^53), got ${req.seed}`);
    if (req.seqIndex !== undefined && (!Number.isInteger(req.seqIndex) || req.seqIndex < 0 || (req.seqIndex + 1) * n > 2 ** 32)) bad(`request ${i}: seqIndex ${req.seqIndex} × ${n} samples exceeds 2^32 sequence ids`);
    for (const id of req.promptIds) if (!Number.isInteger(id) || id < 0 || id >= V) bad(`request ${i}: token id ${id} outside the vocabulary [0, ${V})`);
    const need = req.promptIds.length + opts.maxNewTokens;
    if (need > model.maxPositions) {
      bad(`request ${i}: ${req.promptIds.length} prompt tokens + ${opts.maxNewTokens} new tokens exceed the ${model.maxPositions} positions the model was loaded with`);
    }
  });
  return { n, batchSize, readEvery, temperature: T, topP, greedy: !!opts.greedy || T === 0 };
}

/**
 * Copies sequence src of cache `from` (positions < rows) into sequences dsts of cache `to`, for all
 * layers. Both caches have the same layers / KV heads / head dim; maxLen may differ.
 */
function copyPrompt(gpu: Gpu, from: KvCache, src: number, to: KvCache, dsts: number[], rows: number): void {
  const row = from.kvHeads * from.headDim;
  const n = rows * row;
  if (n === 0) return;
  const sc = Math.floor(src / from.seqsPerChunk);
  const so = (src % from.seqsPerChunk) * from.maxLen * row;
  for (const d of dsts) {
    const dc = Math.floor(d / to.seqsPerChunk);
    const dOff = (d % to.seqsPerChunk) * to.maxLen * row;
    for (let l = 0; l < from.layers; l++) {
      gpu.copy(from.k[l][sc], to.k[l][dc], n, so, dOff);
      gpu.copy(from.v[l][sc], to.v[l][dc], n, so, dOff);
    }
  }
}

/** Uploads right-padded ids / positions [B·T] (padding id 0) and the prompt lengths [B]. */
function promptBatch(gpu: Gpu, prompts: number[][], T: number) {
  const B = prompts.length;
  const ids = new Uint32Array(B * T);
  const pos = new Uint32Array(B * T);
  const last = new Uint32Array(B);
  prompts.forEach((p, b) => {
    ids.set(p, b * T);
    for (let t = 0; t < T; t++) pos[b * T + t] = t;
    last[b] = b * T + p.length - 1;
  });
  return {
    ids: gpu.upload(ids, [B * T], 'u32', 'gen.ids'),
    pos: gpu.upload(pos, [B * T], 'u32', 'gen.pos'),
    lens: gpu.upload(Uint32Array.from(prompts, (p) => p.length), [B], 'u32', 'gen.lens'),
    last: gpu.upload(last, [B], 'u32', 'gen.last'),
  };
}

/**
 * Generates completions for every request (n samples each). Results are in request-major order:
 * result[r·n + s] is sample s of request r.
 */
export async function generate(model: Transformer, requests: GenerateRequest[], opts: GenerateOptions): Promise<GenerateResult[]> {
  const o = checkOptions(model, requests, opts);
  const gpu = model.gpu;
  const stop = new Set(opts.stopIds ?? []);
  const results: GenerateResult[] = new Array(requests.length * o.n);
  const slots: Slot[] = [];
  for (let r = 0; r < requests.length; r++) for (let s = 0; s < o.n; s++) slots.push({ r, s });
  if (opts.maxNewTokens === 0) {
    for (const { r, s } of slots) {
      results[r * o.n + s] = { requestIndex: r, sampleIndex: s, completionIds: [], stopId: null, finishReason: 'length', promptTokens: requests[r].promptIds.length, completionTokens: 0 };
    }
    return results;
  }
  if (opts.adapters && opts.lora) throw new UserError('generate: give either lora or adapters');
  const multi = opts.adapters ? stackAdapters(gpu, opts.adapters, requests.length, 'generate') : null;
  // Longest prompts first; ties keep request order (stable sort).
  slots.sort((a, b) => requests[b.r].promptIds.length - requests[a.r].promptIds.length);
  const batches = Math.ceil(slots.length / o.batchSize);
  const progress = { done: 0, total: slots.length, tokens: 0, batch: 0, batches };
  try {
    for (let bi = 0; bi < batches; bi++) {
      const batch = slots.slice(bi * o.batchSize, (bi + 1) * o.batchSize);
      const base = { done: progress.done, tokens: progress.tokens };
      const outs = await generateBatch(model, requests, batch, o, opts, stop, multi, (finished, tokens) => {
        progress.done = base.done + finished;
        progress.tokens = base.tokens + tokens;
        opts.onProgress?.({ ...progress });
      });
      batch.forEach(({ r, s }, i) => (results[r * o.n + s] = outs[i]));
      progress.batch = bi + 1;
      progress.done = base.done + batch.length;
      progress.tokens = base.tokens + outs.reduce((a, x) => a + x.completionTokens, 0);
      opts.onProgress?.({ ...progress });
    }
  } finally {
    if (multi) disposeMultiLora(multi);
  }
  return results;
}

type Resolved = ReturnType<typeof checkOptions>;

async function generateBatch(
  model: Transformer,
  requests: GenerateRequest[],
  batch: Slot[],
  o: Resolved,
  opts: GenerateOptions,
  stop: Set<number>,
  multi: MultiLora | null,
  report: (finished: number, tokens: number) => void,
): Promise<GenerateResult[]> {
  const gpu = model.gpu;
  const B = batch.length;
  const maxNew = opts.maxNewTokens;
  const lora: AnyLora | null = multi ?? opts.lora ?? null;
  // Distinct prompts of the batch, in slot order.
  const uniq: number[] = [];
  const uniqOf = new Map<number, number>();
  for (const { r } of batch) {
    if (!uniqOf.has(r)) {
      uniqOf.set(r, uniq.length);
      uniq.push(r);
    }
  }
  const prompts = uniq.map((r) => requests[r].promptIds);
  const Tmax = Math.max(...prompts.map((p) => p.length));
  const cache = model.createCache(B, Tmax + maxNew);
  // Per-request adapters: the prefill rows in whole 8-row tiles per prompt; decode rows one per sequence.
  const T = multi ? tileLen(Tmax) : Tmax;
  const decodeSeg = multi ? gpu.upload(Uint32Array.from(batch, ({ r }) => opts.adapters!.of[r]), [B], 'u32', 'gen.seg.decode') : null;
  if (multi) {
    multi.seg = tileSegments(gpu, uniq.map((r) => opts.adapters!.of[r]), T);
    multi.rowsPerSeg = SEG_TILE;
  }
  const pb = promptBatch(gpu, prompts, T);
  let prefillHidden: Tensor;
  if (uniq.length === B) {
    // One slot per prompt, in slot order: prefill straight into the decode cache.
    prefillHidden = model.prefill(cache, pb.ids, pb.pos, pb.lens, B, T, lora);
  } else {
    const pc = model.createCache(uniq.length, Tmax);
    prefillHidden = model.prefill(pc, pb.ids, pb.pos, pb.lens, uniq.length, T, lora);
    const dsts = uniq.map(() => [] as number[]);
    batch.forEach(({ r }, i) => dsts[uniqOf.get(r)!].push(i));
    uniq.forEach((r, u) => copyPrompt(gpu, pc, u, cache, dsts[u], requests[r].promptIds.length));
    gpu.write(cache.lens, Uint32Array.from(batch, ({ r }) => requests[r].promptIds.length));
    pc.dispose();
  }
  // Hidden state of each slot's last prompt position: gather rows of the prefill output.
  const lastRows = Uint32Array.from(batch, ({ r }) => uniqOf.get(r)! * T + requests[r].promptIds.length - 1);
  const lastIdx = gpu.upload(lastRows, [B], 'u32', 'gen.lastRows');
  let x = embed(gpu, prefillHidden, lastIdx);
  prefillHidden.dispose();
  for (const t of [pb.ids, pb.pos, pb.lens, pb.last, lastIdx]) t.dispose();
  if (multi) {
    multi.seg!.dispose();
    multi.seg = decodeSeg;
    multi.rowsPerSeg = 1;
  }

  const seqIds = gpu.upload(Uint32Array.from(batch, ({ r, s }) => (requests[r].seqIndex ?? r) * o.n + s), [B], 'u32', 'gen.seqIds');
  const rowSeeds = batch.some(({ r }) => requests[r].seed !== undefined)
    ? gpu.upload(Uint32Array.from(batch.flatMap(({ r }) => {
        const sd = requests[r].seed ?? opts.seed;
        return [sd >>> 0, Math.floor(sd / 2 ** 32) >>> 0];
      })), [B, 2], 'u32', 'gen.rowSeeds')
    : undefined;
  const K = Math.min(o.readEvery, maxNew);
  // Each chunk's history: K steps of B tokens, then K steps of B non-finite flags, read back together.
  const hist = [gpu.empty([2 * K * B], 'u32', 'gen.hist0'), gpu.empty([2 * K * B], 'u32', 'gen.hist1')];
  const flags = gpu.empty([B], 'u32', 'gen.nonfinite');
  const tokens: number[][] = batch.map(() => []);
  const stopId: (number | null)[] = batch.map(() => null);
  let active = B;
  let kept = 0;
  const absorb = (data: Uint32Array, steps: number, first: number) => {
    for (let k = 0; k < steps; k++) {
      for (let b = 0; b < B; b++) {
        if (stopId[b] !== null || tokens[b].length >= maxNew) continue;
        if (data[K * B + k * B + b] !== 0) {
          const { r, s } = batch[b];
          throw new NonFiniteLogitsError(
            `${opts.modelName ?? 'the model'}: non-finite logits (NaN or ±Inf) at generation step ${first + k} of prompt ${r}${o.n > 1 ? ` sample ${s}` : ''}; the weights hold NaN/Inf or overflow float32 — nothing was generated from them`,
          );
        }
        const id = data[k * B + b];
        kept++;
        if (stop.has(id)) {
          stopId[b] = id;
          active--;
        } else {
          tokens[b].push(id);
          if (tokens[b].length >= maxNew) active--;
        }
      }
    }
    report(B - active, kept);
    opts.onTokens?.(batch.map(({ r, s }, b) => ({ requestIndex: r, sampleIndex: s, completionIds: tokens[b].slice(), finished: stopId[b] !== null || tokens[b].length >= maxNew })));
  };
  let pending: { read: Promise<Uint32Array>; steps: number; first: number } | null = null;
  let step = 0;
  const longestPrompt = Math.max(...batch.map(({ r }) => requests[r].promptIds.length));
  try {
    while (step < maxNew && active > 0) {
      const chunk = Math.floor(step / K);
      const h = hist[chunk % 2];
      const steps = Math.min(K, maxNew - step);
      for (let k = 0; k < steps; k++, step++) {
        if (step > 0) {
          // x holds the token sampled at step − 1: feed it, get the hidden state for step.
          const ids = x;
          x = model.decodeStep(cache, ids, lora, longestPrompt + step);
          ids.dispose();
        }
        const tok = sampleTokens(gpu, { x, w: model.lmHead }, { temperature: o.temperature, topP: o.topP, greedy: o.greedy, seed: opts.seed, step, seqIds, rowSeeds, nonFinite: flags });
        x.dispose();
        gpu.copy(tok, h, B, 0, k * B);
        gpu.copy(flags, h, B, 0, K * B + k * B);
        x = tok;
      }
      const read = gpu.read(h).then((d) => d as unknown as Uint32Array);
      read.catch(() => {}); // awaited below; an early error must not leave it unhandled
      if (pending) {
        absorb(await pending.read, pending.steps, pending.first);
      }
      pending = { read, steps, first: step - steps };
    }
    if (pending) absorb(await pending.read, pending.steps, pending.first);
  } finally {
    x.dispose();
    flags.dispose();
    hist.forEach((t) => t.dispose());
    seqIds.dispose();
    rowSeeds?.dispose();
    cache.dispose();
    if (multi) {
      multi.seg?.dispose();
      multi.seg = null;
    }
  }
  return batch.map(({ r, s }, b) => ({
    requestIndex: r,
    sampleIndex: s,
    completionIds: tokens[b],
    stopId: stopId[b],
    finishReason: stopId[b] !== null ? 'stop' : 'length',
    promptTokens: requests[r].promptIds.length,
    completionTokens: tokens[b].length + (stopId[b] !== null ? 1 : 0),
  }));
}

/**
 * Full-sequence logits [T, vocab] of one token sequence, read back vocab chunk by vocab chunk and
 * in row blocks that keep each logits block under the binding limit (151,936-word vocabularies).
 */
export async function sequenceLogits(model: Transformer, ids: number[], lora?: LoraWeights | null): Promise<Float32Array> {
  const gpu = model.gpu;
  const T = ids.length;
  const V = model.cfg.vocabSize;
  if (T === 0) throw new UserError('logits: empty token sequence');
  if (T > model.maxPositions) throw new UserError(`logits: ${T} tokens exceed the ${model.maxPositions} positions the model was loaded with`);
  for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= V) throw new UserError(`logits: token id ${id} outside the vocabulary [0, ${V})`);
  const idsT = gpu.upload(Uint32Array.from(ids), [T], 'u32', 'logits.ids');
  const pos = gpu.upload(Uint32Array.from({ length: T }, (_, i) => i), [T], 'u32', 'logits.pos');
  const { hidden } = model.forward(idsT, pos, 1, T, { lora });
  idsT.dispose();
  pos.dispose();
  try {
    return await model.logitsToHost(hidden);
  } finally {
    hidden.dispose();
  }
}

/**
 * Next-token logits after each prompt [prompts.length, vocab], batched: prompts are right-padded into
 * batches of `batchSize`, run through one forward each, and only every prompt's last row goes through
 * the LM head and back to the CPU (causal attention: right padding never changes a real row).
 */
export async function lastTokenLogits(
  model: Transformer,
  prompts: readonly number[][],
  opts: { lora?: LoraWeights | null; batchSize?: number; adapters?: PerRequestAdapters } = {},
): Promise<Float32Array> {
  const gpu = model.gpu;
  const V = model.cfg.vocabSize;
  const out = new Float32Array(prompts.length * V);
  const bs = Math.max(1, opts.batchSize ?? 64);
  if (opts.adapters && opts.lora) throw new UserError('logits: give either lora or adapters');
  const multi = opts.adapters ? stackAdapters(gpu, opts.adapters, prompts.length, 'logits') : null;
  try {
    for (let b0 = 0; b0 < prompts.length; b0 += bs) {
      const batch = prompts.slice(b0, b0 + bs);
      out.set(await lastLogitsBatch(model, batch, opts.lora ?? null, multi, multi ? opts.adapters!.of.slice(b0, b0 + bs) : null), b0 * V);
    }
  } finally {
    if (multi) disposeMultiLora(multi);
  }
  return out;
}

async function lastLogitsBatch(model: Transformer, batch: readonly number[][], lora: LoraWeights | null, multi: MultiLora | null, adapterOf: readonly number[] | null): Promise<Float32Array> {
  const gpu = model.gpu;
  const V = model.cfg.vocabSize;
  {
    const B = batch.length;
    const Tmax = Math.max(...batch.map((p) => p.length));
    const T = multi ? tileLen(Tmax) : Tmax;
    if (Tmax === 0) throw new UserError('logits: empty token sequence');
    if (Tmax > model.maxPositions) throw new UserError(`logits: ${Tmax} tokens exceed the ${model.maxPositions} positions the model was loaded with`);
    const ids = new Uint32Array(B * T);
    const pos = new Uint32Array(B * T);
    const last = new Uint32Array(B);
    batch.forEach((p, b) => {
      if (p.length === 0) throw new UserError('logits: empty token sequence');
      for (let t = 0; t < T; t++) {
        const id = t < p.length ? p[t] : 0;
        if (!Number.isInteger(id) || id < 0 || id >= V) throw new UserError(`logits: token id ${id} outside the vocabulary [0, ${V})`);
        ids[b * T + t] = id;
        pos[b * T + t] = t;
      }
      last[b] = b * T + p.length - 1;
    });
    const idsT = gpu.upload(ids, [B * T], 'u32', 'logits.ids');
    const posT = gpu.upload(pos, [B * T], 'u32', 'logits.pos');
    const lastT = gpu.upload(last, [B], 'u32', 'logits.last');
    if (multi) {
      multi.seg = tileSegments(gpu, adapterOf!, T);
      multi.rowsPerSeg = SEG_TILE;
    }
    const { hidden } = model.forward(idsT, posT, B, T, { lora: multi ?? lora });
    const rows = gatherRows(gpu, hidden, lastT);
    for (const t of [idsT, posT, lastT, hidden]) t.dispose();
    if (multi) {
      multi.seg?.dispose();
      multi.seg = null;
    }
    try {
      return await model.logitsToHost(rows);
    } finally {
      rows.dispose();
    }
  }
}
