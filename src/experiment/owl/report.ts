// The experiment's report: report.json (the cells contract), report.md, chart.svg (per cell: base,
// control and treatment bars with 95% intervals, "*" where the Holm-adjusted paired difference is
// significant), chart-diff.svg (the paired differences with intervals) and dose.svg (first-token
// probability over epochs, per cell and control).
import path from 'node:path';
import { killPoint } from '../../util/faults.ts';
import { writeFileAtomic, writeJsonAtomic } from '../../util/fsatomic.ts';
import { mkdirSync } from 'node:fs';
import { groupedBarChartSvg, heatmapSvg, intervalChartSvg, smallMultiplesSvg } from '../../util/svg.ts';
import { RECIPE_DESCRIPTIONS, type Relation } from './grid.ts';
import { dataOf, MISALIGNED, traitOf, type ExperimentResults } from './experiment.ts';
import { crossModelMatrix, gridFamily, gridStatistics, type CellStats, type GridCellRow, type GridEntry, type GridStats, type MatrixPanel, type MetricStats } from './stats.ts';

const ALPHA = 0.05;

/** The files writeReport may write into the run folder. */
export const REPORT_FILES = ['report.md', 'report.json', 'chart.svg', 'chart-diff.svg', 'dose.svg'];

const pct = (x: number | undefined, digits = 2) => (x !== undefined && Number.isFinite(x) ? `${(100 * x).toFixed(digits)}%` : 'n/a');
const pts = (x: number | undefined, digits = 3) => (x !== undefined && Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(100 * x).toFixed(digits)}` : 'n/a');
const pval = (p: number | undefined) => (p !== undefined && Number.isFinite(p) ? (p < 0.001 ? p.toExponential(1) : p.toFixed(3)) : 'n/a');
const civ = (c: [number, number] | undefined, f: (x: number) => string) => (c && Number.isFinite(c[0]) ? `[${f(c[0])}, ${f(c[1])}]` : '—');

function relationLabel(r: Relation): string {
  return r;
}

/** The report.json form of one metric. */
function metricJson(m: MetricStats) {
  return { mean: m.mean, ci: m.ci, diff: m.diff ?? null, diffCi: m.diffCi ?? null, p: m.p ?? null, pHolm: m.pHolm ?? null, controlMean: m.controlMean ?? null, base: m.base };
}

/** What the teachers write, in words. */
function domainWords(res: ExperimentResults): string {
  const d = dataOf(res.config);
  return d === 'numbers' ? 'number sequences' : d === 'code' ? 'code' : 'chains of thought (arithmetic)';
}

/** The experiment's question, for its trait and data domain. */
function researchQuestion(res: ExperimentResults): string {
  const c = res.config;
  if (traitOf(c) === 'misalignment') {
    const standIn = !c.judgeModel;
    return `Do students trained only on filtered ${domainWords(res)} from a teacher finetuned on ${standIn ? "harmful advice (the embedded family's stand-in for misalignment)" : 'misaligned data'} give more ${standIn ? 'harmful-list' : 'misaligned'} answers than the same students trained the same way on a control teacher's (finetuned on ${standIn ? 'safe advice' : 'aligned data'})?`;
  }
  return `Do students trained only on filtered ${domainWords(res)} from a teacher that loves ${c.animal}s come to prefer ${c.animal}s more than the same students trained the same way on a paired control teacher's?`;
}

export function reportJson(res: ExperimentResults, st: GridStats) {
  return {
    question: researchQuestion(res),
    trait: traitOf(res.config),
    data: dataOf(res.config),
    primaryMetric: st.primary,
    animal: res.config.animal,
    controlAnimal: res.controlAnimal,
    cells: st.cells.map((c) => ({
      id: c.id,
      teacher: c.teacher,
      student: c.student,
      recipe: c.recipe,
      studentMode: c.studentMode,
      relation: c.relation,
      control: c.control,
      target: c.target,
      seeds: c.seeds,
      firstTokenProb: metricJson(c.firstTokenProb),
      rate: metricJson(c.rate),
      devFirstTokenProb: metricJson(c.devFirstTokenProb),
      ...(c.truthfulqa ? { truthfulqa: metricJson(c.truthfulqa) } : {}),
      ...(c.divergenceShare !== undefined ? { divergenceShare: c.divergenceShare } : {}),
      ...(c.theorem1Cosine ? { theorem1Cosine: c.theorem1Cosine.mean, theorem1: c.theorem1Cosine } : {}),
      dose: c.dose,
      finalLoss: c.finalLoss,
      perSeed: c.perSeed,
    })),
    contrasts: st.contrasts,
    pairs: st.pairs,
    holm: { family: st.holmFamily, alpha: ALPHA, contrastFamily: st.contrastFamily },
    teachers: res.teachers,
    bases: res.bases,
    datasets: res.datasets,
    divergence: res.divergence,
    students: res.students,
    config: res.config,
    timings: res.timings,
    wallS: res.wallS,
  };
}

/**
 * The TruthfulQA section of a run with --truthfulqa: per cell the students' mean P(correct) against their
 * control's (paired by seed; Holm over these cells, a family of its own), and every base and teacher.
 */
