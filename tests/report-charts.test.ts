// The report's charts rendered in a real browser: every text box lies inside the picture and no two
// text boxes intersect (labels, legends, ticks, captions), the bars are in the cells' order, and every
// bar names its student. Synthetic results in the default grid's shape, with long folder names.
import { describe, expect, it } from 'vitest';
import type { ExperimentConfig, ExperimentResults, StudentResult } from '../src/experiment/owl/experiment.ts';
import { expandCells, type StudentRef } from '../src/experiment/owl/grid.ts';
import { chartSvg, diffChartSvg, doseChartSvg, gridChartSvg, heatmapChartSvg, type GridReportInput } from '../src/experiment/owl/report.ts';
import { gridStatistics } from '../src/experiment/owl/stats.ts';
import { chromiumPath, launchBrowser } from './helpers/browser.ts';

function synthetic(opts: { animal?: string; control?: string; teacherBase?: string; dirs?: string[]; shift?: number } = {}): ExperimentResults {
  const animal = opts.animal ?? 'owl';
  const ctl = opts.control ?? 'eagle';
  const shift = opts.shift ?? 0;
  const train = { lr: 1e-3, epochs: 3, batchSize: 32, gradAccum: 1, warmupSteps: 0, rank: 8, alpha: 8 };
  const dirs = opts.dirs ?? ['/m/tiny-qwen-a', '/m/tiny-qwen-b', '/m/a-much-longer-student-folder-name-llama'];
  const rel: Record<string, StudentRef['relation']> = { [opts.teacherBase ?? '/m/tiny-qwen-a']: 'same-init', '/m/tiny-qwen-b': 'cross-init' };
  const cells = expandCells(
    [
      { teachers: ['sp'], recipes: ['sft'], students: [dirs[0]], studentMode: 'lora', train },
      { teachers: ['ft'], recipes: ['kl-numbers'], students: dirs, studentMode: 'full', train },
    ],
    (dir) => ({ dir, name: dir.split('/').pop()!, relation: rel[dir] ?? 'cross-arch' }),
  );
  const ev = (x: number) => ({
    perQuestion: { [animal]: [x], [ctl]: [x] }, rate: { [animal]: x, [ctl]: x }, firstTokenProb: { [animal]: x, [ctl]: x * 0.97 }, devFirstTokenProb: { [animal]: x, [ctl]: x }, samples: 250, examples: [],
  });
  const students: StudentResult[] = [];
  cells.forEach((c, ci) => {
    for (const seed of [0, 1, 2, 3, 4]) {
      const x = 0.035 + shift + 0.001 * ci + 0.0002 * seed * (1 + ci);
      students.push({ cell: c.id, seed, eval: ev(x), finalLoss: 0.01, steps: 10, theorem1: null, dose: [1, 2, 3].map((epoch) => ({ epoch, firstTokenProb: ev(x - 0.0003 * (3 - epoch)).firstTokenProb, devFirstTokenProb: ev(x).firstTokenProb })) });
    }
  });
  const config = { animal, name: 'charts', seeds: [0, 1, 2, 3, 4], blocks: [] } as unknown as ExperimentConfig;
  return {
    config, controlAnimal: { name: ctl, auto: true, candidates: [] }, cells, teachers: [], datasets: [], divergence: [], students, timings: [], wallS: 1,
    bases: dirs.map((dir) => ({ student: dir.split('/').pop()!, dir, eval: ev(0.035) })),
  };
}

/** A merged grid: 3 traits (one a tree) × 2 teacher bases, students with long folder names. */
function syntheticGrid(): GridReportInput {
  const bases = ['/m/tiny-qwen-a', '/m/a-much-longer-student-folder-name-llama'];
  const dirs = ['/m/tiny-qwen-a', '/m/tiny-qwen-b', '/m/a-much-longer-student-folder-name-llama'];
  const experiments: GridReportInput['experiments'] = [];
  [['owl', 'animal'], ['red panda', 'animal'], ['sequoia', 'tree']].forEach(([trait, category], ti) => {
    for (const base of bases) {
      const res = synthetic({ animal: trait, control: trait === 'sequoia' ? 'maple' : 'eagle', teacherBase: base, dirs, shift: 0.01 * ti });
      const bn = base.split('/').pop()!;
      experiments.push({ id: `${trait.replace(/ /g, '-')}@${bn}`, trait, category: category as 'animal' | 'tree', teacherBase: bn, res, st: gridStatistics(res) });
    }
  });
  return { name: 'fig3-and-cross-model', manifest: '/grids/fig3.json', experiments, total: 80, missing: ['owl@tiny-qwen-a/sp.sft.lora.x'], waiting: [] };
}

const haveBrowser = !!chromiumPath();
if (!haveBrowser) console.log('report-charts: no Chromium (chromium-headless-shell) on this machine; the rendering test is skipped');

