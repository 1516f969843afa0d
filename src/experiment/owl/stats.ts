// Statistics of an experiment grid: per cell, the mean over students (seeds) with a t-interval, the
// per-seed paired difference from its control cell (paired t-test, t-interval), Holm's adjustment
// across the report's cells; same-init vs cross contrasts (Welch); both directions of ft pairs.
import { confidenceInterval, holmAdjust, mean, pairedTTest, welchDifference } from '../paper/stats.ts';
import type { Cell, Relation } from './grid.ts';
import { cellTarget, traitOf, type ExperimentResults } from './experiment.ts';

export interface MetricStats {
  mean: number;
  ci: [number, number];
  /** Mean of the per-seed differences cell − control (absent for control-only cells). */
  diff?: number;
  diffCi?: [number, number];
  p?: number;
  pHolm?: number;
  /** The paired control cell's mean. */
  controlMean?: number;
  /** The untrained student base's value. */
  base: number;
}

export interface CellStats {
  id: string;
  teacher: Cell['teacher'];
  student: string;
  studentDir: string;
  recipe: Cell['recipe'];
  studentMode: Cell['studentMode'];
  relation: Relation;
  control: string | null;
  /** The animal this cell's students are scored on. */
  target: string;
  seeds: number[];
  firstTokenProb: MetricStats;
  rate: MetricStats;
  /** Development-set first-token probability (what sizes were tuned on), with its paired difference. */
  devFirstTokenProb: MetricStats;
  /** TruthfulQA binary choice, mean P(correct) (runs with --truthfulqa); Holm over the cells on its own. */
  truthfulqa?: MetricStats;
  divergenceShare?: number;
  theorem1Cosine?: { mean: number; ci: [number, number]; trait: number; paired: number };
  /** Mean over seeds of the first-token probability after each epoch (epoch 0 = the base). */
  dose: { epoch: number; mean: number; controlMean?: number }[];
  finalLoss: number | null;
  perSeed: { seed: number; firstTokenProb: number; rate: number; control?: { firstTokenProb: number; rate: number } }[];
}

export interface Contrast {
  /** The same-init cell. */
  cell: string;
  /** The cross-init or cross-arch cell of the same teacher, recipe and mode. */
  vs: string;
  relation: Relation;
  /** (same-init diff) − (cross diff), first-token probability. */
  diff: number;
  ci: [number, number];
  p: number;
  pHolm: number;
}

export interface PairLead {
  /** The ft cell and its ft-control cell (same student, recipe, mode). */
  cells: [string, string];
  student: string;
  relation: Relation;
  /** Each teacher's students' lead on their own teacher's animal, summed (first-token probability). */
  diff: number;
  ci: [number, number];
  p: number;
}

export interface GridStats {
  /**
   * The metric tested and Holm-adjusted: the exact first-token probability, or the sampled (judged) rate
   * where no exact probability exists (misalignment rated by a judge model).
   */
  primary: 'firstTokenProb' | 'rate';
  cells: CellStats[];
  contrasts: Contrast[];
  pairs: PairLead[];
  /** Cells in the Holm family (those with a paired control and a defined p). */
  holmFamily: number;
  contrastFamily: number;
}

const ci2 = (lo: number, hi: number): [number, number] => [lo, hi];

function metric(values: number[], controls: number[] | null, base: number): MetricStats {
  const iv = confidenceInterval(values, { method: 't' });
  const out: MetricStats = { mean: iv.mean, ci: ci2(iv.lower, iv.upper), base };
  if (controls) {
    const t = pairedTTest(values, controls);
    out.diff = t.diff;
    out.diffCi = ci2(t.lower, t.upper);
    out.p = t.p;
    out.controlMean = mean(controls);
  }
  return out;
}