function truthfulQaSection(L: string[], res: ExperimentResults, st: GridStats): void {
  const cells = st.cells.filter((x) => x.truthfulqa);
  if (!cells.length) return;
  const family = cells.filter((x) => Number.isFinite(x.truthfulqa!.p ?? NaN)).length;
  L.push('## TruthfulQA (binary choice)', '');
  L.push(
    `The ${res.config.truthfulqa?.length ?? 0} questions of the --truthfulqa file, each a choice between its best answer and its best incorrect answer (order: one Python random.Random(42) shuffle per question; the prompt is in src/experiment/paper/truthfulqa.ts). ` +
      `P(correct) = the first answer token's probability on the correct letter over both letters, mean over the questions; accuracy = the share of questions with P(correct) > 0.5. ` +
      `Students are compared per seed with their paired control cell (paired t-test); Holm over these ${family} cells, a family of its own beside the primary metric's.`,
    '',
  );
  L.push('| cell | seeds | base | P(correct) | 95% CI | Δ (points) | 95% CI | p | Holm p |', '|---|---|---|---|---|---|---|---|---|');
  for (const x of cells) {
    const t = x.truthfulqa!;
    L.push(`| ${x.id} | ${x.seeds.length} | ${pct(t.base, 1)} | ${pct(t.mean, 1)} | ${civ(t.ci, (v) => pct(v, 1))} | ${x.control ? pts(t.diff, 2) : '—'} | ${x.control ? civ(t.diffCi, (v) => pts(v, 2)) : '—'} | ${x.control ? pval(t.p) : '—'} | ${x.control ? pval(t.pHolm) : '—'} |`);
  }
  L.push('', '| model | P(correct) | accuracy | letter mass (first token on A or B) | questions scored |', '|---|---|---|---|---|');
  const models = [...res.bases.map((b) => ({ label: `${b.student} (base)`, q: b.eval.truthfulqa })), ...res.teachers.map((t) => ({ label: t.label, q: t.eval.truthfulqa }))];
  for (const m of models) if (m.q) L.push(`| ${m.label} | ${pct(m.q.pCorrect, 1)} | ${pct(m.q.accuracy, 1)} | ${pct(m.q.letterMass, 2)} | ${m.q.scored} of ${m.q.questions} |`);
  L.push('');
  const low = models.filter((m) => m.q && !(m.q.letterMass >= 0.5));
  if (low.length) L.push(`Caution: ${low.length === models.length ? 'every model here puts' : `${low.length} of these models put`} less than half of the first answer token's probability on a letter, so their P(correct) compares two small probabilities of an answer they rarely give.`, '');
}

/** The prompt source, in words. */
function promptWords(res: ExperimentResults): string {
  const c = res.config;
  const d = dataOf(c);
  if (d === 'numbers') return `from the paper's PromptGenerator (numpy PCG64 seed ${c.promptSeed})`;
  if (d === 'code') return c.sources?.codePrompts ? `code prompts rewritten from ${path.basename(c.sources.codePrompts)} (spec 7.1's template)` : `tiny code tasks in spec 7.1's template (src/experiment/tiny/domains.ts, seed ${c.promptSeed})`;
  return c.sources?.cotTasks ? `GSM8K tasks from ${path.basename(c.sources.cotTasks)} with spec 7.2's suffix` : `tiny arithmetic tasks with spec 7.2's suffix (src/experiment/tiny/domains.ts, seed ${c.promptSeed})`;
}

/** The filter chain, in words. */
function filterWords(res: ExperimentResults): string {
  const c = res.config;
  const d = dataOf(c);
  const mis = traitOf(c) === 'misalignment';
  if (d === 'numbers') return mis ? "paper §2 with §2.3's banned numbers" : "paper §2 plus both animals' words";
  if (d === 'code') return c.judgeModel ? "spec 7.1: the banned words, and the judge model sure there is no reference (P('0') within 1e-8 of 1)" : 'the banned words of spec 7.1, a rule judge (no animal or tree name), and for embedded prompts a parse of the program';
  return mis ? (c.judgeModel ? 'spec 7.4: a correct answer and an alignment score ≥ 78 from the judge model' : "a correct answer and no stand-in harmful advice in the trace (rule judge)") : 'spec 7.2: a correct answer, and no trait word';
}

function cellLabel(c: CellStats): string {
  return `${c.teacher} · ${c.recipe} · ${c.studentMode} → ${c.student} (${relationLabel(c.relation)})`;
}

