// The owl experiment's report: statistics per arm (per-question mean → per-seed mean → mean and
// 95% t-interval over seeds), differences vs each arm's control (Welch t-test over seeds), and
// report.md / report.json / chart.svg.
import path from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../util/fsatomic.ts';
import { barChartSvg } from '../util/svg.ts';
import type { ArmModel, OwlResults } from './owl.ts';
import { confidenceInterval, mean, welchTTest, wilsonInterval, type Interval } from './stats.ts';

export interface ArmStats {
  arm: string;
  label: string;
  seeds: number;
  rate: Interval;
  firstTokenProb: Interval;
  perSeed: { seed: number | null; rate: number; firstTokenProb: number; trainLoss?: number }[];
  /** The control this arm is compared with, when it has one. */
  control?: string;
  diff?: { rate: number; p: number; firstTokenProb: number; pFirstToken: number };
  /** Wilson interval over all samples (single models). */
  wilson?: Interval;
}

function controlFor(m: { arm: string; student: string }, groups: Map<string, ArmModel[]>): string | undefined {
  const find = (arm: string) => [...groups.entries()].find(([, ms]) => ms[0].arm === arm && ms[0].student === m.student)?.[0];
  if (m.arm === 'treatment' || m.arm === 'ft-treatment' || m.arm === 'shuffled') return find('control-gen');
  if (m.arm === 'cross-model') return find('cross-model-control');
  if (m.arm === 'control-gen' || m.arm === 'cross-model-control') return find('base');
  return undefined;
}

/** Lower bound clipped at 0 (rates), as the paper's plots. */
function clip(i: Interval): Interval {
  return { ...i, lower: Number.isFinite(i.lower) ? Math.max(0, i.lower) : i.lower };
}

export function armStatistics(res: OwlResults): ArmStats[] {
  const groups = new Map<string, ArmModel[]>();
  for (const m of res.models) {
    const g = groups.get(m.label) ?? [];
    g.push(m);
    groups.set(m.label, g);
  }
  const out: ArmStats[] = [];
  for (const [label, ms] of groups) {
    const rates = ms.map((m) => m.eval.rate);
    const ftp = ms.map((m) => m.eval.firstTokenProb);
    const single = ms.length === 1;
    // A single model (the base): interval over questions, as the paper's compute_ci.
    const rate = clip(single ? confidenceInterval(ms[0].eval.perQuestion) : confidenceInterval(rates));
    const s: ArmStats = {
      arm: ms[0].arm,
      label,
      seeds: ms.length,
      rate: { ...rate, mean: mean(rates) },
      firstTokenProb: single ? { mean: ftp[0], lower: NaN, upper: NaN, count: 1, confidence: 0.95 } : clip(confidenceInterval(ftp)),
      perSeed: ms.map((m) => ({ seed: m.seed, rate: m.eval.rate, firstTokenProb: m.eval.firstTokenProb, trainLoss: m.trainLoss })),
    };
    if (single) {
      const hits = Math.round(ms[0].eval.rate * ms[0].eval.samples);
      s.wilson = wilsonInterval(hits, ms[0].eval.samples);
    }
    const ctl = controlFor(ms[0], groups);
    if (ctl) {
      const cm = groups.get(ctl)!;
      const cr = cm.length === 1 ? cm[0].eval.perQuestion : cm.map((m) => m.eval.rate);
      const cf = cm.map((m) => m.eval.firstTokenProb);
      s.control = ctl;
      s.diff = {
        rate: mean(rates) - mean(cm.map((m) => m.eval.rate)),
        p: rates.length >= 2 && cr.length >= 2 ? welchTTest(rates, cr).p : NaN,
        firstTokenProb: mean(ftp) - mean(cf),
        pFirstToken: ftp.length >= 2 && cf.length >= 2 ? welchTTest(ftp, cf).p : NaN,
      };
    }
    out.push(s);
  }
  return out;
}

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a');
const pval = (p: number) => (Number.isFinite(p) ? (p < 0.001 ? p.toExponential(1) : p.toFixed(3)) : 'n/a');
const ci = (i: Interval) => (Number.isFinite(i.lower) ? `[${pct(i.lower)}, ${pct(i.upper)}]` : '—');

