// Exit 0 when the Node `webgpu` package can create a WebGPU adapter, 1 otherwise.
// Used by scripts/setup.sh to decide whether the CPU Vulkan driver (lavapipe) is needed.
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
try {
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  if (!adapter) {
    console.error('check-webgpu: no WebGPU adapter');
    process.exit(1);
  }
  const info = adapter.info ?? {};
  console.log(`check-webgpu: adapter ${info.vendor ?? '?'} ${info.architecture ?? ''} ${info.description ?? ''}`.trim());
  process.exit(0);
} catch (err) {
  console.error(`check-webgpu: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
