import { existsSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { softmaxCrossEntropyRef } from '../src/experiment/mnist/kernels.ts';
import {
  armStats,
  BatchedMlp,
  crossInitIndices,
  defaultConfig,
  mlpBackwardRef,
  mlpDims,
  mlpForwardRef,
  paramShapes,
  referenceInit,
  renderChartSvg,
  renderReportMarkdown,
  runMnistExperiment,
  type MlpDims,
} from '../src/experiment/mnist/experiment.ts';
import { DEFAULT_FASHION_DIR, loadFashionMnist, loadMnistDigits, parseIdx, type ImageDataset } from '../src/experiment/mnist/data.ts';
import { parseMnistArgs } from '../src/experiment/mnist/options.ts';
import { uniformArray } from './helpers/random.ts';

function randArray(n: number, seed: number, scale = 1): Float64Array {
  return Float64Array.from(uniformArray(n, seed, scale));
}

/** Random parameters for G models (padded output columns zero, as the real init). */
function randomParams(G: number, d: MlpDims, seed: number): Float64Array[] {
  return paramShapes(d).map((shape, k) => {
    const per = shape.reduce((a, b) => a * b, 1);
    const out = randArray(G * per, seed * 10 + k, shape.length === 2 ? 1 / Math.sqrt(shape[0]) : 0.1);
    const cols = shape[shape.length - 1];
    if (cols === d.outPad) for (let i = 0; i < out.length; i++) if (i % cols >= d.outputs) out[i] = 0;
    return out;
  });
}

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])));
  return d;
}

describe('batched MLP: float64 reference gradcheck', () => {
  it('backward of CE(logits[..., :10]) matches central differences for every tensor', () => {
    const G = 2;
    const rows = 3;
    const d = mlpDims(3, 5, 6); // hidden 5, input 6, 13 outputs padded to 16
    const params = randomParams(G, d, 1);
    const x = randArray(G * rows * d.input, 7);
    const labels = [0, 3, 9, 2, 7, 5];
    const scale = 1 / (G * rows);
    const lossOf = (p: Float64Array[]) => {
      const { logits } = mlpForwardRef(p, x, G, rows, d);
      return softmaxCrossEntropyRef(logits, labels, G * rows, d.outPad, 10, scale).loss.reduce((a, b) => a + b, 0) * scale;
    };
    const acts = mlpForwardRef(params, x, G, rows, d);
    const dLogits = softmaxCrossEntropyRef(acts.logits, labels, G * rows, d.outPad, 10, scale).dLogits;
    const grads = mlpBackwardRef(params, x, acts, dLogits, G, rows, d);
    // Central differences, h = 1e-6 (error O(h²) + O(eps64·|f|/h) ≈ 1e-10), compared relative to the
    // tensor's largest gradient entry: ~1e-6 is the bar.
    params.forEach((p, k) => {
      let gmax = 0;
      for (const v of grads[k]) gmax = Math.max(gmax, Math.abs(v));
      expect(gmax).toBeGreaterThan(0);
      for (let i = 0; i < p.length; i++) {
        const keep = p[i];
        p[i] = keep + 1e-6;
        const fp = lossOf(params);
        p[i] = keep - 1e-6;
        const fm = lossOf(params);
        p[i] = keep;
        expect(Math.abs((fp - fm) / 2e-6 - grads[k][i]) / gmax).toBeLessThan(1e-6);
      }
    });
    // Padded output columns get zero gradient, so Adam leaves them at zero.
    for (let i = 0; i < grads[4].length; i++) if (i % d.outPad >= d.outputs) expect(grads[4][i]).toBe(0);
  });
});

