/**
 * Statistics the paper reports (spec 3.1): mean, sample std, Student t and normal quantiles, t/z
 * confidence intervals exactly as `compute_confidence_interval` (t for n <= 30, z above), Wilson score
 * intervals for booleans, Welch's t-test, and the hierarchical per-question -> per-seed -> over-seeds
 * aggregation of the plots. Special functions are computed from scratch (log-gamma, regularized
 * incomplete gamma and beta) to about 1e-13 relative accuracy; tests compare against scipy.
 */

// ---------------------------------------------------------------------------------------------
// Descriptive statistics
// ---------------------------------------------------------------------------------------------

export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/** Sample variance (ddof = 1, pandas' default); NaN for fewer than 2 values. */
export function sampleVariance(values: readonly number[]): number {
  const n = values.length;
  if (n < 2) return NaN;
  const m = mean(values);
  let ss = 0;
  for (const v of values) ss += (v - m) * (v - m);
  return ss / (n - 1);
}

/** Sample standard deviation (ddof = 1). */
export function sampleStd(values: readonly number[]): number {
  return Math.sqrt(sampleVariance(values));
}

// ---------------------------------------------------------------------------------------------
// Special functions
// ---------------------------------------------------------------------------------------------

const LANCZOS_G = 7;
const LANCZOS_COEFFICIENTS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];
const LOG_SQRT_2PI = 0.5 * Math.log(2 * Math.PI);

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; reflection below 0.5). */
export function logGamma(x: number): number {
  if (!(x > 0)) return NaN;
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const z = x - 1;
  let series = LANCZOS_COEFFICIENTS[0];
  for (let i = 1; i < LANCZOS_COEFFICIENTS.length; i++) series += LANCZOS_COEFFICIENTS[i] / (z + i);
  const t = z + LANCZOS_G + 0.5;
  return LOG_SQRT_2PI + (z + 0.5) * Math.log(t) - t + Math.log(series);
}

const EPS = 1e-16;
const TINY = 1e-300;
const MAX_ITERATIONS = 10_000;

/** Regularized upper incomplete gamma Q(a, x) (series for x < a + 1, Lentz continued fraction otherwise). */
export function regularizedGammaQ(a: number, x: number): number {
  if (x < 0 || !(a > 0)) return NaN;
  if (x === 0) return 1;
  const logPrefactor = -x + a * Math.log(x) - logGamma(a);
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < MAX_ITERATIONS; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * EPS) break;
    }
    return 1 - sum * Math.exp(logPrefactor);
  }
  let b = x + 1 - a;
  let c = 1 / TINY;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < MAX_ITERATIONS; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < TINY) d = TINY;
    c = b + an / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < EPS) break;
  }
  return Math.exp(logPrefactor) * h;
}

/** Continued fraction for the incomplete beta function (modified Lentz). */
function betaContinuedFraction(a: number, b: number, x: number): number {
  const qab = a + b;
  const qap = a + 1;
  const qam = a - 1;
  let c = 1;
  let d = 1 - (qab * x) / qap;
  if (Math.abs(d) < TINY) d = TINY;
  d = 1 / d;
  let h = d;
  for (let m = 1; m < MAX_ITERATIONS; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + aa / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (qab + m) * x) / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + aa / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < EPS) break;
  }
  return h;
}

/**
 * Regularized incomplete beta I_x(a, b). `oneMinusX` may be passed when it is known more precisely
 * than 1 - x (avoids cancellation near x = 1).
 */
export function regularizedIncompleteBeta(x: number, a: number, b: number, oneMinusX = 1 - x): number {
  if (x < 0 || x > 1 || !(a > 0) || !(b > 0)) return NaN;
  if (x === 0) return 0;
  if (oneMinusX === 0) return 1;
  const logFront = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(oneMinusX);
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(logFront) * betaContinuedFraction(a, b, x)) / a;
  return 1 - (Math.exp(logFront) * betaContinuedFraction(b, a, oneMinusX)) / b;
}

// ---------------------------------------------------------------------------------------------
// Normal distribution
// ---------------------------------------------------------------------------------------------

