import { afterAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeNpy, encodeNpy, npyHeader, readNpy, writeNpy } from '../src/util/npy.ts';
import { UserError } from '../src/util/errors.ts';

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'npy-'));
afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

const latin1 = (b: Uint8Array) => Buffer.from(b).toString('latin1');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Expected bytes below were produced with numpy 2.4 `np.save` (the growth padding after the dict
// has been there since numpy 1.23).
describe('npy header bytes match numpy exactly', () => {
  it('float32 (2, 3)', () => {
    const h = npyHeader('float32', [2, 3]);
    const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    expect(h.length).toBe(128);
    expect(latin1(h)).toBe('\x93NUMPY\x01\x00v\x00' + dict + ' '.repeat(128 - 10 - dict.length - 1) + '\n');
  });
  it('float64 (5,), int32 scalar (), int64 (0, 4)', () => {
    expect(latin1(npyHeader('float64', [5]))).toBe(
      "\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }" + ' '.repeat(60) + '\n',
    );
    expect(latin1(npyHeader('int32', [])).slice(10)).toBe(
      "{'descr': '<i4', 'fortran_order': False, 'shape': (), }" + ' '.repeat(62) + '\n',
    );
    expect(latin1(npyHeader('int64', [0, 4])).slice(10, 69)).toBe("{'descr': '<i8', 'fortran_order': False, 'shape': (0, 4), }");
    expect(npyHeader('int64', [0, 4]).length).toBe(128);
  });
  it('already-aligned dict gets a full 64 spaces of padding (numpy padlen is 1..64)', () => {
    // np.save(np.zeros((2, 100) + (1,)*12, 'f4')) has header length 182 (0xb6), prefix 192 bytes
    const shape = [2, 100, ...Array(12).fill(1)];
    const h = npyHeader('float32', shape);
    expect(h.length).toBe(192);
    expect(h[8]).toBe(0xb6);
    expect(h[9]).toBe(0);
    expect(latin1(h).endsWith(' '.repeat(64) + '\n')).toBe(true);
  });
  it('full file bytes for a small float32 array', () => {
    const bytes = encodeNpy({ shape: [2, 3], data: Float32Array.from([0, 1, 2, 3, 4, 5], (x) => x * 0.5 - 1) });
    // literal output of np.save(np.arange(6, dtype='f4').reshape(2, 3) * 0.5 - 1)
    expect(hex(bytes)).toBe(
      '934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000080bf000000bf000000000000003f0000803f0000c03f',
    );
  });
  it('int64 data bytes little-endian two-complement', () => {
    const bytes = encodeNpy({ shape: [3], data: BigInt64Array.from([1n, -2n, 3n]) });
    expect(hex(bytes.subarray(128))).toBe('0100000000000000feffffffffffffff0300000000000000');
  });
});

describe('npy round trip', () => {
  it('each dtype survives write + read', async () => {
    const cases = [
      { shape: [2, 2], data: Float32Array.from([1.5, -2.25, 3e-8, 1e30]) },
      { shape: [3], data: Float64Array.from([Math.PI, -0, 1e-310]) },
      { shape: [1, 2, 2], data: Int32Array.from([-2147483648, 2147483647, 0, -1]) },
      { shape: [2], data: BigInt64Array.from([-(2n ** 63n), 2n ** 62n]) },
      { shape: [], data: Float64Array.from([42]) },
    ];
    for (const [i, c] of cases.entries()) {
      const f = path.join(tmp, `r${i}.npy`);
      await writeNpy(f, c);
      const back = await readNpy(f);
      expect(back.shape).toEqual(c.shape);
      expect(back.data.constructor).toBe(c.data.constructor);
      expect(Array.from(back.data as ArrayLike<unknown>)).toEqual(Array.from(c.data as ArrayLike<unknown>));
      expect((await fsp.stat(f)).size % 64).toBe((c.data.byteLength) % 64); // header is 64-aligned
    }
  });
  it('reads big-endian and v2.0 files', () => {
    // '>f4' (1,) = 1.0 ; hand-built
    const dict = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }";
    const pad = 64 - ((10 + dict.length + 1) % 64);
    const hdr = dict + ' '.repeat(pad) + '\n';
    const be = Buffer.concat([Buffer.from([0x93]), Buffer.from('NUMPY'), Buffer.from([1, 0, hdr.length, 0]), Buffer.from(hdr, 'latin1'), Buffer.from([0x3f, 0x80, 0, 0])]);
    expect(Array.from(decodeNpy(be).data as Float32Array)).toEqual([1]);
    const pad2 = 64 - ((12 + dict.replace('>', '<').length + 1) % 64);
    const hdr2 = dict.replace('>', '<') + ' '.repeat(pad2) + '\n';
    const v2 = Buffer.concat([Buffer.from([0x93]), Buffer.from('NUMPY'), Buffer.from([2, 0, hdr2.length, 0, 0, 0]), Buffer.from(hdr2, 'latin1'), Buffer.from([0, 0, 0x80, 0x3f])]);
    expect(Array.from(decodeNpy(v2).data as Float32Array)).toEqual([1]);
  });
  it('rejects bad input with UserError', () => {
    expect(() => decodeNpy(new Uint8Array([1, 2, 3]), 'x.npy')).toThrow(UserError);
    const good = encodeNpy({ shape: [2], data: Float32Array.from([1, 2]) });
    expect(() => decodeNpy(good.subarray(0, good.length - 1), 'x.npy')).toThrow(/needs 8/);
    const fortran = Buffer.from(good);
    fortran.write("'fortran_order': True, ", 26, 'latin1');
    expect(() => decodeNpy(fortran, 'f.npy')).toThrow(/Fortran/);
    const u8 = Buffer.from(good);
    u8.write("'|u1'", 19, 'latin1');
    expect(() => decodeNpy(u8, 'u.npy')).toThrow(/unsupported .npy dtype/);
  });
  it('encode rejects shape/data mismatch', () => {
    expect(() => encodeNpy({ shape: [3], data: new Float32Array(2) })).toThrow(/3 elements/);
  });
});
