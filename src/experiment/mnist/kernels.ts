// Kernels for the batched MNIST MLPs (N independent models trained side by side; the matrix
// products themselves go through matmul.ts with 3-D [models, rows, cols] operands):
//   gatherImages    byte images (4 pixels per u32) → f32 in [-1, 1] for a per-model index list, + labels
//   noiseImages     uniform[-1, 1) noise images from a counter-based hash (see below)
//   reluInPlace / reluBackwardInPlace
//   softmaxCrossEntropy  CE on the first `classes` logits of each row (the paper's logits[..., :10])
//   klDistill       KL(softmax(teacher[lo:hi]) ‖ softmax(student[lo:hi])) and its gradient
//   accuracyCounts  per-model count of rows whose argmax over the first `classes` logits is the label
// Float64 references (`...Ref`) at the bottom.
//
// Noise RNG: pixel p of noise image i of model m under seed s is
//   h = pcg(pcg(pcg(pcg(s) + m) + i) + p),  x = 2·(h >> 8)·2⁻²⁴ − 1  ∈ [-1, 1)
// with pcg = the PCG-RXS-M-XS 32-bit hash (Jarzynski & Olano, "Hash Functions for GPU Rendering",
// JCGT 2020). Being counter-based, image i of model m is the same every time it is generated: the
// noise set is "drawn once" and reused by every epoch and every student, without storing it.

import { defineKernel, product } from '../../gpu/kernel.ts';
import { cdiv, GpuError, type Gpu, type Tensor } from '../../gpu/runtime.ts';
import { expectTensor, flatIndexMain, MAX_WG_PER_DIM as MAX_WG, PCG_WGSL, shapeStr as shp, spreadGrid, vecType, vecWidth } from '../../kernels/common.ts';
import { pcgHash } from '../../util/rng.ts';

const WG = 64;

/** One lane per thread: workgroups and the lanes per grid row (kernels index gid.x + gid.y · perRow). */
function grid(threads: number): { wg: [number, number]; perRow: number } {
  const g = spreadGrid(cdiv(threads, WG));
  return { wg: g.workgroups, perRow: g.nx * WG };
}

function expect3(kernel: string, what: string, t: Tensor, dtype: 'f32' | 'u32'): [number, number, number] {
  expectTensor(kernel, what, t, dtype);
  if (t.shape.length !== 3) throw new GpuError(`${kernel}: ${what} must be 3-D [models, rows, cols], got ${shp(t)}`);
  return [t.shape[0], t.shape[1], t.shape[2]];
}


// ------------------------------------------------------------------------------------------------
// image batches
// ------------------------------------------------------------------------------------------------

const gatherKernel = defineKernel({
  name: 'mlp_gather_images',
  bindings: [['images', 'u32', 'read'], ['labelsAll', 'u32', 'read'], ['idx', 'u32', 'read'], ['x', 'vec4<f32>', 'read_write'], ['labels', 'u32', 'read_write']],
  uniforms: { total: 'u32', perRow: 'u32', rows: 'u32', idxStride: 'u32', idxOffset: 'u32', words: 'u32' },
  body: () => /* wgsl */ `${flatIndexMain(WG, 't', 'total', 'perRow')}
  // t enumerates (model, row, word)
  let w = t % u.words;
  let mr = t / u.words;                    // model * rows + row
  let m = mr / u.rows;
  let r = mr % u.rows;
  let img = idx[m * u.idxStride + u.idxOffset + r];
  let packed = images[img * u.words + w];
  // byte b → (b/255 − 0.5)/0.5 = b/127.5 − 1 (torchvision ToTensor + Normalize(0.5, 0.5)).
  let b = vec4<f32>(f32(packed & 255u), f32((packed >> 8u) & 255u), f32((packed >> 16u) & 255u), f32(packed >> 24u));
  // Clamped: WGSL lets a division be 2.5 ulp off and drivers may re-associate (NVIDIA gave 1.0000001 for
  // b = 255 with b / 127.5 − 1 and with (2b − 255)·(1/255)); the clamp keeps the ends exactly ±1.
  x[t] = clamp(b / 127.5 - vec4<f32>(1.0), vec4<f32>(-1.0), vec4<f32>(1.0));
  if (w == 0u) { labels[mr] = labelsAll[img]; }
}`,
});

