/**
 * Bit-exact port of numpy's `np.random.default_rng(seed)` = `Generator(PCG64(SeedSequence(seed)))`,
 * limited to what the paper's pipeline uses: integers(lo, hi) (default int64 dtype, high-exclusive),
 * choice(list), random(), shuffle/permutation.
 *
 * Checked against numpy 2.4.6 via tests/fixtures/experiment/pcg64.json.
 */

export type SeedInput = number | bigint | ReadonlyArray<number | bigint>;

const MASK32 = 0xffffffffn;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;

// ---------------------------------------------------------------------------------------------
// SeedSequence (numpy/random/bit_generator.pyx). All arithmetic is uint32 with wraparound.
// ---------------------------------------------------------------------------------------------
const POOL_SIZE = 4;
const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;
const XSHIFT = 16; // 4 bytes * 8 / 2

function toUint32Words(value: number | bigint): number[] {
  let n: bigint;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`seed must be a safe integer, got ${value}`);
    n = BigInt(value);
  } else {
    n = value;
  }
  if (n < 0n) throw new RangeError('SeedSequence expects non-negative integers');
  if (n === 0n) return [0];
  const words: number[] = [];
  while (n > 0n) {
    words.push(Number(n & MASK32));
    n >>= 32n;
  }
  return words;
}

/** numpy `_coerce_to_uint32_array`: an int becomes its little-endian 32-bit words; a sequence concatenates its elements' words. */
function entropyWords(seed: SeedInput): number[] {
  if (typeof seed === 'number' || typeof seed === 'bigint') return toUint32Words(seed);
  return seed.flatMap((v) => toUint32Words(v));
}

/** numpy's SeedSequence for a plain integer or integer-list entropy (no spawn key). */
export class SeedSequence {
  readonly pool: Uint32Array;