/** Standard normal CDF via erfc(z) = Q(1/2, z^2). */
export function normalCdf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const upperHalf = 0.5 * regularizedGammaQ(0.5, (x * x) / 2); // P(Z > |x|)
  return x < 0 ? upperHalf : 1 - upperHalf;
}

function normalPdf(x: number): number {
  return Math.exp(-0.5 * x * x - LOG_SQRT_2PI);
}

/** Standard normal quantile (scipy `norm.ppf`): Abramowitz-Stegun 26.2.23 start, Newton on the tail. */
export function normalQuantile(p: number): number {
  if (Number.isNaN(p) || p < 0 || p > 1) return NaN;
  if (p === 0) return -Infinity;
  if (p === 1) return Infinity;
  if (p === 0.5) return 0;
  // Work with the smaller tail q (1 - p is exact for p >= 0.5), return -x for the lower tail.
  const q = p < 0.5 ? p : 1 - p;
  const t = Math.sqrt(-2 * Math.log(q));
  let x = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
  for (let i = 0; i < 100; i++) {
    const tail = 0.5 * regularizedGammaQ(0.5, (x * x) / 2); // P(Z > x), x > 0
    const step = (tail - q) / normalPdf(x); // d tail / dx = -pdf
    x += step;
    if (Math.abs(step) <= 1e-15 * Math.abs(x)) break;
  }
  return p < 0.5 ? -x : x;
}

// ---------------------------------------------------------------------------------------------
// Student t distribution
// ---------------------------------------------------------------------------------------------

/** P(T > |t|) for T ~ t(df): I_{df/(df+t^2)}(df/2, 1/2) / 2. */
function studentTUpperTail(absT: number, df: number): number {
  if (absT === Infinity) return 0;
  const t2 = absT * absT;
  return 0.5 * regularizedIncompleteBeta(df / (df + t2), df / 2, 0.5, t2 / (df + t2));
}

export function studentTCdf(t: number, df: number): number {
  if (Number.isNaN(t) || !(df > 0)) return NaN;
  const tail = studentTUpperTail(Math.abs(t), df);
  return t < 0 ? tail : 1 - tail;
}

function studentTPdf(t: number, df: number): number {
  const logDensity =
    logGamma((df + 1) / 2) - logGamma(df / 2) - 0.5 * Math.log(df * Math.PI) - ((df + 1) / 2) * Math.log1p((t * t) / df);
  return Math.exp(logDensity);
}

/** Student t quantile (scipy `t.ppf(p, df)`), by safeguarded Newton on the upper tail. */
export function studentTQuantile(p: number, df: number): number {
  if (Number.isNaN(p) || p < 0 || p > 1 || !(df > 0)) return NaN;
  if (p === 0) return -Infinity;
  if (p === 1) return Infinity;
  if (p === 0.5) return 0;
  const q = p < 0.5 ? p : 1 - p; // target upper-tail probability, < 0.5
  // Bracket the root: tail(lo) > q >= tail(hi).
  let lo = 0;
  let hi = 1;
  while (studentTUpperTail(hi, df) > q) {
    lo = hi;
    hi *= 2;
    if (hi > 1e300) return p < 0.5 ? -Infinity : Infinity;
  }
  let x = 0.5 * (lo + hi);
  for (let i = 0; i < 500; i++) {
    const diff = studentTUpperTail(x, df) - q;
    if (diff === 0) break;
    if (diff > 0) lo = x;
    else hi = x;
    let next = x + diff / studentTPdf(x, df);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi); // Newton left the bracket: bisect
    const converged = Math.abs(next - x) <= 1e-15 * Math.abs(next) || hi - lo <= 1e-15 * hi;
    x = next;
    if (converged) break;
  }
  return p < 0.5 ? -x : x;
}

// ---------------------------------------------------------------------------------------------
// Intervals and tests
// ---------------------------------------------------------------------------------------------

export interface Interval {
  mean: number;
  lower: number;
  upper: number;
  count: number;
  confidence: number;
}

/** Two-sided critical value: t(df) quantile of (1 + confidence) / 2. */
export function tCritical(confidence: number, df: number): number {
  return studentTQuantile((1 + confidence) / 2, df);
}

export type CriticalValueMethod = 'paper' | 't' | 'z';

