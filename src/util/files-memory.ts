// util/files.ts's FileSystem held in memory: the web page's model folders (fetched), stage folders
// and reports. A tree of folders and byte arrays; every path is resolved to an absolute one first.
// Writes need an existing parent folder, as on disk, so code that forgets a mkdir fails here too.
import path from 'node:path';
import { fsError, type FileStat, type FileSystem, type PositionalWriter, type RandomAccessFile } from './files.ts';

type Entry = { type: 'dir'; children: Map<string, Entry>; mtimeMs: number } | { type: 'file'; data: Uint8Array; mtimeMs: number };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class MemoryFileSystem implements FileSystem {
  readonly kind = 'memory';
  private readonly root: Entry = { type: 'dir', children: new Map(), mtimeMs: 0 };
  private clock = 0;

  private now(): number {
    // Strictly increasing, so a rewritten file never keeps its old mtime (model identities memoise on it).
    this.clock = Math.max(this.clock + 1e-3, Date.now());
    return this.clock;
  }

  private parts(p: string): string[] {
    return path.resolve(p).split('/').filter(Boolean);
  }

  private lookup(p: string): Entry | null {
    let e: Entry = this.root;
    for (const part of this.parts(p)) {
      if (e.type !== 'dir') return null;
      const next = e.children.get(part);
      if (!next) return null;
      e = next;
    }
    return e;
  }

  /** The parent folder of p (must exist) and p's name in it. */
  private parentOf(p: string, op: string): { dir: Entry & { type: 'dir' }; name: string } {
    const parts = this.parts(p);
    const name = parts.pop();
    if (!name) throw fsError('EISDIR', op, p);
    const dir = this.lookup('/' + parts.join('/'));
    if (!dir) throw fsError('ENOENT', op, p);
    if (dir.type !== 'dir') throw fsError('ENOTDIR', op, p);
    return { dir, name };
  }

  private file(p: string, op: string): Uint8Array {
    const e = this.lookup(p);
    if (!e) throw fsError('ENOENT', op, p);
    if (e.type !== 'file') throw fsError('EISDIR', op, p);
    return e.data;
  }

  stat(p: string): FileStat | null {
    const e = this.lookup(p);
    if (!e) return null;
    return { size: e.type === 'file' ? e.data.byteLength : 0, mtimeMs: e.mtimeMs, isFile: e.type === 'file', isDirectory: e.type === 'dir' };
  }

  exists(p: string): boolean {
    return this.lookup(p) !== null;
  }

  readFile(p: string): Uint8Array {
    return this.file(p, 'open');
  }

  readText(p: string): string {
    return decoder.decode(this.file(p, 'open'));
  }

  writeFile(p: string, data: string | Uint8Array): void {
    const { dir, name } = this.parentOf(p, 'open');
    const prev = dir.children.get(name);
    if (prev?.type === 'dir') throw fsError('EISDIR', 'open', p);
    // A private copy: the caller may reuse its buffer.
    dir.children.set(name, { type: 'file', data: typeof data === 'string' ? encoder.encode(data) : data.slice(), mtimeMs: this.now() });
  }

  async writeFileAtomic(p: string, data: string | Uint8Array): Promise<void> {
    this.writeFile(p, data);
  }

  async withAtomicFile(p: string, fill: (w: PositionalWriter) => Promise<void>): Promise<void> {
    this.parentOf(p, 'open');
    let buf = new Uint8Array(0);
    let size = 0;
    await fill({
      write: async (data, position) => {
        const end = position + data.byteLength;
        if (end > buf.byteLength) {
          const grown = new Uint8Array(Math.max(end, 2 * buf.byteLength));
          grown.set(buf.subarray(0, size));
          buf = grown;
        }
        buf.set(data, position);
        size = Math.max(size, end);
      },
    });
    this.writeFile(p, buf.subarray(0, size));
  }

  readdir(p: string): string[] {
    const e = this.lookup(p);
    if (!e) throw fsError('ENOENT', 'scandir', p);
    if (e.type !== 'dir') throw fsError('ENOTDIR', 'scandir', p);
    return [...e.children.keys()];
  }

  mkdir(p: string): void {
    let e: Entry = this.root;
    for (const part of this.parts(p)) {
      if (e.type !== 'dir') throw fsError('ENOTDIR', 'mkdir', p);
      let next = e.children.get(part);
      if (!next) {
        next = { type: 'dir', children: new Map(), mtimeMs: this.now() };
        e.children.set(part, next);
      }
      e = next;
    }
    if (e.type !== 'dir') throw fsError('EEXIST', 'mkdir', p);
  }

  rm(p: string): void {
    const parts = this.parts(p);
    if (!parts.length) throw new Error('rm: refusing to remove the root folder');
    const name = parts.pop()!;
    const dir = this.lookup('/' + parts.join('/'));
    if (dir?.type === 'dir') dir.children.delete(name);
  }

  rename(from: string, to: string): void {
    const src = this.parentOf(from, 'rename');
    const e = src.dir.children.get(src.name);
    if (!e) throw fsError('ENOENT', 'rename', from);
    const dst = this.parentOf(to, 'rename');
    const prev = dst.dir.children.get(dst.name);
    if (prev && prev.type === 'dir' && (e.type !== 'dir' || prev.children.size > 0)) throw fsError(e.type === 'dir' ? 'ENOTEMPTY' : 'EISDIR', 'rename', to);
    if (prev?.type === 'file' && e.type === 'dir') throw fsError('ENOTDIR', 'rename', to);
    src.dir.children.delete(src.name);
    dst.dir.children.set(dst.name, e);
  }

  copyFile(from: string, to: string): void {
    this.writeFile(to, this.file(from, 'copyfile'));
  }

  async open(p: string): Promise<RandomAccessFile> {
    const data = this.file(p, 'open');
    return {
      size: data.byteLength,
      read: async (buf, offset, length, position) => {
        const n = Math.max(0, Math.min(length, data.byteLength - position));
        buf.set(data.subarray(position, position + n), offset);
        return n;
      },
      close: async () => {},
    };
  }

  /** Bytes held (files only). */
  get bytes(): number {
    let n = 0;
    const walk = (e: Entry) => {
      if (e.type === 'file') n += e.data.byteLength;
      else for (const c of e.children.values()) walk(c);
    };
    walk(this.root);
    return n;
  }
}
