// What main.ts needs of an experiment's view.
export interface View {
  readonly el: HTMLElement;
  state: 'idle' | 'running' | 'done' | 'failed' | 'cancelled';
  /** The report files of the last finished run (what the download links hold). */
  files: { name: string; text: string }[] | null;
  setRunnable(on: boolean): void;
  run(): Promise<void>;
}
