// The web page's pieces that need no browser: URL parameters (round trip, one message per bad value),
// the "no WebGPU" verdict for each missing piece, the memory stage store the page runs stages in, and
// the synchronous sha256 that stands in for node:crypto's (stage keys and model identities).
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStageStore, type StageEvent } from '../src/experiment/owl/memory-stages.ts';
import { fsys, useFileSystem, type FileSystem } from '../src/util/files.ts';
import { MemoryFileSystem } from '../src/util/files-memory.ts';
import { Sha256 } from '../src/util/sha256.ts';
import { owlArgs, paramsToSearch, parseParams } from '../src/web/params.ts';
import { webgpuVerdict, type WebGpuProbe } from '../src/web/webgpu-check.ts';

describe('page parameters in the URL', () => {
  it('a page state survives its own link, on both adapter kinds', () => {
    for (const software of [true, false]) {
      const { params, errors } = parseParams('?exp=owl&owl.seeds=3,1&owl.animal=red%20panda&owl.studentLr=2e-4&mnist.models=7&owl.dose=1', software);
      expect(errors).toEqual([]);
      expect(params.owl.seeds).toEqual([3, 1]);
      expect(params.owl.animal).toBe('red panda');
      expect(params.mnist.models).toBe(7);
      const again = parseParams(paramsToSearch(params), !software);
      expect(again.errors).toEqual([]);
      expect(again.params).toEqual(params);
    }
  });

  it('one message per bad value, naming it; defaults fill in', () => {
    const { params, errors } = parseParams('?exp=cifar&mnist.models=0&mnist.lr=fast&owl.seeds=1,1&owl.animal=Owl3&owl.keep=2.5&colour=red', true);
    expect(errors.sort()).toEqual(
      [
        'colour: unknown parameter',
        'exp: "cifar" is not one of mnist, owl',
        'mnist.lr: "fast" is not a number',
        'mnist.models: 0 is below the minimum 1',
        'owl.animal: "Owl3" must be a plain name (letters, spaces, hyphens)',
        'owl.keep: 2.5 is not a whole number',
        'owl.seeds: a value is listed twice',
      ].sort(),
    );
    expect(params.exp).toBe('mnist');
    expect(params.mnist.models).toBe(parseParams('', true).params.mnist.models);
    // A control animal equal to the target is refused once the animal itself is valid.
    expect(parseParams('?owl.controlAnimal=owl', true).errors).toEqual(['owl.controlAnimal: must differ from owl.animal (owl)']);
  });

  it("the owl command line names every parameter the page's config uses", () => {
    const { params } = parseParams('?owl.ftBatch=64&owl.controlAnimal=eagle', true);
    const a = owlArgs(params.owl);
    const flag = (f: string) => a[a.indexOf(f) + 1];
    expect(flag('--ft-batch-size')).toBe('64');
    expect(flag('--control-animal')).toBe('eagle');
    expect(flag('--seeds')).toBe(params.owl.seeds.join(','));
    expect(a).toContain('--no-dose');
  });
});

describe('the "no WebGPU" verdict', () => {
  const base: WebGpuProbe = { secureContext: true, hasNavigatorGpu: true, adapter: true, deviceError: null, userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/140' };
  it('names the missing piece and what to do', () => {
    expect(webgpuVerdict(base).ok).toBe(true);
    const cases: [Partial<WebGpuProbe>, RegExp, RegExp][] = [
      [{ secureContext: false }, /secure context/, /localhost/],
      [{ hasNavigatorGpu: false }, /navigator\.gpu is missing/, /--enable-unsafe-webgpu/],
      [{ adapter: false }, /found no adapter/, /swiftshader/],
      [{ deviceError: 'limits exceeded' }, /could not create a device: limits exceeded/, /reload/],
    ];
    for (const [change, title, advice] of cases) {
      const v = webgpuVerdict({ ...base, ...change });
      expect(v.ok).toBe(false);
      expect(v.title).toMatch(title);
      expect(v.advice.join(' ')).toMatch(advice);
    }
  });
});

describe('MemoryStageStore', () => {
  let prev: FileSystem | null = null;
  afterEach(() => {
    if (prev) useFileSystem(prev);
    prev = null;
  });

  it('computes a stage once, serves it to a later store over the same files, keeps nothing of a failed one, keeps no checkpoints', async () => {
    prev = useFileSystem(new MemoryFileSystem());
    const events: string[] = [];
    const store = new MemoryStageStore('/cache');
    store.onStage = (e: StageEvent) => events.push(`${e.name}:${e.state}`);
    let calls = 0;
    const compute = async (dir: string) => {
      calls++;
      fsys().writeFile(`${dir}/out.txt`, 'x');
      return { n: 42 };
    };
    const a = await store.run('s', { k: 1 }, compute);
    const b = await store.run('s', { k: 1 }, compute);
    expect(calls).toBe(1);
    expect(a.result).toEqual({ n: 42 });
    expect(b.key).toBe(a.key);
    expect(fsys().readText(`${a.dir}/out.txt`)).toBe('x');
    const later = new MemoryStageStore('/cache');
    later.onStage = (e: StageEvent) => events.push(`${e.name}:${e.state}`);
    const c = await later.run('s', { k: 1 }, compute);
    expect(calls).toBe(1);
    expect(c.cached).toBe(true);
    expect(c.result).toEqual({ n: 42 });
    // Other inputs are another stage; a failure leaves no folder and is computed again next time.
    await expect(later.run('s', { k: 2 }, async (dir) => {
      fsys().writeFile(`${dir}/half.txt`, 'y');
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect(later.count).toBe(1);
    const d = await later.run('s', { k: 2 }, compute);
    expect(d.cached).toBe(false);
    expect(later.count).toBe(2);
    expect(events).toEqual(['s:running', 's:done', 's:cached', 's:running', 's:failed', 's:running', 's:done']);
    expect(later.checkpointDir()).toBeNull();
    later.clear();
    expect(later.count).toBe(0);
  });
});

describe('the page\'s sha256', () => {
  it("gives node:crypto's digests at every padding boundary, for bytes and UTF-8 strings, fed whole or in pieces", () => {
    let x = 12345;
    const rand = (n: number) => Uint8Array.from({ length: n }, () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 255);
    for (const n of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 70_001]) {
      const data = rand(n);
      const want = createHash('sha256').update(data).digest('hex');
      expect(new Sha256().update(data).hex(), `${n} bytes`).toBe(want);
      const cut = Math.floor(n / 3);
      expect(new Sha256().update(data.subarray(0, cut)).update(data.subarray(cut)).hex(), `${n} bytes in two pieces`).toBe(want);
    }
    const text = 'owl 🦉 — ünïcode\0and a NUL';
    expect(new Sha256().update(text).update('\0').hex()).toBe(createHash('sha256').update(text).update('\0').digest('hex'));
  });
});
