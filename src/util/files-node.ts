// util/files.ts's FileSystem on Node's fs (atomic writes: util/fsatomic.ts).
import { copyFileSync, existsSync, mkdirSync, promises as fsp, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { FileSystem, RandomAccessFile } from './files.ts';
import { withAtomicFile, writeAllAt, writeFileAtomic } from './fsatomic.ts';

export const nodeFileSystem: FileSystem = {
  kind: 'node',
  stat(p) {
    const st = statSync(p, { throwIfNoEntry: false });
    return st ? { size: st.size, mtimeMs: st.mtimeMs, isFile: st.isFile(), isDirectory: st.isDirectory() } : null;
  },
  exists: (p) => existsSync(p),
  readFile: (p) => {
    const b = readFileSync(p);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  },
  readText: (p) => readFileSync(p, 'utf8'),
  writeFile: (p, data) => writeFileSync(p, data),
  writeFileAtomic: (p, data) => writeFileAtomic(p, data),
  withAtomicFile: (p, fill) => withAtomicFile(p, (fh) => fill({ write: (data, position) => writeAllAt(fh, data, position) })),
  readdir: (p) => readdirSync(p),
  mkdir: (p) => void mkdirSync(p, { recursive: true }),
  rm: (p) => rmSync(p, { recursive: true, force: true }),
  rename: (a, b) => renameSync(a, b),
  copyFile: (a, b) => copyFileSync(a, b),
  async open(p): Promise<RandomAccessFile> {
    const fh = await fsp.open(p, 'r');
    try {
      const st = await fh.stat();
      if (st.isDirectory()) {
        const e = new Error(`EISDIR: illegal operation on a directory, read '${p}'`) as NodeJS.ErrnoException;
        e.code = 'EISDIR';
        throw e;
      }
      return {
        size: st.size,
        read: async (buf, offset, length, position) => (await fh.read(buf, offset, length, position)).bytesRead,
        close: () => fh.close(),
      };
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  },
};
