// What main.ts needs of an experiment's view, and the part every experiment's view shares: the
// parameter form, its CLI command line, the stage list, the Run/Cancel buttons and one run's life cycle.
import type { ExperimentName } from '../params.ts';
import { h } from './dom.ts';
import { ParamForm } from './form.ts';
import { Cancelled } from './runtime.ts';
import { StageList } from './stagelist.ts';

export type ViewState = 'idle' | 'running' | 'done' | 'failed' | 'cancelled';

export interface View {
  readonly el: HTMLElement;
  state: ViewState;
  /** The report files of the last finished run (what the download links hold). */
  files: { name: string; text: string }[] | null;
  setRunnable(on: boolean): void;
  run(): Promise<void>;
}

export interface ViewHooks {
  onParams: () => void;
  onRunning: (on: boolean) => void;
  cancel: () => void;
}

export abstract class ExperimentView<P extends object> implements View {
  abstract readonly el: HTMLElement;
  readonly form: ParamForm<P>;
  protected readonly stages: StageList;
  protected readonly status = h('p', { class: 'status', role: 'status' });
  protected readonly command = h('code', { class: 'command' });
  protected readonly result = h('div', { class: 'result' });
  protected readonly runBtn = h('button', { type: 'button', class: 'run' }, 'Run');
  protected readonly cancelBtn = h('button', { type: 'button', class: 'cancel', disabled: true }, 'Cancel');
  state: ViewState = 'idle';
  files: { name: string; text: string }[] | null = null;

  constructor(
    group: ExperimentName,
    spec: ConstructorParameters<typeof ParamForm<P>>[1],
    params: P,
    protected readonly hooks: ViewHooks,
    /** Checks across fields, beyond each field's own. */
    private readonly check?: (p: P) => string[],
  ) {
    this.form = new ParamForm(group, spec, params, () => this.paramsChanged());
    this.stages = new StageList(() => hooks.cancel());
    this.runBtn.addEventListener('click', () => void this.run());
    this.cancelBtn.addEventListener('click', () => hooks.cancel());
  }

  /** The equivalent CLI command of these parameters. */
  protected abstract commandOf(p: P): string;

  protected paramsChanged(): void {
    const { values } = this.form.read(this.check);
    if (values) this.command.textContent = this.commandOf(values);
    this.hooks.onParams();
  }

  setRunnable(on: boolean): void {
    this.runBtn.disabled = !on;
  }

  protected setState(s: ViewState, msg: string): void {
    this.state = s;
    this.el.dataset.state = s;
    this.status.textContent = msg;
    this.status.className = `status ${s}`;
  }

  abstract run(): Promise<void>;

  /**
   * One run: reads the parameters (refusing bad ones), clears the last result, locks the form and
   * buttons (and `lock`), runs `work` — given a setter for why the device was lost; it returns the
   * "done" message — and reports done, cancelled (`cancelledText`) or failed.
   */
  protected async runLifecycle(opts: { clear: () => void; lock?: HTMLButtonElement[]; cancelledText: string }, work: (p: P, onLost: (why: string) => void) => Promise<string>): Promise<void> {
    const { values: p } = this.form.read(this.check);
    if (!p) {
      this.setState('failed', 'Fix the parameters above first.');
      return;
    }
    this.hooks.onParams();
    this.stages.clear();
    this.result.replaceChildren();
    this.files = null;
    opts.clear();
    this.setState('running', 'Running…');
    this.hooks.onRunning(true);
    const locked = [this.runBtn, ...(opts.lock ?? [])];
    for (const b of locked) b.disabled = true;
    this.cancelBtn.disabled = false;
    this.form.disable(true);
    let lostWhy: string | null = null;
    try {
      this.setState('done', await work(p, (w) => (lostWhy = w)));
    } catch (e) {
      const cancelled = e instanceof Cancelled || (e as Error)?.name === 'AbortError';
      this.stages.finishRunning(lostWhy || !cancelled ? 'failed' : 'cancelled');
      if (lostWhy) this.setState('failed', `error: ${lostWhy}`);
      else if (cancelled) this.setState('cancelled', opts.cancelledText);
      else this.setState('failed', `error: ${(e as Error)?.message ?? String(e)}`);
      if (!cancelled) console.error(e);
    } finally {
      this.hooks.onRunning(false);
      this.cancelBtn.disabled = true;
      this.form.disable(false);
      for (const b of locked) b.disabled = false;
    }
  }
}
