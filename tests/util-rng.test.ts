// Pins the bit streams of the three seeded RNGs: the committed tiny models, tokenizer and MNIST results
// were made from them. The expected values were computed by the generators' code before it moved into
// src/util/rng.ts; a change here means a change of every artefact they seed.
import { describe, expect, it } from 'vitest';
import { KeyedRng, pcgHash, SeedStreamRng, Sfc32Rng } from '../src/util/rng.ts';

/** A 32-bit fold of 1000 outputs (order-sensitive). */
function fold(next: () => number): number {
  let h = 0;
  for (let i = 0; i < 1000; i++) h = (Math.imul(h, 31) + (next() >>> 0)) | 0;
  return h >>> 0;
}

describe('SeedStreamRng', () => {
  it('keeps its stream', () => {
    const r = new SeedStreamRng(1234, 'w');
    expect([r.nextU32(), r.nextU32(), r.nextU32(), r.nextU32()]).toEqual([4180159388, 3519879645, 3724683808, 2860095325]);
    expect(r.uniform()).toBe(0.726485390871937);
    expect(r.int(1000)).toBe(282);
    expect([r.normal(), r.normal(), r.normal()]).toEqual([1.0029913436255673, -0.24109046266755224, 1.0231613856544945]);
    expect(new SeedStreamRng(2 ** 40 + 17).nextU32()).toBe(1592368867);
    const s = new SeedStreamRng(-7, 'x');
    expect(fold(() => s.nextU32())).toBe(905108522);
  });
});

describe('KeyedRng', () => {
  it('keeps its stream', () => {
    const r = new KeyedRng('numbers', 5, 7);
    expect([r.nextU32(), r.nextU32(), r.nextU32(), r.nextU32()]).toEqual([3942776992, 830139826, 1589176536, 1188000642]);
    expect(r.random()).toBe(0.38005470781688555);
    expect(r.int(10, 20)).toBe(11);
    expect(r.weighted([1, 2, 3])).toBe(2);
    expect(r.chance(0.5)).toBe(false);
    const s = new KeyedRng('s', 1);
    expect(fold(() => s.nextU32())).toBe(3124045904);
  });
});

describe('Sfc32Rng', () => {
  it('keeps its stream', () => {
    const r = new Sfc32Rng(42, 3);
    expect([r.u32(), r.u32(), r.u32(), r.u32()]).toEqual([1883110062, 712207713, 3953221396, 1469297753]);
    expect(r.uniform()).toBe(0.03645567063193206);
    expect(r.int(1000)).toBe(862);
    expect(r.normal()).toBe(0.5855428679123021);
    expect(Array.from(r.permutation(8))).toEqual([7, 3, 4, 5, 6, 1, 2, 0]);
    const s = new Sfc32Rng(9);
    expect(fold(() => s.u32())).toBe(3140727940);
  });
  it('pcgHash keeps its values (it seeds Sfc32Rng and the GPU noise)', () => {
    expect([pcgHash(0), pcgHash(12345), pcgHash(0xffffffff)]).toEqual([129708002, 4099845390, 3861530882]);
  });
});
