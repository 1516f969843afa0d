// train.ts as an adversarial user runs it: bad flags and paths are one `error:` line before any work;
// --overwrite deletes only what train.ts wrote; resume checks contents; kill -9 at several points and a
// rerun of the same command give the uninterrupted result byte for byte; a failed run looks failed.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { acquireLock } from '../src/util/lock.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
  signal: string | null;
}

async function train(args: string[], env: Record<string, string> = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await run(TSX, [path.join(ROOT, 'scripts', 'train.ts'), ...args], { cwd: ROOT, env: { ...process.env, CI: '1', DEBUG: '', ...env }, timeout: 180_000 });
    return { code: 0, stdout, stderr, signal: null };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string; signal: string | null };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr, signal: err.signal };
  }
}

/** tsx relays its child's SIGKILL as exit status 137. */
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
let data: string;
let ref: string;
const COMMON = ['--batch-size', '4', '--grad-accum', '1', '--epochs', '2', '--save-every', '1', '--quiet'];
const argsFor = (out: string, extra: string[] = []) => ['--model', model, '--data', data, '--out', out, ...COMMON, ...extra];

const marker = (out: string) => JSON.parse(readFileSync(path.join(out, '.run.json'), 'utf8'));

function expectSameAsReference(out: string): void {
  expect(readFileSync(path.join(out, 'adapter_model.safetensors')).equals(readFileSync(path.join(ref, 'adapter_model.safetensors')))).toBe(true);
  expect(readFileSync(path.join(out, 'loss.csv'), 'utf8')).toBe(readFileSync(path.join(ref, 'loss.csv'), 'utf8'));
  expect(marker(out).complete).toBe(true);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'cli-train-rel-'));
  model = path.join(dir, 'model');
  mkdirSync(model);
  const V = writeTestTokenizer(model);
  await writeRandomCheckpoint(model, tinyConfigJson('qwen2', { vocab_size: V, eos_token_id: V - 1 }), { dtype: 'BF16', seed: 2 });
  data = path.join(dir, 'data.jsonl');
  writeFileSync(data, Array.from({ length: 12 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `n ${i}` }, { role: 'assistant', content: `${i}, ${i + 1}` }] })).join('\n') + '\n');
  ref = path.join(dir, 'ref');
  const r = await train(argsFor(ref));
  expect(r.code, r.stderr).toBe(0);
});

