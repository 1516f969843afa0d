/**
 * NumPy .npy reader/writer (format v1.0 written; v1/v2/v3 read). C order only.
 *
 * The writer reproduces numpy's `np.save` header byte-for-byte: the dict literal with sorted keys,
 * the spare "growth" spaces numpy (>= 1.23) reserves after the dict, space padding and a final
 * '\n' so that magic + version + length + header is a multiple of 64 bytes.
 */
import { promises as fsp } from 'node:fs';
import { UserError } from './errors.ts';
import { writeFileAtomic } from './fsatomic.ts';

export type NpyDtype = 'float32' | 'float64' | 'int32' | 'int64';
export type NpyData = Float32Array | Float64Array | Int32Array | BigInt64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const ARRAY_ALIGN = 64;
const GROWTH_AXIS_MAX_DIGITS = 21;

const DESCR: Record<NpyDtype, string> = {
  float32: '<f4',
  float64: '<f8',
  int32: '<i4',
  int64: '<i8',
};
const ITEMSIZE: Record<NpyDtype, number> = { float32: 4, float64: 8, int32: 4, int64: 8 };

function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  throw new TypeError('npy: unsupported typed array');
}

function shapeRepr(shape: number[]): string {
  if (shape.length === 0) return '()';
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(', ')})`;
}

/** The exact header numpy writes (v1.0), including magic/version/length. */
export function npyHeader(dtype: NpyDtype, shape: number[]): Uint8Array {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new TypeError(`npy: bad dimension ${d}`);
  }
  let dict = `{'descr': '${DESCR[dtype]}', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  if (shape.length > 0) dict += ' '.repeat(Math.max(0, GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length));
  // total = 6 magic + 2 version + 2 length + dict + padding + '\n'
  const pre = 10;
  // numpy: padlen is in 1..64 (a full 64 spaces when already aligned), then '\n'
  const padlen = ARRAY_ALIGN - ((pre + dict.length + 1) % ARRAY_ALIGN);
  const header = dict + ' '.repeat(padlen) + '\n';
  if (header.length > 0xffff) throw new TypeError('npy: header too long for format v1.0');
  const out = new Uint8Array(pre + header.length);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  out[8] = header.length & 0xff;
  out[9] = header.length >> 8;
  for (let i = 0; i < header.length; i++) out[pre + i] = header.charCodeAt(i);
  return out;
}

/** Encode an array as .npy bytes. Data is written little-endian. */
export function encodeNpy(arr: { shape: number[]; data: NpyData; dtype?: NpyDtype }): Uint8Array {
  const dtype = dtypeOf(arr.data);
  if (arr.dtype !== undefined && arr.dtype !== dtype) {
    throw new TypeError(`npy: dtype ${arr.dtype} does not match data (${dtype})`);
  }
  const n = arr.shape.reduce((a, b) => a * b, 1);
  if (n !== arr.data.length) {
    throw new TypeError(`npy: shape [${arr.shape}] has ${n} elements but data has ${arr.data.length}`);
  }
  const header = npyHeader(dtype, arr.shape);
  const out = new Uint8Array(header.length + n * ITEMSIZE[dtype]);
  out.set(header, 0);
  const dv = new DataView(out.buffer, header.length);
  const d = arr.data;
  switch (dtype) {
    case 'float32':
      for (let i = 0; i < n; i++) dv.setFloat32(i * 4, (d as Float32Array)[i], true);
      break;
    case 'float64':
      for (let i = 0; i < n; i++) dv.setFloat64(i * 8, (d as Float64Array)[i], true);
      break;
    case 'int32':
      for (let i = 0; i < n; i++) dv.setInt32(i * 4, (d as Int32Array)[i], true);
      break;
    case 'int64':
      for (let i = 0; i < n; i++) dv.setBigInt64(i * 8, (d as BigInt64Array)[i], true);
      break;
  }
  return out;
}

interface ParsedHeader {
  descr: string;
  fortranOrder: boolean;
  shape: number[];
}

