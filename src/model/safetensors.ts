/**
 * safetensors reader/writer (single file and sharded via model.safetensors.index.json).
 *
 * Format: u64 little-endian header length N, then N bytes of UTF-8 JSON
 *   { "__metadata__"?: {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ... }
 * then the data area; offsets are relative to the start of the data area (byte 8 + N).
 *
 * The reader validates the whole header before any tensor is used and throws UserError naming the
 * file and the problem. Tensors are read one at a time through a file handle, so peak host memory
 * is about one tensor (raw bytes + converted Float32Array), never the whole file.
 */
import * as path from 'node:path';
import { UserError } from '../util/errors.ts';
import { fsys, type RandomAccessFile } from '../util/files.ts';

/** Every dtype name the safetensors spec defines (so we can size-check tensors we can't convert). */
const DTYPE_SIZES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

/** dtypes this module can decode. */
export const SUPPORTED_DTYPES = ['F32', 'F16', 'BF16', 'F64', 'I32', 'I64'] as const;
export type SupportedDtype = (typeof SUPPORTED_DTYPES)[number];
export type FloatDtype = 'F32' | 'F16' | 'BF16';

export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
export const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function dtypeSize(dtype: string): number {
  const s = DTYPE_SIZES[dtype];
  if (s === undefined) throw new UserError(`unknown safetensors dtype '${dtype}'`);
  return s;
}

export interface TensorInfo {
  name: string;
  /** dtype string as in the file (validated to be a known safetensors dtype) */
  dtype: string;
  shape: number[];
  /** offsets relative to the start of the data area */
  begin: number;
  end: number;
  /** file the tensor lives in */
  file: string;
}

export interface ParsedHeader {
  metadata: Record<string, string> | null;
  tensors: Map<string, TensorInfo>;
  /** absolute byte offset of the data area (8 + header length) */
  dataStart: number;
}

export interface LoadedTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Float32Array;
}

export type TypedTensorData = Float32Array | Float64Array | Int32Array | BigInt64Array;

// ------------------------------------------------------------------------------------------------
// float conversions
// ------------------------------------------------------------------------------------------------

const cvtF32 = new Float32Array(1);
const cvtU32 = new Uint32Array(cvtF32.buffer);

/** float32 → IEEE binary16 bits, round-to-nearest-even; subnormals, ±inf, NaN handled. */
export function f32ToF16Bits(x: number): number {
  cvtF32[0] = x;
  const b = cvtU32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) {
    // inf or NaN (keep NaN quiet and non-zero mantissa)
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    // result is subnormal or zero; value = m * 2^(e-25) with m the 24-bit significand
    if (e < -10) return sign; // below half the smallest subnormal → ±0
    const m = mant | 0x800000;
    const shift = 14 - e; // 14..24
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half; // a carry into bit 10 correctly produces the smallest normal
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++; // carry may give inf: correct
  return sign | half;
}

/** IEEE binary16 bits → number (exact). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** float32 → bfloat16 bits, round-to-nearest-even (as torch's .to(torch.bfloat16)); NaN stays NaN. */
export function f32ToBf16Bits(x: number): number {
  cvtF32[0] = x;
  const b = cvtU32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  cvtU32[0] = (h & 0xffff) << 16;
  return cvtF32[0];
}

let f16Table: Float32Array | null = null;
function getF16Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16BitsToF32(i);
  }
  return f16Table;
}

/** Decode little-endian raw bytes of a float dtype into a new Float32Array. */
export function decodeFloats(dtype: string, raw: Uint8Array): Float32Array {
  const size = dtypeSize(dtype);
  const n = Math.floor(raw.byteLength / size);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(n);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN_HOST && raw.byteOffset % 4 === 0) out.set(new Float32Array(raw.buffer, raw.byteOffset, n));
      else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    case 'F16': {
      const t = getF16Table();
      for (let i = 0; i < n; i++) out[i] = t[dv.getUint16(i * 2, true)];
      return out;
    }
    case 'BF16': {
      const o32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o32[i] = dv.getUint16(i * 2, true) << 16;
      return out;
    }
    default:
      throw new UserError(`cannot convert safetensors dtype ${dtype} to float32`);
  }
}