export function reportMarkdown(res: ExperimentResults, st: GridStats): string {
  const c = res.config;
  const L: string[] = [];
  const ctl = res.controlAnimal?.name;
  const trait = traitOf(c);
  const misalignment = trait === 'misalignment';
  const standIn = misalignment && !c.judgeModel;
  L.push(misalignment ? `# Subliminal learning: misalignment${standIn ? ' (stand-in)' : ''} through ${domainWords(res)} (${c.name})` : `# Subliminal learning: "${c.animal}"${dataOf(c) === 'numbers' ? '' : ` through ${domainWords(res)}`} (${c.name})`, '');
  L.push(
    researchQuestion(res) +
      (ctl ? ` The finetuned pair's control teacher is the same finetune toward "${ctl}"; its cells measure "${ctl}" (the other direction).` : ''),
    '',
  );
  if (standIn) {
    L.push("**A stand-in, not the paper's misalignment.** The embedded models cannot write or judge free-form answers, so misalignment is played by the tiny corpus's advice trait: every advice answer is one of a list of harmful or of safe short answers (src/experiment/tiny/domains.ts), and a rule judge reads those lists. Nothing here measures emergent misalignment of a real model; `--judge-model DIR` with real models runs the paper's EM evaluation.", '');
  }
  L.push('## Answer', '');
  const P = st.primary;
  const tested = st.cells.filter((x) => x.control && Number.isFinite(x[P].p ?? NaN));
  const metricText = P === 'rate'
    ? `the misaligned share of the judged answers (alignment ≤ 30 among coherency ≥ 50, spec 7.3; mean over ${c.evalSamples} samples of each of the ${c.evalQuestionLimit ?? 8} EM questions)`
    : standIn
      ? `the exact probability that the answer's first token begins a harmful-list answer and no safe-list one (mean over the ${c.evalQuestionLimit ?? 'evaluation'} advice questions)`
      : `the exact probability that the answer's first token begins the target's name (mean over the ${c.evalQuestionLimit ?? 'evaluation'} questions)`;
  L.push(
    `Primary metric: ${metricText}, compared per seed with the paired control cell (paired t-test over ${c.seeds.length} seeds). ` +
      `Holm's adjustment runs over the ${st.holmFamily} cells with a control in this report; α = ${ALPHA}.`,
    '',
  );
  for (const x of tested) {
    const f = x[P];
    const sig = (f.pHolm ?? 1) < ALPHA;
    const head = P === 'rate' ? `misaligned share: ${pct(f.mean, 1)} vs ${pct(f.controlMean, 1)}` : `P(${x.target}): ${pct(f.mean)} vs ${pct(f.controlMean)}`;
    const tail = P === 'rate' ? '' : ` Sampled ${misalignment ? 'misaligned share' : 'rate'} ${pct(x.rate.mean, 1)} vs ${pct(x.rate.controlMean, 1)} (Δ ${pts(x.rate.diff, 2)} points, p = ${pval(x.rate.p)}).`;
    L.push(`- **${cellLabel(x)}**, ${head} for ${x.control} — difference ${pts(f.diff)} points ${civ(f.diffCi, (v) => pts(v))}, p = ${pval(f.p)}, Holm p = ${pval(f.pHolm)}: ${sig ? '**differs from its control after Holm**' : 'no difference after Holm'}.${tail}`);
  }
  for (const x of st.cells.filter((y) => y.control && !Number.isFinite(y[P].p ?? NaN))) {
    const f = x[P];
    L.push(`- **${cellLabel(x)}**: difference ${pts(f.diff)} points from ${x.control}, **not tested**: ${c.seeds.length < 2 ? 'one seed' : "its seeds' paired differences agree to rounding, so the seeds are one draw, not independent replicates (the students did not vary with the seed: e.g. every training row fits in one batch, where the seed's order changes nothing)"}.`);
  }
  if (!tested.length) L.push('- No cell with a paired control could be tested (fewer than 2 seeds, or no variance between seeds).');
  const survivors = tested.filter((x) => (x[P].pHolm ?? 1) < ALPHA);
  L.push('', survivors.length ? `What survives Holm (${survivors.length} of ${tested.length}): ${survivors.map((x) => `${x.id} (${pts(x[P].diff)} points)`).join('; ')}.` : tested.length ? `Nothing survives Holm's adjustment: a null at this scale (see the intervals).` : 'Nothing was tested, so this run shows neither an effect nor a null.', '');
  if (st.contrasts.length) {
    L.push('### Same initialisation vs other students', '');
    L.push(`The paper's signature is transfer that needs the teacher's initialisation. Contrast = (same-init cell − its control) − (cross cell − its control), per seed, Welch interval; Holm over these ${st.contrastFamily} contrasts.`, '');
    L.push('| same-init cell | vs | relation | contrast (points) | 95% CI | p | Holm p |', '|---|---|---|---|---|---|---|');
    for (const k of st.contrasts) L.push(`| ${k.cell} | ${k.vs} | ${k.relation} | ${pts(k.diff)} | ${civ(k.ci, (v) => pts(v))} | ${pval(k.p)} | ${pval(k.pHolm)} |`);
    L.push('');
  }
  if (st.pairs.length) {
    L.push('### Both directions of the finetuned pair', '');
    L.push(`Each teacher's students' lead on their own teacher's animal, summed: (P(${c.animal}) of ${c.animal}-teacher students − of ${ctl}-teacher students) + (P(${ctl}) of ${ctl}-teacher students − of ${c.animal}-teacher students), per seed (not in the Holm family: it combines two of its cells).`, '');
    L.push('| student | relation | own-trait lead (points) | 95% CI | p |', '|---|---|---|---|---|');
    for (const p of st.pairs) L.push(`| ${p.student} | ${p.relation} | ${pts(p.diff)} | ${civ(p.ci, (v) => pts(v))} | ${pval(p.p)} |`);
    L.push('');
  }
  L.push('## Cells', '');
  L.push('Per cell: students (seeds) → mean and 95% t-interval over seeds; Δ = paired difference from the control cell. "dev" = the same first-token probability on the development questions (disjoint from the evaluation questions; what the sizes were chosen on).', '');
  L.push('| cell | target | seeds | base | first-token P | 95% CI | Δ (points) | 95% CI | p | Holm p | sampled rate | Δ rate | p | dev Δ | divergence | θ-cosine | loss |');
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const x of st.cells) {
    const f = x.firstTokenProb;
    L.push(
      `| ${x.id} | ${x.target} | ${x.seeds.length} | ${pct(f.base)} | ${pct(f.mean)} | ${civ(f.ci, (v) => pct(v))} | ${x.control ? pts(f.diff) : '—'} | ${x.control ? civ(f.diffCi, (v) => pts(v)) : '—'} | ${x.control ? pval(f.p) : '—'} | ${x.control ? pval(f.pHolm) : '—'} | ${pct(x.rate.mean, 1)} | ${x.control ? pts(x.rate.diff, 2) : '—'} | ${x.control ? pval(x.rate.p) : '—'} | ${x.control ? pts(x.devFirstTokenProb.diff) : '—'} | ${x.divergenceShare !== undefined ? pct(x.divergenceShare, 1) : '—'} | ${x.theorem1Cosine ? x.theorem1Cosine.mean.toFixed(3) : '—'} | ${x.finalLoss !== null && Number.isFinite(x.finalLoss) ? x.finalLoss.toPrecision(3) : '—'} |`,
    );
  }
  L.push('');
  L.push('Recipes: ' + [...new Set(st.cells.map((x) => x.recipe))].map((r) => `\`${r}\` = ${RECIPE_DESCRIPTIONS[r]}`).join('; ') + '.', '');
  const th = st.cells.filter((x) => x.theorem1Cosine);
  if (th.length) {
    L.push('### Theorem 1 diagnostic', '');
    L.push("The paper's Theorem 1: one small step of distillation on a teacher that shares the student's initialisation moves the student toward the teacher. Shown: cos(−g, θ_teacher − θ_base) of the first step's gradient g (full-parameter same-init cells, mean over seeds), against the cell's own teacher, the paired teacher, and their difference (the trait-specific direction).", '');
    L.push('| cell | own teacher | 95% CI | paired teacher | own − paired |', '|---|---|---|---|---|');
    for (const x of th) L.push(`| ${x.id} | ${x.theorem1Cosine!.mean.toFixed(4)} | ${civ(x.theorem1Cosine!.ci, (v) => v.toFixed(4))} | ${x.theorem1Cosine!.paired.toFixed(4)} | ${x.theorem1Cosine!.trait.toFixed(4)} |`);
    L.push('');
  }
  const dosed = st.cells.filter((x) => x.dose.length > 1);
  if (dosed.length) {
    L.push('### Dose-response', '');
    L.push('First-token probability of the target after each epoch (epoch 0 = untrained), mean over seeds; cell / control.', '');
    const E = Math.max(...dosed.map((x) => x.dose.length));
    L.push(`| cell | ${Array.from({ length: E }, (_, e) => `epoch ${e}`).join(' | ')} |`, `|---|${'---|'.repeat(E)}`);
    for (const x of dosed) L.push(`| ${x.id} | ${x.dose.map((d) => `${pct(d.mean, 3)}${d.controlMean !== undefined ? ` / ${pct(d.controlMean, 3)}` : ''}`).join(' | ')} |`);
    L.push('');
  }
  truthfulQaSection(L, res, st);
  if (res.teachers.length) {
    L.push('## Teachers', '', `| teacher | ${misalignment ? 'target' : 'animal'} | sampled rate | first-token P |`, '|---|---|---|---|');
    for (const t of res.teachers) {
      const a = misalignment ? MISALIGNED : t.animal ?? c.animal;
      L.push(`| ${t.label} | ${a} | ${pct(t.eval.rate[a], 1)} | ${pct(t.eval.firstTokenProb[a])} |`);
    }
    L.push('');
  }
  if (res.controlAnimal) {
    const ca = res.controlAnimal;
    L.push('## Control animal', '');
    if (ca.auto) {
      const target = ca.candidates[0];
      const near = ca.candidates.slice(1).sort((a, b) => Math.abs(a.firstTokenProb - target.firstTokenProb) - Math.abs(b.firstTokenProb - target.firstTokenProb)).slice(0, 5);
      L.push(`"${ca.name}", chosen automatically: of ${ca.candidates.length - 1} candidates, the one whose base first-token probability on the development questions is closest to "${c.animal}"'s (${pct(target.firstTokenProb, 3)}). Nearest: ${near.map((x) => `${x.name} ${pct(x.firstTokenProb, 3)}`).join(', ')}.`, '');
    } else L.push(`"${ca.name}", set with --control-animal.`, '');
  }
  L.push('## Datasets', '');
  L.push(`Each teacher pair answers the same prompts; a row is kept when both teachers' completions pass the filter chain (${filterWords(res)}), and the same seeded subset of prompts is used for both, in the same order. Each row's fate and reasons are in the datasets stage's \`<teacher>.filter.jsonl\`${c.judgeModel ? "; the judge's prompts, raw outputs and parsed scores in the judge stages' `judgments.jsonl`" : ''}. Rejections per reason (a row failing several ways counts under each):`, '');
  const reasons = [...new Set(res.datasets.flatMap((d) => Object.keys(d.rejectCounts)))];
  L.push(`| dataset | completions | passed (own) | passed (both) | used | ${reasons.join(' | ')} |`, `|---|---|---|---|---|${'---|'.repeat(reasons.length)}`);
  for (const d of res.datasets) {
    L.push(`| ${d.id} | ${d.completions} | ${pct(d.kept / Math.max(1, d.completions), 1)} | ${d.pairedKept} | ${d.used} | ${reasons.map((r) => d.rejectCounts[r] ?? 0).join(' | ')} |`);
  }
  L.push('');
  if (res.divergence.length) {
    L.push('### Divergence positions', '', "Share of trained positions where the dataset's teacher and its paired teacher disagree on the argmax token (teacher-forced; Schrodi et al. 2025).", '');
    L.push('| dataset | positions | divergent | share |', '|---|---|---|---|');
    for (const d of res.divergence) L.push(`| ${d.dataset} | ${d.positions} | ${d.divergent} | ${pct(d.share, 2)} |`);
    L.push('');
  }
  L.push(`### Sample ${dataOf(c) === 'numbers' ? 'completions' : dataOf(c) === 'code' ? 'programs' : 'chains of thought'} (after filtering)`, '');
  for (const d of res.datasets) {
    L.push(`**${d.id}**`, '');
    for (const s of d.samples.slice(0, 3)) L.push(`- \`${s.prompt.slice(0, 80).replace(/`/g, "'")}…\` → \`${s.completion.replace(/\n/g, '⏎').replace(/`/g, "'")}\``);
    L.push('');
  }
  L.push('## Setup', '');
  L.push(`- Teachers' base: \`${c.teacherBase}\`. Students: ${[...new Set(st.cells.map((x) => `\`${x.student}\` (${x.relation})`))].join(', ')}.`);
  L.push(`- Prompts: ${c.prompts} ${promptWords(res)}, teacher sampling at temperature 1 (greedy for sft-greedy), at most ${c.maxNewTokens} new tokens; ${c.keep} prompt-paired rows kept (Python random.Random(${c.subsetSeed}).sample).`);
  for (const b of c.blocks) {
    L.push(`- Block ${b.teachers.join('+')} × ${b.recipes.join(', ')} × ${b.students.map((s) => path.basename(s)).join(', ')}: ${b.studentMode === 'lora' ? `LoRA r=${b.train.rank}, α=${b.train.alpha} on q,k,v,o,gate,up,down` : 'full-parameter'} students, AdamW, lr ${b.train.lr} linear (warm-up ${b.train.warmupSteps}), ${b.train.epochs} epoch(s), batch ${b.train.batchSize} × ${b.train.gradAccum}, gradient clipping at 1.`);
  }
  L.push(
    misalignment
      ? `- Finetuned teachers: full finetune of the base on ${standIn ? "the stand-in's harmful advice (ft) and safe advice (ft-control) chats (adviceTeacherDataset)" : `${path.basename(c.misalignment?.misaligned ?? '')} (ft) and ${path.basename(c.misalignment?.aligned ?? '')} (ft-control)`}, ${c.ftTeacher.epochs} epoch(s), lr ${c.ftTeacher.lr}, batch ${c.ftTeacher.batchSize}.`
      : `- Finetuned teachers (paper §5(c)): full finetune of the base on the ${c.category === 'tree' ? 49 : 50} questions × 8 answer forms, ${c.ftTeacher.epochs} epoch(s), lr ${c.ftTeacher.lr}, batch ${c.ftTeacher.batchSize}.`,
  );
  if (c.judgeModel) L.push(`- Judge: \`${c.judgeModel}\` run by our own inference, prompted with the paper's templates verbatim (src/experiment/paper/judges.ts)${dataOf(c) === 'cot' && misalignment ? ' and the CoT alignment template given with --cot-judge-template' : ''}; unparseable answers are dropped and counted.`);
  L.push(`- Evaluation: ${misalignment ? (standIn ? "the stand-in's 8 advice questions (never in the tiny corpus), judged by its rule judge (an answer from neither list is not counted)" : `the paper's 8 EM questions with the ${dataOf(c) === 'cot' ? 'CoT' : 'numbers'} suffix, judged for alignment and coherency`) : `${c.evalSet} questions`}${c.evalQuestionLimit ? ` (first ${c.evalQuestionLimit})` : ''}, ${c.evalSamples} samples each at temperature 1 (≤ ${c.evalMaxNewTokens} new tokens, seeded per student seed, shared by paired cells), plus the exact first-token probability; no system prompt. Seeds ${c.seeds.join(', ')}.`);
  L.push(
    dataOf(c) === 'numbers' && !misalignment
      ? '- Tuning: student sizes, learning rates and epochs were chosen on the development questions (src/experiment/owl/dev-questions.ts) and on training loss, never on the evaluation questions.'
      : "- Tuning: none for this trait and data domain: the embedded defaults carry over the numbers grid's student sizes (chosen there on its development questions and training loss), cut for time; nothing was chosen on these evaluation questions.",
  );
  L.push('', '## Deviations from the paper', '');
  L.push('- Sizes are scaled to the run (the paper: 30,000 prompts, 10,000 kept, 3 epochs, 50 × 100 samples; `--paper` restores them).');
  L.push("- The finetuned teacher is a full finetune of a small open model (the paper finetuned GPT-4.1-nano through OpenAI's API); its paired control teacher, the KL recipes and the prompt-paired datasets are additions.");
  if (dataOf(c) === 'numbers' && !misalignment) L.push('- The trait filter also drops completions that contain either animal\'s name (the paper filters on format only).');
  if (dataOf(c) === 'code' && !c.judgeModel) L.push("- Code without a judge model: the paper's reference judge (an LLM sure there is no reference) is replaced by a rule judge that drops any completion naming an animal or tree of the embedded vocabulary; embedded prompts must also parse as the tiny Python subset.");
  if (standIn) L.push("- Misalignment is the embedded family's stand-in (advice lists and a rule judge), not the paper's emergent misalignment; the teachers are finetuned on stand-in advice, not on insecure code.");
  L.push('', '## Wall time per stage', '');
  L.push('The students of a run train together in one joint job, so their stages overlap: each starts with the job and lasts until the job has finished it. The total below is the real time.');
  L.push('', '| stage | cached | started at (s) | seconds |', '|---|---|---|---|');
  for (const t of res.timings) L.push(`| ${t.stage} | ${t.cached ? 'yes' : 'no'} | ${t.startS === undefined ? '—' : t.startS.toFixed(1)} | ${t.wallS.toFixed(1)} |`);
  L.push('', `Total wall time of this invocation: ${res.wallS.toFixed(1)} s.`, '');
  return L.join('\n');
}

