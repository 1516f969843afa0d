// Token embedding gather (forward) and deterministic scatter-add (backward) over a [V, D] table
// that may be a ChunkedMatrix (Qwen2.5's 151,936 × 896 table is over the 128 MiB binding limit).
//
// Forward, two variants (`embedVariant`): 'select' — one dispatch with a binding per chunk, each
// lane picking its chunk from the id; 'per-chunk' — one dispatch per chunk, each writing only the
// rows whose id falls in its chunk (the last chunk also writes the zero rows). Ids ≥ V give zero
// rows on the GPU (documented behaviour: no error can be raised there). When the ids are also known
// on the CPU (`hostIds`), out-of-range ids throw instead, and chunks holding none of the ids are
// skipped (decode: a few tokens touch one or two chunks).
//
// Backward: no float atomics. The CPU (which knows the ids at training time) builds an index —
// distinct ids in increasing order, the token positions of each in increasing order — and one lane
// per (distinct id, column vector) sums its tokens' gradient rows in that fixed order and adds the
// sum to the table row: deterministic, each table row written by exactly one lane.

import { defineKernel, product } from '../gpu/kernel.ts';
import { cdiv, ChunkedMatrix, GpuError, Tensor, type Gpu } from '../gpu/runtime.ts';
import { expectTensor, outputTensor, overlaps, rowGridMain, rowsGrid, shapeStr, vecType } from './common.ts';

const EMBED_WG = 64;

interface TablePart {
  tensor: Tensor;
  start: number;
  rows: number;
}

function tableParts(K: string, table: Tensor | ChunkedMatrix): { V: number; D: number; parts: TablePart[] } {
  if (table instanceof ChunkedMatrix) {
    const parts = table.chunks.map((tensor, i) => ({ tensor, start: i * table.rowsPerChunk, rows: table.chunkRows(i) }));
    for (const p of parts) expectTensor(K, 'table chunk', p.tensor, 'f32', [p.rows, table.cols]);
    return { V: table.rows, D: table.cols, parts };
  }
  expectTensor(K, 'table', table, 'f32');
  if (table.shape.length !== 2) throw new GpuError(`${K}: table must be [vocab, dim], got ${shapeStr(table)}`);
  return { V: table.shape[0], D: table.shape[1], parts: [{ tensor: table, start: 0, rows: table.shape[0] }] };
}

const embedKernel = defineKernel({
  name: 'embed',
  bindings: ({ v }: { v: 1 | 4 }) => [['table', vecType(v), 'read'], ['ids', 'u32', 'read'], ['y', vecType(v), 'read_write']],
  uniforms: { tokens: 'u32', dv: 'u32', ny: 'u32', start: 'u32', rows: 'u32', zeroFrom: 'u32' },
  key: ({ v }) => `v${v}`,
  space: () => product({ v: [1, 4] as const }),
  body: ({ v }) => `${rowGridMain(EMBED_WG, 't', 'j', 'tokens', 'dv')}
  let g = t * u.dv + j;
  let id = ids[t];
  let local = id - u.start;  // wraps to a huge value for id < start
  if (id >= u.start && local < u.rows) {
    y[g] = table[local * u.dv + j];
  } else if (id >= u.zeroFrom) {
    y[g] = ${vecType(v)}(0.0);
  }
}`,
});

/**
 * One dispatch for all chunks: every chunk is its own binding and the lane switches on
 * id / rowsPerChunk. Needs chunks + 2 storage bindings.
 */
const embedSelectKernel = defineKernel({
  name: 'embed_select',
  bindings: ({ v, chunks }: { v: 1 | 4; chunks: number }) => [
    ['ids', 'u32', 'read'],
    ['y', vecType(v), 'read_write'],
    ...Array.from({ length: chunks }, (_, c) => [`t${c}`, vecType(v), 'read'] as const),
  ],
  uniforms: { tokens: 'u32', dv: 'u32', ny: 'u32', rowsPerChunk: 'u32', vocab: 'u32' },
  key: ({ v, chunks }) => `${chunks}_v${v}`,
  space: () => product({ v: [1, 4] as const, chunks: [1, 2, 3, 5, 8, 14] }),
  body: ({ v, chunks }) => {
    const T = vecType(v);
    const cases = Array.from({ length: chunks }, (_, c) => `    case ${c}u: { y[g] = t${c}[local * u.dv + j]; }`).join('\n');
    return `${rowGridMain(EMBED_WG, 't', 'j', 'tokens', 'dv')}
  let g = t * u.dv + j;
  let id = ids[t];
  let c = select(0xffffffffu, id / u.rowsPerChunk, id < u.vocab);
  let local = id - c * u.rowsPerChunk;
  switch c {
${cases}
    default: { y[g] = ${T}(0.0); }
  }
}`;
  },
});

export type EmbedVariant = 'per-chunk' | 'select';

/**
 * 'select' (one dispatch, a binding per chunk) whenever the chunks fit the binding limit: it reads
 * each id once instead of once per chunk (lavapipe, 2048 tokens × 151,936-row table in 5 chunks:
 * see bench/rowwise.ts). 'per-chunk' otherwise, or with hostIds when few chunks are touched.
 */
