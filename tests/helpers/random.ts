// The tests' one seeded random source (mulberry32: tiny, fast, good enough for test inputs). Test data
// only: the generators whose streams artefacts depend on are in src/util/rng.ts.

/** float32 unit roundoff. */
export const EPS32 = 2 ** -24;

/** A generator source: a seed (a fresh stream) or a generator already in use (continues its stream). */
export type RandomSource = number | (() => number);

/** A seeded generator of uniforms in [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function source(src: RandomSource): () => number {
  return typeof src === 'number' ? rng(src) : src;
}

/** n float32 values uniform in [offset − scale, offset + scale). */
export function uniformArray(n: number, src: RandomSource, scale = 1, offset = 0): Float32Array {
  const r = source(src);
  return Float32Array.from({ length: n }, () => offset + scale * (r() * 2 - 1));
}

/** n float32 values ~ N(0, scale²) (Box–Muller, one normal per pair of uniforms). */
export function normalArray(n: number, src: RandomSource, scale = 1): Float32Array {
  const r = source(src);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = scale * Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  return x;
}

/** n integers uniform in [lo, hi). */
export function randomInts(n: number, lo: number, hi: number, src: RandomSource): number[] {
  const r = source(src);
  return Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
}