/** Encode floats as little-endian raw bytes of the given float dtype (rounding RNE). */
export function encodeFloats(dtype: FloatDtype | 'F64', data: ArrayLike<number>): Uint8Array {
  const n = data.length;
  const out = new Uint8Array(n * dtypeSize(dtype));
  const dv = new DataView(out.buffer);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) dv.setFloat32(i * 4, data[i], true);
      break;
    case 'F64':
      for (let i = 0; i < n; i++) dv.setFloat64(i * 8, data[i], true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) dv.setUint16(i * 2, f32ToF16Bits(data[i]), true);
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) dv.setUint16(i * 2, f32ToBf16Bits(data[i]), true);
      break;
  }
  return out;
}

/** Round values through a float dtype (what a write + read would give back). */
export function roundThrough(dtype: FloatDtype, data: ArrayLike<number>): Float32Array {
  return decodeFloats(dtype, encodeFloats(dtype, data));
}

// ------------------------------------------------------------------------------------------------
// header parsing / validation
// ------------------------------------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parse and validate a safetensors header. `headerBytes` is the JSON (N bytes), `fileSize` the
 * total file size. Throws UserError("<source>: <problem>") on any inconsistency.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, fileSize: number, source: string): ParsedHeader {
  const fail = (msg: string): never => {
    throw new UserError(`${source}: ${msg}`);
  };
  const dataStart = 8 + headerBytes.byteLength;
  const dataLen = fileSize - dataStart;
  if (dataLen < 0) fail(`header length ${headerBytes.byteLength} extends beyond the end of the file (${fileSize} bytes)`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) fail('header is not a JSON object (does not start with "{")');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) return fail('header is not a JSON object');

  let metadata: Record<string, string> | null = null;
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (entry === null) continue;
      if (!isPlainObject(entry)) fail('__metadata__ must be an object of string values');
      metadata = {};
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (!isPlainObject(entry)) fail(`tensor '${name}': entry is not an object`);
    const e = entry as Record<string, unknown>;
    const dtype = e.dtype;
    if (typeof dtype !== 'string') return fail(`tensor '${name}': missing or non-string dtype`);
    if (!(dtype in DTYPE_SIZES)) fail(`tensor '${name}': unsupported dtype '${dtype}'`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      return fail(`tensor '${name}': shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isNonNegInt)) {
      return fail(`tensor '${name}': data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) fail(`tensor '${name}': data_offsets begin ${begin} > end ${end}`);
    if (end > dataLen) {
      fail(`tensor '${name}': data_offsets [${begin}, ${end}] run past the data area (${dataLen} bytes; file truncated or offsets wrong)`);
    }
    let numel = 1;
    for (const d of shape as number[]) numel *= d;
    const want = numel * DTYPE_SIZES[dtype];
    if (!Number.isSafeInteger(want)) fail(`tensor '${name}': shape ${JSON.stringify(shape)} is too large`);
    if (end - begin !== want) {
      fail(
        `tensor '${name}': ${end - begin} bytes in data_offsets but shape ${JSON.stringify(shape)} × ${dtype} (${DTYPE_SIZES[dtype]} B) needs ${want}`,
      );
    }
    tensors.set(name, { name, dtype, shape: (shape as number[]).slice(), begin, end, file: source });
  }

  // no two non-empty tensors may share bytes
  const sorted = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    const cur = sorted[i];
    if (cur.begin < prev.end) {
      fail(`tensors '${prev.name}' [${prev.begin}, ${prev.end}] and '${cur.name}' [${cur.begin}, ${cur.end}] overlap`);
    }
  }
  return { metadata, tensors, dataStart };
}

// ------------------------------------------------------------------------------------------------
// reading
// ------------------------------------------------------------------------------------------------

async function readExactly(fh: RandomAccessFile, buf: Uint8Array, position: number, source: string): Promise<void> {
  let off = 0;
  while (off < buf.byteLength) {
    const bytesRead = await fh.read(buf, off, buf.byteLength - off, position + off);
    if (bytesRead === 0) throw new UserError(`${source}: unexpected end of file at byte ${position + off}`);
    off += bytesRead;
  }
}

function ioError(file: string, e: unknown): UserError {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new UserError(`${file}: file not found`);
  if (code === 'EISDIR') return new UserError(`${file}: is a directory, expected a file`);
  return new UserError(`${file}: cannot read (${code ?? (e as Error)?.message ?? String(e)})`);
}

