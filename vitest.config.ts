import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    // One WebGPU device per worker; lavapipe already uses both cores, so run files one at a time
    // on the GPU side and keep timeouts generous (CI is a 2-core CPU machine).
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
