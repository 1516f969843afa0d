/**
 * Atomic file writes: write to a temp file in the same directory, fsync it, rename over the
 * target, then (best effort) fsync the directory so the rename itself is durable. Readers see
 * either the old file or the complete new one, never a partial write.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

export async function writeFileAtomic(filePath: string, data: string | Uint8Array): Promise<void> {
  await withAtomicFile(filePath, (fh) => fh.writeFile(data));
}

export async function writeJsonAtomic(filePath: string, value: unknown, indent = 2): Promise<void> {
  await writeFileAtomic(filePath, JSON.stringify(value, null, indent) + '\n');
}

async function fsyncDir(dir: string): Promise<void> {
  // Directory fsync is not supported everywhere (e.g. Windows); it's only for durability.
  let dh: fsp.FileHandle | undefined;
  try {
    dh = await fsp.open(dir, 'r');
    await dh.sync();
  } catch {
    /* ignore */
  } finally {
    if (dh) await dh.close().catch(() => {});
  }
}

/**
 * Stream-write a file atomically: `fill` receives an open handle on a temp file in the target's
 * directory; after it resolves the file is fsynced and renamed over `filePath`. On error the temp
 * file is removed and the target is untouched. Use this for large outputs written piecewise.
 */
export async function withAtomicFile(
  filePath: string,
  fill: (fh: fsp.FileHandle) => Promise<void>,
): Promise<void> {
  const dir = path.dirname(path.resolve(filePath));
  const base = path.basename(filePath);
  const tmp = path.join(dir, `.${base}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx');
    await fill(fh);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, filePath);
  } catch (e) {
    if (fh) await fh.close().catch(() => {});
    await fsp.rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
  await fsyncDir(dir);
}

/** Write all of `data` at `position` (fh.write may write less than asked). */
export async function writeAllAt(fh: fsp.FileHandle, data: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < data.byteLength) {
    const { bytesWritten } = await fh.write(data, off, data.byteLength - off, position + off);
    if (bytesWritten <= 0) throw new Error('short write');
    off += bytesWritten;
  }
}

export { readControlJson } from './files.ts';