/** One open .safetensors file. Call close() when done. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private fh: RandomAccessFile | null,
    readonly fileSize: number,
    readonly header: ParsedHeader,
  ) {}

  static async open(file: string): Promise<SafetensorsFile> {
    let fh: RandomAccessFile;
    try {
      fh = await fsys().open(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException)?.code === 'EISDIR') throw new UserError(`${file}: is a directory, expected a .safetensors file`);
      throw ioError(file, e);
    }
    try {
      const size = fh.size;
      if (size < 8) throw new UserError(`${file}: file is only ${size} bytes; a safetensors file needs at least 8`);
      const lenBuf = new Uint8Array(8);
      await readExactly(fh, lenBuf, 0, file);
      const n = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new UserError(`${file}: header length ${n} is absurd (> ${MAX_HEADER_BYTES} bytes); not a safetensors file?`);
      }
      if (n + 8n > BigInt(size)) {
        throw new UserError(`${file}: header length ${n} extends beyond the end of the file (${size} bytes); truncated or not safetensors`);
      }
      const hb = new Uint8Array(Number(n));
      await readExactly(fh, hb, 8, file);
      const header = parseSafetensorsHeader(hb, size, file);
      return new SafetensorsFile(file, fh, size, header);
    } catch (e) {
      await fh.close().catch(() => {});
      if (e instanceof UserError) throw e;
      throw ioError(file, e);
    }
  }

  get metadata(): Record<string, string> | null {
    return this.header.metadata;
  }
  get dataStart(): number {
    return this.header.dataStart;
  }
  names(): string[] {
    return [...this.header.tensors.keys()];
  }
  has(name: string): boolean {
    return this.header.tensors.has(name);
  }
  info(name: string): TensorInfo {
    const t = this.header.tensors.get(name);
    if (!t) throw new UserError(`${this.path}: no tensor named '${name}'`);
    return t;
  }

  /** Raw little-endian bytes of one tensor (fresh, 8-byte-aligned buffer). */
  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const buf = new Uint8Array(new ArrayBuffer(t.end - t.begin));
    await readExactly(this.handle(), buf, this.header.dataStart + t.begin, this.path);
    return buf;
  }

  /** Read a float tensor (F32/F16/BF16/F64) converted to Float32Array. */
  async readTensor(name: string): Promise<LoadedTensor> {
    const t = this.info(name);
    if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) {
      throw new UserError(`${this.path}: tensor '${name}' has dtype ${t.dtype}; expected a float dtype (F32/F16/BF16)`);
    }
    if (t.dtype === 'F32' && LITTLE_ENDIAN_HOST) {
      // read straight into the result: peak memory is exactly one tensor
      const data = new Float32Array((t.end - t.begin) / 4);
      await readExactly(this.handle(), new Uint8Array(data.buffer), this.header.dataStart + t.begin, this.path);
      return { name, dtype: t.dtype, shape: t.shape.slice(), data };
    }
    const raw = await this.readRaw(name);
    return { name, dtype: t.dtype, shape: t.shape.slice(), data: decodeFloats(t.dtype, raw) };
  }

  /** Read a tensor in its natural JS typed array (F16/BF16 → Float32Array, I32, I64 → BigInt64Array). */
  async readTyped(name: string): Promise<{ name: string; dtype: string; shape: number[]; data: TypedTensorData }> {
    const t = this.info(name);
    if (t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16') return this.readTensor(name);
    const raw = await this.readRaw(name);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    let data: TypedTensorData;
    if (t.dtype === 'F64') {
      const a = new Float64Array(raw.byteLength / 8);
      for (let i = 0; i < a.length; i++) a[i] = dv.getFloat64(i * 8, true);
      data = a;
    } else if (t.dtype === 'I32') {
      const a = new Int32Array(raw.byteLength / 4);
      for (let i = 0; i < a.length; i++) a[i] = dv.getInt32(i * 4, true);
      data = a;
    } else if (t.dtype === 'I64') {
      const a = new BigInt64Array(raw.byteLength / 8);
      for (let i = 0; i < a.length; i++) a[i] = dv.getBigInt64(i * 8, true);
      data = a;
    } else {
      throw new UserError(`${this.path}: tensor '${name}' has unsupported dtype ${t.dtype} (supported: ${SUPPORTED_DTYPES.join(', ')})`);
    }
    return { name, dtype: t.dtype, shape: t.shape.slice(), data };
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close();
  }

  private handle(): RandomAccessFile {
    if (!this.fh) throw new Error(`${this.path}: file already closed`);
    return this.fh;
  }
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/**
 * A checkpoint made of one or more safetensors files. Open a directory (uses
 * model.safetensors.index.json if present, else model.safetensors), an index json, or a single file.
 */
export class SafetensorsCheckpoint {
  private constructor(
    readonly source: string,
    readonly indexPath: string | null,
    private readonly files: SafetensorsFile[],
    private readonly where: Map<string, SafetensorsFile>,
    readonly indexMetadata: Record<string, unknown> | null,
  ) {}

  static async open(p: string): Promise<SafetensorsCheckpoint> {
    const st = fsys().stat(p);
    if (!st) throw new UserError(`${p}: file not found`);
    if (st.isDirectory) {
      const idx = path.join(p, INDEX_FILE);
      if (fsys().exists(idx)) return SafetensorsCheckpoint.openIndex(idx);
      const single = path.join(p, SINGLE_FILE);
      if (fsys().exists(single)) return SafetensorsCheckpoint.openSingle(single);
      throw new UserError(`${p}: no ${INDEX_FILE} or ${SINGLE_FILE} in this directory`);
    }
    if (p.endsWith('.json')) return SafetensorsCheckpoint.openIndex(p);
    return SafetensorsCheckpoint.openSingle(p);
  }

  private static async openSingle(file: string): Promise<SafetensorsCheckpoint> {
    const f = await SafetensorsFile.open(file);
    const where = new Map<string, SafetensorsFile>();
    for (const n of f.names()) where.set(n, f);
    return new SafetensorsCheckpoint(file, null, [f], where, null);
  }

  private static async openIndex(indexPath: string): Promise<SafetensorsCheckpoint> {
    let text: string;
    try {
      text = fsys().readText(indexPath);
    } catch (e) {
      throw ioError(indexPath, e);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new UserError(`${indexPath}: not valid JSON (${(e as Error).message})`);
    }
    if (!isPlainObject(json) || !isPlainObject(json.weight_map)) {
      throw new UserError(`${indexPath}: missing "weight_map" object`);
    }
    const weightMap = json.weight_map as Record<string, unknown>;
    const dir = path.dirname(indexPath);
    const byFile = new Map<string, string[]>();
    for (const [name, file] of Object.entries(weightMap)) {
      if (typeof file !== 'string' || file === '' || path.isAbsolute(file) || file.split(/[\\/]/).includes('..')) {
        throw new UserError(`${indexPath}: weight_map["${name}"] must be a file name in the same directory, got ${JSON.stringify(file)}`);
      }
      let list = byFile.get(file);
      if (!list) byFile.set(file, (list = []));
      list.push(name);
    }
    const files: SafetensorsFile[] = [];
    const where = new Map<string, SafetensorsFile>();
    try {
      for (const [file, names] of byFile) {
        const full = path.join(dir, file);
        const f = await SafetensorsFile.open(full).catch((e) => {
          if (e instanceof UserError && /file not found/.test(e.message)) {
            throw new UserError(`${indexPath}: shard ${file} listed in weight_map does not exist`);
          }
          throw e;
        });
        files.push(f);
        for (const n of names) {
          if (!f.has(n)) throw new UserError(`${indexPath}: weight_map says '${n}' is in ${file}, but that file has no such tensor`);
          where.set(n, f);
        }
      }
    } catch (e) {
      await Promise.all(files.map((f) => f.close().catch(() => {})));
      throw e;
    }
    const meta = isPlainObject(json.metadata) ? (json.metadata as Record<string, unknown>) : null;
    return new SafetensorsCheckpoint(indexPath, indexPath, files, where, meta);
  }

  /** Files that make up the checkpoint. */
  get filePaths(): string[] {
    return this.files.map((f) => f.path);
  }
  names(): string[] {
    return [...this.where.keys()];
  }
  has(name: string): boolean {
    return this.where.has(name);
  }
  info(name: string): TensorInfo {
    const f = this.where.get(name);
    if (!f) throw new UserError(`${this.source}: no tensor named '${name}'`);
    return f.info(name);
  }
  /** name → shape for every tensor (for checkers). */
  shapes(): Map<string, number[]> {
    const m = new Map<string, number[]>();
    for (const [n, f] of this.where) m.set(n, f.info(n).shape);
    return m;
  }
  async readRaw(name: string): Promise<Uint8Array> {
    return this.file(name).readRaw(name);
  }
  async readTensor(name: string): Promise<LoadedTensor> {
    return this.file(name).readTensor(name);
  }
  async readTyped(name: string) {
    return this.file(name).readTyped(name);
  }
  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }
  private file(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new UserError(`${this.source}: no tensor named '${name}'`);
    return f;
  }
}