export function gridStatistics(res: ExperimentResults): GridStats {
  const animal = res.config.animal;
  const ctlAnimal = res.controlAnimal?.name ?? null;
  const byCell = new Map<string, ExperimentResults['students']>();
  for (const s of res.students) {
    const l = byCell.get(s.cell) ?? [];
    l.push(s);
    byCell.set(s.cell, l);
  }
  const seedValue = (cellId: string, target: string) => {
    const m = new Map<number, ExperimentResults['students'][number]>();
    for (const s of byCell.get(cellId) ?? []) m.set(s.seed, s);
    return { get: (seed: number) => m.get(seed), target };
  };
  const cells: CellStats[] = [];
  for (const cell of res.cells) {
    const target = cellTarget(cell, animal, ctlAnimal, traitOf(res.config));
    const own = (byCell.get(cell.id) ?? []).slice().sort((a, b) => a.seed - b.seed);
    if (!own.length) continue;
    const ctl = cell.control ? seedValue(cell.control, target) : null;
    // Paired by seed: only seeds that both cells have.
    const rows = own.filter((s) => !ctl || ctl.get(s.seed));
    const base = res.bases.find((b) => b.dir === cell.student.dir)?.eval;
    const f = (s: (typeof own)[number]) => s.eval.firstTokenProb[target];
    const r = (s: (typeof own)[number]) => s.eval.rate[target];
    const dv = (s: (typeof own)[number]) => s.eval.devFirstTokenProb[target];
    const tq = (s: (typeof own)[number]) => s.eval.truthfulqa?.pCorrect ?? NaN;
    const ctlRows = ctl ? rows.map((s) => ctl.get(s.seed)!) : null;
    const div = res.divergence.find((d) => d.dataset === `${cell.teacher}-${cell.recipe === 'sft-greedy' ? 'greedy' : 'sample'}`);
    const th = own.map((s) => s.theorem1).filter((t): t is NonNullable<typeof t> => !!t);
    const thIv = th.length ? confidenceInterval(th.map((t) => t.own), { method: 't' }) : null;
    const epochs = Math.max(0, ...own.map((s) => s.dose.length));
    const dose: CellStats['dose'] = [];
    if (epochs > 0 && base) {
      dose.push({ epoch: 0, mean: base.firstTokenProb[target], controlMean: ctl ? base.firstTokenProb[target] : undefined });
      for (let e = 0; e < epochs; e++) {
        const v = own.map((s) => s.dose[e]?.firstTokenProb[target]).filter((x): x is number => x !== undefined);
        const c = ctl ? own.map((s) => ctl.get(s.seed)?.dose[e]?.firstTokenProb[target]).filter((x): x is number => x !== undefined) : [];
        dose.push({ epoch: e + 1, mean: mean(v), controlMean: c.length ? mean(c) : undefined });
      }
    }
    cells.push({
      id: cell.id,
      teacher: cell.teacher,
      student: cell.student.name,
      studentDir: cell.student.dir,
      recipe: cell.recipe,
      studentMode: cell.studentMode,
      relation: cell.student.relation,
      control: cell.control,
      target,
      seeds: rows.map((s) => s.seed),
      firstTokenProb: metric(rows.map(f), ctlRows ? ctlRows.map(f) : null, base?.firstTokenProb[target] ?? NaN),
      rate: metric(rows.map(r), ctlRows ? ctlRows.map(r) : null, base?.rate[target] ?? NaN),
      devFirstTokenProb: metric(rows.map(dv), ctlRows ? ctlRows.map(dv) : null, base?.devFirstTokenProb[target] ?? NaN),
      ...(own.some((s) => s.eval.truthfulqa) ? { truthfulqa: metric(rows.map(tq), ctlRows ? ctlRows.map(tq) : null, base?.truthfulqa?.pCorrect ?? NaN) } : {}),
      divergenceShare: div?.share,
      theorem1Cosine: thIv ? { mean: thIv.mean, ci: ci2(thIv.lower, thIv.upper), trait: mean(th.map((t) => t.trait)), paired: mean(th.map((t) => t.paired)) } : undefined,
      dose,
      finalLoss: own.length ? mean(own.map((s) => s.finalLoss ?? NaN)) : null,
      perSeed: rows.map((s, i) => ({ seed: s.seed, firstTokenProb: f(s), rate: r(s), control: ctlRows ? { firstTokenProb: f(ctlRows[i]), rate: r(ctlRows[i]) } : undefined })),
    });
  }
  // Holm across the report's cells, per metric.
  for (const key of ['firstTokenProb', 'rate', 'devFirstTokenProb', 'truthfulqa'] as const) {
    const ps = cells.map((c) => c[key]?.p ?? NaN);
    const adj = holmAdjust(ps);
    cells.forEach((c, i) => {
      const m = c[key];
      if (m && m.p !== undefined) m.pHolm = adj[i];
    });
  }
  const primary: GridStats['primary'] = cells.length && cells.every((c) => !Number.isFinite(c.firstTokenProb.mean)) ? 'rate' : 'firstTokenProb';
  const holmFamily = cells.filter((c) => Number.isFinite(c[primary].p ?? NaN)).length;
  // Same-init vs cross contrasts on the per-seed paired differences.
  const contrasts: Contrast[] = [];
  const perSeedDiff = (c: CellStats) => c.perSeed.filter((x) => x.control).map((x) => x[primary] - x.control![primary]);
  // The size of the quantities the per-seed differences come from (their rounding decides what is a spread).
  const scaleOf = (...cs: CellStats[]) => Math.max(0, ...cs.flatMap((c) => c.perSeed.flatMap((x) => [Math.abs(x[primary]), Math.abs(x.control?.[primary] ?? 0)])).filter(Number.isFinite));
  for (const s of cells) {
    if (s.relation !== 'same-init' || !s.control) continue;
    for (const x of cells) {
      if (x.relation === 'same-init' || !x.control || x.teacher !== s.teacher || x.recipe !== s.recipe || x.studentMode !== s.studentMode) continue;
      const w = welchDifference(perSeedDiff(s), perSeedDiff(x), 0.95, scaleOf(s, x));
      contrasts.push({ cell: s.id, vs: x.id, relation: x.relation, diff: w.diff, ci: ci2(w.lower, w.upper), p: w.p, pHolm: NaN });
    }
  }
  const cadj = holmAdjust(contrasts.map((c) => c.p));
  contrasts.forEach((c, i) => (c.pHolm = cadj[i]));
  // Both directions of each ft pair: (owl lead of ft's students) + (control-animal lead of ft-control's).
  const pairs: PairLead[] = [];
  for (const a of cells) {
    if (a.teacher !== 'ft' || !a.control) continue;
    const b = cells.find((c) => c.id === a.control);
    // A misalignment ft-control cell is a control only: there is no other direction.
    if (!b || !b.control) continue;
    const bySeed = new Map(b.perSeed.map((x) => [x.seed, x]));
    const lead: number[] = [];
    for (const x of a.perSeed) {
      const y = bySeed.get(x.seed);
      if (x.control && y?.control) lead.push(x[primary] - x.control[primary] + (y[primary] - y.control[primary]));
    }
    const t = pairedTTest(lead, lead.map(() => 0), 0.95, scaleOf(a, b));
    pairs.push({ cells: [a.id, b.id], student: a.student, relation: a.relation, diff: t.diff, ci: ci2(t.lower, t.upper), p: t.p });
  }
  return { primary, cells, contrasts, pairs, holmFamily, contrastFamily: contrasts.filter((c) => Number.isFinite(c.p)).length };
}