function parseHeaderDict(text: string, source: string): ParsedHeader {
  const bad = (why: string): never => {
    throw new UserError(`${source}: malformed .npy header (${why}): ${JSON.stringify(text.trim())}`);
  };
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text);
  const fo = /'fortran_order'\s*:\s*(True|False)/.exec(text);
  const sh = /'shape'\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr) bad("no 'descr'");
  if (!fo) bad("no 'fortran_order'");
  if (!sh) bad("no 'shape'");
  const shape: number[] = [];
  for (const part of sh![1].split(',')) {
    const p = part.trim().replace(/L$/, '');
    if (p === '') continue;
    if (!/^\d+$/.test(p)) bad(`bad dimension '${p}'`);
    shape.push(Number(p));
  }
  return { descr: descr![1], fortranOrder: fo![1] === 'True', shape };
}

/** Decode .npy bytes. Accepts little- or big-endian f4/f8/i4/i8; C order only. */
export function decodeNpy(bytes: Uint8Array, source = '<buffer>'): NpyArray {
  if (bytes.length < 10 || MAGIC.some((m, i) => bytes[i] !== m)) {
    throw new UserError(`${source}: not a .npy file (bad magic)`);
  }
  const major = bytes[6];
  const dvh = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let hlen: number;
  let pre: number;
  if (major === 1) {
    hlen = dvh.getUint16(8, true);
    pre = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new UserError(`${source}: truncated .npy header`);
    hlen = dvh.getUint32(8, true);
    pre = 12;
  } else {
    throw new UserError(`${source}: unsupported .npy format version ${major}.${bytes[7]}`);
  }
  if (pre + hlen > bytes.length) throw new UserError(`${source}: truncated .npy header`);
  const text = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(pre, pre + hlen));
  const h = parseHeaderDict(text, source);
  if (h.fortranOrder) throw new UserError(`${source}: Fortran-order arrays are not supported`);
  const m = /^([<>|=])([fi])(\d)$/.exec(h.descr);
  const kinds: Record<string, NpyDtype> = { f4: 'float32', f8: 'float64', i4: 'int32', i8: 'int64' };
  const dtype = m ? kinds[m[2] + m[3]] : undefined;
  if (!m || !dtype) throw new UserError(`${source}: unsupported .npy dtype '${h.descr}'`);
  const little = m[1] !== '>';
  const n = h.shape.reduce((a, b) => a * b, 1);
  const size = ITEMSIZE[dtype];
  const start = pre + hlen;
  if (bytes.length - start !== n * size) {
    throw new UserError(
      `${source}: .npy data is ${bytes.length - start} bytes but shape [${h.shape}] of ${h.descr} needs ${n * size}`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset + start, n * size);
  let data: NpyData;
  switch (dtype) {
    case 'float32': {
      const a = new Float32Array(n);
      for (let i = 0; i < n; i++) a[i] = dv.getFloat32(i * 4, little);
      data = a;
      break;
    }
    case 'float64': {
      const a = new Float64Array(n);
      for (let i = 0; i < n; i++) a[i] = dv.getFloat64(i * 8, little);
      data = a;
      break;
    }
    case 'int32': {
      const a = new Int32Array(n);
      for (let i = 0; i < n; i++) a[i] = dv.getInt32(i * 4, little);
      data = a;
      break;
    }
    case 'int64': {
      const a = new BigInt64Array(n);
      for (let i = 0; i < n; i++) a[i] = dv.getBigInt64(i * 8, little);
      data = a;
      break;
    }
  }
  return { dtype, shape: h.shape, data };
}

export async function writeNpy(
  filePath: string,
  arr: { shape: number[]; data: NpyData; dtype?: NpyDtype },
): Promise<void> {
  await writeFileAtomic(filePath, encodeNpy(arr));
}

export async function readNpy(filePath: string): Promise<NpyArray> {
  let bytes: Uint8Array;
  try {
    bytes = await fsp.readFile(filePath);
  } catch (e) {
    throw new UserError(`${filePath}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return decodeNpy(bytes, filePath);
}