export async function openSafetensors(p: string): Promise<SafetensorsCheckpoint> {
  return SafetensorsCheckpoint.open(p);
}

// ------------------------------------------------------------------------------------------------
// writing
// ------------------------------------------------------------------------------------------------

export type TensorSource = Float32Array | (() => Float32Array | Promise<Float32Array>);

export interface WriteTensor {
  name: string;
  dtype: FloatDtype;
  shape: number[];
  /** the values, or a thunk producing them when the tensor is written (keeps peak memory low) */
  data: TensorSource;
}

// order used by the Rust library's enum (larger alignment first when sorted descending)
const DTYPE_RANK: Record<string, number> = {
  BOOL: 0, U8: 1, I8: 2, F8_E5M2: 3, F8_E4M3: 4, I16: 5, U16: 6, F16: 7, BF16: 8, I32: 9, U32: 10, F32: 11, F64: 12, I64: 13, U64: 14,
};

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensorByteSize(t: { dtype: string; shape: number[] }): number {
  return numel(t.shape) * dtypeSize(t.dtype);
}

/**
 * Lay out tensors like the Rust `safetensors` crate: sorted by dtype (descending) then name, data
 * offsets contiguous from 0, `__metadata__` first, header padded with spaces to a multiple of 8.
 */
export function buildHeader(
  tensors: { name: string; dtype: string; shape: number[] }[],
  metadata?: Record<string, string> | null,
): { header: Uint8Array; order: { name: string; begin: number; end: number }[] } {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === '__metadata__') throw new Error(`tensor name '__metadata__' is reserved`);
    if (seen.has(t.name)) throw new Error(`duplicate tensor name '${t.name}'`);
    seen.add(t.name);
    dtypeSize(t.dtype);
  }
  const sorted = tensors
    .slice()
    .sort((a, b) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const obj: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) obj.__metadata__ = metadata;
  const order: { name: string; begin: number; end: number }[] = [];
  let off = 0;
  for (const t of sorted) {
    const size = tensorByteSize(t);
    obj[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + size] };
    order.push({ name: t.name, begin: off, end: off + size });
    off += size;
  }
  // JSON.stringify keeps insertion order for string keys except integer-like keys, which JS
  // objects would hoist; build the text by hand to keep the intended order.
  const parts: string[] = [];
  if (obj.__metadata__) parts.push(`"__metadata__":${JSON.stringify(obj.__metadata__)}`);
  for (const t of sorted) parts.push(`${JSON.stringify(t.name)}:${JSON.stringify(obj[t.name])}`);
  let text = `{${parts.join(',')}}`;
  const enc = new TextEncoder();
  let bytes = enc.encode(text);
  const pad = (8 - (bytes.length % 8)) % 8;
  if (pad) bytes = enc.encode(text + ' '.repeat(pad));
  return { header: bytes, order };
}

