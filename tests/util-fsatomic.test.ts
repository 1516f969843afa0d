import { afterAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { withAtomicFile, writeFileAtomic, writeJsonAtomic } from '../src/util/fsatomic.ts';

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'fsatomic-'));
afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

describe('writeFileAtomic', () => {
  it('writes and overwrites, leaving no temp files', async () => {
    const f = path.join(tmp, 'a.txt');
    await writeFileAtomic(f, 'one');
    await writeFileAtomic(f, new Uint8Array([0x74, 0x77, 0x6f]));
    expect(await fsp.readFile(f, 'utf8')).toBe('two');
    expect((await fsp.readdir(tmp)).filter((n) => n.startsWith('.a.txt'))).toEqual([]);
  });
  it('writeJsonAtomic writes pretty JSON with trailing newline', async () => {
    const f = path.join(tmp, 'b.json');
    await writeJsonAtomic(f, { x: [1, 2] });
    expect(await fsp.readFile(f, 'utf8')).toBe('{\n  "x": [\n    1,\n    2\n  ]\n}\n');
  });
  it('keeps the old file and removes the temp file when the fill fails', async () => {
    const f = path.join(tmp, 'c.bin');
    await writeFileAtomic(f, 'old');
    await expect(
      withAtomicFile(f, async (fh) => {
        await fh.write('partial new content');
        throw new Error('disk on fire');
      }),
    ).rejects.toThrow('disk on fire');
    expect(await fsp.readFile(f, 'utf8')).toBe('old');
    expect((await fsp.readdir(tmp)).filter((n) => n.includes('.tmp'))).toEqual([]);
  });
  it('fails when the directory does not exist', async () => {
    await expect(writeFileAtomic(path.join(tmp, 'nope', 'x'), 'a')).rejects.toThrow();
  });
});