export interface ConfidenceIntervalOptions {
  confidence?: number;
  /**
   * 'paper' (default) = `compute_confidence_interval`: t with n - 1 df when n <= 30, normal z above;
   * 't' always uses t; 'z' always uses the normal.
   */
  method?: CriticalValueMethod;
}

/** mean +- critical * std(ddof=1) / sqrt(n). NaN bounds for n < 2, as pandas/scipy give. */
export function confidenceInterval(values: readonly number[], options: ConfidenceIntervalOptions = {}): Interval {
  const confidence = options.confidence ?? 0.95;
  const method = options.method ?? 'paper';
  const n = values.length;
  const m = mean(values);
  const se = sampleStd(values) / Math.sqrt(n);
  const useT = method === 't' || (method === 'paper' && n <= 30);
  const critical = useT ? tCritical(confidence, n - 1) : normalQuantile((1 + confidence) / 2);
  const margin = critical * se;
  return { mean: m, lower: m - margin, upper: m + margin, count: n, confidence };
}

/** Student t interval regardless of n. */
export function tInterval(values: readonly number[], confidence = 0.95): Interval {
  return confidenceInterval(values, { confidence, method: 't' });
}

/** Wilson score interval for k successes in n trials, clipped to [0, 1] (`compute_bernoulli_confidence_interval`). */
export function wilsonInterval(successes: number, trials: number, confidence = 0.95): Interval {
  const n = trials;
  const p = successes / n;
  const z = normalQuantile((1 + confidence) / 2);
  const denominator = 1 + (z * z) / n;
  const center = (p + (z * z) / (2 * n)) / denominator;
  const halfWidth = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / denominator;
  return { mean: p, lower: Math.max(0, center - halfWidth), upper: Math.min(1, center + halfWidth), count: n, confidence };
}

/** Wilson interval of a boolean column (how the paper treats boolean values). */
export function bernoulliInterval(values: readonly boolean[], confidence = 0.95): Interval {
  return wilsonInterval(values.filter(Boolean).length, values.length, confidence);
}

export interface WelchResult {
  t: number;
  df: number;
  /** Two-sided p-value. */
  p: number;
}

/** Welch's unequal-variance t-test (scipy `ttest_ind(a, b, equal_var=False)`), Welch-Satterthwaite df. */
export function welchTTest(a: readonly number[], b: readonly number[]): WelchResult {
  const va = sampleVariance(a) / a.length;
  const vb = sampleVariance(b) / b.length;
  const t = (mean(a) - mean(b)) / Math.sqrt(va + vb);
  const df = ((va + vb) * (va + vb)) / ((va * va) / (a.length - 1) + (vb * vb) / (b.length - 1));
  const p = Number.isNaN(t) || Number.isNaN(df) ? NaN : 2 * studentTUpperTail(Math.abs(t), df);
  return { t, df, p };
}

// ---------------------------------------------------------------------------------------------
// The paper's hierarchical aggregation
// ---------------------------------------------------------------------------------------------

export interface ScoredSample {
  /** Fine-tuning seed (one student model). */
  seed: string | number;
  /** Question id or text. */
  question: string | number;
  /** 0/1 indicator (or any score) of one sampled response. */
  score: number;
}

export interface SeedMean {
  seed: string | number;
  mean: number;
  questions: number;
}

export interface HierarchicalResult extends Interval {
  perSeed: SeedMean[];
}

/**
 * Mean per (seed, question) -> mean per seed -> mean and interval over seeds (t when <= 30 seeds),
 * lower bound clipped at 0 (NaN kept), as truesight/experiments/paper/plot_xm.py.
 */
export function aggregateBySeed(samples: readonly ScoredSample[], options: ConfidenceIntervalOptions = {}): HierarchicalResult {
  const bySeed = new Map<string | number, Map<string | number, number[]>>();
  for (const s of samples) {
    let questions = bySeed.get(s.seed);
    if (!questions) bySeed.set(s.seed, (questions = new Map()));
    let scores = questions.get(s.question);
    if (!scores) questions.set(s.question, (scores = []));
    scores.push(s.score);
  }
  const perSeed: SeedMean[] = [...bySeed].map(([seed, questions]) => ({
    seed,
    mean: mean([...questions.values()].map(mean)),
    questions: questions.size,
  }));
  const interval = confidenceInterval(
    perSeed.map((s) => s.mean),
    options,
  );
  return { ...interval, lower: Number.isNaN(interval.lower) ? interval.lower : Math.max(0, interval.lower), perSeed };
}

