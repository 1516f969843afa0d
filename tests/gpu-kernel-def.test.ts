// defineKernel: program identity (every code-generation parameter changes the key, and the key
// determines the WGSL), generation only on a key miss, buffers and uniforms by name with checks, and
// bind groups that belong to one pipeline.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { codegenCount, defineKernel, registeredKernels } from '../src/gpu/kernel.ts';
import { getGpu, GpuError } from '../src/gpu/runtime.ts';
import { add, scale } from '../src/kernels/elementwise.ts';
import { Transformer } from '../src/model/transformer.ts';
import { sequenceLogits } from '../src/model/generate.ts';

const kernelsDir = path.join(import.meta.dirname, '..', 'src', 'kernels');
const kernelFiles = readdirSync(kernelsDir).filter((f) => f.endsWith('.ts') && f !== 'common.ts');
// Every kernel family registers its kernels on import.
for (const f of kernelFiles) await import(path.join(kernelsDir, f));

type Params = Record<string, unknown>;
const canon = (p: Params) => JSON.stringify(Object.keys(p).sort().map((k) => [k, p[k]]));

describe('kernel identity (every kernel in src/)', () => {
  const kernels = registeredKernels();

  it('every kernel family defines its kernels through defineKernel; no WGSL binding is written by hand', () => {
    expect(kernels.length).toBeGreaterThan(40);
    for (const f of kernelFiles) expect(readFileSync(path.join(kernelsDir, f), 'utf8'), f).toContain('defineKernel(');
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.ts') && !p.endsWith(path.join('gpu', 'kernel.ts')) && /@binding\(|var<uniform>/.test(readFileSync(p, 'utf8'))) offenders.push(p);
      }
    };
    walk(path.join(import.meta.dirname, '..', 'src'));
    expect(offenders).toEqual([]);
  });

  it('parameters are flat records of primitives', () => {
    for (const k of kernels) {
      for (const p of k.space() as readonly Params[]) {
        for (const [name, v] of Object.entries(p)) expect(['string', 'number', 'boolean'], `${k.name}.${name}`).toContain(typeof v);
      }
    }
  });

  for (const k of kernels) {
    it(`${k.name}: distinct parameters → distinct keys; the key determines the WGSL; distinct keys → distinct WGSL`, () => {
      const space = k.space() as readonly Params[];
      expect(space.length).toBeGreaterThan(0);
      const keyOf = new Map<string, string>();
      const codeOfKey = new Map<string, string>();
      const keyOfCode = new Map<string, string>();
      for (const p of space) {
        const c = canon(p);
        const key = k.key(p as never);
        const code = k.source(p as never);
        if (keyOf.has(c)) continue;
        for (const [c2, key2] of keyOf) if (key2 === key) throw new Error(`${k.name}: ${c} and ${c2} share the key '${key}'`);
        keyOf.set(c, key);
        codeOfKey.set(key, code);
        const other = keyOfCode.get(code);
        if (other !== undefined) throw new Error(`${k.name}: keys '${other}' and '${key}' give the same WGSL`);
        keyOfCode.set(code, key);
      }
      // The same parameters always give the same key and WGSL.
      for (const p of space) {
        expect(k.key(p as never)).toBe(keyOf.get(canon(p)));
        expect(k.source(p as never)).toBe(codeOfKey.get(k.key(p as never)));
      }
    });

    it(`${k.name}: changing any one code-generation parameter changes the key`, () => {
      const space = k.space() as readonly Params[];
      const values = new Map<string, Set<unknown>>();
      for (const p of space) for (const [f, v] of Object.entries(p)) (values.get(f) ?? values.set(f, new Set()).get(f)!).add(v);
      if (k.parametric) for (const [f, vs] of values) expect(vs.size, `${k.name}: parameter ${f} takes one value in the space`).toBeGreaterThan(1);
      for (const p of space) {
        const key = k.key(p as never);
        for (const [f, vs] of values) {
          for (const v of vs) {
            if (v === p[f]) continue;
            expect(k.key({ ...p, [f]: v } as never), `${k.name}: ${f} ${String(p[f])} → ${String(v)} at ${canon(p)}`).not.toBe(key);
          }
        }
      }
    });
  }
});

