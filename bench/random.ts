// Seeded random weights for benchmarks: only realistic magnitudes matter, so a fast xorshift32.

/** n values uniform with the given std and mean. */
export function randomArray(n: number, std: number, seed: number, mean = 0): Float32Array {
  const a = new Float32Array(n);
  const k = (2 * Math.sqrt(3) * std) / 4294967296;
  const off = mean - Math.sqrt(3) * std;
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    a[i] = off + (x >>> 0) * k;
  }
  return a;
}