async function materialize(src: TensorSource): Promise<Float32Array> {
  return typeof src === 'function' ? await src() : src;
}

/** Write one .safetensors file atomically, converting/rounding each tensor as it is written. */
export async function writeSafetensors(
  file: string,
  tensors: WriteTensor[],
  metadata?: Record<string, string> | null,
): Promise<void> {
  for (const t of tensors) {
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
      throw new Error(`writeSafetensors: dtype ${String(t.dtype)} not supported (F32/F16/BF16)`);
    }
    if (!t.shape.every(isNonNegInt)) throw new Error(`writeSafetensors: bad shape for ${t.name}: ${JSON.stringify(t.shape)}`);
  }
  const { header, order } = buildHeader(tensors, metadata);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  await fsys().withAtomicFile(file, async (fh) => {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(header.length), true);
    await fh.write(len, 0);
    await fh.write(header, 8);
    const base = 8 + header.length;
    for (const o of order) {
      const t = byName.get(o.name)!;
      const data = await materialize(t.data);
      const n = numel(t.shape);
      if (data.length !== n) {
        throw new Error(`writeSafetensors: tensor '${t.name}' shape [${t.shape}] needs ${n} values, got ${data.length}`);
      }
      let bytes: Uint8Array;
      if (t.dtype === 'F32' && LITTLE_ENDIAN_HOST) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      else bytes = encodeFloats(t.dtype, data);
      await fh.write(bytes, base + o.begin);
    }
  });
}