describe('generation only on a key miss', () => {
  it('a kernel body is generated once per key, and the program object is reused', async () => {
    const gpu = await getGpu();
    let bodies = 0;
    const k = defineKernel({
      name: 'test_counted',
      bindings: [['y', 'f32', 'read_write']],
      uniforms: { a: 'f32' },
      key: ({ c }: { c: number }) => `c${c}`,
      space: () => [{ c: 1 }, { c: 2 }],
      body: ({ c }) => {
        bodies++;
        return `@compute @workgroup_size(1) fn main() { y[0] = y[0] + u.a * ${c}.0; }`;
      },
    });
    const y = gpu.zeros([4]);
    const before = codegenCount();
    k.run(gpu, { c: 1 }, { y }, 1, { a: 1 });
    k.run(gpu, { c: 1 }, { y }, 1, { a: 2 });
    expect(bodies).toBe(1);
    expect(k.program({ c: 1 })).toBe(k.program({ c: 1 }));
    k.run(gpu, { c: 2 }, { y }, 1, { a: 1 });
    expect(bodies).toBe(2);
    expect(k.generated).toBe(2);
    expect(codegenCount() - before).toBe(2);
    // source() builds afresh for inspection and does not count.
    k.source({ c: 3 });
    expect(k.generated).toBe(2);
    expect((await gpu.readF32(y))[0]).toBe(1 + 2 + 2);
    y.dispose();
  });

  it('library kernels generate nothing on a repeated call', async () => {
    const gpu = await getGpu();
    const a = gpu.upload(new Float32Array(64).fill(1));
    const b = gpu.upload(new Float32Array(64).fill(2));
    add(gpu, a, b, { out: a }).shape;
    scale(gpu, a, 3, { out: a });
    const n = codegenCount();
    add(gpu, a, b, { out: a });
    scale(gpu, a, 3, { out: a });
    expect(codegenCount()).toBe(n);
    expect((await gpu.readF32(a))[0]).toBe(((1 + 2) * 3 + 2) * 3);
    a.dispose();
    b.dispose();
  });

  it('a second forward pass of a model generates no WGSL and creates no pipeline', async () => {
    const gpu = await getGpu();
    const model = await Transformer.load(gpu, path.join(import.meta.dirname, '..', 'models', 'tiny-qwen-a'), { maxPositions: 64 });
    const ids = [1, 2, 3, 4, 5, 6, 7, 8];
    const first = await sequenceLogits(model, ids);
    const gens = codegenCount();
    const pipelines = gpu.pipelinesCreated;
    const second = await sequenceLogits(model, ids);
    expect(codegenCount()).toBe(gens);
    expect(gpu.pipelinesCreated).toBe(pipelines);
    expect(second).toEqual(first);
    model.dispose();
  });
});