// ---------------------------------------------------------------------------------------------
// Paired designs and multiple comparisons
// ---------------------------------------------------------------------------------------------

export interface DifferenceTest {
  /** Mean difference. */
  diff: number;
  /** 95% (or `confidence`) interval of the difference; NaN bounds when it cannot be formed. */
  lower: number;
  upper: number;
  t: number;
  df: number;
  /** Two-sided p-value; NaN when fewer than 2 pairs or no variance. */
  p: number;
  count: number;
}

/**
 * Spread below which values are one value to rounding: a relative 1e-6 of their magnitude, ten times float32's
 * rounding of a probability computed on the GPU. Replicates (seeds) that agree this closely are not independent
 * draws (e.g. a dataset that fits in one batch, where the seed's order changes nothing), so no t-test is formed.
 */
export const ROUNDING_SPREAD = 1e-6;

const magnitude = (...xs: (readonly number[])[]) => xs.reduce((m, v) => v.reduce((a, x) => Math.max(a, Math.abs(x)), m), 0);

/**
 * Paired t-test of a − b over matched pairs (scipy `ttest_rel`): a one-sample t on the differences,
 * n − 1 df, with its t interval. With no variance of the differences beyond rounding (ROUNDING_SPREAD of the
 * values, or of `scale` when the values are themselves differences of quantities that large) the test is undefined
 * (NaN p), unless every difference is 0 to rounding too (p = 1).
 */
export function pairedTTest(a: readonly number[], b: readonly number[], confidence = 0.95, scale = 0): DifferenceTest {
  if (a.length !== b.length) throw new RangeError(`pairedTTest: ${a.length} vs ${b.length} values`);
  const d = a.map((x, i) => x - b[i]);
  const n = d.length;
  const m = mean(d);
  if (n < 2) return { diff: m, lower: NaN, upper: NaN, t: NaN, df: NaN, p: NaN, count: n };
  const se = sampleStd(d) / Math.sqrt(n);
  const df = n - 1;
  const floor = ROUNDING_SPREAD * Math.max(scale, magnitude(a, b));
  if (se === 0 || sampleStd(d) <= floor) {
    const zero = Math.abs(m) <= floor;
    return { diff: m, lower: NaN, upper: NaN, t: zero ? 0 : Math.sign(m) * Infinity, df, p: zero ? 1 : NaN, count: n };
  }
  const t = m / se;
  const margin = tCritical(confidence, df) * se;
  return { diff: m, lower: m - margin, upper: m + margin, t, df, p: 2 * studentTUpperTail(Math.abs(t), df), count: n };
}

/** Welch's two-sample comparison of mean(a) − mean(b) with its Welch–Satterthwaite interval (NaN p within rounding of `scale`, as pairedTTest). */
export function welchDifference(a: readonly number[], b: readonly number[], confidence = 0.95, scale = 0): DifferenceTest {
  const w = welchTTest(a, b);
  const diff = mean(a) - mean(b);
  const se = Math.sqrt(sampleVariance(a) / a.length + sampleVariance(b) / b.length);
  const ok = Number.isFinite(w.df) && se > ROUNDING_SPREAD * Math.max(scale, magnitude(a, b));
  const margin = ok ? tCritical(confidence, w.df) * se : NaN;
  return { diff, lower: diff - margin, upper: diff + margin, t: w.t, df: w.df, p: ok ? w.p : NaN, count: a.length + b.length };
}

/**
 * Holm's step-down adjustment (statsmodels `multipletests(method='holm')`): sort ascending,
 * p_(i) · (m − i + 1), running maximum, capped at 1. NaN p-values are left out of the family and stay NaN.
 */
export function holmAdjust(p: readonly number[]): number[] {
  const idx = p.map((v, i) => [v, i] as const).filter(([v]) => Number.isFinite(v)).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  const m = idx.length;
  const out = p.map(() => NaN);
  let running = 0;
  idx.forEach(([v, i], k) => {
    running = Math.max(running, Math.min(1, (m - k) * v));
    out[i] = running;
  });
  return out;
}
