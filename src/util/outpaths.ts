// Output paths checked before any work starts, so that a read-only folder, a parent that is a file or a
// missing folder is one `error:` line up front instead of a failure after minutes of work. Writability is
// tested by creating (and removing) a probe file: permission bits, read-only mounts and ACLs all show.
import { closeSync, openSync, readdirSync, statSync, unlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError } from './errors.ts';

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ENOTDIR') return null; // a parent is a file: reported by the walk up
    throw new UserError(`cannot use ${p}: ${errnoText(e)}`);
  }
}

/** A short reason for a filesystem error ("permission denied", "read-only file system", …). */
export function errnoText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  const words: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOSPC: 'no space left on the device',
    EDQUOT: 'disk quota exceeded',
    ENOENT: 'no such file or folder',
    ENOTDIR: 'a part of the path is a file, not a folder',
    EISDIR: 'is a folder',
    EEXIST: 'already exists',
    ENAMETOOLONG: 'name too long',
    ELOOP: 'too many symbolic links',
  };
  return code && words[code] ? words[code] : code ?? (e instanceof Error ? e.message : String(e));
}

/** Throws a UserError unless a file can be created in `dir` (which exists and is a folder). */
export function assertWritableFolder(dir: string, what: string): void {
  const probe = path.join(dir, `.write-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    closeSync(openSync(probe, 'wx'));
  } catch (e) {
    throw new UserError(`cannot write ${what}: ${dir} is not writable (${errnoText(e)})`);
  }
  try {
    unlinkSync(probe);
  } catch {
    /* best effort: the probe is empty and hidden */
  }
}

/** The nearest existing ancestor of `p` (p itself when it exists). */
function nearestExisting(p: string): { dir: string; stat: Stats } {
  let cur = path.resolve(p);
  for (;;) {
    const st = statOrNull(cur);
    if (st) return { dir: cur, stat: st };
    const up = path.dirname(cur);
    if (up === cur) throw new UserError(`cannot use ${p}: no part of the path exists`);
    cur = up;
  }
}

export interface OutDirCheck {
  /** The folder exists already (empty or not). */
  exists: boolean;
  /** Its entries (empty when it does not exist). */
  entries: string[];
}

/**
 * Checks an output folder before any work: an existing folder must be a writable folder; a missing one
 * must be creatable (its nearest existing ancestor a writable folder, not a file). Creates nothing.
 * `flag` names the option in messages ("--out").
 */
export function checkOutDir(dir: string, flag = '--out'): OutDirCheck {
  const abs = path.resolve(dir);
  const st = statOrNull(abs);
  if (st) {
    if (!st.isDirectory()) throw new UserError(`${flag} ${dir} is a file; it must be a folder (a new one, or one this tool made)`);
    assertWritableFolder(abs, `to ${flag} ${dir}`);
    return { exists: true, entries: readdirSafe(abs) };
  }
  const anc = nearestExisting(abs);
  if (!anc.stat.isDirectory()) throw new UserError(`cannot create ${flag} ${dir}: ${anc.dir} is a file, not a folder`);
  assertWritableFolder(anc.dir, `${flag} ${dir}`);
  return { exists: false, entries: [] };
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    throw new UserError(`cannot read ${dir}: ${errnoText(e)}`);
  }
}

/**
 * Checks an output file before any work: its folder must exist and be writable, and the path must not be
 * a folder. An existing file is refused unless `overwrite` (the user named it and asked to replace it).
 */
export function checkOutFile(file: string, opts: { flag?: string; overwrite?: boolean; overwriteFlag?: string } = {}): void {
  const flag = opts.flag ?? '--out';
  const abs = path.resolve(file);
  const st = statOrNull(abs);
  if (st?.isDirectory()) throw new UserError(`${flag} ${file} is a folder; give a file name`);
  if (st && !st.isFile()) throw new UserError(`${flag} ${file} is not a regular file`);
  if (st && !opts.overwrite) throw new UserError(`${flag} ${file} exists; pass ${opts.overwriteFlag ?? '--overwrite'} to replace it, or choose a new name`);
  const parent = path.dirname(abs);
  const pst = statOrNull(parent);
  if (!pst) {
    const anc = nearestExisting(parent);
    if (!anc.stat.isDirectory()) throw new UserError(`cannot write ${flag} ${file}: ${anc.dir} is a file, not a folder`);
    throw new UserError(`cannot write ${flag} ${file}: the folder ${path.dirname(file) || '.'} does not exist`);
  }
  if (!pst.isDirectory()) throw new UserError(`cannot write ${flag} ${file}: ${parent} is a file, not a folder`);
  assertWritableFolder(parent, `${flag} ${file}`);
}
