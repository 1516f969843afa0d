// Progress bars: plain lines off a TTY, and an ETA that the first unit's one-off setup does not inflate.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Progress, setProgressSink, type ProgressState } from '../src/util/progress.ts';

afterEach(() => {
  vi.useRealTimers();
  setProgressSink(null);
});

function plainStream() {
  const lines: string[] = [];
  return { lines, stream: { isTTY: false, write: (s: string) => (lines.push(s), true) } as unknown as NodeJS.WriteStream };
}

describe('Progress', () => {
  it('estimates the time left from the rate after the first update (a slow first step, then steady steps)', () => {
    vi.useFakeTimers();
    vi.setSystemTime(0);
    const states: ProgressState[] = [];
    setProgressSink((s) => states.push(s));
    const { lines, stream } = plainStream();
    const bar = new Progress('students', 360, { unit: 'step', stream });
    vi.setSystemTime(40_000); // the first step carries 40 s of pipeline compiles
    bar.update(1);
    // One update only: the overall rate (1 step in 40 s) is all there is.
    expect(states.at(-1)!.etaS).toBeCloseTo(359 * 40, 6);
    vi.setSystemTime(44_000);
    bar.update(3); // then 2 steps in 4 s
    expect(states.at(-1)!.etaS).toBeCloseTo(357 * 2, 6);
    expect(states.at(-1)!.rate).toBeCloseTo(3 / 44, 12); // the shown rate stays the overall one
    bar.finish(); // off a TTY the line between deciles waits for the next decile, 30 s or the end
    expect(lines.at(-1)).toMatch(/^students: 1% 3\/360 step 0\.07 step\/s elapsed 44s ETA 11m54s\n$/);
  });

  it('has no ETA before any progress and none left at the end', () => {
    vi.useFakeTimers();
    vi.setSystemTime(0);
    const states: ProgressState[] = [];
    setProgressSink((s) => states.push(s));
    const bar = new Progress('x', 4, { stream: plainStream().stream });
    vi.setSystemTime(1000);
    bar.update(0);
    expect(states.at(-1)!.etaS).toBeNaN();
    vi.setSystemTime(2000);
    bar.update(4);
    expect(states.at(-1)!.etaS).toBe(0);
  });
});