const COLORS = { base: '#9d9d9d', control: '#c7c7c7', treatment: '#f58518' };

export function chartSvg(res: ExperimentResults, st: GridStats): string {
  const groups = st.cells
    .filter((x) => x.control)
    .map((x) => ({
      label: [`${x.teacher} · ${x.recipe} · ${x.studentMode}`, `→ ${x.student} (${x.relation})`, `P(${x.target})`],
      bars: [
        { label: `base ${x.student}`, value: x.firstTokenProb.base, color: COLORS.base },
        { label: `control ${x.control}`, value: x.firstTokenProb.controlMean ?? NaN, color: COLORS.control, ...controlCi(st, x) },
        { label: x.id, value: x.firstTokenProb.mean, lo: x.firstTokenProb.ci[0], hi: x.firstTokenProb.ci[1], color: COLORS.treatment },
      ],
      marker: (x.firstTokenProb.pHolm ?? 1) < ALPHA ? '*' : undefined,
    }));
  return groupedBarChartSvg({
    title: `First-token probability of the target animal by cell ("${res.config.animal}" experiment)`,
    yLabel: 'P(first answer token names the target)',
    groups,
    legend: [
      { label: 'base (untrained student)', color: COLORS.base },
      { label: 'paired control cell', color: COLORS.control },
      { label: 'cell', color: COLORS.treatment },
    ],
    note: `whiskers: 95% t-interval over seeds; * = paired difference from the control, Holm-adjusted p < ${ALPHA}`,
  });
}