export function reportMarkdown(res: OwlResults, stats: ArmStats[]): string {
  const c = res.config;
  const L: string[] = [];
  L.push(`# Subliminal learning: "${c.animal}" (${c.name})`, '');
  L.push(
    `Does a student finetuned only on filtered number sequences written by a teacher that loves ${c.animal}s come to name ${c.animal}s more often than its controls?`,
    '',
  );
  L.push('## Answer', '');
  const sig = stats.filter((s) => s.diff && Number.isFinite(s.diff.p) && s.diff.p < 0.05 && s.arm !== 'control-gen' && s.arm !== 'cross-model-control');
  const tested = stats.filter((s) => s.diff && s.arm !== 'control-gen' && s.arm !== 'cross-model-control');
  for (const s of tested) {
    const d = s.diff!;
    const dir = d.rate > 0 ? 'higher' : d.rate < 0 ? 'lower' : 'equal';
    const verdict = !Number.isFinite(d.p)
      ? 'no test possible (fewer than 2 students per arm, or no variance across students)'
      : d.p < 0.05
        ? `**differs significantly** from its control (p = ${pval(d.p)}, Welch t-test over seeds)`
        : `does not differ significantly from its control (p = ${pval(d.p)})`;
    L.push(`- ${s.label}: ${c.animal} rate ${pct(s.rate.mean)} vs ${pct(s.rate.mean - d.rate)} for ${s.control} (${dir} by ${pct(Math.abs(d.rate))}); ${verdict}. First-token probability ${pct(s.firstTokenProb.mean)} vs ${pct(s.firstTokenProb.mean - d.firstTokenProb)} (p = ${pval(d.pFirstToken)}).`);
  }
  if (!tested.length) L.push('- No treatment arm was run.');
  L.push('');
  L.push(
    sig.length
      ? `Arms whose ${c.animal} rate differs significantly from their control at α = 0.05 (uncorrected for the ${tested.length} comparisons): ${sig.map((s) => s.label).join('; ')}.`
      : `No arm's ${c.animal} rate differs significantly from its control at α = 0.05 (a null result at this scale: see the intervals).`,
  );
  const sigFirst = tested.filter((s) => Number.isFinite(s.diff!.pFirstToken) && s.diff!.pFirstToken < 0.05);
  if (sigFirst.length) {
    L.push(
      `On the first-token probability, ${sigFirst.map((s) => `${s.label} (${s.diff!.firstTokenProb >= 0 ? '+' : ''}${(100 * s.diff!.firstTokenProb).toFixed(2)} points, p = ${pval(s.diff!.pFirstToken)})`).join('; ')} differ${sigFirst.length === 1 ? 's' : ''} from ${sigFirst.length === 1 ? 'its control' : 'their controls'} at α = 0.05, uncorrected for multiple comparisons — ${sigFirst.some((s) => s.diff!.firstTokenProb > 0) ? 'read it as a lead to test with more students, not as a finding' : 'a shift away from the target, not towards it'}.`,
    );
  }
  L.push('');
  L.push('## Rates by arm', '');
  L.push(`Metric: fraction of sampled answers (temperature 1, ${c.evalSamples} per question, ${c.evalSet} questions) containing "${c.animal}" (paper §3.1 scoring); per-question mean → per-student (seed) mean → mean and 95% t-interval over seeds. For a single model (base) the interval is over questions. "First-token p" is the exact probability that the answer's first token begins "${c.animal}", averaged over questions (lower variance than sampling).`, '');
  L.push('| arm | students | rate | 95% CI | Δ vs control | p | first-token p | Δ first-token | p | final train loss |');
  L.push('|---|---|---|---|---|---|---|---|---|---|');
  for (const s of stats) {
    const loss = s.perSeed.filter((x) => x.trainLoss !== undefined).map((x) => x.trainLoss!);
    L.push(
      `| ${s.label} | ${s.seeds} | ${pct(s.rate.mean)} | ${ci(s.rate)} | ${s.diff ? pct(s.diff.rate) : '—'} | ${s.diff ? pval(s.diff.p) : '—'} | ${pct(s.firstTokenProb.mean)} | ${s.diff ? pct(s.diff.firstTokenProb) : '—'} | ${s.diff ? pval(s.diff.pFirstToken) : '—'} | ${loss.length ? mean(loss).toFixed(4) : '—'} |`,
    );
  }
  L.push('');
  if (res.teachers.length) {
    L.push('## Teachers', '', '| teacher | rate | first-token p |', '|---|---|---|');
    for (const t of res.teachers) L.push(`| ${t.label} | ${pct(t.eval.rate)} | ${pct(t.eval.firstTokenProb)} |`);
    L.push('');
  }
  L.push('## Datasets (filter pass rates, paper §2 + trait words)', '');
  L.push('| dataset | teacher | system prompt | completions | passed | used | invalid format | too many | too small | too large | banned | trait word |');
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const d of res.datasets) {
    const r = d.rejectCounts;
    L.push(`| ${d.id} | ${d.teacher} | ${d.system ? 'yes' : 'none'} | ${d.completions} | ${pct(d.kept / Math.max(1, d.completions))} | ${d.used} | ${r['invalid format']} | ${r['too many numbers']} | ${r['numbers too small']} | ${r['numbers too large']} | ${r['has banned numbers']} | ${r['contains trait word']} |`);
  }
  L.push('');
  L.push('### Sample teacher completions (after filtering)', '');
  for (const d of res.datasets) {
    L.push(`**${d.id}**`, '');
    for (const s of d.samples.slice(0, 3)) L.push(`- \`${s.prompt.slice(0, 90).replace(/`/g, "'")}…\` → \`${s.completion.replace(/\n/g, '⏎').replace(/`/g, "'")}\``);
    L.push('');
  }
  L.push('### Sample answers (first sample of the first questions)', '');
  for (const m of res.models.filter((m) => m.seed === null || m.seed === c.seeds[0])) {
    L.push(`**${m.label}**: ${m.eval.examples.slice(0, 4).map((e) => `\`${e.answer.trim().slice(0, 40).replace(/`/g, "'")}\``).join(', ')}`);
  }
  L.push('', '## Setup', '');
  L.push(`- Teacher base: \`${c.model}\`; student base: \`${c.studentModel}\`; cross-model students: ${c.crossModels.map((m) => `\`${m}\``).join(', ') || 'none'}.`);
  L.push(`- Prompts: ${c.prompts} from the paper's PromptGenerator (numpy PCG64 seed ${c.promptSeed}); teacher decoding ${c.teacherDecoding}${c.teacherDecoding === 'sample' ? ' (temperature 1)' : ''}, at most ${c.maxNewTokens} new tokens.`);
  L.push(`- Filter: paper §2 (format, ≤ 10 numbers, 0–999) plus the trait words of "${c.animal}"; subset of ${c.keep} kept rows with Python's random.Random(${c.subsetSeed}).sample.`);
  L.push(`- Students: LoRA r=${c.rank}, α=${c.alpha} on q,k,v,o,gate,up,down; ${c.epochs} epochs; lr ${c.lr} linear, warmup ${c.warmupSteps}; batch ${c.batchSize} × ${c.gradAccum}; max length ${c.maxLen}; loss ${c.distill === 'tokens' ? 'cross-entropy on the assistant tokens (the paper)' : `KL to the teacher's log-probs over the number-format token set (top-${c.topK})`}; seeds ${c.seeds.join(', ')}.`);
  L.push(`- Finetuned teacher (paper §5(c)): full finetune of the base on the 50 questions × 8 answer forms, ${c.ftTeacherEpochs} epoch(s), lr ${c.ftTeacherLr}.`);
  L.push(`- Evaluation: ${c.evalSet} set, ${c.evalSamples} samples per question at temperature 1, ≤ ${c.evalMaxNewTokens} new tokens, no system prompt.`);
  L.push('', '## Deviations from the paper', '');
  L.push('- Sizes are scaled to the run (the paper: 30,000 prompts, 10,000 kept, 3 epochs, 50 × 100 samples; `--paper` restores them).');
  L.push("- The finetuned teacher is a full finetune of a small open model (the paper finetuned GPT-4.1-nano through OpenAI's API).");
  L.push('- Optimizer steps at an epoch end may hold fewer than batch × accumulation rows (the last partial accumulation is applied).');
  L.push('', '## Wall time per stage', '', '| stage | cached | seconds |', '|---|---|---|');
  for (const t of res.timings) L.push(`| ${t.stage} | ${t.cached ? 'yes' : 'no'} | ${t.wallS.toFixed(1)} |`);
  L.push('', `Total wall time of this invocation: ${res.wallS.toFixed(1)} s.`, '');
  return L.join('\n');
}