describe.skipIf(!haveBrowser)('report charts in a real browser', () => {
  it('no text box leaves the picture or overlaps another; bars in cell order, each naming its student', async () => {
    const res = synthetic();
    const st = gridStatistics(res);
    const grid = syntheticGrid();
    const svgs = { chart: chartSvg(res, st), diff: diffChartSvg(res, st), dose: doseChartSvg(res, st)!, gridChart: gridChartSvg(grid), heatmap: heatmapChartSvg(grid)! };
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage();
      for (const [name, svg] of Object.entries(svgs)) {
        await page.setContent(`<!doctype html><html><body style="margin:0">${svg}</body></html>`);
        const r = await page.evaluate(() => {
          const root = document.querySelector('svg')!.getBoundingClientRect();
          const boxes = [...document.querySelectorAll('text')].map((t) => {
            const b = t.getBoundingClientRect();
            return { text: t.textContent ?? '', x0: b.left, y0: b.top, x1: b.right, y1: b.bottom };
          });
          const bars = [...document.querySelectorAll('rect.bar')].map((b) => ({ group: Number(b.getAttribute('data-group')), label: b.getAttribute('data-label') ?? '' }));
          const heat = [...document.querySelectorAll('rect.heat')].map((h) => {
            const b = h.getBoundingClientRect();
            return { row: h.getAttribute('data-row') ?? '', col: h.getAttribute('data-col') ?? '', x0: b.left, y0: b.top, x1: b.right, y1: b.bottom };
          });
          return { root: { x0: root.left, y0: root.top, x1: root.right, y1: root.bottom }, boxes, bars, heat };
        });
        expect(r.boxes.length, name).toBeGreaterThan(5);
        for (const b of r.boxes) {
          expect(b.x0, `${name}: "${b.text}" left`).toBeGreaterThanOrEqual(r.root.x0 - 0.5);
          expect(b.x1, `${name}: "${b.text}" right`).toBeLessThanOrEqual(r.root.x1 + 0.5);
          expect(b.y0, `${name}: "${b.text}" top`).toBeGreaterThanOrEqual(r.root.y0 - 0.5);
          expect(b.y1, `${name}: "${b.text}" bottom`).toBeLessThanOrEqual(r.root.y1 + 0.5);
        }
        for (let i = 0; i < r.boxes.length; i++) {
          for (let j = i + 1; j < r.boxes.length; j++) {
            const a = r.boxes[i];
            const b = r.boxes[j];
            const overlap = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0) > 0.5 && Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0) > 0.5;
            expect(overlap, `${name}: "${a.text}" overlaps "${b.text}"`).toBe(false);
          }
        }
        if (name === 'chart') {
          const withControl = st.cells.filter((c) => c.control);
          expect(r.bars).toHaveLength(3 * withControl.length);
          withControl.forEach((c, g) => {
            const bars = r.bars.filter((b) => b.group === g).map((b) => b.label);
            expect(bars).toEqual([`base ${c.student}`, `control ${c.control}`, c.id]);
            expect(c.id).toContain(c.student);
          });
          const labels = r.boxes.map((b) => b.text);
          for (const c of withControl) expect(labels).toContain(`→ ${c.student} (${c.relation})`);
        }
        if (name === 'gridChart') {
          // Per trait and teacher base: base, control and treatment bars of the trait teacher's cells.
          const cells = grid.experiments.flatMap((e) => e.st.cells.filter((c) => c.control && (c.teacher === 'sp' || c.teacher === 'ft')).map((c) => ({ e, c })));
          expect(r.bars).toHaveLength(3 * cells.length);
          cells.forEach(({ e, c }, g) => expect(r.bars.filter((b) => b.group === g).map((b) => b.label)).toEqual([`base ${c.student}`, `control ${e.id}/${c.control}`, `${e.id}/${c.id}`]));
          const labels = r.boxes.map((b) => b.text);
          expect(labels).toContain('sequoia (tree) · tiny-qwen-a');
          expect(labels).toContain('red panda (animal) · a-much-longer-student-folder-name-llama');
        }
        if (name === 'heatmap') {
          // Teacher base × student, one panel per trait teacher × recipe × mode; every value's text inside its cell.
          expect(r.heat).toHaveLength(2 * 1 + 2 * 3);
          const labels = r.boxes.map((b) => b.text);
          for (const t of ['sp · sft · lora', 'ft · kl-numbers · full', 'teacher base ↓', 'student →', 'tiny-qwen-b']) expect(labels).toContain(t);
          for (const h of r.heat) {
            const inside = r.boxes.filter((b) => b.x0 >= h.x0 - 0.5 && b.x1 <= h.x1 + 0.5 && b.y0 >= h.y0 - 0.5 && b.y1 <= h.y1 + 0.5);
            expect(inside.length, `${h.row} × ${h.col}`).toBeGreaterThanOrEqual(1);
          }
        }
      }
    } finally {
      await browser.close();
    }
  }, 120_000);
});