describe('batched MLP on the GPU vs float64 reference', () => {
  const cases: { name: string; G: number; rows: number; d: MlpDims; sharedX?: boolean }[] = [
    { name: 'awkward: 3 models, 7 rows, hidden 20', G: 3, rows: 7, d: mlpDims(3, 20) },
    { name: 'paper dims: 2 models, 5 rows, hidden 256', G: 2, rows: 5, d: mlpDims(3, 256) },
    { name: 'one row, K=1 aux', G: 2, rows: 1, d: mlpDims(1, 12) },
    { name: 'shared input (batch-1 images, eval path)', G: 3, rows: 4, d: mlpDims(3, 8), sharedX: true },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const gpu = await getGpu();
      const { G, rows, d } = c;
      const params = randomParams(G, d, 3);
      const x = randArray((c.sharedX ? 1 : G) * rows * d.input, 11);
      const dLogits = randArray(G * rows * d.outPad, 12);
      for (let i = 0; i < dLogits.length; i++) if (i % d.outPad >= d.outputs) dLogits[i] = 0;

      const model = new BatchedMlp(gpu, G, d);
      const per = paramShapes(d).map((s) => s.reduce((a, b) => a * b, 1));
      for (let m = 0; m < G; m++) model.setModel(m, params.map((p, k) => Float32Array.from(p.subarray(m * per[k], (m + 1) * per[k]))));
      const xT = gpu.upload(Float32Array.from(x), [c.sharedX ? 1 : G, rows, d.input]);
      const acts = model.forward(xT);
      const out: Float32Array[] = [];
      if (!c.sharedX) {
        model.backward(xT, acts, gpu.upload(Float32Array.from(dLogits), [G, rows, d.outPad]));
        out.push(...((await gpu.readMany(model.grads.views)) as Float32Array[]));
      }
      const [h1, h2, logits] = (await gpu.readMany([acts.h1, acts.h2, acts.logits])) as Float32Array[];

      // Reference from the same float32-rounded parameters.
      const p32 = params.map((p) => Float64Array.from(Float32Array.from(p)));
      const ref = mlpForwardRef(p32, x, G, rows, d);
      // f32 dot products over K ≤ 784 terms of magnitude ≲ 1/28 each: error ≲ K·eps32·Σ|terms| ≈ 1e-5;
      // 1e-4 relative to (1 + |value|) leaves margin.
      expect(maxRel(h1, ref.h1)).toBeLessThan(1e-4);
      expect(maxRel(h2, ref.h2)).toBeLessThan(1e-4);
      expect(maxRel(logits, ref.logits)).toBeLessThan(1e-4);
      if (!c.sharedX) {
        const grads = mlpBackwardRef(p32, x, ref, dLogits, G, rows, d);
        // Gradients: sums over ≤ 7 rows of products of the (already ≤1e-4-accurate) activations.
        grads.forEach((g, k) => expect(maxRel(out[k], g)).toBeLessThan(2e-4));
      }
      model.dispose();
    });
  }
});

describe('seeded pieces', () => {
  it('cross-init indices form a derangement (no model keeps its own init); N=1 uses an extra init', () => {
    for (const n of [2, 3, 10, 100]) {
      const p = crossInitIndices(0, n);
      expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(p.every((v, i) => v !== i)).toBe(true);
    }
    expect(crossInitIndices(0, 1)).toEqual([1]);
    expect(crossInitIndices(5, 10)).toEqual(crossInitIndices(5, 10));
  });

  it('reference init: std 1/√fan_in, zero biases and padded columns, independent of grouping', () => {
    const d = mlpDims(3);
    const init = referenceInit(0, 4, d);
    expect(init.map((t) => t.length)).toEqual(paramShapes(d).map((s) => s.reduce((a, b) => a * b, 1)));
    const w1 = init[0];
    const variance = w1.reduce((a, v) => a + v * v, 0) / w1.length;
    // 200,704 draws: the variance estimate is within a few % of 1/784.
    expect(Math.abs(variance * 784 - 1)).toBeLessThan(0.02);
    expect(init[1].every((v) => v === 0)).toBe(true);
    for (let i = 0; i < init[4].length; i++) if (i % d.outPad >= d.outputs) expect(init[4][i]).toBe(0);
    expect(referenceInit(0, 4, d)[2]).toEqual(init[2]);
    expect(referenceInit(0, 5, d)[2][0]).not.toBe(init[2][0]);
  });

  it('armStats: mean and 1.96·std(ddof 0)/√n as the paper', () => {
    const s = armStats([0.1, 0.3, 0.5, 0.7]);
    expect(s.mean).toBeCloseTo(0.4, 12);
    expect(s.ci95).toBeCloseTo((1.96 * Math.sqrt(0.05)) / 2, 12);
    expect(armStats([0.5]).ci95).toBeNull();
  });
});

