// The GPU runtime: tensors over pooled buffers, dispatch of kernel programs (declared with
// defineKernel in kernel.ts) with pipelines and bind groups cached by program identity, command
// recording (many dispatches → one encoder → one submit), readback, and errors that are never silent.
//
// Ordering model (why pooled buffers can be reused as soon as they are released):
// every write to a pooled buffer is a GPU command recorded into the current encoder: dispatches,
// clears, copies, and `write()` while work is recorded (a copy from a fresh mapped-at-creation staging
// buffer, so uploads in the middle of a step do not split its submit). With nothing recorded, `write()`
// is a queue.writeBuffer, which the queue orders before any later submit. So a buffer released after
// dispatch A and reused by a later dispatch B is only written after A has read it. Readback staging
// buffers (MAP_READ) are the exception: they are reused only after their map has resolved.

import { acquireDevice, type AcquireOptions, type AcquiredDevice } from './device.ts';
import type { KernelBuffers, KernelProgram } from './kernel.ts';

export type DType = 'f32' | 'u32' | 'i32';

export class GpuError extends Error {
  override name = 'GpuError';
}

export type TypedArrayFor<D extends DType> = D extends 'f32' ? Float32Array : D extends 'u32' ? Uint32Array : Int32Array;

function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new GpuError(`bad tensor shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

/** A dense row-major tensor living in (a byte range of) a GPU buffer. 4-byte elements. */
export class Tensor {
  private disposed = false;
  constructor(
    readonly gpu: Gpu,
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** Byte offset into `buffer` (a multiple of minStorageBufferOffsetAlignment). */
    readonly offset = 0,
    /** Whether dispose() returns the buffer to the pool (false for views). */
    private readonly owner = true,
  ) {}
  get size(): number {
    return shapeSize(this.shape);
  }
  get byteLength(): number {
    return this.size * 4;
  }
  get isDisposed(): boolean {
    return this.disposed;
  }
  /** A view over `shape` starting `elementOffset` elements in; the parent keeps ownership. */
  view(shape: readonly number[], elementOffset = 0): Tensor {
    const byteOffset = this.offset + elementOffset * 4;
    if (byteOffset % this.gpu.limits.minStorageBufferOffsetAlignment !== 0) {
      throw new GpuError(
        `tensor view offset ${byteOffset} B is not a multiple of minStorageBufferOffsetAlignment ${this.gpu.limits.minStorageBufferOffsetAlignment}`,
      );
    }
    if (elementOffset + shapeSize(shape) > this.size) {
      throw new GpuError(`tensor view [${shape.join(', ')}] at ${elementOffset} exceeds tensor of ${this.size} elements`);
    }
    return new Tensor(this.gpu, this.buffer, shape, this.dtype, byteOffset, false);
  }
  /** Same storage, another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor {
    if (shapeSize(shape) !== this.size) {
      throw new GpuError(`cannot reshape [${this.shape.join(', ')}] to [${shape.join(', ')}]`);
    }
    return new Tensor(this.gpu, this.buffer, shape, this.dtype, this.offset, false);
  }
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.owner) this.gpu.releaseBuffer(this.buffer);
  }
}

/**
 * A [rows, cols] matrix split along rows into chunks that each fit under the storage binding limit
 * (Qwen2.5's 151,936 × 896 embedding is 545 MB; lavapipe binds at most 128 MiB). Chunk i holds rows
 * [i·rowsPerChunk, min(rows, (i+1)·rowsPerChunk)).
 */
export class ChunkedMatrix {
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly rowsPerChunk: number,
    readonly chunks: Tensor[],
  ) {}
  chunkRows(i: number): number {
    return Math.min(this.rowsPerChunk, this.rows - i * this.rowsPerChunk);
  }
  dispose(): void {
    for (const c of this.chunks) c.dispose();
  }
}

export type Workgroups = number | [number, number?, number?];

interface PoolStats {
  allocatedBytes: number;
  peakAllocatedBytes: number;
  liveBytes: number;
  peakLiveBytes: number;
  buffersCreated: number;
}

const UNIFORM_CHUNK_BYTES = 64 * 1024;
const BIND_GROUP_CACHE_MAX = 8192;

/** Size classes with ≤ 12.5% waste: 2^k · {1, 1.125, …, 1.875}, at least 256 B. */
function sizeClass(bytes: number): number {
  const b = Math.max(256, bytes);
  const p = 2 ** Math.floor(Math.log2(b));
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

/**
 * Writes uniform values by member name at byteOffset (view null: check only). Every declared member
 * must be given, nothing else, each a number of its type (u32/i32: integers in range).
 */
function writeUniforms(p: KernelProgram, values: Readonly<Record<string, number>>, view: DataView | null, byteOffset: number): void {
  for (const f of p.uniforms) {
    const v = values[f.name];
    if (typeof v !== 'number') {
      throw new GpuError(`kernel ${p.name}: uniform '${f.name}' (${f.type}) ${v === undefined ? 'missing' : `must be a number, got ${typeof v}`}`);
    }
    const o = byteOffset + f.offset;
    if (f.type === 'f32') {
      view?.setFloat32(o, v, true);
    } else if (f.type === 'u32') {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new GpuError(`kernel ${p.name}: uniform '${f.name}' is u32, got ${v}`);
      view?.setUint32(o, v, true);
    } else {
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new GpuError(`kernel ${p.name}: uniform '${f.name}' is i32, got ${v}`);
      view?.setInt32(o, v, true);
    }
  }
  let given = 0;
  for (const k in values) if (Object.hasOwn(values, k)) given++;
  if (given !== p.uniforms.length) {
    const extra = Object.keys(values).filter((k) => !p.uniforms.some((f) => f.name === k));
    throw new GpuError(`kernel ${p.name}: unknown uniform${extra.length > 1 ? 's' : ''} ${extra.map((k) => `'${k}'`).join(', ')} (uniforms: ${p.uniforms.map((f) => f.name).join(', ')})`);
  }
}

export interface GpuOptions extends AcquireOptions {}

export class Gpu {
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  readonly info: AcquiredDevice;

  /** Keyed by the program object: one per (kernel, key), see kernel.ts. */
  private readonly pipelines = new Map<KernelProgram, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  private readonly freeBuffers = new Map<number, GPUBuffer[]>();
  private readonly bufferBytes = new WeakMap<GPUBuffer, number>();
  private readonly bufferIds = new WeakMap<GPUBuffer, number>();
  private nextBufferId = 1;
  /** Per pipeline: bind groups by (buffer, offset, size) of each binding and the uniform range. */
  private readonly bindGroups = new Map<GPUComputePipeline, Map<string, GPUBindGroup>>();
  private bindGroupTotal = 0;
  private readonly stagingFree: GPUBuffer[] = [];
  /** Upload staging buffers recorded into the current encoder (destroyed once it is submitted). */
  private uploadStaging: GPUBuffer[] = [];

  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private recordedKernels: string[] = [];
  private readonly uniformChunks: { buffer: GPUBuffer; data: ArrayBuffer }[] = [];
  private uniformChunk = 0;
  private uniformOffset = 0;

  private readonly errors: GpuError[] = [];
  private readonly pendingScopes = new Set<Promise<void>>();
  private lost: string | null = null;
  readonly stats: PoolStats = { allocatedBytes: 0, peakAllocatedBytes: 0, liveBytes: 0, peakLiveBytes: 0, buffersCreated: 0 };
  /**
   * Submit after this many recorded dispatches (0, the default: only at sync/readback), so the device
   * can start while the CPU is still recording (ORT's lesson: chunk submits only while encoding). On
   * lavapipe a full-finetuning step of a tiny student (400 dispatches, ~25–50 ms of recording) ran
   * within noise at 0, 100 and 200 (3 alternating runs each), so one submit per step is kept.
   */
  autoFlushDispatches = 0;
  private sinceFlush = 0;
  /** Counters for benchmarks and tests: dispatches recorded, submits issued, pipelines and bind groups created. */
  dispatchCount = 0;
  submitCount = 0;
  pipelinesCreated = 0;
  bindGroupsCreated = 0;
  /**
   * Per-kernel GPU time (timestamp queries), when enabled with enableProfiling(): kernel name →
   * {dispatches, ms}. Every profiled dispatch gets its own compute pass, so keep it for diagnosis.
   */
  readonly profile = new Map<string, { dispatches: number; ms: number }>();
  private profiling: { set: GPUQuerySet; resolve: GPUBuffer; names: string[]; capacity: number } | null = null;
  private readonly profileReads: Promise<void>[] = [];
  private pendingProfile: { staging: GPUBuffer; names: string[] } | null = null;

  private constructor(info: AcquiredDevice) {
    this.info = info;
    this.device = info.device;
    this.limits = info.device.limits;
    this.device.lost.then((l) => {
      this.lost = `${l.reason}: ${l.message}`;
      if (l.reason !== 'destroyed') console.error(`webgpu: device lost (${this.lost})`);
    });
    this.device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      const kind = ev.error.constructor?.name ?? 'GPUError';
      this.errors.push(new GpuError(`${kind}: ${ev.error.message.trim()}`));
    };
  }

  static async create(opts: GpuOptions = {}): Promise<Gpu> {
    return new Gpu(await acquireDevice(opts));
  }

  get isSoftware(): boolean {
    return this.info.isSoftware;
  }

  // ---------------------------------------------------------------- errors

  private checkAlive(): void {
    if (this.lost) throw new GpuError(`GPU device lost (${this.lost})`);
  }

  /** Waits for pipeline-creation error scopes still in flight, so their errors are reported together. */
  private async settleScopes(): Promise<void> {
    if (this.pendingScopes.size) await Promise.all([...this.pendingScopes]);
  }

  /** Throws the first GPU error reported since the last check (validation, out-of-memory, internal). */
  throwIfErrors(): void {
    this.checkAlive();
    if (this.errors.length) {
      const first = this.errors[0];
      const more = this.errors.length > 1 ? ` (+${this.errors.length - 1} more)` : '';
      this.errors.length = 0;
      throw new GpuError(first.message + more);
    }
  }

  // ---------------------------------------------------------------- buffers

  private bufferId(b: GPUBuffer): number {
    let id = this.bufferIds.get(b);
    if (id === undefined) {
      id = this.nextBufferId++;
      this.bufferIds.set(b, id);
    }
    return id;
  }

  /** A pooled storage buffer of at least `bytes` bytes. */
  acquireBuffer(bytes: number, label = 'tensor'): GPUBuffer {
    this.checkAlive();
    if (bytes > this.limits.maxBufferSize) {
      throw new GpuError(
        `${label}: ${bytes} B exceeds the device's maxBufferSize ${this.limits.maxBufferSize} B; split the tensor (ChunkedMatrix)`,
      );
    }
    const cls = Math.min(sizeClass(bytes), Math.max(bytes, Math.floor(this.limits.maxBufferSize / 4) * 4));
    const list = this.freeBuffers.get(cls);
    let buf = list?.pop();
    if (!buf) {
      buf = this.device.createBuffer({
        size: cls,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        label,
      });
      this.bufferBytes.set(buf, cls);
      this.stats.allocatedBytes += cls;
      this.stats.buffersCreated++;
      this.stats.peakAllocatedBytes = Math.max(this.stats.peakAllocatedBytes, this.stats.allocatedBytes);
    }
    this.stats.liveBytes += cls;
    this.stats.peakLiveBytes = Math.max(this.stats.peakLiveBytes, this.stats.liveBytes);
    return buf;
  }

  releaseBuffer(buf: GPUBuffer): void {
    const cls = this.bufferBytes.get(buf);
    if (cls === undefined) return;
    this.stats.liveBytes -= cls;
    let list = this.freeBuffers.get(cls);
    if (!list) this.freeBuffers.set(cls, (list = []));
    list.push(buf);
  }

  /** Destroys every pooled buffer that is not in use (after submitting pending work). */
  trimPool(): void {
    this.flush();
    for (const [cls, list] of this.freeBuffers) {
      for (const b of list) {
        b.destroy();
        this.stats.allocatedBytes -= cls;
      }
    }
    this.freeBuffers.clear();
    this.bindGroups.clear();
    this.bindGroupTotal = 0;
  }

  /** An uninitialised tensor (contents are whatever the pooled buffer held). */
  empty<D extends DType = 'f32'>(shape: readonly number[], dtype: D = 'f32' as D, label = 'tensor'): Tensor {
    const n = shapeSize(shape);
    return new Tensor(this, this.acquireBuffer(Math.max(4, n * 4), label), shape, dtype);
  }

  /** A tensor filled with zeros (a GPU clear recorded in order with the dispatches). */
  zeros(shape: readonly number[], dtype: DType = 'f32', label = 'zeros'): Tensor {
    const t = this.empty(shape, dtype, label);
    this.fill(t, 0);
    return t;
  }

  /** Records a clear to zero of the tensor's bytes (a buffer clear: 0 is the only value, written out at call sites). */
  fill(t: Tensor, _zero: 0): void {
    const enc = this.ensureEncoder();
    this.endPass();
    const bytes = Math.ceil(t.byteLength / 4) * 4;
    if (bytes > 0) enc.clearBuffer(t.buffer, t.offset, bytes);
  }

  /** Uploads data into a new tensor. */
  upload(data: Float32Array | Uint32Array | Int32Array | number[], shape?: readonly number[], dtype?: DType, label = 'upload'): Tensor {
    const arr = Array.isArray(data) ? new Float32Array(data) : data;
    const dt: DType = dtype ?? (arr instanceof Uint32Array ? 'u32' : arr instanceof Int32Array ? 'i32' : 'f32');
    const sh = shape ?? [arr.length];
    if (shapeSize(sh) !== arr.length) {
      throw new GpuError(`${label}: data has ${arr.length} elements but shape [${sh.join(', ')}] needs ${shapeSize(sh)}`);
    }
    const t = this.empty(sh, dt, label);
    this.write(t, arr);
    return t;
  }

  /** Uploads a [rows, cols] float32 matrix, chunked by rows so each chunk fits the binding limit. */
  uploadChunked(data: Float32Array | ((rowStart: number, rowEnd: number) => Float32Array), rows: number, cols: number, label = 'matrix', maxChunkBytes?: number): ChunkedMatrix {
    const limit = Math.min(maxChunkBytes ?? Infinity, this.limits.maxStorageBufferBindingSize, this.limits.maxBufferSize);
    const rowsPerChunk = Math.max(1, Math.floor(limit / (cols * 4)));
    const chunks: Tensor[] = [];
    for (let r = 0; r < rows; r += rowsPerChunk) {
      const end = Math.min(rows, r + rowsPerChunk);
      const part = typeof data === 'function' ? data(r, end) : data.subarray(r * cols, end * cols);
      chunks.push(this.upload(part, [end - r, cols], 'f32', `${label}[${r}:${end}]`));
    }
    return new ChunkedMatrix(rows, cols, rowsPerChunk, chunks);
  }

  /**
   * Writes data into t: a queue.writeBuffer when nothing is recorded, else a recorded copy from a
   * staging buffer (ordered with the recorded dispatches; see the ordering model above).
   */
  write(t: Tensor, data: Float32Array | Uint32Array | Int32Array, elementOffset = 0): void {
    this.checkAlive();
    if (elementOffset + data.length > t.size) {
      throw new GpuError(`write of ${data.length} elements at ${elementOffset} overflows tensor of ${t.size}`);
    }
    if (data.byteLength === 0) return;
    if (!this.encoder) {
      this.device.queue.writeBuffer(t.buffer, t.offset + elementOffset * 4, data.buffer, data.byteOffset, data.byteLength);
      return;
    }
    const staging = this.device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true, label: 'upload' });
    new Uint8Array(staging.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    staging.unmap();
    this.endPass();
    this.encoder.copyBufferToBuffer(staging, 0, t.buffer, t.offset + elementOffset * 4, data.byteLength);
    this.uploadStaging.push(staging);
  }

  // ---------------------------------------------------------------- programs

  private pipeline(p: KernelProgram): { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout } {
    let pl = this.pipelines.get(p);
    if (!pl) {
      this.device.pushErrorScope('validation');
      // An explicit layout from the declaration: a declared binding the body does not use stays bound.
      const entries: GPUBindGroupLayoutEntry[] = p.bindings.map((b, i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' },
      }));
      if (p.uniformBytes) entries.push({ binding: p.bindings.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
      const layout = this.device.createBindGroupLayout({ entries, label: p.name });
      const module = this.device.createShaderModule({ code: p.code, label: p.name });
      const pipeline = this.device.createComputePipeline({
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout], label: p.name }),
        compute: { module, entryPoint: 'main' },
        label: p.name,
      });
      const scope = this.device.popErrorScope().then(async (err) => {
        if (!err) return;
        let detail = err.message.trim();
        try {
          const info = await module.getCompilationInfo();
          const msgs = info.messages.filter((m) => m.type === 'error').map((m) => `line ${m.lineNum}: ${m.message}`);
          if (msgs.length) detail = msgs.join('; ');
        } catch {
          /* keep the scope's message */
        }
        // Put first: the dispatches that used this pipeline fail too, less informatively.
        this.errors.unshift(new GpuError(`kernel ${p.name}: invalid pipeline: ${detail}`));
      });
      this.pendingScopes.add(scope);
      void scope.finally(() => this.pendingScopes.delete(scope));
      pl = { pipeline, layout };
      this.pipelines.set(p, pl);
      this.pipelinesCreated++;
    }
    return pl;
  }

  private ensureEncoder(): GPUCommandEncoder {
    this.checkAlive();
    if (!this.encoder) {
      this.encoder = this.device.createCommandEncoder({ label: 'step' });
      this.recordedKernels = [];
    }
    return this.encoder;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Packs the uniform values by name into the current chunk (checked against the declaration). */
  private allocUniform(p: KernelProgram, values: Readonly<Record<string, number>>): { buffer: GPUBuffer; offset: number; size: number } {
    const align = this.limits.minUniformBufferOffsetAlignment;
    const size = p.uniformBytes;
    if (this.uniformOffset + size > UNIFORM_CHUNK_BYTES) {
      this.uniformChunk++;
      this.uniformOffset = 0;
    }
    if (this.uniformChunk >= this.uniformChunks.length) {
      this.uniformChunks.push({
        buffer: this.device.createBuffer({ size: UNIFORM_CHUNK_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'uniforms' }),
        data: new ArrayBuffer(UNIFORM_CHUNK_BYTES),
      });
    }
    const chunk = this.uniformChunks[this.uniformChunk];
    const offset = this.uniformOffset;
    writeUniforms(p, values, new DataView(chunk.data), offset);
    this.uniformOffset = Math.ceil((offset + size) / align) * align;
    return { buffer: chunk.buffer, offset, size };
  }

  /**
   * Records one dispatch of `program` with tensors by binding name and uniforms by member name.
   * Checks both against the declaration (every binding given, dtypes, nothing extra; every uniform
   * given with a value of its type) and the sizes against the device limits, naming the kernel.
   */
  run(program: KernelProgram, buffers: KernelBuffers, workgroups: Workgroups, uniforms?: Readonly<Record<string, number>>): void {
    const name = program.name;
    const [x, y = 1, z = 1] = typeof workgroups === 'number' ? [workgroups] : workgroups;
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension;
    for (const d of [x, y, z]) {
      if (!Number.isInteger(d) || d < 0) throw new GpuError(`kernel ${name}: bad workgroup count ${d}`);
      if (d > maxWg) {
        throw new GpuError(`kernel ${name}: ${d} workgroups in one dimension exceeds maxComputeWorkgroupsPerDimension ${maxWg}`);
      }
    }
    const maxBind = this.limits.maxStorageBufferBindingSize;
    const tensors: Tensor[] = [];
    for (const b of program.bindings) {
      const t = buffers[b.name];
      if (!(t instanceof Tensor)) {
        throw new GpuError(`kernel ${name}: no tensor for binding '${b.name}' (bindings: ${program.bindings.map((d) => d.name).join(', ')})`);
      }
      if (t.isDisposed) throw new GpuError(`kernel ${name}: binding '${b.name}' uses a disposed tensor`);
      if (!b.dtypes.includes(t.dtype)) {
        throw new GpuError(`kernel ${name}: binding '${b.name}' (array<${b.type}>) takes ${b.dtypes.join(' or ')}, got ${t.dtype} [${t.shape.join(', ')}]`);
      }
      if (t.byteLength > maxBind) {
        throw new GpuError(
          `kernel ${name}: binding '${b.name}' [${t.shape.join(', ')}] is ${t.byteLength} B, over maxStorageBufferBindingSize ${maxBind} B (use a ChunkedMatrix)`,
        );
      }
      tensors.push(t);
    }
    let given = 0;
    for (const k in buffers) if (Object.hasOwn(buffers, k) && buffers[k] !== undefined) given++;
    if (given !== tensors.length) {
      const extra = Object.keys(buffers).filter((k) => buffers[k] !== undefined && !program.bindings.some((b) => b.name === k));
      throw new GpuError(`kernel ${name}: unknown binding${extra.length > 1 ? 's' : ''} ${extra.map((k) => `'${k}'`).join(', ')} (bindings: ${program.bindings.map((d) => d.name).join(', ')})`);
    }
    if (program.uniformBytes === 0 && uniforms && Object.keys(uniforms).length) {
      throw new GpuError(`kernel ${name}: takes no uniforms, got ${Object.keys(uniforms).join(', ')}`);
    }
    if (program.uniformBytes > 0 && !uniforms) throw new GpuError(`kernel ${name}: uniforms missing (${program.uniforms.map((f) => f.name).join(', ')})`);
    if (x === 0 || y === 0 || z === 0) {
      // Nothing runs, but the values are still checked.
      if (program.uniformBytes > 0) writeUniforms(program, uniforms!, null, 0);
      return;
    }
    // A full profiling query set: submit what is recorded first (before any uniform of this dispatch).
    if (this.profiling && this.profiling.names.length >= this.profiling.capacity) this.flush();
    const { pipeline, layout } = this.pipeline(program);
    const enc = this.ensureEncoder();
    const uni = program.uniformBytes > 0 ? this.allocUniform(program, uniforms!) : null;
    // Bind groups are cached per pipeline by (buffers, ranges): decode and training steps repeat them.
    let key = '';
    for (const t of tensors) key += `${this.bufferId(t.buffer)}:${t.offset}:${t.byteLength}|`;
    if (uni) key += `u${this.bufferId(uni.buffer)}:${uni.offset}`;
    let groups = this.bindGroups.get(pipeline);
    if (!groups) this.bindGroups.set(pipeline, (groups = new Map()));
    let bg = groups.get(key);
    if (!bg) {
      const entries: GPUBindGroupEntry[] = tensors.map((t, i) => ({
        binding: i,
        resource: { buffer: t.buffer, offset: t.offset, size: Math.max(4, t.byteLength) },
      }));
      if (uni) entries.push({ binding: tensors.length, resource: { buffer: uni.buffer, offset: uni.offset, size: uni.size } });
      bg = this.device.createBindGroup({ layout, entries, label: name });
      if (this.bindGroupTotal >= BIND_GROUP_CACHE_MAX) {
        this.bindGroups.clear();
        this.bindGroupTotal = 0;
        this.bindGroups.set(pipeline, (groups = new Map()));
      }
      groups.set(key, bg);
      this.bindGroupTotal++;
      this.bindGroupsCreated++;
    }
    if (this.profiling) {
      const pr = this.profiling;
      const e = this.ensureEncoder();
      this.endPass();
      const i = pr.names.length;
      pr.names.push(name);
      const pass = e.beginComputePass({ label: name, timestampWrites: { querySet: pr.set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
      this.recordedKernels.push(name);
      this.dispatchCount++;
      return;
    }
    if (!this.pass) this.pass = enc.beginComputePass({ label: 'compute' });
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bg);
    this.pass.dispatchWorkgroups(x, y, z);
    this.recordedKernels.push(name);
    this.dispatchCount++;
    if (this.autoFlushDispatches > 0 && ++this.sinceFlush >= this.autoFlushDispatches) this.flush();
  }

  /** Records a buffer-to-buffer copy (element counts; 4-byte elements). */
  copy(src: Tensor, dst: Tensor, elements = Math.min(src.size, dst.size), srcElementOffset = 0, dstElementOffset = 0): void {
    if (srcElementOffset + elements > src.size || dstElementOffset + elements > dst.size) {
      throw new GpuError(`copy of ${elements} elements out of range (src ${src.size}, dst ${dst.size})`);
    }
    const enc = this.ensureEncoder();
    this.endPass();
    enc.copyBufferToBuffer(src.buffer, src.offset + srcElementOffset * 4, dst.buffer, dst.offset + dstElementOffset * 4, elements * 4);
  }

  /** Starts per-kernel GPU timing (needs the 'timestamp-query' feature); see `profile`. */
  enableProfiling(capacity = 2048): boolean {
    if (!this.device.features.has('timestamp-query')) return false;
    // WebGPU caps a query set at 4096 queries (two per profiled dispatch).
    capacity = Math.max(1, Math.min(2048, Math.floor(capacity)));
    this.flush();
    const set = this.device.createQuerySet({ type: 'timestamp', count: capacity * 2, label: 'profile' });
    const resolve = this.device.createBuffer({ size: capacity * 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'profile.resolve' });
    this.profiling = { set, resolve, names: [], capacity };
    return true;
  }

  /** Waits for pending profile readbacks; returns rows sorted by total time. */
  async profileReport(): Promise<{ kernel: string; dispatches: number; ms: number }[]> {
    await this.sync();
    await Promise.all(this.profileReads.splice(0));
    return [...this.profile].map(([kernel, v]) => ({ kernel, ...v })).sort((a, b) => b.ms - a.ms);
  }

  /** Submits everything recorded so far (one submit), without waiting. */
  flush(): void {
    if (!this.encoder) return;
    this.endPass();
    if (this.profiling && this.profiling.names.length) {
      const pr = this.profiling;
      const n = pr.names.length;
      const names = pr.names.splice(0);
      this.encoder.resolveQuerySet(pr.set, 0, n * 2, pr.resolve, 0);
      const staging = this.device.createBuffer({ size: n * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'profile.read' });
      this.encoder.copyBufferToBuffer(pr.resolve, 0, staging, 0, n * 16);
      this.pendingProfile = { staging, names };
    }
    // Uniform data for this batch lands (in queue order) before the command buffer that reads it.
    for (let i = 0; i <= this.uniformChunk && i < this.uniformChunks.length; i++) {
      const c = this.uniformChunks[i];
      const used = i < this.uniformChunk ? UNIFORM_CHUNK_BYTES : this.uniformOffset;
      if (used > 0) this.device.queue.writeBuffer(c.buffer, 0, c.data, 0, Math.ceil(used / 4) * 4);
    }
    const cmd = this.encoder.finish();
    this.device.queue.submit([cmd]);
    this.submitCount++;
    // Destroying after submit is safe: the memory is released once the submitted work is done.
    for (const b of this.uploadStaging) b.destroy();
    this.uploadStaging = [];
    if (this.pendingProfile) {
      const { staging, names } = this.pendingProfile;
      this.pendingProfile = null;
      this.profileReads.push(
        staging.mapAsync(GPUMapMode.READ).then(() => {
          const t = new BigInt64Array(staging.getMappedRange());
          names.forEach((name, i) => {
            const e = this.profile.get(name) ?? { dispatches: 0, ms: 0 };
            e.dispatches++;
            e.ms += Number(t[2 * i + 1] - t[2 * i]) / 1e6;
            this.profile.set(name, e);
          });
          staging.unmap();
          staging.destroy();
        }),
      );
    }
    this.encoder = null;
    this.sinceFlush = 0;
    this.uniformChunk = 0;
    this.uniformOffset = 0;
  }

  /** Submits and waits until the GPU has finished; throws any GPU error reported meanwhile. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.settleScopes();
    this.throwIfErrors();
  }

  private acquireStaging(bytes: number): GPUBuffer {
    const i = this.stagingFree.findIndex((b) => b.size >= bytes && b.size <= 4 * bytes + 4096);
    if (i >= 0) return this.stagingFree.splice(i, 1)[0];
    return this.device.createBuffer({ size: sizeClass(bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' });
  }

  /** Reads tensors back (one submit, one wait for all of them). */
  async readMany(tensors: readonly Tensor[]): Promise<(Float32Array | Uint32Array | Int32Array)[]> {
    const enc = this.ensureEncoder();
    this.endPass();
    const staging = tensors.map((t) => {
      const s = this.acquireStaging(Math.max(4, t.byteLength));
      if (t.byteLength > 0) enc.copyBufferToBuffer(t.buffer, t.offset, s, 0, t.byteLength);
      return s;
    });
    this.flush();
    try {
      await Promise.all(staging.map((s) => s.mapAsync(GPUMapMode.READ)));
    } catch (err) {
      await this.settleScopes();
      this.throwIfErrors();
      throw new GpuError(`readback failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    await this.settleScopes();
    this.throwIfErrors();
    const out = tensors.map((t, i) => {
      const bytes = staging[i].getMappedRange(0, Math.max(4, t.byteLength)).slice(0, t.byteLength);
      staging[i].unmap();
      this.stagingFree.push(staging[i]);
      return t.dtype === 'u32' ? new Uint32Array(bytes) : t.dtype === 'i32' ? new Int32Array(bytes) : new Float32Array(bytes);
    });
    if (this.stagingFree.length > 16) this.stagingFree.splice(0, this.stagingFree.length - 16).forEach((b) => b.destroy());
    return out;
  }

  async read(t: Tensor): Promise<Float32Array>;
  async read<D extends DType>(t: Tensor & { dtype: D }): Promise<TypedArrayFor<D>>;
  async read(t: Tensor): Promise<Float32Array | Uint32Array | Int32Array> {
    return (await this.readMany([t]))[0];
  }

  /** Reads a float tensor; type-narrowed convenience for the common case. */
  async readF32(t: Tensor): Promise<Float32Array> {
    const r = (await this.readMany([t]))[0];
    if (!(r instanceof Float32Array)) throw new GpuError(`readF32 on a ${t.dtype} tensor`);
    return r;
  }

  destroy(): void {
    this.device.destroy();
  }
}

let shared: Promise<Gpu> | null = null;

/** One device per process (tests, CLIs). */
export function getGpu(opts: GpuOptions = {}): Promise<Gpu> {
  if (!shared) shared = Gpu.create(opts);
  return shared;
}

/** ceil(a / b) for workgroup counts. */
export function cdiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}