export function embedVariant(gpu: Gpu, chunks: number): EmbedVariant {
  return chunks > 1 && chunks + 2 <= gpu.limits.maxStorageBuffersPerShaderStage ? 'select' : 'per-chunk';
}

export interface EmbedOptions {
  variant?: EmbedVariant;
  out?: Tensor;
  /** The same ids on the CPU: enables the range check (throws) and skipping chunks with no ids. */
  hostIds?: ArrayLike<number>;
}

/**
 * out[t, :] = table[ids[t], :] for ids u32 [tokens]. Ids ≥ V (only possible when they are not
 * given on the CPU) produce zero rows.
 */
export function embed(gpu: Gpu, table: Tensor | ChunkedMatrix, ids: Tensor, opts: EmbedOptions = {}): Tensor {
  const K = 'embed';
  const { V, D, parts } = tableParts(K, table);
  expectTensor(K, 'ids', ids, 'u32');
  if (ids.shape.length !== 1) throw new GpuError(`${K}: ids must be 1-D [tokens], got ${shapeStr(ids)}`);
  const tokens = ids.shape[0];
  const y = outputTensor(gpu, K, opts.out, [tokens, D]);
  if (overlaps(y, ids) || parts.some((p) => overlaps(y, p.tensor))) throw new GpuError(`${K}: out must not alias ids or the table`);
  let used: boolean[] | null = null;
  if (opts.hostIds) {
    const h = opts.hostIds;
    if (h.length !== tokens) throw new GpuError(`${K}: hostIds has ${h.length} ids but ids ${shapeStr(ids)} has ${tokens}`);
    used = parts.map(() => false);
    const rpc = parts[0]?.rows || 1;
    for (let t = 0; t < tokens; t++) {
      const id = h[t];
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new GpuError(`${K}: token ${t} has id ${id}, outside the vocabulary [0, ${V})`);
      used[Math.floor(id / rpc)] = true;
    }
  }
  const v: 1 | 4 = D % 4 === 0 ? 4 : 1;
  const dv = D / v;
  const grid = rowsGrid(tokens, cdiv(dv, EMBED_WG));
  let variant = opts.variant ?? embedVariant(gpu, parts.length);
  // With CPU ids, per-chunk dispatches skip untouched chunks: better when at most one is touched.
  if (!opts.variant && used && used.filter(Boolean).length <= 1) variant = 'per-chunk';
  if (variant === 'select') {
    if (parts.length + 2 > gpu.limits.maxStorageBuffersPerShaderStage) {
      throw new GpuError(`${K}: ${parts.length} chunks + 2 bindings exceed maxStorageBuffersPerShaderStage ${gpu.limits.maxStorageBuffersPerShaderStage}`);
    }
    const rpc = parts[0].rows;
    const buffers: Record<string, Tensor> = { ids, y };
    parts.forEach((p, c) => (buffers[`t${c}`] = p.tensor));
    embedSelectKernel.run(gpu, { v, chunks: parts.length }, buffers, grid.workgroups, { tokens, dv, ny: grid.ny, rowsPerChunk: rpc, vocab: V });
    return y;
  }
  parts.forEach((p, i) => {
    const last = i === parts.length - 1;
    if (used && !used[i]) return;
    // zeroFrom = V on the last chunk writes the zero rows of out-of-range ids; 0xffffffff disables.
    const u = { tokens, dv, ny: grid.ny, start: p.start, rows: p.rows, zeroFrom: last && !used ? V : 0xffffffff };
    embedKernel.run(gpu, { v }, { table: p.tensor, ids, y }, grid.workgroups, u);
  });
  return y;
}

// ------------------------------------------------------------------------------------------------
// backward
// ------------------------------------------------------------------------------------------------

/** CPU-built grouping of token positions by id (the ids of one batch are known on the CPU). */
export interface EmbedGradIndex {
  tokens: number;
  /** Distinct ids, increasing. */
  uniqueIds: Uint32Array;
  /** Tokens of uniqueIds[k] are order[segStart[k] … segStart[k+1]); length uniqueIds.length + 1. */
  segStart: Uint32Array;
  /** Token positions sorted by (id, position). */
  order: Uint32Array;
}

