import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  aggregateBySeed,
  bernoulliInterval,
  confidenceInterval,
  logGamma,
  mean,
  normalCdf,
  normalQuantile,
  regularizedIncompleteBeta,
  sampleStd,
  studentTCdf,
  studentTQuantile,
  tInterval,
  welchTTest,
  wilsonInterval,
  type ScoredSample,
} from '../src/experiment/paper/stats.ts';

// scipy 1.17.1 reference values (tests/fixtures/experiment/make_fixtures.py).
const ref = JSON.parse(readFileSync(new URL('./fixtures/experiment/stats.json', import.meta.url), 'utf8')) as {
  t_ppf_975: Array<[number, number]>;
  t_ppf: Array<[number, number, number]>;
  t_cdf: Array<[number, number, number]>;
  norm_ppf: Array<[number, number]>;
  norm_cdf: Array<[number, number]>;
  welch: Array<{ a: number[]; b: number[]; t: number; p: number; df: number }>;
  ci: Array<{ values: number[]; mean: number; std: number; lower: number; upper: number }>;
  wilson: Array<{ k: number; n: number; lower: number; upper: number }>;
};

// Closed form for df 2: t = (2p - 1) * sqrt(2 / (4p(1 - p))).
const T975_DF2 = 0.95 * Math.sqrt(2 / (4 * 0.975 * 0.025));

/** |got - want| <= rel * |want| + abs. */
const close = (got: number, want: number, rel = 1e-9, abs = 1e-13): void => {
  expect(Math.abs(got - want), `got ${got}, want ${want}`).toBeLessThanOrEqual(rel * Math.abs(want) + abs);
};

describe('descriptive statistics', () => {
  it('mean and sample std (ddof 1)', () => {
    expect(mean([1, 2, 3, 4])).toBe(2.5);
    close(sampleStd([1, 2, 3, 4]), Math.sqrt(5 / 3));
    expect(sampleStd([2, 2, 2])).toBe(0);
    expect(sampleStd([5])).toBeNaN();
    expect(mean([])).toBeNaN();
  });
});

describe('special functions', () => {
  it('logGamma at known points', () => {
    close(logGamma(1), 0, 0, 1e-14);
    close(logGamma(0.5), 0.5 * Math.log(Math.PI), 1e-14);
    close(logGamma(10), Math.log(362880), 1e-14);
    close(logGamma(0.25), Math.log(3.625609908221908), 1e-13);
  });
  it('incomplete beta closed forms', () => {
    close(regularizedIncompleteBeta(0.3, 1, 1), 0.3, 1e-14);
    close(regularizedIncompleteBeta(0.3, 2, 1), 0.09, 1e-13);
    close(regularizedIncompleteBeta(0.7, 1, 3), 1 - 0.3 ** 3, 1e-13);
    expect(regularizedIncompleteBeta(0, 2, 3)).toBe(0);
    expect(regularizedIncompleteBeta(1, 2, 3)).toBe(1);
  });
});

describe('normal distribution vs scipy', () => {
  it('ppf', () => {
    for (const [p, want] of ref.norm_ppf) close(normalQuantile(p), want, 1e-12, 1e-15);
    close(normalQuantile(0.975), 1.959963984540054, 1e-14);
  });
  it('cdf', () => {
    for (const [x, want] of ref.norm_cdf) close(normalCdf(x), want, 1e-12, 1e-16);
  });
});

describe('Student t vs scipy', () => {
  it('t.ppf(0.975, df) for df 1..30, 40, 60, 100, 1000 and fractional df', () => {
    expect(ref.t_ppf_975.length).toBeGreaterThan(30);
    for (const [df, want] of ref.t_ppf_975) close(studentTQuantile(0.975, df), want, 1e-10);
    close(studentTQuantile(0.975, 1), Math.tan(0.475 * Math.PI), 1e-12); // closed form for df 1
    close(studentTQuantile(0.975, 2), T975_DF2, 1e-12);
    close(studentTQuantile(0.975, 4), 2.7764451051977934, 1e-12);
  });
  it('t.ppf at other probabilities', () => {
    for (const [p, df, want] of ref.t_ppf) close(studentTQuantile(p, df), want, 1e-9, 1e-14);
  });
  it('t.cdf', () => {
    for (const [x, df, want] of ref.t_cdf) close(studentTCdf(x, df), want, 1e-10, 1e-15);
  });
  it('edge cases', () => {
    expect(studentTQuantile(0.5, 3)).toBe(0);
    expect(studentTQuantile(1, 3)).toBe(Infinity);
    expect(studentTQuantile(0.975, 0)).toBeNaN();
  });
});

