import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PyRandom } from '../src/experiment/paper/pyrandom.ts';

// Generated with CPython 3.11 by tests/fixtures/experiment/make_fixtures.py.
interface PyRandomCase {
  seed: number | string;
  getrandbits32: number[];
  random: number[];
  getrandbits: Array<[number, string]>;
  randbelow: Array<[number, number]>;
  sample_100_10: number[];
  sample_10_10: number[];
  sample_100000_7: number[];
  sample_1000_300: number[];
  sample_30000_10000: { head: number[]; checksum: number };
  shuffle20: number[];
  shuffle_seq: number[][];
}
const fixture = JSON.parse(readFileSync(new URL('./fixtures/experiment/pyrandom.json', import.meta.url), 'utf8')) as {
  cases: PyRandomCase[];
};

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const seedOf = (c: PyRandomCase): number | bigint => (typeof c.seed === 'string' ? BigInt(c.seed) : c.seed);
const checksum = (values: number[]): number => {
  let acc = 0;
  values.forEach((v, i) => {
    acc = (acc + (i + 1) * v) % 2147483647; // (i+1)*v < 2^53 for these sizes
  });
  return acc;
};

describe('PyRandom (CPython random.Random)', () => {
  it('fixture covers several seeds including negative and multi-word ones', () => {
    expect(fixture.cases.length).toBeGreaterThanOrEqual(8);
  });
  for (const c of fixture.cases) {
    describe(`seed ${c.seed}`, () => {
      it('getrandbits(32) and random() match', () => {
        const r = new PyRandom(seedOf(c));
        expect(c.getrandbits32.map(() => r.getrandbits(32))).toEqual(c.getrandbits32);
        const r2 = new PyRandom(seedOf(c));
        expect(c.random.map(() => r2.random())).toEqual(c.random);
      });
      it('getrandbits(k) for k above and below 32 matches', () => {
        const r = new PyRandom(seedOf(c));
        for (const [k, expected] of c.getrandbits) expect(r.getrandbitsBig(k).toString(), `k=${k}`).toBe(expected);
      });
      it('randrange(n) matches', () => {
        const r = new PyRandom(seedOf(c));
        for (const [n, expected] of c.randbelow) expect(r.randbelow(n), `n=${n}`).toBe(expected);
      });
      it('sample matches on both the pool and the set branch', () => {
        expect(new PyRandom(seedOf(c)).sample(range(100), 10)).toEqual(c.sample_100_10);
        expect(new PyRandom(seedOf(c)).sample(range(10), 10)).toEqual(c.sample_10_10);
        expect(new PyRandom(seedOf(c)).sample(range(100_000), 7)).toEqual(c.sample_100000_7);
        expect(new PyRandom(seedOf(c)).sample(range(1000), 300)).toEqual(c.sample_1000_300);
        const big = new PyRandom(seedOf(c)).sample(range(30_000), 10_000);
        expect(big.slice(0, 50)).toEqual(c.sample_30000_10000.head);
        expect(checksum(big)).toBe(c.sample_30000_10000.checksum);
      });
      it('shuffle matches, including consecutive shuffles on one generator', () => {
        const x = range(20);
        new PyRandom(seedOf(c)).shuffle(x);
        expect(x).toEqual(c.shuffle20);
        const r = new PyRandom(seedOf(c));
        const seq = [1, 2, 3, 5, 8].map((n) => {
          const y = range(n);
          r.shuffle(y);
          return y;
        });
        expect(seq).toEqual(c.shuffle_seq);
      });
    });
  }
  it('rejects impossible samples', () => {
    expect(() => new PyRandom(1).sample([1, 2, 3], 4)).toThrow(RangeError);
    expect(() => new PyRandom(1).randbelow(0)).toThrow(RangeError);
  });
});
