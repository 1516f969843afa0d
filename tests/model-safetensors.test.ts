import { afterAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  SafetensorsFile,
  bf16BitsToF32,
  buildHeader,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  openSafetensors,
  roundThrough,
  writeSafetensors,
  writeShardedSafetensors,
} from '../src/model/safetensors.ts';
import { UserError } from '../src/util/errors.ts';
import { rng } from './helpers/random.ts';

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'st-'));
afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));
let counter = 0;
const tmpFile = (name = 'x') => path.join(tmp, `${counter++}-${name}.safetensors`);

/** Assemble a safetensors file from a header (object or raw string) and data bytes. */
async function rawFile(header: unknown, data: Uint8Array | number = 0, headerLen?: bigint): Promise<string> {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const hb = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(hb.length));
  const d = typeof data === 'number' ? Buffer.alloc(data) : Buffer.from(data);
  const f = tmpFile('raw');
  await fsp.writeFile(f, Buffer.concat([len, hb, d]));
  return f;
}

async function expectUserError(p: Promise<unknown>, re: RegExp, file?: string) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'expected a rejection').toBeInstanceOf(UserError);
  expect((err as Error).message).toMatch(re);
  if (file) expect((err as Error).message).toContain(file);
  expect((err as Error).message).not.toContain('\n');
}

const f16Bits = (x: number) => f32ToF16Bits(x).toString(16).padStart(4, '0');

describe('f16 conversion', () => {
  it('exact known encodings', () => {
    expect(f16Bits(1)).toBe('3c00');
    expect(f16Bits(-2)).toBe('c000');
    expect(f16Bits(0)).toBe('0000');
    expect(f16Bits(-0)).toBe('8000');
    expect(f16Bits(65504)).toBe('7bff'); // max finite
    expect(f16Bits(65519)).toBe('7bff'); // below the halfway point to 65536
    expect(f16Bits(65520)).toBe('7c00'); // halfway → even → overflows to inf
    expect(f16Bits(Infinity)).toBe('7c00');
    expect(f16Bits(-Infinity)).toBe('fc00');
    expect(f16BitsToF32(f32ToF16Bits(NaN))).toBeNaN();
    expect(f16Bits(2 ** -14)).toBe('0400'); // min normal
    expect(f16Bits(1023 * 2 ** -24)).toBe('03ff'); // max subnormal
    expect(f16Bits(2 ** -24)).toBe('0001'); // min subnormal
    expect(f16Bits(2 ** -25)).toBe('0000'); // exactly half the min subnormal: tie → even (0)
    expect(f16Bits(3 * 2 ** -26)).toBe('0001'); // 0.75 of min subnormal → rounds up
    expect(f16Bits(1.5 * 2 ** -24)).toBe('0002'); // tie between 1 and 2 subnormal units → even (2)
    expect(f16Bits(2.5 * 2 ** -24)).toBe('0002'); // tie between 2 and 3 → even (2)
    expect(f16Bits(1 + 2 ** -11)).toBe('3c00'); // tie → even mantissa
    expect(f16Bits(1 + 3 * 2 ** -11)).toBe('3c02'); // tie → even mantissa (up)
    expect(f16Bits(1 + 2 ** -11 + 2 ** -20)).toBe('3c01'); // just above tie → up
    expect(f16Bits(2 ** -14 - 2 ** -25)).toBe('0400'); // largest subnormal + half ulp: ties up to min normal (even)
  });
  it('every finite f16 value survives decode → encode', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16BitsToF32(h);
      if (Number.isNaN(v)) continue;
      expect(f32ToF16Bits(v)).toBe(h);
    }
  });
  it('encoding is round-to-nearest: no representable f16 is closer (random float32s)', () => {
    const rnd = rng(12345);
    for (let i = 0; i < 20000; i++) {
      const x = Math.fround((rnd() - 0.5) * 2 ** Math.floor(rnd() * 44 - 28));
      const h = f32ToF16Bits(x);
      const y = f16BitsToF32(h);
      const below = f16BitsToF32(h - 1 >= 0 ? h - 1 : h);
      const above = f16BitsToF32(h + 1);
      const err = Math.abs(x - y);
      for (const n of [below, above]) if (Number.isFinite(n) && Math.sign(n) === Math.sign(y)) expect(err).toBeLessThanOrEqual(Math.abs(x - n));
    }
  });
});

