/**
 * The project's seeded CPU random number generators. There are three because committed artefacts
 * depend on each one's exact bit stream (tests/util-rng.test.ts pins them); none may change:
 *
 * - SeedStreamRng: a numeric seed and a stream name; initial weights, LoRA init, batch orders
 *   (the committed tiny models).
 * - KeyedRng: keyed by a tuple of strings and numbers; the tiny corpus (the committed tokenizer and models).
 * - Sfc32Rng: keyed by numeric stream words; the MNIST experiment (the committed MNIST results).
 *
 * Python-compatible streams (numpy's PCG64, Python's random) live in src/experiment/paper/.
 */

/** 32-bit left rotation. */
function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** One splitmix32 output; advances state.s. */
function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a 32-bit hash of a string. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * The PCG-RXS-M-XS 32-bit hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", JCGT 2020);
 * src/kernels/common.ts has the same function in WGSL (PCG_WGSL).
 */
export function pcgHash(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The xoshiro128** generator (Blackman & Vigna); subclasses seed the four state words. */
abstract class Xoshiro128 {
  protected a = 0;
  protected b = 0;
  protected c = 0;
  protected d = 0;

  /** uniform 32-bit unsigned integer */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }
}

// ------------------------------------------------------------------------------------------------
// SeedStreamRng
// ------------------------------------------------------------------------------------------------

/** xoshiro128** seeded by splitmix32 from (seed, stream name); Box–Muller normals (cached spare). */
export class SeedStreamRng extends Xoshiro128 {
  private spare: number | null = null;

  /** seed: any number (integer part used, mixed with the optional stream string). */
  constructor(seed: number, stream = '') {
    super();
    const st = { s: (Math.trunc(seed) ^ Math.imul(fnv1a32(stream), 0x27d4eb2f)) | 0 };
    // mix in the high bits of large seeds too
    st.s = (st.s + Math.trunc(seed / 4294967296)) | 0;
    this.a = splitmix32(st);
    this.b = splitmix32(st);
    this.c = splitmix32(st);
    this.d = splitmix32(st);
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** uniform in [0, 1) with 53 random bits */
  uniform(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** standard normal (Box–Muller) */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u1 = 0;
    while (u1 === 0) u1 = this.uniform();
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  fillNormal<T extends Float32Array | Float64Array>(out: T, mean = 0, std = 1): T {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
    return out;
  }
}

// ------------------------------------------------------------------------------------------------
// KeyedRng
// ------------------------------------------------------------------------------------------------

/** 32-bit FNV-1a over the parts (strings and numbers), then a murmur3 finaliser. */
function hashParts(parts: ReadonlyArray<string | number>): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    const s = typeof part === 'number' ? `#${part}` : `$${part}`;
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h ^= 0x1f; // part separator
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** xoshiro128** seeded by splitmix32 from a hash of the key parts; small and fast, not numpy-compatible. */
export class KeyedRng extends Xoshiro128 {
  constructor(...parts: Array<string | number>) {
    super();
    const st = { s: hashParts(parts) | 0 };
    this.a = splitmix32(st);
    this.b = splitmix32(st);
    this.c = splitmix32(st);
    this.d = splitmix32(st) | 1;
  }

  /** Uniform in [0, 1). */
  random(): number {
    return (this.nextU32() * 2 ** 21 + (this.nextU32() >>> 11)) / 2 ** 53;
  }

  /** Uniform integer in [lo, hi) (hi exclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.random() * (hi - lo));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)];
  }

  chance(p: number): boolean {
    return this.random() < p;
  }

  /** Index drawn with probability proportional to weights[i]. */
  weighted(weights: readonly number[]): number {
    let total = 0;
    for (const w of weights) total += w;
    let r = this.random() * total;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i];
      if (r < 0) return i;
    }
    return weights.length - 1;
  }
}

// ------------------------------------------------------------------------------------------------
// Sfc32Rng
// ------------------------------------------------------------------------------------------------

/** sfc32 (Chris Doty-Humphrey's Small Fast Counting generator), seeded from hashed stream words. */
export class Sfc32Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(...stream: number[]) {
    let h = 0x9e3779b9;
    for (const s of stream) h = pcgHash((h ^ (s >>> 0)) >>> 0);
    this.a = pcgHash(h ^ 1);
    this.b = pcgHash(h ^ 2);
    this.c = pcgHash(h ^ 3);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }
  /** Uniform in (0, 1) with 53 bits. */
  uniform(): number {
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6) + 0.5) / 9007199254740992;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
  normal(): number {
    return Math.sqrt(-2 * Math.log(this.uniform())) * Math.cos(2 * Math.PI * this.uniform());
  }
  /** Fisher–Yates permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    return p;
  }
}