describe('intervals and tests vs scipy/numpy', () => {
  it('paper CI: t for n <= 30, z above', () => {
    for (const c of ref.ci) {
      const ci = confidenceInterval(c.values);
      close(ci.mean, c.mean, 1e-12, 1e-15);
      close(sampleStd(c.values), c.std, 1e-12);
      close(ci.lower, c.lower, 1e-10, 1e-14);
      close(ci.upper, c.upper, 1e-10, 1e-14);
    }
  });
  it('t-interval and z-interval by request', () => {
    const values = Array.from({ length: 31 }, (_, i) => i / 30);
    const t = tInterval(values);
    const z = confidenceInterval(values, { method: 'z' });
    const paper = confidenceInterval(values);
    expect(paper.upper).toBe(z.upper); // n = 31 > 30 -> z
    expect(t.upper).toBeGreaterThan(z.upper);
    close(t.upper - t.mean, studentTQuantile(0.975, 30) * (sampleStd(values) / Math.sqrt(31)), 1e-13);
  });
  it('hand-checkable t interval', () => {
    // [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) in closed form
    const ci = tInterval([1, 2, 3]);
    close(ci.upper, 2 + T975_DF2 / Math.sqrt(3), 1e-12);
    close(ci.lower, 2 - T975_DF2 / Math.sqrt(3), 1e-12);
    expect(confidenceInterval([0.4]).lower).toBeNaN();
  });
  it('Welch t-test', () => {
    for (const w of ref.welch) {
      const r = welchTTest(w.a, w.b);
      close(r.t, w.t, 1e-12);
      close(r.df, w.df, 1e-12);
      close(r.p, w.p, 1e-9, 1e-15);
    }
  });
  it('Wilson interval', () => {
    for (const w of ref.wilson) {
      const r = wilsonInterval(w.k, w.n);
      close(r.lower, w.lower, 1e-12, 1e-15);
      close(r.upper, w.upper, 1e-12, 1e-15);
    }
    const b = bernoulliInterval([true, false, false, true, false, false, false, false, false, false]);
    expect(b.mean).toBe(0.2);
    expect(b).toEqual(wilsonInterval(2, 10));
  });
});

describe('aggregateBySeed (per question -> per seed -> over seeds)', () => {
  it('averages within question first, then within seed', () => {
    // Seed 0: q1 has 4 samples (mean 0.75), q2 has 1 sample (0) -> seed mean 0.375 (not 3/5).
    // Seed 1: q1 0.5, q2 1 -> 0.75. Seed 2: 0, 0 -> 0.
    const samples: ScoredSample[] = [
      ...[1, 1, 1, 0].map((score) => ({ seed: 0, question: 'q1', score })),
      { seed: 0, question: 'q2', score: 0 },
      ...[1, 0].map((score) => ({ seed: 1, question: 'q1', score })),
      ...[1, 1].map((score) => ({ seed: 1, question: 'q2', score })),
      { seed: 2, question: 'q1', score: 0 },
      { seed: 2, question: 'q2', score: 0 },
    ];
    const result = aggregateBySeed(samples);
    expect(result.perSeed).toEqual([
      { seed: 0, mean: 0.375, questions: 2 },
      { seed: 1, mean: 0.75, questions: 2 },
      { seed: 2, mean: 0, questions: 2 },
    ]);
    close(result.mean, 0.375, 1e-15);
    const sd = sampleStd([0.375, 0.75, 0]);
    close(result.upper, 0.375 + T975_DF2 * (sd / Math.sqrt(3)), 1e-12);
    expect(result.lower).toBe(0); // raw lower bound is negative -> clipped
    expect(result.count).toBe(3);
  });
  it('keeps a NaN lower bound for a single seed', () => {
    const result = aggregateBySeed([{ seed: 'a', question: 1, score: 1 }]);
    expect(result.mean).toBe(1);
    expect(result.lower).toBeNaN();
  });
});