describe('bf16 conversion', () => {
  it('round-to-nearest-even and specials', () => {
    const b = (x: number) => f32ToBf16Bits(x).toString(16).padStart(4, '0');
    expect(b(1)).toBe('3f80');
    expect(b(1 + 2 ** -8)).toBe('3f80'); // tie → even
    expect(b(1 + 3 * 2 ** -8)).toBe('3f82'); // tie → even (up)
    expect(b(1 + 2 ** -8 + 2 ** -20)).toBe('3f81'); // above tie → up
    expect(b(-1.5)).toBe('bfc0');
    expect(b(3.4028234663852886e38)).toBe('7f80'); // f32 max rounds to inf (as torch does)
    expect(b(-Infinity)).toBe('ff80');
    expect(bf16BitsToF32(f32ToBf16Bits(NaN))).toBeNaN();
    expect(b(2 ** -133)).toBe('0001'); // f32 subnormals keep their top bits
    expect(bf16BitsToF32(0x4049)).toBe(3.140625);
  });
  it('roundThrough matches the scalar conversions', () => {
    const xs = Float32Array.from([0.1, -7.77, 1e-3, 12345.678]);
    expect(Array.from(roundThrough('BF16', xs))).toEqual(Array.from(xs, (x) => bf16BitsToF32(f32ToBf16Bits(x))));
    expect(Array.from(roundThrough('F16', xs))).toEqual(Array.from(xs, (x) => f16BitsToF32(f32ToF16Bits(x))));
    expect(Array.from(roundThrough('F32', xs))).toEqual(Array.from(xs));
  });
});

