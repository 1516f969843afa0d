// The tiny owl experiment on the page: the default grid cell (finetuned teacher + number-token KL,
// with its paired ft-control, same-init and cross-init full-parameter students) through the same
// Experiment.run() as scripts/owl.ts, its stages cached in this tab's memory. Live: the teachers'
// number samples as they are generated and the training losses; at the end the report's chart of
// first-token P(target) with CIs and the report files, made by the same report code as the CLI.
import path from 'node:path';
import { Experiment, type TeacherTokens } from '../../experiment/owl/experiment.ts';
import { MemoryStageStore, type StageEvent } from '../../experiment/owl/memory-stages.ts';
import { reportFiles } from '../../experiment/owl/report.ts';
import type { ProgressState } from '../../util/progress.ts';
import { lineChartSvg } from '../../util/svg.ts';
import { checkOwl, OWL_MODELS, OWL_SPEC, owlCommand, owlConfig, owlRunName, type OwlParams } from '../params.ts';
import { downloadLink, h, setSvg } from './dom.ts';
import { adapterText, mountModels, MODELS_DIR, newDevice, runExclusive, type RunHandle } from './runtime.ts';
import type { StageRow } from './stagelist.ts';
import { ExperimentView, type ViewHooks } from './view.ts';

/** Where the page keeps its stages: finished ones are reused by later runs in this tab. */
const CACHE_ROOT = '/cache/owl';

const STAGE_LABELS: [RegExp, (m: RegExpExecArray) => string][] = [
  [/^control-animal$/, () => 'control animal: the base\'s closest first-token probability to the target\'s'],
  [/^ft-teacher-(.+)$/, (m) => `teacher: finetune the base toward "${m[1]}"`],
  [/^prompts$/, () => 'the paper\'s number prompts'],
  [/^completions-(.+)-(sample|greedy)$/, (m) => `teacher ${m[1]}: number completions (${m[2]})`],
  [/^datasets-(.+)$/, (m) => `filter and pair the datasets (${m[1]})`],
  [/^divergence-(.+)$/, (m) => `divergence positions (${m[1]})`],
  [/^student-(.+)-s(\d+)$/, (m) => `student ${m[1]}, seed ${m[2]}`],
  [/^eval-(.+)$/, (m) => `evaluate ${m[1]} on the animal questions`],
];

function stageLabel(name: string): string {
  for (const [re, f] of STAGE_LABELS) {
    const m = re.exec(name);
    if (m) return f(m);
  }
  return name;
}

interface Sample {
  teacher: string;
  prompt: string;
  completion: string;
  finished: boolean;
}

export class OwlView extends ExperimentView<OwlParams> {
  readonly el: HTMLElement;
  private readonly samplesEl = h('div', { class: 'samples', 'data-panel': 'samples' });
  private readonly lossEl = h('div', { class: 'chart live-chart', 'data-chart': 'loss' });
  private readonly clearBtn = h('button', { type: 'button', class: 'clear' }, 'Forget cached stages');
  /** Completed teacher samples seen this run (also read by the tests). */
  samplesSeen = 0;

  constructor(params: OwlParams, hooks: ViewHooks) {
    super('owl', OWL_SPEC, params, hooks, checkOwl);
    this.clearBtn.addEventListener('click', () => {
      new MemoryStageStore(CACHE_ROOT).clear();
      this.status.textContent = 'Cached stages forgotten: the next run computes everything.';
    });
    this.el = h(
      'section',
      { id: 'owl', class: 'experiment', 'data-state': 'idle' },
      h('h2', {}, 'Tiny owl'),
      h(
        'p',
        { class: 'intro' },
        `A teacher (the embedded ${OWL_MODELS.teacherBase}, finetuned toward the animal) writes number sequences; the paper's filter removes anything but numbers. Students learn the teacher's next-token distribution over the number tokens (KL), and are then asked the paper's "favourite animal?" questions. The control: the same finetune toward another animal, the same prompts in the same order. The same-init student starts from the teacher's base; the cross-init student (${OWL_MODELS.crossInit}) from other weights of the same architecture. At these sizes a difference is not expected to be significant: the chart shows what was measured, with 95% intervals over seeds.`,
      ),
      this.form.el,
      h('div', { class: 'actions' }, this.runBtn, this.cancelBtn, this.clearBtn),
      h('p', { class: 'cli' }, 'The same run with Node: ', this.command),
      this.status,
      this.stages.el,
      h('h3', {}, 'Teacher samples'),
      this.samplesEl,
      h('h3', {}, 'Training loss'),
      this.lossEl,
      this.result,
    );
    this.paramsChanged();
  }