export interface BatchIndex {
  /** u32 index table: row r of model m reads entry m·stride + offset + r. */
  idx: Tensor;
  stride: number;
  offset: number;
}

/**
 * X[m, r, :] = image idx[m·stride + offset + r] scaled to [-1, 1], labels[m, r] = its label.
 * images: u32 [nImages, 196] (4 pixels per word, see packImages); labelsAll: u32 [nImages].
 */
export function gatherImages(
  gpu: Gpu,
  images: Tensor,
  labelsAll: Tensor,
  index: BatchIndex,
  models: number,
  rows: number,
): { x: Tensor; labels: Tensor } {
  const k = 'gatherImages';
  if (images.dtype !== 'u32' || images.shape.length !== 2 || images.shape[1] * 4 % 4 !== 0) {
    throw new GpuError(`${k}: images must be u32 [n, words], got ${images.dtype} ${shp(images)}`);
  }
  if (labelsAll.dtype !== 'u32' || labelsAll.size !== images.shape[0]) {
    throw new GpuError(`${k}: labels ${labelsAll.dtype} ${shp(labelsAll)} must be u32 [${images.shape[0]}]`);
  }
  if (index.idx.dtype !== 'u32') throw new GpuError(`${k}: idx must be u32`);
  if ((models - 1) * index.stride + index.offset + rows > index.idx.size) {
    throw new GpuError(`${k}: index table ${shp(index.idx)} too small for ${models} models × ${rows} rows at offset ${index.offset}, stride ${index.stride}`);
  }
  const words = images.shape[1];
  const x = gpu.empty([models, rows, words * 4], 'f32', 'mlp_images');
  const labels = gpu.empty([models, rows], 'u32', 'mlp_labels');
  const total = models * rows * words;
  const { wg, perRow } = grid(total);
  const u = { total, perRow, rows, idxStride: index.stride, idxOffset: index.offset, words };
  gatherKernel.run(gpu, {}, { images, labelsAll, idx: index.idx, x, labels }, wg, u);
  return { x, labels };
}

const noiseKernel = defineKernel({
  name: 'mlp_noise_images',
  bindings: [['idx', 'u32', 'read'], ['x', 'vec4<f32>', 'read_write']],
  uniforms: { total: 'u32', perRow: 'u32', rows: 'u32', idxStride: 'u32', idxOffset: 'u32', quads: 'u32', seedHash: 'u32', modelBase: 'u32' },
  body: () => /* wgsl */ `
${PCG_WGSL}${flatIndexMain(WG, 't', 'total', 'perRow')}
  // t enumerates (model, row, quad of pixels)
  let q = t % u.quads;
  let mr = t / u.quads;
  let m = mr / u.rows;
  let r = mr % u.rows;
  let img = idx[m * u.idxStride + u.idxOffset + r];
  let hi = pcg(pcg(u.seedHash + u.modelBase + m) + img);
  var v: vec4<f32>;
  for (var j = 0u; j < 4u; j++) {
    let h = pcg(hi + 4u * q + j);
    v[j] = f32(h >> 8u) * (2.0 / 16777216.0) - 1.0;
  }
  x[t] = v;
}`,
});

/** The seed's first hash, shared by the GPU kernel and noisePixelRef. */
export function noiseSeedHash(seed: number): number {
  return pcgHash(seed >>> 0);
}

/**
 * X[m, r, p] = noise pixel p of image idx[m·stride + offset + r] of model (modelBase + m) under
 * `seed` (see the file comment). pixels must be a multiple of 4.
 */
export function noiseImages(gpu: Gpu, index: BatchIndex, models: number, rows: number, pixels: number, seed: number, modelBase = 0): Tensor {
  const k = 'noiseImages';
  if (pixels % 4 !== 0) throw new GpuError(`${k}: pixels per image (${pixels}) must be a multiple of 4`);
  if (index.idx.dtype !== 'u32') throw new GpuError(`${k}: idx must be u32`);
  if ((models - 1) * index.stride + index.offset + rows > index.idx.size) {
    throw new GpuError(`${k}: index table ${shp(index.idx)} too small for ${models} models × ${rows} rows`);
  }
  const x = gpu.empty([models, rows, pixels], 'f32', 'mlp_noise');
  const quads = pixels / 4;
  const total = models * rows * quads;
  const { wg, perRow } = grid(total);
  const u = { total, perRow, rows, idxStride: index.stride, idxOffset: index.offset, quads, seedHash: noiseSeedHash(seed), modelBase };
  noiseKernel.run(gpu, {}, { idx: index.idx, x }, wg, u);
  return x;
}

