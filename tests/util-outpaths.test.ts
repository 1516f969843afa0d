// Output paths are checked before any work: each problem one line, nothing created.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError } from '../src/util/errors.ts';
import { readControlJson } from '../src/util/fsatomic.ts';
import { checkOutDir, checkOutFile } from '../src/util/outpaths.ts';

const root = mkdtempSync(path.join(os.tmpdir(), 'outpaths-'));
writeFileSync(path.join(root, 'afile'), 'x');
mkdirSync(path.join(root, 'adir'));

function msg(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}

// /sys refuses new files even to root: a folder that cannot be written on any Linux machine.
const SYS_READONLY = existsSync('/sys/kernel');
const AS_ROOT = process.getuid?.() === 0;

describe('checkOutDir', () => {
  it('accepts a new folder (under existing or missing parents) and an existing one', () => {
    expect(checkOutDir(path.join(root, 'new', 'deeper'))).toEqual({ exists: false, entries: [] });
    expect(checkOutDir(path.join(root, 'adir')).exists).toBe(true);
    expect(existsSync(path.join(root, 'new'))).toBe(false); // nothing created
    expect(readdirSync(root).some((f) => f.startsWith('.write-probe'))).toBe(false);
  });
  it('refuses a file, a parent that is a file, and an unwritable place', () => {
    expect(msg(() => checkOutDir(path.join(root, 'afile')))).toMatch(/^--out .*afile is a file; it must be a folder/);
    expect(msg(() => checkOutDir(path.join(root, 'afile', 'sub')))).toMatch(/^cannot create --out .*afile\/sub: .*afile is a file, not a folder$/);
    if (SYS_READONLY) expect(msg(() => checkOutDir('/sys/kernel/run-here'))).toMatch(/^cannot write --out \/sys\/kernel\/run-here: \/sys\/kernel is not writable \(permission denied\)$/);
  });
  it.skipIf(AS_ROOT)('refuses a folder without write permission', () => {
    const ro = path.join(root, 'ro');
    mkdirSync(ro);
    chmodSync(ro, 0o555);
    expect(msg(() => checkOutDir(ro))).toMatch(/is not writable \(permission denied\)/);
    expect(msg(() => checkOutDir(path.join(ro, 'sub')))).toMatch(/is not writable/);
    chmodSync(ro, 0o755);
  });
});

describe('checkOutFile', () => {
  it('accepts a new file in an existing folder', () => {
    checkOutFile(path.join(root, 'adir', 'x.jsonl'));
  });
  it('refuses a folder, an existing file (unless --overwrite), a missing folder, a parent that is a file', () => {
    expect(msg(() => checkOutFile(path.join(root, 'adir')))).toMatch(/^--out .*adir is a folder; give a file name$/);
    expect(msg(() => checkOutFile(path.join(root, 'afile')))).toMatch(/^--out .*afile exists; pass --overwrite to replace it, or choose a new name$/);
    checkOutFile(path.join(root, 'afile'), { overwrite: true });
    expect(msg(() => checkOutFile(path.join(root, 'missing', 'x.npy')))).toMatch(/^cannot write --out .*missing\/x\.npy: the folder .*missing does not exist$/);
    expect(msg(() => checkOutFile(path.join(root, 'afile', 'x.npy')))).toMatch(/^cannot write --out .*: .*afile is a file, not a folder$/);
    if (SYS_READONLY) expect(msg(() => checkOutFile('/sys/kernel/x.jsonl'))).toMatch(/is not writable \(permission denied\)/);
  });
});

describe('readControlJson', () => {
  it('null when missing; a corrupt file is named', () => {
    expect(readControlJson(path.join(root, 'nope.json'))).toBeNull();
    writeFileSync(path.join(root, 'state.json'), '{"step": 3');
    expect(msg(() => readControlJson(path.join(root, 'state.json'), 'training state'))).toBe(`${path.join(root, 'state.json')}: corrupt training state (not valid JSON)`);
  });
});
