// The page's stage list: one row per stage with its state, a progress bar, rate, elapsed time, ETA
// and a Cancel button while it runs.
import { fmtDuration, fmtRate, h } from './dom.ts';

export type StageState = 'running' | 'done' | 'cached' | 'failed' | 'cancelled';

export interface StageProgress {
  done: number;
  total: number;
  unit: string;
  note?: string;
  /** Seconds; computed from the row's own clock when absent. */
  elapsedS?: number;
  etaS?: number;
}

export class StageRow {
  readonly el: HTMLElement;
  private readonly bar: HTMLProgressElement;
  private readonly info: HTMLElement;
  private readonly stateEl: HTMLElement;
  private readonly cancel: HTMLButtonElement;
  private readonly t0 = performance.now();
  state: StageState = 'running';

  constructor(
    readonly key: string,
    label: string,
    onCancel: () => void,
  ) {
    this.bar = h('progress', { max: 1 });
    this.info = h('span', { class: 'stage-info' });
    this.stateEl = h('span', { class: 'stage-state' }, 'running');
    this.cancel = h('button', { type: 'button', class: 'stage-cancel', onclick: () => onCancel() }, 'Cancel');
    this.el = h('li', { class: 'stage running', 'data-stage': key }, h('span', { class: 'stage-label' }, label), this.stateEl, this.bar, this.info, this.cancel);
  }

  progress(p: StageProgress): void {
    if (this.state !== 'running') return;
    const elapsed = p.elapsedS ?? (performance.now() - this.t0) / 1000;
    const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
    this.bar.value = frac;
    const rate = elapsed > 0 ? p.done / elapsed : 0;
    const eta = p.etaS ?? (rate > 0 ? (p.total - p.done) / rate : NaN);
    const unit = p.unit ? ` ${p.unit}` : '';
    this.info.textContent = `${Math.round(100 * frac)}% · ${p.done}/${p.total}${unit} · ${fmtRate(rate)}${unit}/s · ${fmtDuration(elapsed)} · ETA ${fmtDuration(eta)}${p.note ? ` · ${p.note}` : ''}`;
  }

  finish(state: Exclude<StageState, 'running'>, note = ''): void {
    if (this.state !== 'running') return;
    this.state = state;
    const wall = (performance.now() - this.t0) / 1000;
    this.el.className = `stage ${state}`;
    this.stateEl.textContent = state;
    if (state === 'done' || state === 'cached') this.bar.value = 1;
    this.info.textContent = state === 'cached' ? `reused from this tab's stage cache${note ? ` · ${note}` : ''}` : `${fmtDuration(wall)}${note ? ` · ${note}` : ''}`;
    this.cancel.remove();
  }
}

export class StageList {
  readonly el = h('ol', { class: 'stages' });
  private readonly rows = new Map<string, StageRow>();

  constructor(private readonly onCancel: () => void) {}

  clear(): void {
    this.rows.clear();
    this.el.replaceChildren();
  }

  get(key: string): StageRow | undefined {
    return this.rows.get(key);
  }

  begin(key: string, label: string): StageRow {
    const row = new StageRow(key, label, this.onCancel);
    this.rows.set(key, row);
    this.el.append(row.el);
    row.el.scrollIntoView?.({ block: 'nearest' });
    return row;
  }

  /** Marks every running row (a run ended early). */
  finishRunning(state: 'failed' | 'cancelled', note = ''): void {
    for (const r of this.rows.values()) if (r.state === 'running') r.finish(state, note);
  }
}