// ------------------------------------------------------------------------------------------------
// ReLU
// ------------------------------------------------------------------------------------------------

const reluKernel = defineKernel({
  name: 'mlp_relu',
  bindings: ({ vec }: { vec: string }) => [['x', vec, 'read_write']],
  uniforms: { n: 'u32', perRow: 'u32' },
  key: ({ vec }) => (vec === 'f32' ? 's' : 'v4'),
  space: () => product({ vec: ['f32', 'vec4<f32>'] }),
  body: ({ vec }) => /* wgsl */ `${flatIndexMain(WG, 'i', 'n', 'perRow')}
  x[i] = max(x[i], ${vec}(0.0));
}`,
});

/** x = max(x, 0) in place. Returns x. */
export function reluInPlace(gpu: Gpu, x: Tensor): Tensor {
  if (x.dtype !== 'f32') throw new GpuError(`reluInPlace: x must be f32, got ${x.dtype} ${shp(x)}`);
  const vec = vecType(vecWidth(x.size));
  const n = vec === 'f32' ? x.size : x.size / 4;
  const { wg, perRow } = grid(n);
  reluKernel.run(gpu, { vec }, { x }, wg, { n, perRow });
  return x;
}

const reluBackwardKernel = defineKernel({
  name: 'mlp_relu_backward',
  bindings: ({ vec }: { vec: string }) => [['dy', vec, 'read_write'], ['y', vec, 'read']],
  uniforms: { n: 'u32', perRow: 'u32' },
  key: ({ vec }) => (vec === 'f32' ? 's' : 'v4'),
  space: () => product({ vec: ['f32', 'vec4<f32>'] }),
  body: ({ vec }) => /* wgsl */ `${flatIndexMain(WG, 'i', 'n', 'perRow')}
  dy[i] = select(${vec}(0.0), dy[i], y[i] > ${vec}(0.0));
}`,
});

/** dy ← dy ⊙ [y > 0] in place, y = relu output (y > 0 ⇔ pre-activation > 0). Returns dy. */
export function reluBackwardInPlace(gpu: Gpu, dy: Tensor, y: Tensor): Tensor {
  const k = 'reluBackwardInPlace';
  if (dy.dtype !== 'f32' || y.dtype !== 'f32') throw new GpuError(`${k}: dy and y must be f32`);
  if (dy.size !== y.size) throw new GpuError(`${k}: dy ${shp(dy)} and y ${shp(y)} differ in size`);
  const vec = vecType(vecWidth(dy.size));
  const n = vec === 'f32' ? dy.size : dy.size / 4;
  const { wg, perRow } = grid(n);
  reluBackwardKernel.run(gpu, { vec }, { dy, y }, wg, { n, perRow });
  return dy;
}

// ------------------------------------------------------------------------------------------------
// losses (one invocation per row: rows have ≤ 16 logits)
// ------------------------------------------------------------------------------------------------

const crossEntropyKernel = defineKernel({
  name: 'mlp_softmax_cross_entropy',
  bindings: [['logits', 'f32', 'read'], ['labels', 'u32', 'read'], ['dlogits', 'f32', 'read_write'], ['loss', 'f32', 'read_write']],
  uniforms: { rows: 'u32', perRow: 'u32', cols: 'u32', classes: 'u32', scale: 'f32' },
  body: () => /* wgsl */ `${flatIndexMain(WG, 'r', 'rows', 'perRow')}
  let base = r * u.cols;
  var mx = logits[base];
  for (var j = 1u; j < u.classes; j++) { mx = max(mx, logits[base + j]); }
  var s = 0.0;
  for (var j = 0u; j < u.classes; j++) { s += exp(logits[base + j] - mx); }
  let lse = mx + log(s);
  let y = labels[r];
  loss[r] = lse - logits[base + y];
  for (var j = 0u; j < u.cols; j++) {
    var d = 0.0;
    if (j < u.classes) { d = exp(logits[base + j] - lse) - select(0.0, 1.0, j == y); }
    dlogits[base + j] = d * u.scale;
  }
}`,
});