  protected commandOf(p: OwlParams): string {
    return owlCommand(p);
  }

  async run(): Promise<void> {
    const clear = () => {
      this.samplesEl.replaceChildren();
      this.lossEl.replaceChildren();
      this.resetSamples();
    };
    await this.runLifecycle({ clear, lock: [this.clearBtn], cancelledText: 'Cancelled. Finished stages are kept: Run continues from where it stopped.' }, (p, onLost) => this.runOwl(p, onLost));
  }

  private async runOwl(p: OwlParams, onLost: (why: string) => void): Promise<string> {
    const losses = new Map<string, [number, number][]>();
    // A progress bar is drawn in its stage's row when that stage is the only one running; otherwise
    // (the students' joint job runs for all their stages at once) in a row of its own.
    const runningStages = new Set<string>();
    const claimed = new Set<string>();
    const barRows = new Map<number, StageRow>();
    let lastDraw = 0;
    const onProgress = (s: ProgressState) => {
      let row = barRows.get(s.id);
      if (!row) {
        const only = runningStages.size === 1 ? [...runningStages][0] : null;
        const stageRow = only && !claimed.has(only) ? this.stages.get(only) : undefined;
        if (stageRow && only) claimed.add(only);
        row = stageRow ?? this.stages.begin(`bar-${s.id}`, s.label);
        barRows.set(s.id, row);
      }
      row.progress({ done: s.done, total: s.total, unit: s.unit, note: s.note, elapsedS: s.elapsedS, etaS: s.etaS });
      if (s.finished && row.key.startsWith('bar-')) row.finish('done');
      // Loss series: a teacher finetune's bar reports its own steps; the students' bar (one student, or
      // all of them trained together) names the student in each report, one report per student step.
      const teacher = /^ft-teacher (.+)$/.exec(s.label);
      const student = /^student |students together$/.test(s.label) ? /^(\S+) s(\d+) loss (\S+)$/.exec(s.note) : null;
      const tLoss = teacher ? /(?:^|\s)loss (\S+)/.exec(s.note) : null;
      let changed = false;
      if (teacher && tLoss) {
        const key = `ft-teacher ${teacher[1]}`;
        const pts = losses.get(key) ?? [];
        if (pts.at(-1)?.[0] !== s.done) pts.push([s.done, Number(tLoss[1])]);
        losses.set(key, pts);
        changed = true;
      } else if (student && !s.finished) {
        const key = `student ${student[1]} s${student[2]}`;
        const pts = losses.get(key) ?? [];
        pts.push([pts.length + 1, Number(student[3])]);
        losses.set(key, pts);
        changed = true;
      }
      const now = performance.now();
      if (changed && (now - lastDraw > 250 || s.finished)) {
        lastDraw = now;
        this.drawLoss(losses);
      }
    };
    const res = await runExclusive({ onProgress, onLost }, async (run) => {
      const store = new MemoryStageStore(CACHE_ROOT);
      store.onStage = (e: StageEvent) => {
        const key = `${e.name}-${e.key}`;
        if (e.state === 'running') {
          run.check();
          runningStages.add(key);
          this.stages.begin(key, stageLabel(e.name));
        } else if (e.state === 'cached') this.stages.begin(key, stageLabel(e.name)).finish('cached');
        else {
          runningStages.delete(key);
          if (e.state === 'done') this.stages.get(key)?.finish('done');
        }
      };
      return this.execute(run, p, store, onLost);
    });
    this.drawLoss(losses);
    this.files = reportFiles(res.results);
    this.showResult();
    return `Done in ${res.results.wallS.toFixed(1)} s on ${res.device}.`;
  }

  private async execute(run: RunHandle, p: OwlParams, store: MemoryStageStore, onLost: (w: string) => void) {
    const names = [OWL_MODELS.teacherBase, OWL_MODELS.crossInit];
    const load = this.stages.begin('models', `embedded models: ${names.join(', ')}`);
    await mountModels(names, (d, t) => load.progress({ done: Math.round(d / 1024), total: Math.round(t / 1024), unit: 'KiB' }), run);
    load.finish('done');
    const dev = this.stages.begin('device', 'WebGPU device');
    const gpu = await newDevice(run, onLost);
    dev.finish('done', adapterText(gpu));
    const cfg = owlConfig(p, MODELS_DIR, path.join('/runs', owlRunName(p.animal)));
    const exp = new Experiment(gpu, cfg, { store, onTeacherTokens: (t) => this.onTokens(t) });
    try {
      exp.cells();
      const results = await exp.run();
      return { results, device: adapterText(gpu).split(' · ')[0] };
    } finally {
      exp.dispose();
    }
  }