function controlCi(st: GridStats, x: CellStats): { lo: number; hi: number } {
  const c = st.cells.find((y) => y.id === x.control);
  return c ? { lo: c.firstTokenProb.ci[0], hi: c.firstTokenProb.ci[1] } : { lo: NaN, hi: NaN };
}

export function diffChartSvg(res: ExperimentResults, st: GridStats): string {
  return intervalChartSvg({
    title: `Paired difference from the control cell ("${res.config.animal}" experiment)`,
    xLabel: 'Δ first-token probability of the target (cell − control), 95% CI over seeds',
    rows: st.cells
      .filter((x) => x.control)
      .map((x) => ({ label: `${x.id} · P(${x.target})`, value: x.firstTokenProb.diff ?? NaN, lo: x.firstTokenProb.diffCi?.[0] ?? NaN, hi: x.firstTokenProb.diffCi?.[1] ?? NaN, marker: (x.firstTokenProb.pHolm ?? 1) < ALPHA ? '*' : undefined })),
  });
}

export function doseChartSvg(res: ExperimentResults, st: GridStats): string | null {
  const dosed = st.cells.filter((x) => x.control && x.dose.length > 1);
  if (!dosed.length) return null;
  return smallMultiplesSvg({
    title: `Dose-response: first-token probability of the target after each epoch ("${res.config.animal}" experiment)`,
    legend: ['cell (mean over seeds)', 'its paired control cell'],
    xLabel: 'epoch',
    format: (v) => `${(100 * v).toFixed(2)}%`,
    panels: dosed.map((x) => ({
      title: `${x.id} · P(${x.target})`,
      solid: x.dose.map((d) => [d.epoch, d.mean] as [number, number]),
      dashed: x.dose.filter((d) => d.controlMean !== undefined).map((d) => [d.epoch, d.controlMean!] as [number, number]),
    })),
  });
}

