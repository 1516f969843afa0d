// Named kill points for crash tests: with SUBLIMINAL_KILL_AT=name (or name:N for its N-th pass) the
// process SIGKILLs itself there, exactly as `kill -9` at that moment would. Unset, a kill point is a
// no-op, so production code may carry them where an interruption matters (between the files of a
// checkpoint, before a completion mark).
const counts = new Map<string, number>();

export function killPoint(name: string): void {
  const spec = typeof process !== 'undefined' ? process.env.SUBLIMINAL_KILL_AT : undefined;
  if (!spec) return;
  for (const s of spec.split(',')) {
    const [want, nth] = s.split(':');
    if (want !== name) continue;
    const n = (counts.get(name) ?? 0) + 1;
    counts.set(name, n);
    if (n === Number(nth ?? 1)) process.kill(process.pid, 'SIGKILL');
  }
}

/**
 * Named hold points for crash tests: with SUBLIMINAL_HOLD_AT=name the process writes `hold: name` to
 * stderr and stops there (timers, e.g. lock heartbeats, keep running), so a test can `kill -9` it at
 * a known moment while others wait on what it holds. Unset, a no-op.
 */
export async function holdPoint(name: string): Promise<void> {
  const spec = typeof process !== 'undefined' ? process.env.SUBLIMINAL_HOLD_AT : undefined;
  if (!spec || !spec.split(',').includes(name)) return;
  process.stderr.write(`hold: ${name}\n`);
  await new Promise<never>(() => setInterval(() => {}, 1 << 30));
}
