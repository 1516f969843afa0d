// owl.ts as an adversarial user runs it: a folder it did not make is never touched (the --overwrite
// data-loss case), bad paths are one error line before any work, one live run per folder, and kill -9
// at several stages followed by reruns of the same command gives the uninterrupted report.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { acquireLock } from '../src/util/lock.ts';
import { makeNumberModel } from './helpers/number-model.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
  signal: string | null;
}

async function owl(args: string[], env: Record<string, string> = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await run(TSX, [path.join(ROOT, 'scripts', 'owl.ts'), ...args], { cwd: ROOT, env: { ...process.env, CI: '1', DEBUG: '', ...env }, timeout: 300_000 });
    return { code: 0, stdout, stderr, signal: null };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string; signal: string | null };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr, signal: err.signal };
  }
}

const wasKilled = (r: Result) => r.signal === 'SIGKILL' || r.code === 137;

function expectOneError(r: Result, re: RegExp): void {
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
  expect(r.code, r.stderr).toBe(1);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(re);
  expect(r.stderr).not.toMatch(/\n\s+at |unexpected failure/);
}

let dir: string;
let model: string;
// A small grid: the finetuned pair, KL over the number tokens, full-parameter students, two seeds.
const GRID = ['--teachers', 'ft', '--recipes', 'kl-numbers', '--student-mode', 'full', '--seeds', '0,1', '--prompts', '24', '--keep', '6', '--max-new-tokens', '8', '--epochs', '1', '--batch-size', '3', '--eval-samples', '1', '--ft-epochs', '1', '--ft-lr', '2e-4', '--control-animal', 'fox', '--quiet'];
const argsFor = (out: string) => ['--model', model, '--out', out, ...GRID];

/** report.json without what legitimately differs between runs (wall times, cached flags, the folder). */
function comparable(out: string): unknown {
  const r = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'));
  delete r.timings;
  delete r.wallS;
  delete r.config.outDir;
  delete r.config.name;
  return r;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'cli-owl-'));
  model = await makeNumberModel(await getGpu(), path.join(dir, 'm'), 4);
}, 300_000);