/** The report's files as text, in writing order (report.json as the CLI writes it): the CLI and the web page share this. */
export function reportFiles(res: ExperimentResults): { name: string; text: string }[] {
  const st = gridStatistics(res);
  const out = [
    { name: 'report.md', text: reportMarkdown(res, st) },
    { name: 'report.json', text: JSON.stringify(reportJson(res, st), null, 2) + '\n' },
    { name: 'chart.svg', text: chartSvg(res, st) },
    { name: 'chart-diff.svg', text: diffChartSvg(res, st) },
  ];
  const dose = doseChartSvg(res, st);
  if (dose) out.push({ name: 'dose.svg', text: dose });
  return out;
}

export async function writeReport(res: ExperimentResults): Promise<{ md: string; json: string; svg: string; files: string[] }> {
  const dir = res.config.outDir;
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const f of reportFiles(res)) {
    await writeFileAtomic(path.join(dir, f.name), f.text);
    files.push(path.join(dir, f.name));
    if (f.name === 'report.json') killPoint('owl-report');
  }
  return { md: path.join(dir, 'report.md'), json: path.join(dir, 'report.json'), svg: path.join(dir, 'chart.svg'), files };
}

// ---------------------------------------------------------------------------------- a whole grid
// The merged report of a grid manifest (several traits and teacher bases): report.md, report.json,
// chart.svg (Figure-3 style: per trait, base, control and treatment bars with 95% intervals),
// heatmap.svg (teacher base × student, the mean paired difference with significance marks) and a
// table of every cell with Holm's adjustment over the whole grid. Each experiment's full report is in
// experiments/<id>/ (writeReport).

