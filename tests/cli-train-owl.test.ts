// The train and owl CLIs as a user runs them: one-line errors with a non-zero exit for bad input,
// and a small real training run writing a PEFT adapter, loss curve and resumable state.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

async function cli(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(TSX, [path.join(ROOT, 'scripts', script), ...args], { cwd: ROOT, env: { ...process.env, CI: '1' }, timeout: 180_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** The error line (Dawn may print adapter warnings on stderr before it). */
function errorLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.startsWith('error:'));
}

let dir: string;
let model: string;
let data: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'cli-train-'));
  model = path.join(dir, 'model');
  mkdirSync(model);
  const V = writeTestTokenizer(model);
  await writeRandomCheckpoint(model, tinyConfigJson('qwen2', { vocab_size: V, eos_token_id: V - 1 }), { dtype: 'BF16', seed: 2 });
  data = path.join(dir, 'data.jsonl');
  writeFileSync(data, Array.from({ length: 12 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `n ${i}` }, { role: 'assistant', content: `${i}, ${i + 1}` }] })).join('\n') + '\n');
});

describe('train CLI', () => {
  it('prints --help', async () => {
    const r = await cli('train.ts', ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage: npx tsx scripts/train.ts');
  });

  it('rejects bad input with one error line', async () => {
    const bad = path.join(dir, 'bad.jsonl');
    writeFileSync(bad, `${JSON.stringify({ messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] })}\n{not json\n`);
    const noAsst = path.join(dir, 'noasst.jsonl');
    writeFileSync(noAsst, `${JSON.stringify({ messages: [{ role: 'user', content: 'a' }] })}\n`);
    const cases: [string[], RegExp][] = [
      [['--data', data, '--out', path.join(dir, 'o1')], /--model is required/],
      [['--model', path.join(dir, 'nope'), '--data', data, '--out', path.join(dir, 'o2')], /model folder not found/],
      [['--model', model, '--data', bad, '--out', path.join(dir, 'o3')], /bad\.jsonl:2: not valid JSON/],
      [['--model', model, '--data', noAsst, '--out', path.join(dir, 'o4')], /noasst\.jsonl:1: .*no assistant turn/],
      [['--model', model, '--data', data, '--out', path.join(dir, 'o5'), '--targets', 'q_proj,wq'], /'wq' is not a projection/],
      [['--model', model, '--data', data, '--out', path.join(dir, 'o6'), '--lr', 'fast'], /--lr must be a number/],
      [['--model', model, '--data', data, '--out', path.join(dir, 'o7'), '--resume'], /nothing to resume/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli('train.ts', args)));
    results.forEach((r, i) => {
      expect(r.code, r.stderr).not.toBe(0);
      const lines = errorLines(r.stderr);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(cases[i][1]);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    });
  });

  it('trains a LoRA adapter, writes PEFT files, a loss curve and state; refuses to reuse the folder', async () => {
    const out = path.join(dir, 'run');
    const args = ['--model', model, '--data', data, '--out', out, '--batch-size', '4', '--grad-accum', '1', '--epochs', '1', '--save-initial', '--quiet'];
    const r = await cli('train.ts', args);
    expect(r.code, r.stderr).toBe(0);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'initial/adapter_config.json', 'loss.csv', 'loss.svg', 'state/ckpt-000001/manifest.json', 'state/ckpt-000001/state.json', 'train_summary.json', '.run.json']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    const cfg = JSON.parse(readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg.peft_type).toBe('LORA');
    expect(cfg.r).toBe(8);
    expect(readFileSync(path.join(out, 'loss.csv'), 'utf8').trim().split('\n')).toHaveLength(1 + 3);
    const again = await cli('train.ts', args);
    expect(again.code).not.toBe(0);
    expect(errorLines(again.stderr)[0]).toMatch(/already holds a training run/);
  });
});

describe('owl CLI', () => {
  it('prints --help and rejects bad input with one error line', async () => {
    const help = await cli('owl.ts', ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--paper');
    const cases: [string[], RegExp][] = [
      [['--animal', 'o/wl', '--model', model], /--animal must be a plain name/],
      [['--model', path.join(dir, 'nope')], /not a model folder/],
      [['--model', model, '--recipes', 'sft,bogus'], /--recipes: unknown value 'bogus'/],
      [['--model', model, '--teachers', 'ft-control'], /--teachers: unknown value 'ft-control'/],
      [['--model', model, '--student-mode', 'half'], /--student-mode must be one of/],
      [['--model', model, '--seeds', '0,1,0'], /--seeds lists 0 twice/],
      [['--model', model, '--animal', 'owl', '--control-animal', 'owl'], /--control-animal must differ/],
      [['--model', model, '--eval', 'poems'], /--eval must be one of/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli('owl.ts', args)));
    results.forEach((r, i) => {
      expect(r.code).not.toBe(0);
      const lines = errorLines(r.stderr);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(cases[i][1]);
    });
  });
});