/**
 * Cross-entropy of softmax(logits[..., :classes]) against labels, per row, and its gradient
 * scale·(softmax − onehot) (zero in columns ≥ classes). logits [G, rows, cols], labels u32 [G, rows].
 * With scale = 1/(G_total·rows) this is torch's F.cross_entropy(logits[..., :10].flatten(0, 1), y).
 */
export function softmaxCrossEntropy(gpu: Gpu, logits: Tensor, labels: Tensor, classes: number, scale: number): { dLogits: Tensor; loss: Tensor } {
  const k = 'softmaxCrossEntropy';
  const [G, R, C] = expect3(k, 'logits', logits, 'f32');
  if (labels.dtype !== 'u32' || labels.size !== G * R) throw new GpuError(`${k}: labels ${labels.dtype} ${shp(labels)} must be u32 [${G}, ${R}]`);
  if (!(classes >= 1 && classes <= C)) throw new GpuError(`${k}: classes ${classes} out of range for ${C} logits`);
  const dLogits = gpu.empty([G, R, C], 'f32', 'mlp_dlogits');
  const loss = gpu.empty([G, R], 'f32', 'mlp_loss');
  const { wg, perRow } = grid(G * R);
  crossEntropyKernel.run(gpu, {}, { logits, labels, dlogits: dLogits, loss }, wg, { rows: G * R, perRow, cols: C, classes, scale });
  return { dLogits, loss };
}

const klKernel = defineKernel({
  name: 'mlp_kl_distill',
  bindings: [['student', 'f32', 'read'], ['teacher', 'f32', 'read'], ['dlogits', 'f32', 'read_write'], ['loss', 'f32', 'read_write']],
  uniforms: { rows: 'u32', perRow: 'u32', cols: 'u32', lo: 'u32', hi: 'u32', scale: 'f32' },
  body: () => /* wgsl */ `${flatIndexMain(WG, 'r', 'rows', 'perRow')}
  let base = r * u.cols;
  var ms = student[base + u.lo];
  var mt = teacher[base + u.lo];
  for (var j = u.lo + 1u; j < u.hi; j++) { ms = max(ms, student[base + j]); mt = max(mt, teacher[base + j]); }
  var ss = 0.0;
  var st = 0.0;
  for (var j = u.lo; j < u.hi; j++) { ss += exp(student[base + j] - ms); st += exp(teacher[base + j] - mt); }
  let lseS = ms + log(ss);
  let lseT = mt + log(st);
  var l = 0.0;
  for (var j = 0u; j < u.cols; j++) {
    var d = 0.0;
    if (j >= u.lo && j < u.hi) {
      let logp = teacher[base + j] - lseT;
      let logq = student[base + j] - lseS;
      let p = exp(logp);
      l += p * (logp - logq);
      d = exp(logq) - p;
    }
    dlogits[base + j] = d * u.scale;
  }
  loss[r] = l;
}`,
});

/**
 * Per row: KL(p ‖ q) with p = softmax(teacher[lo:hi]), q = softmax(student[lo:hi]) (temperature 1),
 * and the gradient w.r.t. the student logits scale·(q − p) on [lo, hi), zero elsewhere.
 * torch: F.kl_div(log_softmax(s[..., idx]), softmax(t[..., idx]), reduction="batchmean") on
 * [models, batch, k] tensors divides the sum over models and rows by the number of models, i.e.
 * scale = 1/models_total.
 */
export function klDistill(gpu: Gpu, student: Tensor, teacher: Tensor, lo: number, hi: number, scale: number): { dLogits: Tensor; loss: Tensor } {
  const k = 'klDistill';
  const [G, R, C] = expect3(k, 'student', student, 'f32');
  const t = expect3(k, 'teacher', teacher, 'f32');
  if (t[0] !== G || t[1] !== R || t[2] !== C) throw new GpuError(`${k}: teacher ${shp(teacher)} does not match student ${shp(student)}`);
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && hi <= C && hi > lo)) {
    throw new GpuError(`${k}: logit range [${lo}, ${hi}) out of range for ${C} logits`);
  }
  const dLogits = gpu.empty([G, R, C], 'f32', 'mlp_dlogits');
  const loss = gpu.empty([G, R], 'f32', 'mlp_loss');
  const { wg, perRow } = grid(G * R);
  klKernel.run(gpu, {}, { student, teacher, dlogits: dLogits, loss }, wg, { rows: G * R, perRow, cols: C, lo, hi, scale });
  return { dLogits, loss };
}

