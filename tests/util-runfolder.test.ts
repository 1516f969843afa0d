// Run folders: --overwrite deletes only what the tool's marker lists, in folders carrying that marker.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserError } from '../src/util/errors.ts';
import {
  assertRunFolderUsable,
  claimOutputs,
  clearRunOutputs,
  initRunFolder,
  inspectRunFolder,
  isRunComplete,
  markRunComplete,
  removeIfEmpty,
  RUN_MARKER,
  runLock,
} from '../src/util/runfolder.ts';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'runfolder-'));

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(UserError);
  expect((e as Error).message).toMatch(re);
  expect((e as Error).message).not.toContain('\n');
}

describe('run folders', () => {
  it('tells absent, empty, ours, another tool and user folders apart', async () => {
    const root = tmp();
    expect(inspectRunFolder(path.join(root, 'none'), 'train.ts').kind).toBe('absent');
    mkdirSync(path.join(root, 'empty'));
    expect(inspectRunFolder(path.join(root, 'empty'), 'train.ts').kind).toBe('empty');
    const ours = path.join(root, 'ours');
    await initRunFolder(ours, 'train.ts');
    expect(inspectRunFolder(ours, 'train.ts').kind).toBe('ours');
    expect(inspectRunFolder(ours, 'owl.ts')).toEqual({ kind: 'foreign', tool: 'train.ts' });
    expect(() => assertRunFolderUsable(ours, 'owl.ts')).toThrow(/holds a train\.ts run, not a owl\.ts one/);
    const user = path.join(root, 'user');
    mkdirSync(user);
    writeFileSync(path.join(user, 'thesis.txt'), 'notes');
    expect(() => assertRunFolderUsable(user, 'train.ts')).toThrow(/is not empty \(thesis\.txt\) and was not made by train\.ts/);
    writeFileSync(path.join(root, 'ours', RUN_MARKER), '{"tool": ');
    expect(() => inspectRunFolder(ours, 'train.ts')).toThrow(/\.run\.json: corrupt run marker/);
  });

  it('clears only the listed outputs and their temp leftovers; user files stay', async () => {
    const dir = path.join(tmp(), 'run');
    await initRunFolder(dir, 'train.ts');
    await claimOutputs(dir, 'train.ts', ['adapter_model.safetensors', 'state/', 'loss.csv', 'never-written.txt']);
    writeFileSync(path.join(dir, 'adapter_model.safetensors'), 'w');
    mkdirSync(path.join(dir, 'state', 'ckpt-000001'), { recursive: true });
    writeFileSync(path.join(dir, 'state', 'ckpt-000001', 'state.bin'), 'x');
    writeFileSync(path.join(dir, 'loss.csv'), 'l');
    writeFileSync(path.join(dir, '.loss.csv.1234.abcdef012345.tmp'), 'half');
    writeFileSync(path.join(dir, 'notes.md'), 'mine');
    writeFileSync(path.join(dir, '.loss.csv.mine'), 'mine too');
    const removed = await clearRunOutputs(dir, 'train.ts');
    expect(removed.sort()).toEqual(['adapter_model.safetensors', 'loss.csv', 'state/']);
    expect(readdirSync(dir).sort()).toEqual(['.loss.csv.mine', RUN_MARKER, 'notes.md']);
    expect(JSON.parse(readFileSync(path.join(dir, RUN_MARKER), 'utf8'))).toMatchObject({ tool: 'train.ts', outputs: [], complete: false });
  });

  it('refuses to clear a folder it did not make, or a marker pointing outside', async () => {
    const root = tmp();
    const user = path.join(root, 'keep');
    mkdirSync(user);
    writeFileSync(path.join(user, 'thesis.txt'), 'notes');
    await rejects(clearRunOutputs(user, 'train.ts'), /refusing to overwrite .*not made by train\.ts.*nothing was deleted/);
    expect(readFileSync(path.join(user, 'thesis.txt'), 'utf8')).toBe('notes');
    const other = path.join(root, 'other');
    await initRunFolder(other, 'owl.ts');
    await rejects(clearRunOutputs(other, 'train.ts'), /holds a owl\.ts run/);
    // A tampered marker cannot reach outside its folder.
    const evil = path.join(root, 'evil');
    await initRunFolder(evil, 'train.ts');
    writeFileSync(path.join(evil, RUN_MARKER), JSON.stringify({ tool: 'train.ts', version: 1, created: '', outputs: ['../keep/thesis.txt'], complete: false }));
    await rejects(clearRunOutputs(evil, 'train.ts'), /outside the run folder; refusing to delete anything/);
    expect(existsSync(path.join(user, 'thesis.txt'))).toBe(true);
  });

  it('never follows a symbolic link that replaced a listed output', async () => {
    const root = tmp();
    const precious = path.join(root, 'precious');
    mkdirSync(precious);
    writeFileSync(path.join(precious, 'data.txt'), 'keep');
    const dir = path.join(root, 'run');
    await initRunFolder(dir, 'train.ts');
    await claimOutputs(dir, 'train.ts', ['state/']);
    symlinkSync(precious, path.join(dir, 'state'));
    await clearRunOutputs(dir, 'train.ts');
    expect(readFileSync(path.join(precious, 'data.txt'), 'utf8')).toBe('keep');
  });

  it('records completion last and a fresh run clears it', async () => {
    const dir = path.join(tmp(), 'run');
    await initRunFolder(dir, 'train.ts');
    expect(isRunComplete(dir, 'train.ts')).toBe(false);
    await markRunComplete(dir, 'train.ts');
    expect(isRunComplete(dir, 'train.ts')).toBe(true);
    await claimOutputs(dir, 'train.ts', ['more.txt']);
    expect(isRunComplete(dir, 'train.ts')).toBe(false);
  });

  it('locks a folder it creates and removes it again when empty', async () => {
    const dir = path.join(tmp(), 'new');
    const { lock, created } = await runLock(dir, 'train.ts');
    expect(created).toBe(true);
    expect(inspectRunFolder(dir, 'train.ts').kind).toBe('empty'); // the lock is not content
    await rejects(runLock(dir, 'train.ts'), /is in use by train\.ts \(pid \d+ on /);
    await lock.release();
    removeIfEmpty(dir);
    expect(existsSync(dir)).toBe(false);
  });
});