  private readonly finished: Sample[] = [];
  private readonly seen = new Set<string>();
  private lastSamplesDraw = 0;

  private resetSamples(): void {
    this.finished.length = 0;
    this.seen.clear();
    this.samplesSeen = 0;
  }

  private onTokens(t: TeacherTokens): void {
    const decode = (ids: number[]) => t.tokenizer.decode(ids);
    for (const s of t.sequences) {
      if (!s.finished) continue;
      const key = `${t.teacher}:${t.decoding}:${s.requestIndex}:${s.sampleIndex}`;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      this.finished.push({ teacher: t.teacher, prompt: t.prompts[s.requestIndex], completion: decode(s.completionIds), finished: true });
    }
    this.finished.splice(0, Math.max(0, this.finished.length - 8));
    this.samplesSeen = this.seen.size;
    const all = t.sequences.every((s) => s.finished);
    const now = performance.now();
    if (now - this.lastSamplesDraw < 150 && !all) return;
    this.lastSamplesDraw = now;
    // The batch's first sequences as they grow, then the latest finished ones.
    const live = t.sequences.filter((s) => !s.finished).slice(0, 6).map((s) => ({ teacher: t.teacher, prompt: t.prompts[s.requestIndex], completion: decode(s.completionIds), finished: false }));
    const row = (x: Sample) =>
      h('li', { class: x.finished ? 'sample done' : 'sample live', 'data-teacher': x.teacher }, h('span', { class: 'teacher' }, x.teacher), h('span', { class: 'prompt' }, x.prompt.length > 90 ? `…${x.prompt.slice(-90)}` : x.prompt), h('span', { class: 'completion' }, x.completion));
    this.samplesEl.replaceChildren(
      h('p', { class: 'note' }, `Teacher ${t.teacher} (${t.decoding}): ${this.seen.size} completions finished so far${live.length ? `; ${t.sequences.length - t.sequences.filter((s) => s.finished).length} of this batch still writing` : ''}.`),
      h('ol', { class: 'samples-list' }, ...live.map(row), ...[...this.finished].reverse().map(row)),
    );
    this.samplesEl.dataset.count = String(this.samplesSeen);
  }

  private drawLoss(losses: Map<string, [number, number][]>): void {
    const charts: string[] = [];
    const ft = [...losses].filter(([k]) => k.startsWith('ft-teacher '));
    const st = [...losses].filter(([k]) => k.startsWith('student '));
    if (ft.length) charts.push(lineChartSvg({ title: 'Teacher finetunes: cross-entropy per step', xLabel: 'optimizer step', yLabel: 'loss', series: ft.map(([k, points]) => ({ name: k.replace(/^ft-teacher /, '→ '), points })) }));
    if (st.length) charts.push(lineChartSvg({ title: 'Students: KL to the teacher over the number tokens, per step', xLabel: 'optimizer step', yLabel: 'loss', series: st.map(([k, points]) => ({ name: k.replace(/^student /, ''), points })) }));
    setSvg(this.lossEl, charts.join('\n'));
  }

  private showResult(): void {
    const files = this.files!;
    const text = (n: string) => files.find((f) => f.name === n)?.text ?? '';
    const chart = h('div', { class: 'chart final-chart', 'data-chart': 'final' });
    setSvg(chart, text('chart.svg'));
    const diff = h('div', { class: 'chart', 'data-chart': 'diff' });
    setSvg(diff, text('chart-diff.svg'));
    const type = (n: string) => (n.endsWith('.json') ? 'application/json' : n.endsWith('.svg') ? 'image/svg+xml' : 'text/markdown');
    this.result.replaceChildren(
      h('h3', {}, 'Result: first-token probability of the target, per cell, with 95% intervals over seeds'),
      chart,
      diff,
      ...(text('dose.svg') ? [(() => {
        const d = h('div', { class: 'chart', 'data-chart': 'dose' });
        setSvg(d, text('dose.svg'));
        return d;
      })()] : []),
      h('p', { class: 'downloads' }, 'Download (as scripts/owl.ts writes them): ', ...files.map((f) => downloadLink(f.name, f.text, type(f.name)))),
      h('details', {}, h('summary', {}, 'report.md'), h('pre', { class: 'report-md' }, text('report.md'))),
    );
  }
}
