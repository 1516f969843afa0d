// Device acquisition for Node (the `webgpu` package, Dawn) and browsers (navigator.gpu) behind one
// function. Requests the adapter's real limits (the defaults are far below what adapters offer:
// e.g. maxStorageBufferBindingSize 128 MiB by default) and `shader-f16` when offered.

export type PollMode = 'busy' | 'throttled';

export interface AcquireOptions {
  /** 'high-performance' by default. */
  powerPreference?: GPUPowerPreference;
  /**
   * How Node's `webgpu` package waits for pending promises. 'busy' polls with setImmediate (lowest
   * latency, but takes most of a core away from a software rasterizer's worker threads);
   * 'throttled' polls every ~1 ms. Default: 'throttled' on software adapters, 'busy' otherwise.
   */
  poll?: PollMode;
  /** Log adapter name and limits once (to stderr). Default true unless quiet. */
  log?: boolean;
  /** Do not request shader-f16 even when available (tests of the float32 path). */
  disableF16?: boolean;
}

export interface AcquiredDevice {
  device: GPUDevice;
  adapterInfo: { vendor: string; architecture: string; device: string; description: string };
  /** True for CPU implementations (lavapipe/llvmpipe, SwiftShader, WARP). */
  isSoftware: boolean;
  hasF16: boolean;
  hasSubgroups: boolean;
  poll: PollMode;
}

const LIMIT_NAMES = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
  'maxBindGroups',
  'maxBindingsPerBindGroup',
] as const;

let nodeGpu: GPU | undefined;
let nodeGpuPoll: PollMode | undefined;
let loggedOnce = false;

function isNode(): boolean {
  return typeof process !== 'undefined' && !!process.versions?.node;
}

/**
 * Creates (once per poll mode) Node's navigator.gpu equivalent. The `webgpu` package's polling
 * loop uses the global setImmediate captured while it runs, so 'throttled' swaps in a 1 ms timer
 * for the duration of create() and restores the global afterwards.
 */
async function nodeNavigatorGpu(poll: PollMode): Promise<GPU> {
  if (nodeGpu && nodeGpuPoll === poll) return nodeGpu;
  if (!process.env.XDG_RUNTIME_DIR) {
    // The Vulkan loader warns without it; any writable folder will do.
    const os = await import('node:os');
    process.env.XDG_RUNTIME_DIR = os.tmpdir();
  }
  const mod = (await import('webgpu')) as unknown as { create: (flags: string[]) => GPU; globals: Record<string, unknown> };
  // WebGPU enums/classes (GPUBufferUsage, GPUShaderStage, GPUMapMode…) as globals, as in browsers.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  const realSetImmediate = globalThis.setImmediate;
  if (poll === 'throttled') {
    (globalThis as { setImmediate: unknown }).setImmediate = ((cb: (...a: unknown[]) => void, ...args: unknown[]) =>
      setTimeout(cb, 1, ...args)) as unknown;
  }
  try {
    nodeGpu = mod.create([]);
  } finally {
    globalThis.setImmediate = realSetImmediate;
  }
  nodeGpuPoll = poll;
  return nodeGpu;
}

function looksSoftware(info: GPUAdapterInfo): boolean {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  return /llvmpipe|lavapipe|swiftshader|software|warp|microsoft basic render/.test(text);
}

export class NoAdapterError extends Error {}

/** "vendor architecture description" of an adapter, whitespace collapsed (for logs and model cards). */
export function adapterLabel(a: { vendor: string; architecture: string; description: string }): string {
  return `${a.vendor} ${a.architecture} ${a.description}`.replace(/\s+/g, ' ').trim();
}

export async function acquireDevice(opts: AcquireOptions = {}): Promise<AcquiredDevice> {
  const powerPreference = opts.powerPreference ?? 'high-performance';
  let gpu: GPU | undefined;
  if (isNode()) {
    // Probe with the busy poller first: the adapter decides the default policy.
    gpu = await nodeNavigatorGpu(opts.poll ?? 'busy');
  } else {
    gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  }
  if (!gpu) throw new NoAdapterError('WebGPU is not available in this environment (no navigator.gpu)');
  let adapter = await gpu.requestAdapter({ powerPreference });
  if (!adapter) {
    throw new NoAdapterError(
      'no WebGPU adapter found: on a machine without a GPU run scripts/setup.sh, which installs the CPU Vulkan driver (lavapipe)',
    );
  }
  let poll: PollMode = opts.poll ?? (looksSoftware(adapter.info) ? 'throttled' : 'busy');
  if (isNode() && poll !== nodeGpuPoll) {
    gpu = await nodeNavigatorGpu(poll);
    adapter = await gpu.requestAdapter({ powerPreference });
    if (!adapter) throw new NoAdapterError('the WebGPU adapter disappeared while switching the polling mode');
  }
  const info = adapter.info;
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const v = (adapter.limits as unknown as Record<string, number>)[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  const requiredFeatures: GPUFeatureName[] = [];
  const hasF16 = !opts.disableF16 && adapter.features.has('shader-f16');
  if (hasF16) requiredFeatures.push('shader-f16');
  const hasSubgroups = adapter.features.has('subgroups' as GPUFeatureName);
  if (hasSubgroups) requiredFeatures.push('subgroups' as GPUFeatureName);
  if (adapter.features.has('timestamp-query')) requiredFeatures.push('timestamp-query');
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'subliminal-webgpu' });
  const adapterInfo = {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description: info.description ?? '',
  };
  if ((opts.log ?? true) && !loggedOnce && !(isNode() && process.env.VITEST)) {
    loggedOnce = true;
    const l = device.limits;
    const mib = (b: number) => `${Math.round(b / 2 ** 20)} MiB`;
    console.error(
      `webgpu: ${adapterLabel(adapterInfo)}` +
        ` | binding ${mib(l.maxStorageBufferBindingSize)}, buffer ${mib(l.maxBufferSize)},` +
        ` wg storage ${l.maxComputeWorkgroupStorageSize} B, wg invocations ${l.maxComputeInvocationsPerWorkgroup},` +
        ` f16 ${hasF16 ? 'yes' : 'no'}, subgroups ${hasSubgroups ? 'yes' : 'no'}, poll ${poll}`,
    );
  }
  return { device, adapterInfo, isSoftware: looksSoftware(info), hasF16, hasSubgroups, poll };
}