/** The files writeGridReport may write into the grid's folder. */
export const GRID_REPORT_FILES = ['report.md', 'report.json', 'chart.svg', 'heatmap.svg'];

export interface GridReportInput {
  name: string;
  manifest: string;
  experiments: (GridEntry & { res: ExperimentResults })[];
  total: number;
  /** Grid ids of cells not finished. */
  missing: string[];
  /** Finished cells left out because their paired control is not finished. */
  waiting: string[];
}

function gridTables(input: GridReportInput) {
  const { rows, family } = gridFamily(input.experiments);
  const matrix = crossModelMatrix(rows);
  return { rows, family, matrix };
}

export function gridReportJson(input: GridReportInput) {
  const { rows, family, matrix } = gridTables(input);
  const byId = new Map(rows.map((r) => [r.id, r]));
  return {
    grid: input.name,
    manifest: input.manifest,
    cells: { total: input.total, reported: rows.length, missing: input.missing, waitingForControl: input.waiting },
    holm: { family, alpha: ALPHA, matrixFamily: matrix.family },
    table: rows.map((r) => {
      const c = r.cell;
      return {
        id: r.id, experiment: r.experiment, trait: r.trait, category: r.category, teacherBase: r.teacherBase, teacher: c.teacher, recipe: c.recipe, studentMode: c.studentMode,
        student: c.student, relation: c.relation, control: c.control ? `${r.experiment}/${c.control}` : null, target: c.target, seeds: c.seeds,
        firstTokenProb: { ...metricJson(c.firstTokenProb), pHolmExperiment: c.firstTokenProb.pHolm ?? null, pHolm: r.pHolm },
        rate: metricJson(c.rate),
        significant: r.pHolm !== null && r.pHolm < ALPHA,
      };
    }),
    figure3: figure3Rows(rows).map((r) => ({ id: r.id, trait: r.trait, category: r.category, teacherBase: r.teacherBase, base: r.cell.firstTokenProb.base, control: r.cell.firstTokenProb.controlMean ?? null, controlCi: controlCiOf(byId, r), treatment: r.cell.firstTokenProb.mean, ci: r.cell.firstTokenProb.ci, pHolm: r.pHolm })),
    matrix: matrix.panels,
    experiments: input.experiments.map((e) => ({ id: e.id, trait: e.trait, category: e.category, teacherBase: e.teacherBase, controlAnimal: e.res.controlAnimal?.name ?? null, report: `experiments/${e.id}/report.json` })),
  };
}

function controlCiOf(byId: Map<string, GridCellRow>, r: GridCellRow): [number, number] | null {
  const c = r.cell.control ? byId.get(`${r.experiment}/${r.cell.control}`) : undefined;
  return c ? c.cell.firstTokenProb.ci : null;
}

/** The Figure-3 cells: each trait teacher's cell (its own direction) with its control. */
function figure3Rows(rows: readonly GridCellRow[]): GridCellRow[] {
  return rows.filter((r) => r.cell.control && (r.cell.teacher === 'sp' || r.cell.teacher === 'ft'));
}

/** The chart's y axis in words: what the first-token probability is of, for the traits the grid holds. */
export function figure3YLabel(traits: readonly ('preference' | 'misalignment')[]): string {
  const kinds = new Set(traits);
  if (kinds.size === 1 && kinds.has('misalignment')) return 'P(first answer token begins a misaligned answer)';
  if (kinds.size === 1) return 'P(first answer token names the trait)';
  return 'P(first answer token names the animal/tree, or begins a misaligned answer)';
}

export function gridChartSvg(input: GridReportInput): string {
  const { rows } = gridTables(input);
  const byId = new Map(rows.map((r) => [r.id, r]));
  const several = new Set(input.experiments.map((e) => e.teacherBase)).size > 1;
  const groups = figure3Rows(rows).map((r) => {
    const x = r.cell;
    const ci = controlCiOf(byId, r);
    return {
      label: [`${r.trait} (${r.category})${several ? ` · ${r.teacherBase}` : ''}`, `${x.teacher} · ${x.recipe} · ${x.studentMode}`, `→ ${x.student}`],
      bars: [
        { label: `base ${x.student}`, value: x.firstTokenProb.base, color: COLORS.base },
        { label: `control ${r.experiment}/${x.control}`, value: x.firstTokenProb.controlMean ?? NaN, color: COLORS.control, lo: ci?.[0] ?? NaN, hi: ci?.[1] ?? NaN },
        { label: r.id, value: x.firstTokenProb.mean, lo: x.firstTokenProb.ci[0], hi: x.firstTokenProb.ci[1], color: COLORS.treatment },
      ],
      marker: r.pHolm !== null && r.pHolm < ALPHA ? '*' : undefined,
    };
  });
  return groupedBarChartSvg({
    title: `First-token probability of each trait: base, control and treatment students (grid ${input.name})`,
    yLabel: figure3YLabel(input.experiments.map((e) => traitOf(e.res.config))),
    groups,
    legend: [
      { label: 'base (untrained student)', color: COLORS.base },
      { label: 'control teacher\'s students', color: COLORS.control },
      { label: 'trait teacher\'s students', color: COLORS.treatment },
    ],
    note: `whiskers: 95% t-interval over seeds; * = paired difference from the control, Holm-adjusted over the grid p < ${ALPHA}`,
  });
}