describe('data', () => {
  it('npm digits: fixed stratified 8,004 / 1,996 split, bytes and labels', () => {
    const ds = loadMnistDigits();
    expect(ds.train.count).toBe(8004);
    expect(ds.test.count).toBe(1996);
    expect(ds.train.images.length).toBe(8004 * 784);
    for (let c = 0; c < 10; c++) expect(ds.test.labels.filter((l) => l === c).length).toBeGreaterThan(150);
    expect(Math.max(...ds.test.images.subarray(0, 784 * 10))).toBe(255);
  });

  it('parses gzip IDX files', () => {
    const header = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    const body = Array.from({ length: 2 * 784 }, (_, i) => i % 256);
    const { dims, data } = parseIdx(gzipSync(Uint8Array.from([...header, ...body])));
    expect(dims).toEqual([2, 28, 28]);
    expect(data[785]).toBe(785 % 256);
    expect(() => parseIdx(Uint8Array.from([1, 2, 3, 4]))).toThrow(/magic/);
  });

  it.skipIf(!existsSync(DEFAULT_FASHION_DIR))('Fashion-MNIST from the Debian package: 60k / 10k', () => {
    const ds = loadFashionMnist();
    expect(ds.train.count).toBe(60000);
    expect(ds.test.count).toBe(10000);
  });
});

describe('CLI arguments', () => {
  it('parses the flags and rejects bad values', () => {
    const o = parseMnistArgs(['--models', '4', '--noise', '8000', '--dataset', 'fashion', '--lr', '1e-3', '--seed', '2', '--aux', '5']);
    expect(o?.config).toMatchObject({ models: 4, noise: 8000, lr: 1e-3, seed: 2, aux: 5 });
    expect(o?.dataset).toBe('fashion');
    expect(parseMnistArgs(['--help'])).toBeNull();
    expect(() => parseMnistArgs(['--models', '0'])).toThrow(/--models/);
    expect(() => parseMnistArgs(['--dataset', 'cifar'])).toThrow(/--dataset must be one of mnist, fashion; got 'cifar'/);
    expect(() => parseMnistArgs(['--bogus'])).toThrow(/unknown option '--bogus'/);
    // Nonsense that would run for minutes is refused up front, saying what is allowed.
    expect(() => parseMnistArgs(['--epochs-teacher', '0'])).toThrow(/^--epochs-teacher must be an integer ≥ 1, got '0'$/);
    expect(() => parseMnistArgs(['--epochs-student', '0'])).toThrow(/^--epochs-student must be an integer ≥ 1, got '0'$/);
    expect(() => parseMnistArgs(['--batch-size', '-5'])).toThrow(/^--batch-size must be an integer ≥ 1, got '-5'$/);
    expect(() => parseMnistArgs(['--lr', '0x10'])).toThrow(/^--lr must be a number > 0, got '0x10'$/);
    expect(() => parseMnistArgs(['--models'])).toThrow(/^--models needs a value/);
    expect(() => parseMnistArgs(['--name', 'a', '--out', 'b'])).toThrow(/--name or --out, not both/);
  });
});

describe('short experiment run', () => {
  it('the teacher learns well above chance; reports render', async () => {
    const gpu = await getGpu();
    const full = loadMnistDigits();
    // Every 8th training image (classes stay balanced) keeps this test to a few seconds on lavapipe.
    const pick = (s: ImageDataset['train'], every: number) => {
      const idx = Array.from({ length: Math.floor(s.count / every) }, (_, i) => i * every);
      const images = new Uint8Array(idx.length * 784);
      idx.forEach((j, i) => images.set(s.images.subarray(j * 784, (j + 1) * 784), i * 784));
      return { images, labels: Uint8Array.from(idx, (j) => s.labels[j]), count: idx.length };
    };
    const data: ImageDataset = { ...full, train: pick(full.train, 8), test: pick(full.test, 4) };
    const cfg = { ...defaultConfig(true), models: 2, epochsTeacher: 3, epochsStudent: 1, noise: 200, batchSize: 100, lr: 1e-3, seed: 3 };
    const events: number[] = [];
    const r = await runMnistExperiment(gpu, data, cfg, { onProgress: (e) => events.push(e.done / e.total) });
    expect(r.accuracy.teacher.length).toBe(2);
    for (const a of r.accuracy.teacher) expect(a).toBeGreaterThan(0.6);
    for (const a of r.accuracy.reference) expect(a).toBeLessThan(0.35);
    expect(r.crossInit).toEqual([1, 0]);
    expect(r.fixedPoints).toEqual([]);
    expect(r.steps).toEqual({ teacher: 3 * Math.ceil(1000 / 100), student: 2 });
    expect(events.at(-1)).toBeCloseTo(1, 6);
    // Teacher CE falls over the epochs.
    const ce = r.losses.filter((l) => l.phase === 'teacher').map((l) => l.values.ce);
    expect(ce.at(-1)!).toBeLessThan(ce[0]);
    const md = renderReportMarkdown(r);
    expect(md).toContain('| Student (aux. only) |');
    expect(md).toContain('Deviations from the paper');
    const svg = renderChartSvg(r);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('stroke-dasharray');
  });
});