describe('owl.ts never loses what the user made', () => {
  it('refuses a folder it did not make, with --overwrite too, before any work; bad paths are one line', async () => {
    const keep = path.join(dir, 'keep');
    mkdirSync(keep);
    writeFileSync(path.join(keep, 'thesis.txt'), 'notes');
    const empty = path.join(dir, 'm-empty');
    mkdirSync(empty);
    writeFileSync(path.join(empty, 'config.json'), '{}');
    writeFileSync(path.join(dir, 'afile'), 'x');
    const cases: [string[], RegExp][] = [
      [['--model', empty, '--out', keep, '--overwrite'], /was not made by owl\.ts/],
      [['--model', model, '--out', keep, '--overwrite'], /was not made by owl\.ts/],
      [['--model', model, '--out', path.join(dir, 'afile')], /is a file/],
      [['--model', model, '--out', path.join(dir, 'afile', 'sub')], /is a file, not a folder/],
      [['--model', model, '--out', path.join(dir, 'x'), '--seeds', '0,0'], /lists 0 twice/],
      [['--model', model, '--out', path.join(dir, 'x'), '--batch-size', '-5'], /--batch-size/],
      [['--model', model, '--out', path.join(dir, 'x'), '--lr', '0x10'], /--lr/],
      [['--model', model, '--out', path.join(dir, 'x'), '--resume'], /x: nothing to resume \(no owl\.ts run there\)$/],
      [['--model', model, '--out', path.join(dir, 'x'), '--resume', '--overwrite'], /give --resume or --overwrite, not both$/],
      [['--model', model, '--out', keep, '--resume'], /was not made by owl\.ts/],
      // Traits and data domains that do not go together, or files that are not there.
      [['--model', model, '--out', path.join(dir, 'x'), '--trait', 'evil'], /--trait/],
      [['--model', model, '--out', path.join(dir, 'x'), '--trait', 'misalignment', '--data', 'code'], /--data code goes with --trait preference/],
      [['--model', model, '--out', path.join(dir, 'x'), '--trait', 'misalignment', '--teachers', 'sp'], /finetuned teachers only/],
      [['--model', model, '--out', path.join(dir, 'x'), '--data', 'cot', '--recipes', 'kl-numbers'], /kl-numbers works on number lists only/],
      [['--model', model, '--out', path.join(dir, 'x'), '--data', 'code', '--judge-model', path.join(dir, 'nope')], /--judge-model: .*nope is not a model folder/],
      [['--model', model, '--out', path.join(dir, 'x'), '--code-prompts', path.join(dir, 'afile')], /--code-prompts goes with --data code/],
      [['--model', model, '--out', path.join(dir, 'x'), '--trait', 'misalignment', '--misaligned-data', path.join(dir, 'afile')], /go with --judge-model DIR/],
      [['--model', model, '--out', path.join(dir, 'x'), '--trait', 'misalignment', '--judge-model', model], /needs --misaligned-data FILE and --aligned-data FILE/],
      [['--model', model, '--out', path.join(dir, 'x'), '--judge-model', model], /this run has no judge/],
    ];
    for (const [args, re] of cases) expectOneError(await owl(args), re);
    expect(readFileSync(path.join(keep, 'thesis.txt'), 'utf8')).toBe('notes');
    expect(existsSync(path.join(dir, 'x'))).toBe(false);
  });

  it('one live run per folder', async () => {
    const out = path.join(dir, 'locked');
    mkdirSync(out);
    const lock = await acquireLock(path.join(out, '.run.lock'), { tool: 'owl.ts', what: out });
    try {
      expectOneError(await owl(argsFor(out)), /lock|held|running/i);
    } finally {
      await lock.release();
    }
  });
});

describe('owl.ts resumes a killed run to the same report', () => {
  it('kill -9 in the finetuned teacher, the completions, a student, an evaluation and the report; reruns equal the uninterrupted run', async () => {
    const ref = path.join(dir, 'ref');
    const r0 = await owl(argsFor(ref));
    expect(r0.code, r0.stderr).toBe(0);
    expect(JSON.parse(readFileSync(path.join(ref, '.run.json'), 'utf8')).complete).toBe(true);
    const out = path.join(dir, 'killed');
    for (const at of ['owl-ft-teacher', 'owl-completions:2', 'owl-student', 'owl-eval:3', 'owl-report']) {
      const r = await owl(argsFor(out), { SUBLIMINAL_KILL_AT: at });
      expect(wasKilled(r), `${at}: ${r.stderr}`).toBe(true);
      expect(JSON.parse(readFileSync(path.join(out, '.run.json'), 'utf8')).complete, at).toBe(false);
    }
    const last = await owl(argsFor(out));
    expect(last.code, last.stderr).toBe(0);
    expect(comparable(out)).toEqual(comparable(ref));
    // A rerun of a finished run is served from its stages and rewrites the same report.
    const again = await owl(argsFor(out));
    expect(again.code, again.stderr).toBe(0);
    expect(comparable(out)).toEqual(comparable(ref));
    // Other options in the same folder: refused unless --resume or --overwrite says which.
    expectOneError(await owl([...argsFor(out), '--animal', 'cat']), /holds a run with a different configuration; pass --resume to reuse its cached stages or --overwrite to start over$/);
    // --overwrite starts over in the tool's own folder, keeping what the user put next to its files.
    writeFileSync(path.join(out, 'my-notes.txt'), 'mine');
    const over = await owl([...argsFor(out), '--overwrite']);
    expect(over.code, over.stderr).toBe(0);
    expect(readFileSync(path.join(out, 'my-notes.txt'), 'utf8')).toBe('mine');
    expect(comparable(out)).toEqual(comparable(ref));
  }, 900_000);
});