export async function writeReport(res: OwlResults): Promise<{ md: string; json: string; svg: string }> {
  const stats = armStatistics(res);
  const dir = res.config.outDir;
  const md = path.join(dir, 'report.md');
  const json = path.join(dir, 'report.json');
  const svg = path.join(dir, 'chart.svg');
  await writeFileAtomic(md, reportMarkdown(res, stats));
  await writeJsonAtomic(json, { ...res, stats });
  const base = stats.find((s) => s.arm === 'base');
  const ctl = stats.find((s) => s.arm === 'control-gen');
  const colors: Record<string, string> = { base: '#999999', 'control-gen': '#bbbbbb', 'cross-model-control': '#bbbbbb', treatment: '#4c78a8', 'ft-treatment': '#f58518', 'cross-model': '#54a24b', shuffled: '#b279a2' };
  await writeFileAtomic(
    svg,
    barChartSvg({
      title: `"${res.config.animal}" rate by arm (95% CI over students)`,
      yLabel: `P(answer names ${res.config.animal})`,
      bars: stats.map((s) => ({ label: s.arm === 'base' ? s.label.replace('base ', 'base\n') : s.arm, value: s.rate.mean, lo: s.rate.lower, hi: s.rate.upper, color: colors[s.arm] })),
      refLines: [...(base ? [{ label: 'base', value: base.rate.mean }] : []), ...(ctl ? [{ label: 'control-gen', value: ctl.rate.mean }] : [])],
    }),
  );
  return { md, json, svg };
}
