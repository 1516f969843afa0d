// The file operations the pipeline's shared code needs (model folders, stage folders, datasets,
// saved models), behind one small interface so the same code runs on Node's file system and on the
// web page's in-memory one. Node code keeps its defaults; the page installs a MemoryFileSystem with
// useFileSystem() before anything reads a file. Errors carry Node's codes (ENOENT, EISDIR, ENOTDIR,
// EEXIST) so callers report missing files the same way on both.
import { UserError } from './errors.ts';
import { nodeFileSystem } from './files-node.ts';

export interface FileStat {
  size: number;
  mtimeMs: number;
  isFile: boolean;
  isDirectory: boolean;
}

/** A file opened for reads at arbitrary positions (safetensors tensors are read one at a time). */
export interface RandomAccessFile {
  readonly size: number;
  /** Reads up to `length` bytes at `position` into buf[offset…]; resolves with the count (0 at the end). */
  read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  close(): Promise<void>;
}

/** A file being written piecewise (see FileSystem.withAtomicFile). */
export interface PositionalWriter {
  /** Writes all of `data` at `position`. */
  write(data: Uint8Array, position: number): Promise<void>;
}

export interface FileSystem {
  /** 'node' or 'memory' (logs and tests). */
  readonly kind: string;
  /** null when nothing is at `p`. */
  stat(p: string): FileStat | null;
  exists(p: string): boolean;
  readFile(p: string): Uint8Array;
  readText(p: string): string;
  /** Plain write (the target may be seen half-written): for files inside a stage's temporary folder. */
  writeFile(p: string, data: string | Uint8Array): void;
  /** Readers see the old file or the complete new one, never a partial write. */
  writeFileAtomic(p: string, data: string | Uint8Array): Promise<void>;
  /** `fill` writes a temporary file piecewise; it replaces `p` only once `fill` resolves. */
  withAtomicFile(p: string, fill: (w: PositionalWriter) => Promise<void>): Promise<void>;
  /** Entry names of a folder (not sorted). */
  readdir(p: string): string[];
  /** Creates the folder and its parents (no error when it exists). */
  mkdir(p: string): void;
  /** Removes a file or a folder tree; nothing there is not an error. */
  rm(p: string): void;
  rename(from: string, to: string): void;
  copyFile(from: string, to: string): void;
  open(p: string): Promise<RandomAccessFile>;
}

let current: FileSystem = nodeFileSystem;

/** The file system shared code reads and writes through. */
export function fsys(): FileSystem {
  return current;
}

/** Installs another file system (the web page's memory one; tests); returns the previous one. */
export function useFileSystem(fs: FileSystem): FileSystem {
  const prev = current;
  current = fs;
  return prev;
}

/** An Error with a Node-style code, as node:fs throws. */
export function fsError(code: string, op: string, p: string): Error & { code: string } {
  const messages: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EISDIR: 'illegal operation on a directory',
    ENOTDIR: 'not a directory',
    EEXIST: 'file already exists',
    ENOTEMPTY: 'directory not empty',
  };
  const e = new Error(`${code}: ${messages[code] ?? code}, ${op} '${p}'`) as Error & { code: string; path: string };
  e.code = code;
  e.path = p;
  return e;
}

export function readJsonFile<T = unknown>(p: string): T {
  return JSON.parse(fsys().readText(p)) as T;
}

/**
 * Reads a JSON control file the tool wrote itself (a state, a marker, a stage's done.json): null when it
 * does not exist; a file that cannot be read or parsed is a UserError naming it, never a stack trace.
 */
export function readControlJson(file: string, what = 'control file'): unknown {
  let text: string;
  try {
    text = fsys().readText(file);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') return null;
    throw new UserError(`${file}: cannot read the ${what} (${code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new UserError(`${file}: corrupt ${what} (not valid JSON)`);
  }
}
