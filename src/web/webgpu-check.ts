// What the page says when it cannot get a WebGPU device: which piece is missing and what to do,
// instead of a blank page. Pure (the probe's findings in, text out) so Node tests can check it.

export interface WebGpuProbe {
  /** window.isSecureContext (WebGPU is only exposed on https:// and localhost). */
  secureContext: boolean;
  /** 'gpu' in navigator. */
  hasNavigatorGpu: boolean;
  /** requestAdapter() returned an adapter. */
  adapter: boolean | null;
  /** requestDevice() failed with this message. */
  deviceError: string | null;
  userAgent: string;
}

export interface WebGpuVerdict {
  ok: boolean;
  /** One line: what is missing. */
  title: string;
  /** What to do about it. */
  advice: string[];
}

export function webgpuVerdict(p: WebGpuProbe): WebGpuVerdict {
  if (!p.secureContext) {
    return {
      ok: false,
      title: 'WebGPU is not available: this page was not loaded from a secure context.',
      advice: [
        'Browsers expose WebGPU (navigator.gpu) only to pages served over https:// or from localhost.',
        'Open the page at http://localhost:<port>/ (npm run web prints that address) or serve the built folder over https.',
      ],
    };
  }
  if (!p.hasNavigatorGpu) {
    const linuxChrome = /Linux/.test(p.userAgent) && /Chrom(e|ium)/.test(p.userAgent);
    return {
      ok: false,
      title: 'WebGPU is not available in this browser: navigator.gpu is missing.',
      advice: [
        'These experiments run their own WGSL compute shaders, so they need WebGPU: Chrome or Edge 113+, Safari 26+, or Firefox 141+ on Windows (later on other systems).',
        linuxChrome
          ? 'Chrome on Linux ships WebGPU behind a flag: start it with --enable-unsafe-webgpu (and --enable-features=Vulkan), or enable chrome://flags/#enable-unsafe-webgpu.'
          : 'If your browser should have it, check that WebGPU is not disabled (chrome://gpu lists "WebGPU" under Graphics Feature Status).',
        'Without a GPU, Chrome can run WebGPU on the CPU with --enable-unsafe-webgpu --use-webgpu-adapter=swiftshader (slow, but the same results); or run the same experiments with Node: npx tsx scripts/mnist.ts, npx tsx scripts/owl.ts.',
      ],
    };
  }
  if (p.adapter === false) {
    return {
      ok: false,
      title: 'WebGPU is present but found no adapter: navigator.gpu.requestAdapter() returned null.',
      advice: [
        'The browser supports WebGPU but offers no GPU for it here: the GPU or its driver may be blocklisted, or hardware acceleration is off.',
        'Check chrome://gpu (or about:support in Firefox); enable hardware acceleration, update the graphics driver, or start Chrome with --enable-unsafe-webgpu.',
        'On a machine without a GPU, Chrome can use its CPU adapter: --enable-unsafe-webgpu --use-webgpu-adapter=swiftshader.',
      ],
    };
  }
  if (p.deviceError) {
    return {
      ok: false,
      title: `WebGPU found an adapter but could not create a device: ${p.deviceError}`,
      advice: ['Another tab may hold the GPU, or the adapter refused the limits asked for; reload the page, or try another browser.'],
    };
  }
  return { ok: true, title: 'WebGPU is available.', advice: [] };
}