describe('train.ts refuses nonsense and bad paths before any work', () => {
  it('flags, output paths and other folders: one line each, nothing created or deleted', async () => {
    const keep = path.join(dir, 'keep');
    mkdirSync(keep);
    writeFileSync(path.join(keep, 'thesis.txt'), 'years of work');
    writeFileSync(path.join(dir, 'afile'), 'x');
    const fresh = (n: string) => path.join(dir, `fresh-${n}`);
    const base = (out: string) => ['--model', model, '--data', data, '--out', out];
    const cases: [string[], RegExp][] = [
      [[...base(fresh('a')), '--batch-size', '-5'], /^error: --batch-size must be an integer ≥ 1, got '-5'$/],
      [[...base(fresh('b')), '--lr', '0x10'], /^error: --lr must be a number > 0, got '0x10'$/],
      [[...base(fresh('c')), '--epochs', '0'], /^error: --epochs must be an integer ≥ 1, got '0'$/],
      [[...base(fresh('d')), '--max-steps', 'abc'], /^error: --max-steps must be an integer ≥ 1, got 'abc'$/],
      [[...base(fresh('e')), '--schedule', 'fast'], /^error: --schedule must be one of linear, cosine, constant; got 'fast'$/],
      [[...base(fresh('f')), '--resume', '--overwrite'], /give --resume or --overwrite, not both/],
      [[...base(fresh('g')), '--teacher-adapter', dir], /--teacher-adapter needs --distill-from/],
      [[...base(fresh('h')), '--full', '--rank', '4'], /are LoRA settings; drop them with --full/],
      [[...base(fresh('i')), '--lr', '1', '--lr', '2'], /--lr given twice/],
      [base(path.join(dir, 'afile')), /--out .*afile is a file; it must be a folder/],
      [base(path.join(dir, 'afile', 'run')), /cannot create --out .*afile\/run: .*afile is a file, not a folder/],
      [base(keep), /--out .*keep is not empty \(thesis\.txt\) and was not made by train\.ts .*nothing was changed/],
      [[...base(keep), '--overwrite'], /--out .*keep is not empty \(thesis\.txt\) and was not made by train\.ts/],
      [[...base(fresh('j')), '--resume'], /nothing to resume/],
      [['--model', model, '--data', path.join(dir, 'nope.jsonl'), '--out', fresh('k')], /nope\.jsonl: data file not found/],
      ...(existsSync('/sys/kernel') ? [[base('/sys/kernel/run'), /cannot write --out \/sys\/kernel\/run: \/sys\/kernel is not writable/] as [string[], RegExp]] : []),
    ];
    const results = await Promise.all(cases.map(([a]) => train(a)));
    results.forEach((r, i) => expectOneError(r, cases[i][1]));
    expect(readdirSync(dir).filter((f) => f.startsWith('fresh-'))).toEqual([]);
    expect(readdirSync(keep)).toEqual(['thesis.txt']);
    expect(readFileSync(path.join(keep, 'thesis.txt'), 'utf8')).toBe('years of work');
  });

  it('bad data and a model smaller than its tokenizer: one line naming file:line, no run folder left', async () => {
    const small = path.join(dir, 'small-vocab');
    mkdirSync(small);
    const V = writeTestTokenizer(small);
    await writeRandomCheckpoint(small, tinyConfigJson('qwen2', { vocab_size: V - 3, eos_token_id: V - 4 }), { dtype: 'F32', seed: 1 });
    const topk = path.join(dir, 'topk.jsonl');
    writeFileSync(topk, [JSON.stringify({ input_ids: [1, 2, 3], teacher_topk: { indices: [[1], [2], [3]], logprobs: [[-1], [-1], [-1]] } }), JSON.stringify({ input_ids: [1, 2, 3], teacher_topk: { indices: [[1], [99999], [3]], logprobs: [[-1], [-1], [-1]] } })].join('\n') + '\n');
    const [a, b] = await Promise.all([
      train(['--model', small, '--data', data, '--out', path.join(dir, 'o-small')]),
      train(['--model', model, '--data', topk, '--out', path.join(dir, 'o-topk'), '--distill-weight', '1']),
    ]);
    expectOneError(a, /data\.jsonl:1: the chat tokenizes to id \d+, outside the model's vocabulary \[0, \d+\) \(config\.json vocab_size is smaller than the tokenizer's\)/);
    expectOneError(b, /topk\.jsonl:2: "teacher_topk" position 1: index 99999 outside the vocabulary/);
    expect(existsSync(path.join(dir, 'o-small'))).toBe(false);
    expect(existsSync(path.join(dir, 'o-topk'))).toBe(false);
  });

  it('a second live run on the same folder is refused in one line', async () => {
    const out = path.join(dir, 'locked');
    mkdirSync(out);
    const lock = await acquireLock(path.join(out, '.run.lock'), { tool: 'train.ts' });
    const r = await train(argsFor(out));
    await lock.release();
    expectOneError(r, new RegExp(`${out} is in use by train\\.ts \\(pid ${process.pid} on `));
    expect(readdirSync(out)).toEqual([]);
  });
});

describe('train.ts --overwrite', () => {
  it('replaces only its own files: LoRA → full drops the adapter, full → LoRA drops the model; user files stay', async () => {
    const out = path.join(dir, 'ow');
    cpSync(ref, out, { recursive: true });
    writeFileSync(path.join(out, 'my-notes.md'), 'mine');
    const same = await train(argsFor(out));
    expectOneError(same, /already holds a training run of these flags and files, finished; pass --overwrite to train it again/);
    expectOneError(await train(argsFor(out, ['--resume'])), /finished, so nothing to resume; pass --overwrite to train it again/);
    const other = await train(argsFor(out, ['--lr', '1e-3']));
    expectOneError(other, /holds a finished run with other inputs or settings \(lr 0\.0002 → 0\.001\)/);
    const full = await train(['--model', model, '--data', data, '--out', out, '--full', '--max-steps', '1', '--quiet', '--overwrite']);
    expect(full.code, full.stderr).toBe(0);
    const files = readdirSync(out).sort();
    expect(files).toContain('model.safetensors');
    expect(files).toContain('my-notes.md');
    expect(files).not.toContain('adapter_model.safetensors');
    expect(files).not.toContain('adapter_config.json');
    const lora = await train([...argsFor(out), '--overwrite']);
    expect(lora.code, lora.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['.run.json', 'adapter_config.json', 'adapter_model.safetensors', 'loss.csv', 'loss.svg', 'my-notes.md', 'state', 'train_config.json', 'train_summary.json']);
    expectSameAsReference(out);
  });
});