describe('buffers and uniforms by name', () => {
  const packed = defineKernel({
    name: 'test_uniform_packing',
    bindings: [['out', 'u32', 'read_write']],
    uniforms: { a: 'u32', b: 'i32', c: 'f32', d: 'u32' },
    body: () => `@compute @workgroup_size(1) fn main() {
  out[0] = u.a; out[1] = bitcast<u32>(u.b); out[2] = bitcast<u32>(u.c); out[3] = u.d;
}`,
  });

  it('generates the header from the declaration', () => {
    const code = packed.source({});
    expect(code.startsWith(`@group(0) @binding(0) var<storage, read_write> out: array<u32>;
struct U { a: u32, b: i32, c: f32, d: u32 }
@group(0) @binding(1) var<uniform> u: U;
`)).toBe(true);
    const sub = defineKernel({
      name: 'test_header_enable',
      bindings: [['x', 'vec4<f32>', 'read'], ['ids', 'u32', 'read'], ['t', 'i32', 'read', ['i32', 'u32']]],
      enable: () => ['subgroups'],
      body: () => '',
    });
    const p = sub.program({});
    expect(p.code.split('\n').slice(0, 4)).toEqual([
      'enable subgroups;',
      '@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;',
      '@group(0) @binding(1) var<storage, read> ids: array<u32>;',
      '@group(0) @binding(2) var<storage, read> t: array<i32>;',
    ]);
    expect(p.bindings.map((b) => b.dtypes)).toEqual([['f32'], ['u32'], ['i32', 'u32']]);
    expect(p.uniformBytes).toBe(0);
  });

  it('packs uniforms by name, in declaration order whatever the object order', async () => {
    const gpu = await getGpu();
    const out = gpu.zeros([4], 'u32');
    packed.run(gpu, {}, { out }, 1, { d: 7, c: 1.5, b: -3, a: 0xffffffff });
    const r = (await gpu.readMany([out]))[0] as Uint32Array;
    const f = new Float32Array(new Uint32Array([r[2]]).buffer)[0];
    expect([r[0], r[1] | 0, f, r[3]]).toEqual([0xffffffff, -3, 1.5, 7]);
    out.dispose();
  });

  it('rejects a missing, unknown or mistyped uniform with the kernel named', async () => {
    const gpu = await getGpu();
    const out = gpu.zeros([4], 'u32');
    const run = (u: Record<string, unknown>, wg = 1) => () => gpu.run(packed.program({}), { out }, wg, u as Record<string, number>);
    expect(run({ a: 1, c: 1, d: 1 })).toThrow(/kernel test_uniform_packing: uniform 'b' \(i32\) missing/);
    expect(run({ a: 1, b: 1, c: 1, d: 1, e: 2 })).toThrow(/test_uniform_packing: unknown uniform 'e'/);
    expect(run({ a: -1, b: 1, c: 1, d: 1 })).toThrow(/uniform 'a' is u32, got -1/);
    expect(run({ a: 1.5, b: 1, c: 1, d: 1 })).toThrow(/uniform 'a' is u32, got 1.5/);
    expect(run({ a: 2 ** 32, b: 1, c: 1, d: 1 })).toThrow(/uniform 'a' is u32/);
    expect(run({ a: 1, b: 2 ** 31, c: 1, d: 1 })).toThrow(/uniform 'b' is i32/);
    expect(run({ a: 1, b: 1, c: '1', d: 1 })).toThrow(/uniform 'c' \(f32\) must be a number, got string/);
    expect(run({ a: 1, b: 1, c: true, d: 1 })).toThrow(GpuError);
    // Checked even when nothing is dispatched.
    expect(run({ a: 1, c: 1, d: 1 }, 0)).toThrow(/uniform 'b' \(i32\) missing/);
    expect(() => gpu.run(packed.program({}), { out }, 1)).toThrow(/uniforms missing/);
    out.dispose();
  });

  it('rejects a missing, unknown, mistyped or disposed tensor with the kernel and binding named', async () => {
    const gpu = await getGpu();
    const k = defineKernel({
      name: 'test_buffers',
      bindings: [['x', 'f32', 'read'], ['y', 'f32', 'read_write']],
      body: () => '@compute @workgroup_size(1) fn main() { y[0] = x[0]; }',
    });
    const x = gpu.zeros([4]);
    const y = gpu.zeros([4]);
    const ids = gpu.zeros([4], 'u32');
    expect(() => k.run(gpu, {}, { x }, 1)).toThrow(/kernel test_buffers: no tensor for binding 'y' \(bindings: x, y\)/);
    expect(() => k.run(gpu, {}, { x, y, z: ids }, 1)).toThrow(/test_buffers: unknown binding 'z'/);
    expect(() => k.run(gpu, {}, { x: ids, y }, 1)).toThrow(/test_buffers: binding 'x' \(array<f32>\) takes f32, got u32 \[4\]/);
    expect(() => gpu.run(k.program({}), { x, y }, 1, { n: 1 })).toThrow(/takes no uniforms/);
    const gone = gpu.zeros([4]);
    gone.dispose();
    expect(() => k.run(gpu, {}, { x: gone, y }, 1)).toThrow(/binding 'x' uses a disposed tensor/);
    k.run(gpu, {}, { y, x, unused: undefined }, 1);
    await gpu.sync();
    for (const t of [x, y, ids]) t.dispose();
  });

  it('refuses a second kernel of the same name and an element type with no dtype', () => {
    defineKernel({ name: 'test_unique', bindings: [], body: () => '' });
    expect(() => defineKernel({ name: 'test_unique', bindings: [], body: () => '' })).toThrow(/already exists/);
    const odd = defineKernel({ name: 'test_odd_type', bindings: [['s', 'MyStruct', 'read']], body: () => '' });
    expect(() => odd.program({})).toThrow(/binding 's' has element type 'MyStruct'/);
  });
});