/** Builds the index for `ids` (each must lie in [0, vocab)). Counting sort: O(tokens + distinct·log). */
export function buildEmbedGradIndex(ids: ArrayLike<number>, vocab: number): EmbedGradIndex {
  const tokens = ids.length;
  const counts = new Map<number, number>();
  for (let t = 0; t < tokens; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new GpuError(`embedBackward: token ${t} has id ${id}, outside the vocabulary [0, ${vocab})`);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const uniqueIds = Uint32Array.from(counts.keys()).sort();
  const segStart = new Uint32Array(uniqueIds.length + 1);
  const slot = new Map<number, number>();
  for (let k = 0; k < uniqueIds.length; k++) {
    slot.set(uniqueIds[k], segStart[k]);
    segStart[k + 1] = segStart[k] + counts.get(uniqueIds[k])!;
  }
  const order = new Uint32Array(tokens);
  for (let t = 0; t < tokens; t++) {
    const s = slot.get(ids[t])!;
    order[s] = t;
    slot.set(ids[t], s + 1);
  }
  return { tokens, uniqueIds, segStart, order };
}

// idx packs [uniqueIds (U) | segStart (U + 1) | order (tokens)].
const embedBackwardKernel = defineKernel({
  name: 'embed_backward',
  bindings: ({ v }: { v: 1 | 4 }) => [['idx', 'u32', 'read'], ['dOut', vecType(v), 'read'], ['dTable', vecType(v), 'read_write']],
  uniforms: { count: 'u32', dv: 'u32', ny: 'u32', k0: 'u32', start: 'u32', segOff: 'u32', orderOff: 'u32' },
  key: ({ v }) => `v${v}`,
  space: () => product({ v: [1, 4] as const }),
  body: ({ v }) => `${rowGridMain(EMBED_WG, 'kk', 'j', 'count', 'dv')}
  let k = u.k0 + kk;
  let row = idx[k] - u.start;
  var acc = ${vecType(v)}(0.0);
  let s1 = idx[u.segOff + k + 1u];
  for (var s = idx[u.segOff + k]; s < s1; s++) {
    acc += dOut[idx[u.orderOff + s] * u.dv + j];
  }
  dTable[row * u.dv + j] += acc;
}`,
});

/**
 * dTable[ids[t], :] += dOut[t, :] for every token, deterministically (see the file comment).
 * `ids` are the batch's ids on the CPU, or an index prebuilt with buildEmbedGradIndex.
 */
export function embedBackward(gpu: Gpu, ids: ArrayLike<number> | EmbedGradIndex, dOut: Tensor, dTable: Tensor | ChunkedMatrix): void {
  const K = 'embedBackward';
  const { V, D, parts } = tableParts(K, dTable);
  if (ids instanceof Tensor) throw new GpuError(`${K}: pass the ids on the CPU (Uint32Array or buildEmbedGradIndex), not a GPU tensor`);
  const index = isIndex(ids) ? ids : buildEmbedGradIndex(ids, V);
  expectTensor(K, 'dOut', dOut, 'f32', [index.tokens, D]);
  if (parts.some((p) => overlaps(dOut, p.tensor))) throw new GpuError(`${K}: dOut must not alias dTable`);
  const U = index.uniqueIds.length;
  if (U === 0) return;
  if (U && index.uniqueIds[U - 1] >= V) throw new GpuError(`${K}: id ${index.uniqueIds[U - 1]} outside the vocabulary [0, ${V})`);
  const packed = new Uint32Array(U + (U + 1) + index.tokens);
  packed.set(index.uniqueIds, 0);
  packed.set(index.segStart, U);
  packed.set(index.order, 2 * U + 1);
  const idxT = gpu.upload(packed, [packed.length], 'u32', 'embedBackward.index');
  const v: 1 | 4 = D % 4 === 0 ? 4 : 1;
  const dv = D / v;
  let k0 = 0;
  for (const p of parts) {
    // Distinct ids of this chunk form a contiguous run of the sorted list.
    let k1 = k0;
    while (k1 < U && index.uniqueIds[k1] < p.start + p.rows) k1++;
    if (k1 > k0) {
      const grid = rowsGrid(k1 - k0, cdiv(dv, EMBED_WG));
      const u = { count: k1 - k0, dv, ny: grid.ny, k0, start: p.start, segOff: U, orderOff: 2 * U + 1 };
      embedBackwardKernel.run(gpu, { v }, { idx: idxT, dOut, dTable: p.tensor }, grid.workgroups, u);
    }
    k0 = k1;
  }
  idxT.dispose();
}

function isIndex(x: ArrayLike<number> | EmbedGradIndex): x is EmbedGradIndex {
  return (x as EmbedGradIndex).uniqueIds !== undefined;
}

// ------------------------------------------------------------------------------------------------
// float64 references
// ------------------------------------------------------------------------------------------------

/** Gather in float64; out-of-range ids give zero rows (the GPU behaviour). */
export function embedRef(table: ArrayLike<number>, vocab: number, dim: number, ids: ArrayLike<number>): Float64Array {
  const y = new Float64Array(ids.length * dim);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= vocab) continue;
    for (let j = 0; j < dim; j++) y[t * dim + j] = table[id * dim + j];
  }
  return y;
}

/** dTable [vocab·dim] of Σ_t dOut[t]·table[ids[t]]: scatter-add in token order. */
export function embedBackwardRef(ids: ArrayLike<number>, dOut: ArrayLike<number>, vocab: number, dim: number): Float64Array {
  const dTable = new Float64Array(vocab * dim);
  for (let t = 0; t < ids.length; t++) {
    for (let j = 0; j < dim; j++) dTable[ids[t] * dim + j] += dOut[t * dim + j];
  }
  return dTable;
}