/** One experiment of a grid with its statistics (a trait × teacher base). */
export interface GridEntry {
  /** The experiment's id in the grid (`owl`, `owl@tiny-qwen-a`). */
  id: string;
  trait: string;
  category: 'animal' | 'tree';
  /** The teachers' base (folder name). */
  teacherBase: string;
  st: GridStats;
}

export interface GridCellRow {
  /** `<experiment>/<cell>`. */
  id: string;
  experiment: string;
  trait: string;
  category: 'animal' | 'tree';
  teacherBase: string;
  cell: CellStats;
  /** Holm across every tested cell of the grid (the experiment's own Holm is cell.firstTokenProb.pHolm). */
  pHolm: number | null;
}

/** Every cell of a grid with Holm's adjustment over the whole grid's tested cells (first-token probability). */
export function gridFamily(entries: readonly GridEntry[]): { rows: GridCellRow[]; family: number } {
  const rows: GridCellRow[] = entries.flatMap((e) => e.st.cells.map((c) => ({ id: `${e.id}/${c.id}`, experiment: e.id, trait: e.trait, category: e.category, teacherBase: e.teacherBase, cell: c, pHolm: null as number | null })));
  const tested = rows.filter((r) => r.cell.control && Number.isFinite(r.cell.firstTokenProb.p ?? NaN));
  const adj = holmAdjust(tested.map((r) => r.cell.firstTokenProb.p!));
  tested.forEach((r, i) => (r.pHolm = adj[i]));
  return { rows, family: tested.length };
}

