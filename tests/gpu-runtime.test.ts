import { describe, expect, it } from 'vitest';
import { defineKernel } from '../src/gpu/kernel.ts';
import { getGpu, cdiv, GpuError } from '../src/gpu/runtime.ts';

const axpy = defineKernel({
  name: 'test_axpy',
  bindings: [['x', 'f32', 'read'], ['y', 'f32', 'read_write']],
  uniforms: { n: 'u32', a: 'f32' },
  body: () => /* wgsl */ `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < u.n) { y[g.x] = u.a * x[g.x] + y[g.x]; }
}`,
});

describe('gpu runtime', () => {
  it('acquires a device with the adapter limits', async () => {
    const gpu = await getGpu();
    expect(gpu.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 2 ** 20);
    expect(gpu.limits.maxBufferSize).toBeGreaterThanOrEqual(256 * 2 ** 20);
  });

  it('records many dispatches with distinct uniforms in one submit', async () => {
    const gpu = await getGpu();
    const n = 1001; // not a multiple of the workgroup size
    const x = gpu.upload(Float32Array.from({ length: n }, (_, i) => i));
    const y = gpu.zeros([n]);
    const submitsBefore = gpu.submitCount;
    // 300 dispatches, each with its own uniform value, spills over several uniform chunks? (64 KiB / 256 B = 256 per chunk)
    let expectedA = 0;
    for (let k = 0; k < 300; k++) {
      axpy.run(gpu, {}, { x, y }, cdiv(n, 64), { n, a: k % 7 });
      expectedA += k % 7;
    }
    const out = await gpu.readF32(y);
    expect(gpu.submitCount - submitsBefore).toBe(1);
    for (const i of [0, 1, 500, n - 1]) expect(out[i]).toBeCloseTo(expectedA * i, 0);
    x.dispose();
    y.dispose();
  });

  it('reuses pooled buffers safely after release', async () => {
    const gpu = await getGpu();
    const a = gpu.upload(new Float32Array([1, 2, 3]));
    const b = gpu.zeros([3]);
    axpy.run(gpu, {}, { x: a, y: b }, 1, { n: 3, a: 2 });
    a.dispose(); // released while the dispatch that reads it is still only recorded
    const c = gpu.upload(new Float32Array([100, 100, 100])); // same size class: reuses a's buffer
    axpy.run(gpu, {}, { x: c, y: b }, 1, { n: 3, a: 1 });
    expect(Array.from(await gpu.readF32(b))).toEqual([102, 104, 106]);
    b.dispose();
    c.dispose();
  });

  it('turns an invalid shader into an error naming the kernel', async () => {
    const gpu = await getGpu();
    const bad = defineKernel({ name: 'broken_kernel', bindings: [], body: () => '@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }' });
    bad.run(gpu, {}, {}, 1);
    await expect(gpu.sync()).rejects.toThrow(/broken_kernel/);
  });

  it('refuses a binding over the storage binding limit with the kernel and the limit', async () => {
    const gpu = await getGpu();
    const limit = gpu.limits.maxStorageBufferBindingSize;
    const rows = Math.floor(limit / 4 / 1024) + 1;
    const big = gpu.empty([rows, 1024]);
    expect(() => axpy.run(gpu, {}, { x: big, y: big }, 1, { n: 1, a: 1 })).toThrow(GpuError);
    expect(() => axpy.run(gpu, {}, { x: big, y: big }, 1, { n: 1, a: 1 })).toThrow(/test_axpy.*maxStorageBufferBindingSize/);
    big.dispose();
  });

  it('splits a matrix over the binding limit into chunks', async () => {
    const gpu = await getGpu();
    const rows = 37, cols = 64;
    const data = Float32Array.from({ length: rows * cols }, (_, i) => i);
    const m = gpu.uploadChunked(data, rows, cols, 'm', 10 * cols * 4);
    expect(m.chunks.length).toBe(4);
    expect(m.chunkRows(3)).toBe(7);
    const last = await gpu.readF32(m.chunks[3]);
    expect(last[0]).toBe(30 * cols);
    m.dispose();
  });
});
