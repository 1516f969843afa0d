// Shared shape of benchmark results. Each bench/<family>.ts exports
//   export async function bench<Family>(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]>
// and scripts/bench.ts runs them all, writes bench/results/<family>.json and prints a table.

export interface BenchOptions {
  /** Smaller sizes and fewer repetitions (for a smoke run). */
  quick: boolean;
}

export interface BenchResult {
  /** Family, e.g. 'matmul'. */
  family: string;
  /** What was measured, e.g. 'A·B N=1024 (variant rowcast8x4)'. */
  name: string;
  /** Primary figure and its unit, e.g. 14.2 'GFLOP/s', 3.1 'GB/s', 1200 'tok/s', 15 'µs/dispatch'. */
  value: number;
  unit: string;
  /** Baseline run in the same process (e.g. the float64 CPU reference or the previous variant). */
  baseline?: { name: string; value: number; unit: string };
  /** value / baseline.value, for throughput units (higher is better). */
  ratio?: number;
  /** Anything else worth keeping: shapes, variant, iterations, wall ms. */
  details?: Record<string, unknown>;
}