// ------------------------------------------------------------------------------------------------
// accuracy
// ------------------------------------------------------------------------------------------------

const accuracyKernel = defineKernel({
  name: 'mlp_accuracy_counts',
  bindings: [['logits', 'f32', 'read'], ['labels', 'u32', 'read'], ['counts', 'u32', 'read_write']],
  uniforms: { rows: 'u32', cols: 'u32', classes: 'u32' },
  body: () => /* wgsl */ `
var<workgroup> hits: atomic<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let m = wid.x;
  if (lid == 0u) { atomicStore(&hits, 0u); }
  workgroupBarrier();
  var c = 0u;
  for (var r = lid; r < u.rows; r += ${WG}u) {
    let base = (m * u.rows + r) * u.cols;
    // First maximal index, as torch.argmax.
    var best = 0u;
    var bv = logits[base];
    for (var j = 1u; j < u.classes; j++) { let v = logits[base + j]; if (v > bv) { bv = v; best = j; } }
    if (best == labels[r]) { c += 1u; }
  }
  atomicAdd(&hits, c);
  workgroupBarrier();
  if (lid == 0u) { counts[m] = counts[m] + atomicLoad(&hits); }
}`,
});

/**
 * counts[m] += #{r : argmax(logits[m, r, :classes]) == labels[r]} — labels are shared by all models
 * (the test set). counts: u32 [G], accumulated so a test set can be evaluated in row chunks.
 */
export function accuracyCounts(gpu: Gpu, logits: Tensor, labels: Tensor, classes: number, counts: Tensor): Tensor {
  const k = 'accuracyCounts';
  const [G, R, C] = expect3(k, 'logits', logits, 'f32');
  if (labels.dtype !== 'u32' || labels.size !== R) throw new GpuError(`${k}: labels ${labels.dtype} ${shp(labels)} must be u32 [${R}]`);
  if (counts.dtype !== 'u32' || counts.size !== G) throw new GpuError(`${k}: counts ${counts.dtype} ${shp(counts)} must be u32 [${G}]`);
  if (!(classes >= 1 && classes <= C)) throw new GpuError(`${k}: classes ${classes} out of range for ${C} logits`);
  if (G > MAX_WG) throw new GpuError(`${k}: ${G} models exceed ${MAX_WG} workgroups`);
  accuracyKernel.run(gpu, {}, { logits, labels, counts }, G, { rows: R, cols: C, classes });
  return counts;
}

// ------------------------------------------------------------------------------------------------
// narrow layers (the 13-logit output layer, padded to 16 columns)
// ------------------------------------------------------------------------------------------------
// matmul's software-adapter layout spreads a workgroup's lanes over output columns, so with only 16
// columns most lanes idle: the output layer took as long as the 256×256 one on lavapipe. These two
// kernels give each lane a whole row (forward) or a whole input unit (weight gradient) with all
// ≤ 16 outputs in registers; the weight / gradient row every lane needs at a given k is the same
// address across the workgroup (one model per workgroup row), which llvmpipe turns into one load.

/** Whether narrowLinear / narrowLinearGradW handle this layer (else use matmul). */
export function supportsNarrow(K: number, N: number): boolean {
  return K % 4 === 0 && N % 4 === 0 && N >= 4 && N <= 16;
}

/**
 * The opening of the narrow-output kernels: lane `index` (< u.<bound>) of model g = wid.y, with an
 * accumulator of N4 = n4 output vectors.
 */
function narrowMain(n4: number, index: string, bound: string): string {
  return /* wgsl */ `const N4 = ${n4}u;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let ${index} = gid.x;
  let g = wid.y;
  if (${index} >= u.${bound}) { return; }
  var acc: array<vec4<f32>, ${n4}>;`;
}