describe('train.ts after kill -9 and failures', () => {
  it('killed mid-run: looks unfinished, refuses changed data or model contents at the same path, then the same command continues to the uninterrupted result', async () => {
    const out = path.join(dir, 'k1');
    const killed = await train(argsFor(out), { SUBLIMINAL_KILL_AT: 'checkpoint-saved:2' });
    expect(wasKilled(killed), killed.stderr).toBe(true);
    expect(marker(out).complete).toBe(false);
    expect(existsSync(path.join(out, 'adapter_model.safetensors'))).toBe(false); // no complete-looking adapter
    expect(existsSync(path.join(out, 'train_summary.json'))).toBe(false);
    // Same paths, other contents.
    const original = readFileSync(data);
    writeFileSync(data, original.toString().replace('n 3', 'n 33'));
    const changed = await train(argsFor(out, ['--resume']));
    writeFileSync(data, original);
    expectOneError(changed, /holds an unfinished run with other inputs or settings \(the content of --data \(sha256 [0-9a-f]{12}… then, [0-9a-f]{12}… now\)\); rerun with the same flags and files to continue it, or pass --overwrite/);
    const cfgFile = path.join(model, 'config.json');
    const cfg = readFileSync(cfgFile);
    writeFileSync(cfgFile, cfg.toString().replace('"rope_theta": 1000000', '"rope_theta": 10000'));
    expect(readFileSync(cfgFile).equals(cfg)).toBe(false);
    const changedModel = await train(argsFor(out));
    writeFileSync(cfgFile, cfg);
    expectOneError(changedModel, /the content of model config \(sha256/);
    const again = await train(argsFor(out, ['--resume']));
    expect(again.code, again.stderr).toBe(0);
    expectSameAsReference(out);
  });

  it('killed while writing a checkpoint, before the final outputs, and at step 1: a rerun finishes the same run', async () => {
    const outs = ['k2', 'k3', 'k4'].map((n) => path.join(dir, n));
    const points = ['checkpoint-files:3', 'train-final', 'checkpoint-files:1'];
    const killed = await Promise.all(outs.map((o, i) => train(argsFor(o), { SUBLIMINAL_KILL_AT: points[i] })));
    killed.forEach((k) => expect(wasKilled(k), k.stderr).toBe(true));
    for (const o of outs) {
      expect(marker(o).complete).toBe(false);
      expect(existsSync(path.join(o, 'adapter_model.safetensors'))).toBe(false);
    }
    expect(readdirSync(path.join(outs[0], 'state')).sort()).toEqual([expect.stringMatching(/^\.ckpt-000003\.tmp-/), 'ckpt-000002']);
    // A damaged checkpoint is refused, naming the file (in a copy of the run killed before its final outputs).
    const damaged = path.join(dir, 'k3-damaged');
    cpSync(outs[1], damaged, { recursive: true });
    const ck = readdirSync(path.join(damaged, 'state')).find((n) => n.startsWith('ckpt-'))!;
    const bin = path.join(damaged, 'state', ck, 'state.bin');
    const bytes = readFileSync(bin);
    bytes[bytes.length - 1] ^= 1;
    writeFileSync(bin, bytes);
    const corrupt = path.join(dir, 'k4-corrupt');
    cpSync(outs[2], corrupt, { recursive: true });
    writeFileSync(path.join(corrupt, 'train_config.json'), '{"settings": ');
    const [r2, r3, r4, rd, rc] = await Promise.all([...outs.map((o) => train(argsFor(o))), train(argsFor(damaged)), train(argsFor(corrupt))]);
    for (const r of [r2, r3, r4]) expect(r.code, r.stderr).toBe(0);
    expect(r2.stderr).toMatch(/warning: ignored .*\.ckpt-000003\.tmp-.* \(a checkpoint whose writing was interrupted\)/);
    outs.forEach(expectSameAsReference);
    expectOneError(rd, /no usable checkpoint in .*state: .*state\.bin: content differs from its manifest \(damaged or replaced\)/);
    expectOneError(rc, /train_config\.json: corrupt run configuration \(not valid JSON\)/);
  });
});