  constructor(seed: SeedInput) {
    const entropy = entropyWords(seed);
    const pool = new Uint32Array(POOL_SIZE);
    let hashConst = INIT_A;
    const hashmix = (input: number): number => {
      let value = (input ^ hashConst) >>> 0;
      hashConst = Math.imul(hashConst, MULT_A) >>> 0;
      value = Math.imul(value, hashConst) >>> 0;
      value = (value ^ (value >>> XSHIFT)) >>> 0;
      return value;
    };
    const mix = (x: number, y: number): number => {
      let result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
      result = (result ^ (result >>> XSHIFT)) >>> 0;
      return result;
    };
    for (let i = 0; i < POOL_SIZE; i++) pool[i] = hashmix(i < entropy.length ? entropy[i] : 0);
    for (let src = 0; src < POOL_SIZE; src++) {
      for (let dst = 0; dst < POOL_SIZE; dst++) {
        if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
      }
    }
    // Entropy longer than the pool is folded in afterwards.
    for (let src = POOL_SIZE; src < entropy.length; src++) {
      for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src]));
    }
    this.pool = pool;
  }

  /** `generate_state(nWords, np.uint32)`. */
  generateState32(nWords: number): Uint32Array {
    const out = new Uint32Array(nWords);
    let hashConst = INIT_B;
    for (let i = 0; i < nWords; i++) {
      let value = (this.pool[i % POOL_SIZE] ^ hashConst) >>> 0;
      hashConst = Math.imul(hashConst, MULT_B) >>> 0;
      value = Math.imul(value, hashConst) >>> 0;
      value = (value ^ (value >>> XSHIFT)) >>> 0;
      out[i] = value;
    }
    return out;
  }

  /** `generate_state(nWords, np.uint64)`: pairs of uint32 words, little-endian (low word first). */
  generateState64(nWords: number): bigint[] {
    const words = this.generateState32(nWords * 2);
    const out: bigint[] = [];
    for (let i = 0; i < nWords; i++) out.push(BigInt(words[2 * i]) | (BigInt(words[2 * i + 1]) << 32n));
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// PCG64 bit generator (numpy/random/src/pcg64/pcg64.h): 128-bit LCG, XSL-RR 128/64 output.
// ---------------------------------------------------------------------------------------------
const PCG_MULTIPLIER_128 = (2549297995355413924n << 64n) + 4865540595714422341n;

export class PCG64 {
  private state: bigint;
  private readonly inc: bigint;
  // numpy's next_uint32 serves the upper half of a 64-bit draw on the following call.
  private hasUint32 = false;
  private bufferedUint32 = 0;

  constructor(seed: SeedInput | SeedSequence) {
    const seq = seed instanceof SeedSequence ? seed : new SeedSequence(seed);
    const [s0, s1, i0, i1] = seq.generateState64(4);
    const initState = (s0 << 64n) | s1;
    const initSeq = (i0 << 64n) | i1;
    // pcg_setseq_128_srandom_r
    this.inc = ((initSeq << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + initState) & MASK128;
    this.step();
  }

  private step(): void {
    this.state = (this.state * PCG_MULTIPLIER_128 + this.inc) & MASK128;
  }

  /** Internal state in the same form numpy reports in `bit_generator.state`. */
  get stateSnapshot(): { state: bigint; inc: bigint; hasUint32: boolean; uinteger: number } {
    return { state: this.state, inc: this.inc, hasUint32: this.hasUint32, uinteger: this.bufferedUint32 };
  }

  nextUint64(): bigint {
    this.step();
    const s = this.state;
    const xored = ((s >> 64n) ^ s) & MASK64;
    const rot = s >> 122n;
    return ((xored >> rot) | (xored << ((64n - rot) & 63n))) & MASK64;
  }

  nextUint32(): number {
    if (this.hasUint32) {
      this.hasUint32 = false;
      return this.bufferedUint32;
    }
    const next = this.nextUint64();
    this.hasUint32 = true;
    this.bufferedUint32 = Number(next >> 32n);
    return Number(next & MASK32);
  }

  /** numpy next_double: 53 random bits scaled to [0, 1). */
  nextDouble(): number {
    return Number(this.nextUint64() >> 11n) * (1 / 9007199254740992);
  }
}

// ---------------------------------------------------------------------------------------------
// Generator (numpy/random/_generator.pyx, _bounded_integers.pyx.in, src/distributions/distributions.c)
// ---------------------------------------------------------------------------------------------
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

/** floor(a * b / 2^32) and (a * b) mod 2^32 for a, b < 2^32, exact in doubles. */
function mulHiLo32(a: number, b: number): { hi: number; lo: number } {
  const aHigh = a >>> 16;
  const aLow = a & 0xffff;
  const upper = aHigh * b; // < 2^48
  const lower = aLow * b; // < 2^48
  const carryPart = (upper % 65536) * 65536 + lower; // < 2^49, exact
  const hi = Math.floor(upper / 65536) + Math.floor(carryPart / 4294967296);
  const lo = carryPart % 4294967296;
  return { hi, lo };
}

export class Generator {
  readonly bitGenerator: PCG64;

  constructor(bitGenerator: PCG64) {
    this.bitGenerator = bitGenerator;
  }

  /** numpy buffered_bounded_lemire_uint32 with the buffer ignored (numpy's buffered_uint32 calls next_uint32). */
  private boundedLemire32(rng: number): number {
    const rngExcl = rng + 1;
    let m = mulHiLo32(this.bitGenerator.nextUint32(), rngExcl);
    if (m.lo < rngExcl) {
      const threshold = (0x100000000 - rngExcl) % rngExcl; // (UINT32_MAX - rng) % rng_excl
      while (m.lo < threshold) m = mulHiLo32(this.bitGenerator.nextUint32(), rngExcl);
    }
    return m.hi;
  }

  /** numpy bounded_lemire_uint64 (rng < 2^64 - 1). */
  private boundedLemire64(rng: bigint): bigint {
    const rngExcl = rng + 1n;
    let m = this.bitGenerator.nextUint64() * rngExcl;
    if ((m & MASK64) < rngExcl) {
      const threshold = (MASK64 - rng) % rngExcl;
      while ((m & MASK64) < threshold) m = this.bitGenerator.nextUint64() * rngExcl;
    }
    return m >> 64n;
  }

  /** numpy random_bounded_uint64_fill for one value: off + uniform draw on the closed range [0, rng]. */
  private boundedUint64(off: bigint, rng: bigint): bigint {
    if (rng === 0n) return off;
    if (rng <= MASK32) {
      // Ranges that fit in 32 bits use the 32-bit generator.
      const draw = rng === MASK32 ? this.bitGenerator.nextUint32() : this.boundedLemire32(Number(rng));
      return off + BigInt(draw);
    }
    if (rng === MASK64) return off + this.bitGenerator.nextUint64();
    return off + this.boundedLemire64(rng);
  }

  /** `rng.integers(low, high)` with numpy's defaults (dtype int64, high exclusive), as bigint. */
  integersBig(low: bigint, high: bigint): bigint {
    const closedHigh = high - 1n;
    if (low < INT64_MIN) throw new RangeError('low is out of bounds for int64');
    if (closedHigh > INT64_MAX) throw new RangeError('high is out of bounds for int64');
    if (low > closedHigh) throw new RangeError('low >= high');
    const rng = closedHigh - low; // fits in uint64
    const off = low & MASK64; // two's complement, as numpy casts to uint64
    const raw = this.boundedUint64(off, rng) & MASK64;
    return raw > INT64_MAX ? raw - (1n << 64n) : raw;
  }

  /** `rng.integers(low, high)` for safe-integer bounds (the result then is a safe integer too). */
  integers(low: number, high: number): number {
    if (!Number.isSafeInteger(low) || !Number.isSafeInteger(high)) {
      throw new RangeError(`integers() bounds must be safe integers (use integersBig), got ${low}, ${high}`);
    }
    return Number(this.integersBig(BigInt(low), BigInt(high)));
  }

  /** `rng.random()`: float64 in [0, 1). */
  random(): number {
    return this.bitGenerator.nextDouble();
  }

  /** `rng.choice(items)` (uniform, size=None): one `integers(0, len)` draw. */
  choice<T>(items: ReadonlyArray<T>): T {
    if (items.length === 0) throw new RangeError('choice() needs a non-empty list');
    return items[this.integers(0, items.length)];
  }

  /** numpy random_interval: uniform in [0, max] by masked rejection (used by shuffle). */
  private randomInterval(max: number): number {
    if (max === 0) return 0;
    if (max <= 0xffffffff) {
      let mask = max;
      mask |= mask >>> 1;
      mask |= mask >>> 2;
      mask |= mask >>> 4;
      mask |= mask >>> 8;
      mask |= mask >>> 16;
      mask >>>= 0;
      let value: number;
      do value = (this.bitGenerator.nextUint32() & mask) >>> 0;
      while (value > max);
      return value;
    }
    let mask = BigInt(max);
    for (const shift of [1n, 2n, 4n, 8n, 16n, 32n]) mask |= mask >> shift;
    let value: bigint;
    do value = this.bitGenerator.nextUint64() & mask;
    while (value > BigInt(max));
    return Number(value);
  }

  /** `rng.shuffle(list)` in place (Fisher-Yates from the end, as numpy's 1-d path). */
  shuffle<T>(items: T[]): void {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.randomInterval(i);
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
  }

  /** `rng.permutation(n)` for an int, or a shuffled copy of a list. */
  permutation(n: number): number[];
  permutation<T>(items: ReadonlyArray<T>): T[];
  permutation<T>(arg: number | ReadonlyArray<T>): Array<number | T> {
    const copy: Array<number | T> = typeof arg === 'number' ? Array.from({ length: arg }, (_, i) => i) : [...arg];
    this.shuffle(copy);
    return copy;
  }
}

/** `np.random.default_rng(seed)`. */
export function defaultRng(seed: SeedInput): Generator {
  return new Generator(new PCG64(seed));
}