const narrowForwardKernel = defineKernel({
  name: 'mlp_narrow_linear',
  bindings: [['h', 'vec4<f32>', 'read'], ['w', 'vec4<f32>', 'read'], ['bias', 'vec4<f32>', 'read'], ['y', 'vec4<f32>', 'read_write']],
  uniforms: { rows: 'u32', k4: 'u32', hBatch: 'u32' },
  key: ({ n4 }: { n4: number }) => `n${n4 * 4}`,
  space: () => product({ n4: [1, 2, 3, 4] }),
  body: ({ n4 }) => /* wgsl */ `
${narrowMain(n4, 'r', 'rows')}
  for (var q = 0u; q < N4; q++) { acc[q] = bias[g * N4 + q]; }
  let hRow = ((g % u.hBatch) * u.rows + r) * u.k4;
  let wBase = g * u.k4 * 4u * N4;
  for (var k4 = 0u; k4 < u.k4; k4++) {
    let hv = h[hRow + k4];
    for (var j = 0u; j < 4u; j++) {
      let wr = wBase + (k4 * 4u + j) * N4;
      for (var q = 0u; q < N4; q++) { acc[q] += hv[j] * w[wr + q]; }
    }
  }
  let o = (g * u.rows + r) * N4;
  for (var q = 0u; q < N4; q++) { y[o + q] = acc[q]; }
}`,
});

/** y[g] = h[g]·W[g] + b[g] for W [G, K, N] with N ≤ 16 (h [G or 1, R, K], bias [G, N]) → [G, R, N]. */
export function narrowLinear(gpu: Gpu, h: Tensor, w: Tensor, bias: Tensor): Tensor {
  const k = 'narrowLinear';
  const [hb, R, K] = expect3(k, 'h', h, 'f32');
  const [G, Kw, N] = expect3(k, 'w', w, 'f32');
  if (Kw !== K || (hb !== G && hb !== 1)) throw new GpuError(`${k}: h ${shp(h)} does not fit w ${shp(w)}`);
  if (!supportsNarrow(K, N)) throw new GpuError(`${k}: needs K % 4 == 0 and N in {4, 8, 12, 16}, got K=${K}, N=${N}`);
  if (bias.dtype !== 'f32' || bias.size !== G * N) throw new GpuError(`${k}: bias ${shp(bias)} must be [${G}, ${N}]`);
  if (G > MAX_WG || cdiv(R, WG) > MAX_WG) throw new GpuError(`${k}: grid too large (${G} models, ${R} rows)`);
  const y = gpu.empty([G, R, N], 'f32', 'mlp_narrow_out');
  narrowForwardKernel.run(gpu, { n4: N / 4 }, { h, w, bias, y }, [cdiv(R, WG), G], { rows: R, k4: K / 4, hBatch: hb });
  return y;
}

const narrowGradKernel = defineKernel({
  name: 'mlp_narrow_linear_grad_w',
  bindings: [['h', 'f32', 'read'], ['dz', 'vec4<f32>', 'read'], ['dw', 'vec4<f32>', 'read_write']],
  uniforms: { rows: 'u32', K: 'u32' },
  key: ({ n4 }: { n4: number }) => `n${n4 * 4}`,
  space: () => product({ n4: [1, 2, 3, 4] }),
  body: ({ n4 }) => /* wgsl */ `
${narrowMain(n4, 'kk', 'K')}
  for (var r = 0u; r < u.rows; r++) {
    let hv = h[(g * u.rows + r) * u.K + kk];
    let d = (g * u.rows + r) * N4;
    for (var q = 0u; q < N4; q++) { acc[q] += hv * dz[d + q]; }
  }
  let o = (g * u.K + kk) * N4;
  for (var q = 0u; q < N4; q++) { dw[o + q] = acc[q]; }
}`,
});