describe('writer layout', () => {
  it('header matches the Rust crate byte for byte (compact JSON, sorted, space-padded to 8)', async () => {
    const { header } = buildHeader([{ name: 'a', dtype: 'F32', shape: [2] }]);
    // serde_json of {"a": TensorInfo{dtype, shape, data_offsets}} is 54 bytes; padded to 56
    expect(Buffer.from(header).toString()).toBe('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ');
    const f = tmpFile('layout');
    await writeSafetensors(
      f,
      [
        { name: 'z_f16', dtype: 'F16', shape: [3], data: Float32Array.from([1, 2, 3]) },
        { name: 'b_f32', dtype: 'F32', shape: [1, 2], data: Float32Array.from([1, 2]) },
        { name: 'a_bf16', dtype: 'BF16', shape: [1], data: Float32Array.from([1]) },
        { name: 'a_f32', dtype: 'F32', shape: [], data: Float32Array.from([7]) },
      ],
      { format: 'pt' },
    );
    const bytes = await fsp.readFile(f);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const text = bytes.subarray(8, 8 + n).toString();
    // dtype descending (F32 > BF16 > F16 in the crate's enum order), then name; metadata first
    expect(text.trimEnd()).toBe(
      '{"__metadata__":{"format":"pt"},' +
        '"a_f32":{"dtype":"F32","shape":[],"data_offsets":[0,4]},' +
        '"b_f32":{"dtype":"F32","shape":[1,2],"data_offsets":[4,12]},' +
        '"a_bf16":{"dtype":"BF16","shape":[1],"data_offsets":[12,14]},' +
        '"z_f16":{"dtype":"F16","shape":[3],"data_offsets":[14,20]}}',
    );
    expect(bytes.length).toBe(8 + n + 20);
    expect(bytes.subarray(8 + n + 12, 8 + n + 14).toString('hex')).toBe('803f'); // bf16 1.0 LE
    expect(bytes.subarray(8 + n + 14).toString('hex')).toBe('003c00400042'); // f16 1,2,3 LE
  });
  it('rejects data length not matching shape', async () => {
    await expect(writeSafetensors(tmpFile(), [{ name: 'a', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).rejects.toThrow(/needs 3 values/);
  });
});

describe('round trip', () => {
  it('F32 exact, F16/BF16 equal to the rounded values, metadata kept, lazy data', async () => {
    const f = tmpFile('rt');
    const vals = Float32Array.from({ length: 24 }, (_, i) => Math.sin(i * 1.7) * 10 ** ((i % 7) - 3));
    await writeSafetensors(
      f,
      [
        { name: 'w32', dtype: 'F32', shape: [4, 6], data: vals },
        { name: 'w16', dtype: 'F16', shape: [2, 3, 4], data: () => vals },
        { name: 'wbf', dtype: 'BF16', shape: [24], data: async () => vals },
        { name: 'empty', dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
      ],
      { note: 'hello' },
    );
    const st = await SafetensorsFile.open(f);
    try {
      expect(st.metadata).toEqual({ note: 'hello' });
      expect(st.names().sort()).toEqual(['empty', 'w16', 'w32', 'wbf']);
      const a = await st.readTensor('w32');
      expect(a.shape).toEqual([4, 6]);
      expect(a.dtype).toBe('F32');
      expect(Array.from(a.data)).toEqual(Array.from(vals));
      const b = await st.readTensor('w16');
      expect(b.shape).toEqual([2, 3, 4]);
      expect(Array.from(b.data)).toEqual(Array.from(roundThrough('F16', vals)));
      const c = await st.readTensor('wbf');
      expect(Array.from(c.data)).toEqual(Array.from(roundThrough('BF16', vals)));
      expect(Array.from(c.data)).not.toEqual(Array.from(vals)); // rounding really happened
      expect((await st.readTensor('empty')).data.length).toBe(0);
      const raw = await st.readRaw('wbf');
      expect(raw.length).toBe(48);
      expect(raw[0] | (raw[1] << 8)).toBe(f32ToBf16Bits(vals[0]));
      await expectUserError(st.readTensor('nope'), /no tensor named 'nope'/, f);
    } finally {
      await st.close();
    }
  });
  it('reads I32 / I64 / F64 tensors with readTyped', async () => {
    const data = Buffer.alloc(4 * 3 + 8 * 2 + 8);
    data.writeInt32LE(-5, 0);
    data.writeInt32LE(7, 4);
    data.writeInt32LE(2147483647, 8);
    data.writeBigInt64LE(-(2n ** 62n), 12);
    data.writeBigInt64LE(9n, 20);
    data.writeDoubleLE(Math.PI, 28);
    const f = await rawFile(
      {
        i: { dtype: 'I32', shape: [3], data_offsets: [0, 12] },
        l: { dtype: 'I64', shape: [2], data_offsets: [12, 28] },
        d: { dtype: 'F64', shape: [1], data_offsets: [28, 36] },
      },
      data,
    );
    const ck = await openSafetensors(f);
    expect(Array.from((await ck.readTyped('i')).data as Int32Array)).toEqual([-5, 7, 2147483647]);
    expect(Array.from((await ck.readTyped('l')).data as BigInt64Array)).toEqual([-(2n ** 62n), 9n]);
    expect(Array.from((await ck.readTyped('d')).data as Float64Array)).toEqual([Math.PI]);
    await expectUserError(ck.readTensor('i'), /dtype I32; expected a float dtype/);
    await ck.close();
  });
  it('sharded write → index json → read back through the directory', async () => {
    const dir = path.join(tmp, 'sharded');
    const tensors = Array.from({ length: 7 }, (_, i) => ({
      name: `t.${i}.weight`,
      dtype: 'F32' as const,
      shape: [i + 1, 3],
      data: Float32Array.from({ length: (i + 1) * 3 }, (_, j) => i * 100 + j),
    }));
    const files = await writeShardedSafetensors(dir, tensors, { shards: 3 });
    expect(files).toEqual(['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
    const index = JSON.parse(await fsp.readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(tensors.reduce((s, t) => s + t.data.byteLength, 0));
    expect(Object.keys(index.weight_map)).toEqual(tensors.map((t) => t.name).sort());
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(files));
    const ck = await openSafetensors(dir);
    expect(ck.filePaths).toHaveLength(3);
    for (const t of tensors) {
      const r = await ck.readTensor(t.name);
      expect(r.shape).toEqual(t.shape);
      expect(Array.from(r.data)).toEqual(Array.from(t.data));
    }
    // every shard carries HF's format metadata
    const one = await SafetensorsFile.open(path.join(dir, files[0]));
    expect(one.metadata).toEqual({ format: 'pt' });
    await one.close();
    await ck.close();
  });
  it('maxShardBytes splitting', async () => {
    const dir = path.join(tmp, 'sharded2');
    const t = (n: string) => ({ name: n, dtype: 'F32' as const, shape: [10], data: new Float32Array(10) });
    const files = await writeShardedSafetensors(dir, [t('a'), t('b'), t('c')], { maxShardBytes: 80 });
    expect(files).toHaveLength(2); // 40 + 40 fit, third starts a new shard
  });
  it('opening a directory with neither index nor model.safetensors is a UserError', async () => {
    const dir = path.join(tmp, 'emptydir');
    await fsp.mkdir(dir);
    await expectUserError(openSafetensors(dir), /no model\.safetensors\.index\.json or model\.safetensors/, dir);
  });
});

describe('corrupt files are rejected before use, naming file and problem', () => {
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  it('missing file', async () => {
    await expectUserError(SafetensorsFile.open(path.join(tmp, 'missing.safetensors')), /file not found/, 'missing.safetensors');
  });
  it('shorter than 8 bytes', async () => {
    const f = tmpFile('short');
    await fsp.writeFile(f, Buffer.from([1, 2, 3]));
    await expectUserError(SafetensorsFile.open(f), /only 3 bytes/, f);
  });
  it('header length beyond the file', async () => {
    const f = await rawFile(ok, 8, 5000n);
    await expectUserError(SafetensorsFile.open(f), /header length 5000 extends beyond the end of the file/, f);
  });
  it('absurd header length', async () => {
    const f = await rawFile(ok, 8, 2n ** 40n);
    await expectUserError(SafetensorsFile.open(f), /absurd/, f);
  });
  it('malformed JSON / not an object / invalid UTF-8', async () => {
    await expectUserError(SafetensorsFile.open(await rawFile('{"a": {', 0)), /not valid JSON/);
    await expectUserError(SafetensorsFile.open(await rawFile('[1,2]', 0)), /not a JSON object/);
    const f = tmpFile('utf');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(3n);
    await fsp.writeFile(f, Buffer.concat([len, Buffer.from([0x7b, 0xff, 0x7d])]));
    await expectUserError(SafetensorsFile.open(f), /UTF-8/, f);
  });
  it('__metadata__ must map strings to strings; null is allowed', async () => {
    await expectUserError(SafetensorsFile.open(await rawFile({ __metadata__: { n: 3 }, ...ok }, 8)), /__metadata__\.n must be a string/);
    await expectUserError(SafetensorsFile.open(await rawFile({ __metadata__: [1], ...ok }, 8)), /__metadata__ must be an object/);
    const st = await SafetensorsFile.open(await rawFile({ __metadata__: null, ...ok }, 8));
    expect(st.metadata).toBe(null);
    expect(st.names()).toEqual(['a']); // __metadata__ is not a tensor
    await st.close();
  });
  it('truncated file (offsets past the data area)', async () => {
    const good = tmpFile('trunc');
    await writeSafetensors(good, [{ name: 'w', dtype: 'F32', shape: [16], data: new Float32Array(16) }]);
    const size = (await fsp.stat(good)).size;
    await fsp.truncate(good, size - 1);
    await expectUserError(SafetensorsFile.open(good), /'w'.*run past the data area \(63 bytes/, good);
  });
  it('lying offsets: begin > end, byte count ≠ shape × dtype size', async () => {
    await expectUserError(
      SafetensorsFile.open(await rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, 8)),
      /begin 8 > end 0/,
    );
    await expectUserError(
      SafetensorsFile.open(await rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 12)),
      /'a': 8 bytes in data_offsets but shape \[3\] × F32 \(4 B\) needs 12/,
    );
    await expectUserError(
      SafetensorsFile.open(await rawFile({ a: { dtype: 'BF16', shape: [2, 2], data_offsets: [0, 16] } }, 16)),
      /needs 8/,
    );
  });
  it('overlapping tensors', async () => {
    const f = await rawFile(
      {
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
      },
      12,
    );
    await expectUserError(SafetensorsFile.open(f), /'a' \[0, 8\] and 'b' \[4, 12\] overlap/, f);
    // adjacent and zero-sized tensors are fine
    const g = await rawFile(
      {
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        e: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
        b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
      },
      12,
    );
    await (await SafetensorsFile.open(g)).close();
  });
  it('malformed entries: unknown dtype, bad shape, bad offsets', async () => {
    await expectUserError(
      SafetensorsFile.open(await rawFile({ a: { dtype: 'Q7', shape: [2], data_offsets: [0, 8] } }, 8)),
      /'a': unsupported dtype 'Q7'/,
    );
    await expectUserError(SafetensorsFile.open(await rawFile({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, 8)), /shape must be/);
    await expectUserError(SafetensorsFile.open(await rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0] } }, 8)), /data_offsets must be/);
    await expectUserError(SafetensorsFile.open(await rawFile({ a: { shape: [2], data_offsets: [0, 8] } }, 8)), /missing or non-string dtype/);
    await expectUserError(SafetensorsFile.open(await rawFile({ a: 5 }, 8)), /entry is not an object/);
  });
  it('known dtype we cannot decode is sized at open and refused at read', async () => {
    const st = await SafetensorsFile.open(await rawFile({ a: { dtype: 'U8', shape: [3], data_offsets: [0, 3] } }, 3));
    await expectUserError(st.readTyped('a'), /unsupported dtype U8/);
    await st.close();
  });
  it('index problems: missing shard, tensor not in the named shard, bad JSON', async () => {
    const dir = path.join(tmp, 'badindex');
    await fsp.mkdir(dir);
    await writeSafetensors(path.join(dir, 's1.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
    const idx = path.join(dir, 'model.safetensors.index.json');
    await fsp.writeFile(idx, JSON.stringify({ weight_map: { x: 's1.safetensors', y: 's2.safetensors' } }));
    await expectUserError(openSafetensors(dir), /shard s2\.safetensors listed in weight_map does not exist/, idx);
    await fsp.writeFile(idx, JSON.stringify({ weight_map: { x: 's1.safetensors', y: 's1.safetensors' } }));
    await expectUserError(openSafetensors(dir), /'y' is in s1\.safetensors, but that file has no such tensor/);
    await fsp.writeFile(idx, '{"weight_map": ');
    await expectUserError(openSafetensors(dir), /not valid JSON/, idx);
    await fsp.writeFile(idx, JSON.stringify({ weight_map: { x: '../s1.safetensors' } }));
    await expectUserError(openSafetensors(dir), /must be a file name in the same directory/);
  });
});

describe('streaming', () => {
  it('reads one small tensor from a 6 GB (sparse) file without touching the rest', async () => {
    // If open() or readTensor() read the whole file this would allocate 6 GB (and fail or blow
    // the RSS bound). Sparse files cost no disk on Linux/macOS filesystems.
    const big = 1_500_000_000; // F32 elements → 6e9 bytes
    const header = {
      big: { dtype: 'F32', shape: [big], data_offsets: [0, big * 4] },
      small: { dtype: 'F32', shape: [2], data_offsets: [big * 4, big * 4 + 8] },
    };
    const f = await rawFile(header, 0);
    const headerLen = Number((await fsp.readFile(f)).readBigUInt64LE(0));
    const fh = await fsp.open(f, 'r+');
    const tail = Buffer.alloc(8);
    tail.writeFloatLE(1.25, 0);
    tail.writeFloatLE(-3.5, 4);
    await fh.write(tail, 0, 8, 8 + headerLen + big * 4);
    await fh.close();
    const before = process.memoryUsage().rss;
    const st = await SafetensorsFile.open(f);
    const t = await st.readTensor('small');
    await st.close();
    expect(Array.from(t.data)).toEqual([1.25, -3.5]);
    // 200 MB bound: far below the 6 GB a whole-file read would need, far above normal jitter
    expect(process.memoryUsage().rss - before).toBeLessThan(200 * 1024 * 1024);
    await fsp.rm(f);
  });
});