describe('bind groups belong to one pipeline', () => {
  it('kernels with code of equal length (and one kernel at two workgroup sizes) never share a bind group', async () => {
    const gpu = await getGpu();
    const make = (name: string, c: string) =>
      defineKernel({
        name,
        bindings: [['x', 'f32', 'read'], ['y', 'f32', 'read_write']],
        uniforms: { n: 'u32' },
        body: () => `@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < u.n) { y[g.x] = x[g.x] + ${c}; }
}`,
      });
    const one = make('test_bg_plus1', '1.0');
    const two = make('test_bg_plus2', '2.0');
    // The rmsnorm hazard: one name, code of equal length, workgroup 32 vs 64.
    const sized = defineKernel({
      name: 'test_bg_sized',
      bindings: [['x', 'f32', 'read'], ['y', 'f32', 'read_write']],
      uniforms: { n: 'u32' },
      key: ({ wg }: { wg: number }) => `wg${wg}`,
      space: () => [{ wg: 32 }, { wg: 64 }],
      body: ({ wg }) => `@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < u.n) { y[g.x] = x[g.x] * ${wg}.0; }
}`,
    });
    expect(one.program({}).code.length).toBe(two.program({}).code.length);
    expect(sized.program({ wg: 32 }).code.length).toBe(sized.program({ wg: 64 }).code.length);
    const n = 100;
    const x = gpu.upload(Float32Array.from({ length: n }, (_, i) => i));
    const y = gpu.zeros([n]);
    const runAll = async () => {
      const out: number[] = [];
      for (const [k, p, wg] of [[one, {}, 64], [two, {}, 64], [sized, { wg: 32 }, 32], [sized, { wg: 64 }, 64]] as const) {
        (k as typeof sized).run(gpu, p as { wg: number }, { x, y }, Math.ceil(n / wg), { n });
        out.push((await gpu.readF32(y))[3]);
      }
      return out;
    };
    const pipelines = gpu.pipelinesCreated;
    const groups = gpu.bindGroupsCreated;
    expect(await runAll()).toEqual([4, 5, 96, 192]);
    // Four pipelines, each with its own bind group over the same buffers (and uniform slots).
    expect(gpu.pipelinesCreated - pipelines).toBe(4);
    expect(gpu.bindGroupsCreated - groups).toBeGreaterThanOrEqual(4);
    const afterFirst = gpu.bindGroupsCreated;
    expect(await runAll()).toEqual([4, 5, 96, 192]);
    expect(gpu.pipelinesCreated - pipelines).toBe(4);
    expect(gpu.bindGroupsCreated).toBe(afterFirst);
    x.dispose();
    y.dispose();
  });
});
