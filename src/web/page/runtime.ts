// What both experiment views share: the memory file system, fetching the embedded models and the
// digits into it, one run at a time with cancellation, and a WebGPU device per run (destroyed at the
// end, which also frees whatever a cancelled stage left on the GPU).
import { Gpu } from '../../gpu/runtime.ts';
import { fsys } from '../../util/files.ts';
import { MemoryFileSystem } from '../../util/files-memory.ts';
import { setProgressSink, type ProgressState } from '../../util/progress.ts';

export const memfs = new MemoryFileSystem();

/** Thrown into the running work when the user cancels (from a progress report). */
export class Cancelled extends Error {
  override name = 'Cancelled';
  constructor() {
    super('cancelled');
  }
}

export interface RunHandle {
  readonly signal: AbortSignal;
  /** Throws Cancelled once the run was cancelled. */
  check(): void;
  /** The device of this run (created by `device()`). */
  gpu: Gpu | null;
}

type Listener = (s: ProgressState) => void;

let active: { ac: AbortController; onProgress: Listener | null; onLost: (why: string) => void } | null = null;

// Every Progress bar of the shared code reports here; a cancelled run stops at its next report.
setProgressSink((s) => {
  if (!active) return;
  if (active.ac.signal.aborted) throw new Cancelled();
  active.onProgress?.(s);
});

export function isRunning(): boolean {
  return active !== null;
}

export function cancelRun(): void {
  active?.ac.abort();
}

/** Runs `work` as the page's one run: progress of the shared code goes to onProgress; cancel aborts it. */
export async function runExclusive<T>(opts: { onProgress?: Listener; onLost: (why: string) => void }, work: (run: RunHandle) => Promise<T>): Promise<T> {
  if (active) throw new Error('another experiment is running');
  const ac = new AbortController();
  active = { ac, onProgress: opts.onProgress ?? null, onLost: opts.onLost };
  const handle: RunHandle = {
    signal: ac.signal,
    check: () => {
      if (ac.signal.aborted) throw new Cancelled();
    },
    gpu: null,
  };
  try {
    return await work(handle);
  } finally {
    active = null;
    handle.gpu?.destroy();
  }
}

/** A fresh device for a run, with its loss reported (a lost device also cancels the run). */
export async function newDevice(run: RunHandle, onLost: (why: string) => void): Promise<Gpu> {
  const gpu = await Gpu.create({ log: false });
  run.gpu = gpu;
  gpu.device.lost.then((info) => {
    if (info.reason === 'destroyed') return;
    onLost(`the GPU device was lost (${info.reason}: ${info.message || 'no message'})`);
    cancelRun();
  });
  gpu.device.addEventListener('uncapturederror', (e) => {
    console.error('webgpu uncaptured error:', (e as GPUUncapturedErrorEvent).error.message);
  });
  return gpu;
}

export function adapterText(gpu: Gpu): string {
  const a = gpu.info.adapterInfo;
  const name = [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' ') || 'unknown adapter';
  const l = gpu.limits;
  const mib = (b: number) => `${Math.round(b / 2 ** 20)} MiB`;
  return `${name}${gpu.info.isSoftware ? ' (software adapter: the CPU does the work)' : ''} · storage binding ${mib(l.maxStorageBufferBindingSize)} · buffer ${mib(l.maxBufferSize)} · float32${gpu.info.hasF16 ? ' (shader-f16 offered)' : ''}${gpu.info.hasSubgroups ? ' · subgroups' : ''}`;
}

/** Fetches a file with progress (bytes); rejects on HTTP errors with the URL and status. */
export async function fetchBytes(url: string, onBytes?: (done: number, total: number) => void, run?: RunHandle): Promise<Uint8Array> {
  const res = await fetch(url, { signal: run?.signal });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get('content-length') ?? 0);
  if (!res.body || !onBytes) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let done = 0;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    chunks.push(r.value);
    done += r.value.byteLength;
    onBytes(done, total || done);
  }
  const out = new Uint8Array(done);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

export const MODELS_DIR = '/models';

/** The embedded models' file listing (written by the build). */
export async function modelListing(): Promise<Record<string, { files: Record<string, number> }>> {
  return JSON.parse(new TextDecoder().decode(await fetchBytes('models/index.json'))) as Record<string, { files: Record<string, number> }>;
}

/** Fetches model folders into /models/<name>/ of the memory file system (once per page). */
export async function mountModels(names: string[], onBytes: (done: number, total: number) => void, run: RunHandle): Promise<void> {
  const listing = await modelListing();
  const todo: { name: string; file: string; size: number }[] = [];
  for (const n of names) {
    const m = listing[n];
    if (!m) throw new Error(`models/index.json has no model ${n}`);
    for (const [file, size] of Object.entries(m.files)) if (!fsys().exists(`${MODELS_DIR}/${n}/${file}`)) todo.push({ name: n, file, size });
  }
  const total = todo.reduce((a, t) => a + t.size, 0);
  let done = 0;
  for (const t of todo) {
    const bytes = await fetchBytes(`models/${t.name}/${t.file}`, (d) => onBytes(done + d, total), run);
    done += bytes.byteLength;
    // Written only when complete, so a cancelled fetch is simply fetched again.
    fsys().mkdir(`${MODELS_DIR}/${t.name}`);
    fsys().writeFile(`${MODELS_DIR}/${t.name}/${t.file}`, bytes);
    onBytes(done, total);
  }
}
