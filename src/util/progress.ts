// Progress reporting for long stages: a bar with rate and ETA redrawn in place on a TTY (stderr),
// plain lines otherwise (every 10% and at least every 30 s), so logs stay readable in CI. A sink
// (setProgressSink) also receives every update as data: the web page draws its bars from it, and a
// sink that throws stops the work that reported (the page's Cancel).

export interface ProgressOptions {
  /** Stream to draw on (default process.stderr). */
  stream?: NodeJS.WriteStream;
  /** Unit shown with the rate, e.g. 'tok', 'step'. */
  unit?: string;
  /** Silence everything (tests). */
  quiet?: boolean;
  /**
   * Keep every distinct note (e.g. per-epoch losses): a plain line whenever the note changes, and
   * on a TTY the previous bar is kept on its own line instead of being overwritten.
   */
  noteLines?: boolean;
}

/** One bar's state, as a sink receives it on every update. */
export interface ProgressState {
  /** Distinct per Progress instance (in creation order). */
  id: number;
  label: string;
  unit: string;
  done: number;
  total: number;
  note: string;
  elapsedS: number;
  /** Units per second so far. */
  rate: number;
  /**
   * Seconds left (NaN before any progress): at the rate since the first update once there is a later one,
   * so the first unit's one-off setup (pipeline compiles, model loads) does not inflate it; at the rate
   * since the start before that.
   */
  etaS: number;
  finished: boolean;
}

export type ProgressSink = (s: ProgressState) => void;

let sink: ProgressSink | null = null;
let nextId = 1;

/** Installs a sink for every bar's updates (null removes it); returns the previous one. */
export function setProgressSink(s: ProgressSink | null): ProgressSink | null {
  const prev = sink;
  sink = s;
  return prev;
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export class Progress {
  private readonly start = Date.now();
  private done = 0;
  private note = '';
  private lastLine = 0;
  private lastDecile = -1;
  private lastDraw = 0;
  private lastPrinted = '';
  private readonly stream: NodeJS.WriteStream | null;
  private readonly tty: boolean;
  private readonly id = nextId++;
  /** Time and amount of the first update that reported progress (the ETA's steady-rate origin). */
  private first: { at: number; done: number } | null = null;

  constructor(
    private readonly label: string,
    private total: number,
    private readonly opts: ProgressOptions = {},
  ) {
    // No process in a browser: bars go to the sink only.
    this.stream = opts.stream ?? (typeof process !== 'undefined' ? process.stderr : null);
    this.tty = !!this.stream?.isTTY && !process.env.CI;
  }

  setTotal(total: number): void {
    this.total = total;
  }

  /** Sets the amount done (absolute) and an optional note (e.g. the current loss). */
  update(done: number, note?: string): void {
    this.done = done;
    if (!this.first && done > 0) this.first = { at: Date.now(), done };
    const noteChanged = note !== undefined && note !== this.note;
    if (note !== undefined) this.note = note;
    sink?.(this.state(false));
    this.draw(false, noteChanged && !!this.opts.noteLines);
  }

  tick(n = 1, note?: string): void {
    this.update(this.done + n, note);
  }

  /** Seconds left: see ProgressState.etaS. */
  private eta(now: number): number {
    const f = this.first;
    const steady = f && this.done > f.done && now > f.at ? (this.done - f.done) / ((now - f.at) / 1000) : 0;
    const overall = now > this.start ? this.done / ((now - this.start) / 1000) : 0;
    const rate = steady > 0 ? steady : overall;
    return rate > 0 ? Math.max(0, this.total - this.done) / rate : NaN;
  }

  private state(finished: boolean): ProgressState {
    const now = Date.now();
    const elapsedS = (now - this.start) / 1000;
    const rate = elapsedS > 0 ? this.done / elapsedS : 0;
    return { id: this.id, label: this.label, unit: this.opts.unit ?? '', done: this.done, total: this.total, note: this.note, elapsedS, rate, etaS: this.eta(now), finished };
  }

  private line(): string {
    const now = Date.now();
    const elapsed = (now - this.start) / 1000;
    const frac = this.total > 0 ? Math.min(1, this.done / this.total) : 0;
    const rate = elapsed > 0 ? this.done / elapsed : 0;
    const eta = this.eta(now);
    const unit = this.opts.unit ? ` ${this.opts.unit}` : '';
    const rateStr = rate >= 100 ? rate.toFixed(0) : rate.toFixed(2);
    const stats = `${this.done}/${this.total}${unit} ${rateStr}${unit}/s elapsed ${fmtDuration(elapsed)} ETA ${fmtDuration(eta)}`;
    const note = this.note ? ` ${this.note}` : '';
    if (!this.tty) return `${this.label}: ${(frac * 100).toFixed(0)}% ${stats}${note}`;
    const width = 24;
    const filled = Math.round(frac * width);
    return `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${stats}${note}`;
  }

  private draw(final: boolean, newNote = false): void {
    if (this.opts.quiet || !this.stream) return;
    const now = Date.now();
    if (this.tty) {
      if (!final && !newNote && now - this.lastDraw < 100) return;
      if (newNote && this.lastDraw > 0) this.stream.write('\n');
      this.lastDraw = now;
      const cols = this.stream.columns || 120;
      this.stream.write(`\r${this.line().slice(0, cols - 1)}\x1b[K${final ? '\n' : ''}`);
      return;
    }
    const decile = this.total > 0 ? Math.floor((10 * this.done) / this.total) : 0;
    if (final || newNote || decile > this.lastDecile || now - this.lastLine > 30_000) {
      this.lastDecile = decile;
      this.lastLine = now;
      // The final line would repeat a line already printed for the same state: print it once.
      const state = `${this.done}/${this.total} ${this.note}`;
      if (final && state === this.lastPrinted) return;
      this.lastPrinted = state;
      this.stream.write(this.line() + '\n');
    }
  }

  /** Final line (always printed unless quiet). */
  finish(note?: string): void {
    if (note !== undefined) this.note = note;
    sink?.(this.state(true));
    this.lastDecile = -1;
    this.draw(true);
  }
}
