import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { generateExamplePrefixes, generatePrompts } from '../src/experiment/paper/prompts.ts';
import { parsePromptsArgs } from '../src/experiment/paper/prompt-lines.ts';
import { UserError } from '../src/util/errors.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const workDir = mkdtempSync(join(tmpdir(), 'prompts-cli-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/prompts.ts', ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const parseLines = (text: string): Array<{ index: number; prompt: string }> =>
  text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as { index: number; prompt: string });

describe('parsePromptsArgs', () => {
  it('parses the flags', () => {
    expect(parsePromptsArgs(['--seed', '47', '--n', '5'])).toEqual({ seed: 47n, n: 5, prefixOnly: false, out: null, overwrite: false });
    expect(parsePromptsArgs(['--n=2', '--seed=3', '--prefix-only', '--out', 'x.jsonl'])).toEqual({
      seed: 3n,
      n: 2,
      prefixOnly: true,
      out: 'x.jsonl',
      overwrite: false,
    });
    expect(parsePromptsArgs(['--help'])).toBeNull();
  });
  it('rejects bad input with a one-line UserError', () => {
    for (const argv of [[], ['--seed', '1'], ['--n', '1'], ['--seed', '-1', '--n', '1'], ['--seed', '1.5', '--n', '1'], ['--seed', '0x10', '--n', '1'], ['--seed', '1', '--n', 'x'], ['--seed', '1', '--n', '-3'], ['--seed', '1', '--n', '1', '--what'], ['--seed', '--n', '1'], ['--seed', '1', '--n', '1', '--out'], ['--seed', '1', '--n', '1', '--overwrite']]) {
      expect(() => parsePromptsArgs(argv), JSON.stringify(argv)).toThrow(UserError);
    }
    expect(() => parsePromptsArgs(['--seed', '1', '--n', '-3'])).toThrow(/^--n must be an integer in \[0, 100000000\], got '-3'$/);
  });
});

describe('scripts/prompts.ts CLI', () => {
  it('writes JSON lines to stdout', () => {
    const { status, stdout, stderr } = runCli(['--seed', '42', '--n', '3']);
    expect(stderr).toBe('');
    expect(status).toBe(0);
    expect(parseLines(stdout)).toEqual(generatePrompts(42, 3).map((prompt, index) => ({ index, prompt })));
    expect(stdout.split('\n')[0]).toBe(JSON.stringify({ index: 0, prompt: generatePrompts(42, 1)[0] }));
  });

  it('writes prefixes only, atomically to --out, leaving no temp file', () => {
    const out = join(workDir, 'prefixes.jsonl');
    const { status, stdout } = runCli(['--seed', '47', '--n', '50', '--prefix-only', '--out', out]);
    expect(status).toBe(0);
    expect(stdout).toBe('');
    expect(parseLines(readFileSync(out, 'utf8')).map((r) => r.prompt)).toEqual(generateExamplePrefixes(47, 50));
    expect(readdirSync(workDir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('prints help and exits 0', () => {
    const { status, stdout } = runCli(['--help']);
    expect(status).toBe(0);
    expect(stdout).toContain('Usage:');
  });

  it('bad arguments: one line on stderr, exit 1, no stack trace', () => {
    for (const args of [['--seed', 'abc', '--n', '3'], ['--n', '3'], ['--seed', '1', '--n', '3', '--bogus']]) {
      const { status, stdout, stderr } = runCli(args);
      expect(status, args.join(' ')).toBe(1);
      expect(stderr).toMatch(/^error: /);
      expect(stdout).toBe('');
      expect(stderr.trim().split('\n').length).toBe(1);
      expect(stderr).not.toMatch(/\bat .*:\d+:\d+/);
    }
  });

  it('unwritable or existing --out: exit 1 with a one-line message, nothing written', () => {
    const { status, stderr } = runCli(['--seed', '1', '--n', '2', '--out', join(workDir, 'missing-dir', 'x.jsonl')]);
    expect(status).toBe(1);
    expect(stderr.trim().split('\n').length).toBe(1);
    expect(stderr).toContain('cannot write');
    const mine = join(workDir, 'mine.jsonl');
    writeFileSync(mine, 'my data\n');
    const again = runCli(['--seed', '1', '--n', '2', '--out', mine]);
    expect(again.status).toBe(1);
    expect(again.stderr.trim()).toMatch(/^error: --out .*mine\.jsonl exists; pass --overwrite to replace it/);
    expect(readFileSync(mine, 'utf8')).toBe('my data\n');
    expect(runCli(['--seed', '1', '--n', '2', '--out', mine, '--overwrite']).status).toBe(0);
    expect(parseLines(readFileSync(mine, 'utf8'))).toHaveLength(2);
    const dirOut = runCli(['--seed', '1', '--n', '2', '--out', workDir]);
    expect(dirOut.status).toBe(1);
    expect(dirOut.stderr.trim()).toMatch(/is a folder; give a file name$/);
  });
});
