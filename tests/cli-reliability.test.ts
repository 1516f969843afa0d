// mnist.ts, pretrain-tiny.ts and make-corpus.ts refuse bad flags and unusable output folders with one
// `error:` line before any work (no corpus written, no folder created, the user's files untouched).
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

async function cli(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(TSX, [path.join(ROOT, 'scripts', script), ...args], { cwd: ROOT, env: { ...process.env, CI: '1', DEBUG: '' }, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'cli-rel-'));
const afile = path.join(dir, 'afile');
writeFileSync(afile, 'x');
const keep = path.join(dir, 'keep');
mkdirSync(keep);
writeFileSync(path.join(keep, 'thesis.txt'), 'years of work');
const fresh = (n: string) => path.join(dir, `fresh-${n}`);
const SYS = existsSync('/sys/kernel');

describe('bad input is one error line, before any work', () => {
  it('mnist, pretrain-tiny and make-corpus', async () => {
    const cases: [string, string[], RegExp][] = [
      ['mnist.ts', ['--epochs-teacher', '0', '--out', fresh('m1')], /^error: --epochs-teacher must be an integer ≥ 1, got '0'$/],
      ['mnist.ts', ['--batch-size', '-5', '--out', fresh('m2')], /^error: --batch-size must be an integer ≥ 1, got '-5'$/],
      ['mnist.ts', ['--lr', '0x10', '--out', fresh('m3')], /^error: --lr must be a number > 0, got '0x10'$/],
      ['mnist.ts', ['--out', afile], /^error: --out .*afile is a file; it must be a folder/],
      ['mnist.ts', ['--out', keep], /^error: --out .*keep is not empty \(thesis\.txt\) and was not made by mnist\.ts/],
      ['pretrain-tiny.ts', ['--max-steps', 'abc', '--work', fresh('p1'), '--out', fresh('p2')], /^error: --max-steps must be an integer ≥ 1, got 'abc'$/],
      ['pretrain-tiny.ts', ['--only', 'tiny-gpt', '--work', fresh('p3')], /^error: --only: unknown model 'tiny-gpt'/],
      ['pretrain-tiny.ts', ['--work', path.join(afile, 'w'), '--out', fresh('p4')], /^error: cannot create --work .*afile\/w: .*afile is a file, not a folder$/],
      ['pretrain-tiny.ts', ['--out', afile, '--work', fresh('p5')], /^error: --out .*afile is a file/],
      ['pretrain-tiny.ts', ['--resume', '--only', 'tiny-llama', '--work', fresh('p6'), '--out', fresh('p7')], /^error: --work .*fresh-p6: nothing to resume \(no pretrain-tiny\.ts training state there for tiny-llama\)$/],
      ['make-corpus.ts', ['--seed', '0x10', '--out', fresh('c1')], /^error: --seed must be an integer ≥ 0, got '0x10'$/],
      ['make-corpus.ts', ['--seed', '1', '--chats', '-5', '--out', fresh('c2')], /^error: --chats must be an integer ≥ 1, got '-5'$/],
      ['make-corpus.ts', ['--seed', '1', '--out', keep], /^error: --out .*keep is not empty \(thesis\.txt\) and was not made by make-corpus\.ts/],
      ['make-corpus.ts', ['--out', fresh('c3')], /^error: --seed is required/],
      ...(SYS ? ([['mnist.ts', ['--out', '/sys/kernel/mnist-run'], /^error: cannot write --out \/sys\/kernel\/mnist-run: \/sys\/kernel is not writable/]] as [string, string[], RegExp][]) : []),
    ];
    const results = await Promise.all(cases.map(([s, a]) => cli(s, a)));
    results.forEach((r, i) => {
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
      expect(r.code, `${cases[i][0]} ${cases[i][1].join(' ')}: ${r.stderr}`).toBe(1);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(cases[i][2]);
      expect(r.stderr).not.toMatch(/\n\s+at |unexpected failure|Usage:/);
    });
    expect(readdirSync(dir).filter((f) => f.startsWith('fresh-'))).toEqual([]);
    expect(readdirSync(keep)).toEqual(['thesis.txt']);
    expect(readFileSync(path.join(keep, 'thesis.txt'), 'utf8')).toBe('years of work');
  });

  it('make-corpus marks its folder, reruns into it, and a finished run is marked complete', async () => {
    const out = path.join(dir, 'corpus');
    const args = ['--seed', '3', '--chats', '40', '--vocab', '300', '--out', out];
    const a = await cli('make-corpus.ts', args);
    expect(a.code, a.stderr).toBe(0);
    const first = readFileSync(path.join(out, 'corpus.jsonl'), 'utf8');
    writeFileSync(path.join(out, 'my-notes.md'), 'mine');
    const b = await cli('make-corpus.ts', args);
    expect(b.code, b.stderr).toBe(0);
    expect(readFileSync(path.join(out, 'corpus.jsonl'), 'utf8')).toBe(first);
    expect(readFileSync(path.join(out, 'my-notes.md'), 'utf8')).toBe('mine');
    expect(JSON.parse(readFileSync(path.join(out, '.run.json'), 'utf8'))).toMatchObject({ tool: 'make-corpus.ts', complete: true });
  });
});