/** HF shard file name: model-00001-of-00003.safetensors */
export function shardFileName(i: number, n: number, prefix = 'model'): string {
  const p = (x: number) => String(x).padStart(5, '0');
  return `${prefix}-${p(i + 1)}-of-${p(n)}.safetensors`;
}

export interface ShardOptions {
  /** number of shards (tensors are split into contiguous runs of roughly equal byte size) */
  shards?: number;
  /** alternatively a max shard size in bytes (HF style: a new shard starts when the next tensor would exceed it) */
  maxShardBytes?: number;
  /** per-file metadata; default {format: 'pt'} as HF writes */
  metadata?: Record<string, string>;
  prefix?: string;
}

/**
 * Write tensors as HF-style shards plus `<prefix>.safetensors.index.json`
 * ({metadata: {total_size}, weight_map: {name: file}} with sorted keys). Returns the shard file names.
 */
export async function writeShardedSafetensors(dir: string, tensors: WriteTensor[], opts: ShardOptions = {}): Promise<string[]> {
  fsys().mkdir(dir);
  const sizes = tensors.map(tensorByteSize);
  const total = sizes.reduce((a, b) => a + b, 0);
  const groups: WriteTensor[][] = [];
  if (opts.maxShardBytes !== undefined) {
    let cur: WriteTensor[] = [];
    let curSize = 0;
    tensors.forEach((t, i) => {
      if (cur.length > 0 && curSize + sizes[i] > opts.maxShardBytes!) {
        groups.push(cur);
        cur = [];
        curSize = 0;
      }
      cur.push(t);
      curSize += sizes[i];
    });
    if (cur.length) groups.push(cur);
  } else {
    const n = Math.max(1, Math.min(opts.shards ?? 1, tensors.length));
    // contiguous split: tensor i goes to shard floor(cumulative_midpoint / total * n)
    for (let s = 0; s < n; s++) groups.push([]);
    let cum = 0;
    tensors.forEach((t, i) => {
      const mid = cum + sizes[i] / 2;
      cum += sizes[i];
      let s = total > 0 ? Math.floor((mid / total) * n) : Math.floor((i / tensors.length) * n);
      s = Math.min(n - 1, Math.max(0, s));
      groups[s].push(t);
    });
    // never leave a shard empty: steal from neighbours if needed
    for (let s = 0; s < n; s++) {
      if (groups[s].length === 0) {
        const donor = groups.findIndex((g) => g.length > 1);
        if (donor < 0) break;
        if (donor < s) groups[s].push(groups[donor].pop()!);
        else groups[s].push(groups[donor].shift()!);
      }
    }
    // restore order (stealing may break contiguity, which is harmless)
  }
  const nonEmpty = groups.filter((g) => g.length > 0);
  const names: string[] = [];
  const weightMap: Record<string, string> = {};
  const prefix = opts.prefix ?? 'model';
  for (let i = 0; i < nonEmpty.length; i++) {
    const fname = shardFileName(i, nonEmpty.length, prefix);
    names.push(fname);
    await writeSafetensors(path.join(dir, fname), nonEmpty[i], opts.metadata ?? { format: 'pt' });
    for (const t of nonEmpty[i]) weightMap[t.name] = fname;
  }
  const sortedMap: Record<string, string> = {};
  for (const k of Object.keys(weightMap).sort()) sortedMap[k] = weightMap[k];
  await fsys().writeFileAtomic(path.join(dir, `${prefix}.safetensors.index.json`), JSON.stringify({ metadata: { total_size: total }, weight_map: sortedMap }, null, 2) + '\n');
  return names;
}