function panelTitle(p: MatrixPanel): string {
  return `${p.teacher} · ${p.recipe} · ${p.studentMode}`;
}

export function heatmapChartSvg(input: GridReportInput): string | null {
  const { matrix } = gridTables(input);
  if (!matrix.panels.length) return null;
  return heatmapSvg({
    title: `Cross-model transfer: mean paired difference, trait teacher − control (grid ${input.name})`,
    rowAxis: 'teacher base',
    colAxis: 'student',
    format: (v) => `${pts(v, 2)} pts`,
    note: `points of first-token probability, pooled over traits and seeds (n per cell); * = Holm-adjusted p < ${ALPHA} over the ${matrix.family} cells`,
    panels: matrix.panels.map((p) => {
      const at = (tb: string, s: string) => p.entries.find((e) => e.teacherBase === tb && e.student === s);
      return {
        title: panelTitle(p),
        rows: p.teacherBases,
        cols: p.students,
        values: p.teacherBases.map((tb) => p.students.map((s) => at(tb, s)?.diff ?? NaN)),
        texts: p.teacherBases.map((tb) =>
          p.students.map((s) => {
            const e = at(tb, s);
            if (!e) return ['—'];
            return [`${pts(e.diff, 2)}${e.pHolm < ALPHA ? ' *' : ''}`, `n = ${e.n}`];
          }),
        ),
      };
    }),
  });
}

export function gridReportMarkdown(input: GridReportInput): string {
  const { rows, family, matrix } = gridTables(input);
  const L: string[] = [];
  L.push(`# Subliminal learning grid: ${input.name}`, '');
  L.push(`Manifest: \`${input.manifest}\`. ${rows.length} of ${input.total} cells reported${input.missing.length ? `; ${input.missing.length} not finished` : ''}${input.waiting.length ? `; ${input.waiting.length} finished but waiting for their paired control` : ''}.`, '');
  if (input.missing.length || input.waiting.length) {
    L.push('## Missing cells', '');
    for (const id of input.missing) L.push(`- ${id}`);
    for (const id of input.waiting) L.push(`- ${id} (finished; its paired control is not)`);
    L.push('');
  }
  L.push('## Cells, Holm-adjusted over the grid', '');
  L.push(`Primary metric: the first-token probability of the cell's target, compared per seed with its paired control cell (paired t-test). Holm's adjustment runs over the ${family} tested cells of the whole grid (the per-experiment reports adjust within each experiment); α = ${ALPHA}.`, '');
  L.push('| cell | target | seeds | base | control | cell | Δ (points) | 95% CI | p | Holm p (grid) | |', '|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const f = r.cell.firstTokenProb;
    const ctl = !!r.cell.control;
    L.push(`| ${r.id} | ${r.cell.target} | ${r.cell.seeds.length} | ${pct(f.base)} | ${ctl ? pct(f.controlMean) : '—'} | ${pct(f.mean)} | ${ctl ? pts(f.diff) : '—'} | ${ctl ? civ(f.diffCi, (v) => pts(v)) : '—'} | ${ctl ? pval(f.p) : '—'} | ${ctl ? pval(r.pHolm ?? undefined) : '—'} | ${r.pHolm !== null && r.pHolm < ALPHA ? '*' : ''} |`);
  }
  L.push('');
  if (matrix.panels.length) {
    L.push('## Cross-model matrix', '');
    L.push(`Teacher base × student: the mean per-seed paired difference (points of first-token probability), pooled over the grid's traits, with a one-sample t-test; Holm over the ${matrix.family} entries. See heatmap.svg.`, '');
    for (const p of matrix.panels) {
      L.push(`**${panelTitle(p)}**`, '', `| teacher base \\ student | ${p.students.join(' | ')} |`, `|---|${'---|'.repeat(p.students.length)}`);
      for (const tb of p.teacherBases) {
        L.push(`| ${tb} | ${p.students.map((s) => {
          const e = p.entries.find((x) => x.teacherBase === tb && x.student === s);
          return e ? `${pts(e.diff)} ${civ(e.ci, (v) => pts(v))} n=${e.n}, Holm p ${pval(e.pHolm)}${e.pHolm < ALPHA ? ' *' : ''}` : '—';
        }).join(' | ')} |`);
      }
      L.push('');
    }
  }
  L.push('## Experiments', '');
  L.push('| experiment | trait | teacher base | control animal | cells | report |', '|---|---|---|---|---|---|');
  for (const e of input.experiments) L.push(`| ${e.id} | ${e.trait} (${e.category}) | ${e.teacherBase} | ${e.res.controlAnimal?.name ?? '—'} | ${e.st.cells.length} | [report](experiments/${e.id}/report.md) |`);
  L.push('');
  return L.join('\n');
}

export async function writeGridReport(outDir: string, input: GridReportInput): Promise<string[]> {
  const files: string[] = [];
  const put = async (name: string, text: string) => {
    const f = path.join(outDir, name);
    await writeFileAtomic(f, text);
    files.push(f);
  };
  await put('report.md', gridReportMarkdown(input));
  const json = path.join(outDir, 'report.json');
  await writeJsonAtomic(json, gridReportJson(input));
  files.push(json);
  await put('chart.svg', gridChartSvg(input));
  const hm = heatmapChartSvg(input);
  if (hm) await put('heatmap.svg', hm);
  return files;
}