/** out[g] = h[g]ᵀ·dz[g] for h [G, R, K], dz [G, R, N ≤ 16] → out [G, K, N] (overwritten). */
export function narrowLinearGradW(gpu: Gpu, h: Tensor, dz: Tensor, out: Tensor): Tensor {
  const k = 'narrowLinearGradW';
  const [G, R, K] = expect3(k, 'h', h, 'f32');
  const [Gd, Rd, N] = expect3(k, 'dz', dz, 'f32');
  if (Gd !== G || Rd !== R) throw new GpuError(`${k}: dz ${shp(dz)} does not fit h ${shp(h)}`);
  if (!supportsNarrow(K, N)) throw new GpuError(`${k}: needs K % 4 == 0 and N in {4, 8, 12, 16}, got K=${K}, N=${N}`);
  if (out.dtype !== 'f32' || out.size !== G * K * N) throw new GpuError(`${k}: out ${shp(out)} must be [${G}, ${K}, ${N}]`);
  if (G > MAX_WG) throw new GpuError(`${k}: ${G} models exceed ${MAX_WG} workgroups`);
  narrowGradKernel.run(gpu, { n4: N / 4 }, { h, dz, dw: out }, [cdiv(K, WG), G], { rows: R, K });
  return out;
}

// ------------------------------------------------------------------------------------------------
// float64 / integer references
// ------------------------------------------------------------------------------------------------

/** Noise pixel p of image `image` of model `model` under `seed` (exactly the GPU value). */
export function noisePixelRef(seed: number, model: number, image: number, p: number): number {
  const hi = pcgHash((pcgHash((noiseSeedHash(seed) + model) >>> 0) + image) >>> 0);
  const h = pcgHash((hi + p) >>> 0);
  return (h >>> 8) * (2 / 16777216) - 1;
}

/** Row-wise CE over the first `classes` of `cols` logits; returns per-row loss and scaled gradient. */
export function softmaxCrossEntropyRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  rows: number,
  cols: number,
  classes: number,
  scale: number,
): { loss: Float64Array; dLogits: Float64Array } {
  const loss = new Float64Array(rows);
  const d = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const b = r * cols;
    let mx = -Infinity;
    for (let j = 0; j < classes; j++) mx = Math.max(mx, logits[b + j]);
    let s = 0;
    for (let j = 0; j < classes; j++) s += Math.exp(logits[b + j] - mx);
    const lse = mx + Math.log(s);
    loss[r] = lse - logits[b + labels[r]];
    for (let j = 0; j < classes; j++) d[b + j] = scale * (Math.exp(logits[b + j] - lse) - (j === labels[r] ? 1 : 0));
  }
  return { loss, dLogits: d };
}

/** Row-wise KL(softmax(t[lo:hi]) ‖ softmax(s[lo:hi])) and scale·(q − p). */
export function klDistillRef(
  student: ArrayLike<number>,
  teacher: ArrayLike<number>,
  rows: number,
  cols: number,
  lo: number,
  hi: number,
  scale: number,
): { loss: Float64Array; dLogits: Float64Array } {
  const loss = new Float64Array(rows);
  const d = new Float64Array(rows * cols);
  const lse = (x: ArrayLike<number>, b: number): number => {
    let mx = -Infinity;
    for (let j = lo; j < hi; j++) mx = Math.max(mx, x[b + j]);
    let s = 0;
    for (let j = lo; j < hi; j++) s += Math.exp(x[b + j] - mx);
    return mx + Math.log(s);
  };
  for (let r = 0; r < rows; r++) {
    const b = r * cols;
    const ls = lse(student, b);
    const lt = lse(teacher, b);
    let l = 0;
    for (let j = lo; j < hi; j++) {
      const logp = teacher[b + j] - lt;
      const logq = student[b + j] - ls;
      const p = Math.exp(logp);
      l += p * (logp - logq);
      d[b + j] = scale * (Math.exp(logq) - p);
    }
    loss[r] = l;
  }
  return { loss, dLogits: d };
}

/** Per-model accuracy counts (first maximal index over the first `classes` logits). */
export function accuracyCountsRef(logits: ArrayLike<number>, labels: ArrayLike<number>, models: number, rows: number, cols: number, classes: number): number[] {
  const out: number[] = [];
  for (let m = 0; m < models; m++) {
    let c = 0;
    for (let r = 0; r < rows; r++) {
      const b = (m * rows + r) * cols;
      let best = 0;
      for (let j = 1; j < classes; j++) if (logits[b + j] > logits[b + best]) best = j;
      if (best === labels[r]) c++;
    }
    out.push(c);
  }
  return out;
}
