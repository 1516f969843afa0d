// Seeded test data shared by the kernel tests (mulberry32: tiny, fast, good enough for test inputs).

/** float32 unit roundoff. */
export const EPS32 = 2 ** -24;

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

/** n values uniform in [−scale, scale). */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => scale * (r() * 2 - 1));
}