export interface MatrixEntry {
  teacherBase: string;
  student: string;
  relation: Relation;
  /** Per-seed paired differences pooled over the grid's traits. */
  n: number;
  diff: number;
  ci: [number, number];
  p: number;
  pHolm: number;
  cells: string[];
}

export interface MatrixPanel {
  teacher: Cell['teacher'];
  recipe: Cell['recipe'];
  studentMode: Cell['studentMode'];
  teacherBases: string[];
  students: string[];
  entries: MatrixEntry[];
}

/**
 * The cross-model matrix (teacher base × student), one panel per trait teacher × recipe × mode: the
 * mean per-seed paired difference (cell − control, first-token probability of the trait) pooled
 * over traits, its t-interval and p (one-sample t on the pooled differences), Holm over all entries.
 */
export function crossModelMatrix(rows: readonly GridCellRow[]): { panels: MatrixPanel[]; family: number } {
  const panels = new Map<string, MatrixPanel>();
  const pooled = new Map<string, { entry: MatrixEntry; d: number[]; scale: number }>();
  for (const r of rows) {
    const c = r.cell;
    if (!c.control || (c.teacher !== 'sp' && c.teacher !== 'ft')) continue;
    const pk = `${c.teacher}|${c.recipe}|${c.studentMode}`;
    let p = panels.get(pk);
    if (!p) panels.set(pk, (p = { teacher: c.teacher, recipe: c.recipe, studentMode: c.studentMode, teacherBases: [], students: [], entries: [] }));
    if (!p.teacherBases.includes(r.teacherBase)) p.teacherBases.push(r.teacherBase);
    if (!p.students.includes(c.student)) p.students.push(c.student);
    const ek = `${pk}|${r.teacherBase}|${c.student}`;
    let e = pooled.get(ek);
    if (!e) {
      e = { entry: { teacherBase: r.teacherBase, student: c.student, relation: c.relation, n: 0, diff: NaN, ci: [NaN, NaN], p: NaN, pHolm: NaN, cells: [] }, d: [], scale: 0 };
      pooled.set(ek, e);
      p.entries.push(e.entry);
    }
    e.entry.cells.push(r.id);
    for (const x of c.perSeed) {
      if (!x.control) continue;
      e.d.push(x.firstTokenProb - x.control.firstTokenProb);
      e.scale = Math.max(e.scale, Math.abs(x.firstTokenProb), Math.abs(x.control.firstTokenProb));
    }
  }
  const all = [...pooled.values()];
  for (const { entry, d, scale } of all) {
    entry.n = d.length;
    if (d.length) {
      const t = pairedTTest(d, d.map(() => 0), 0.95, scale);
      entry.diff = t.diff;
      entry.ci = ci2(t.lower, t.upper);
      entry.p = t.p;
    }
  }
  const tested = all.filter((x) => Number.isFinite(x.entry.p));
  const adj = holmAdjust(tested.map((x) => x.entry.p));
  tested.forEach((x, i) => (x.entry.pHolm = adj[i]));
  return { panels: [...panels.values()], family: tested.length };
}
