// Model-level throughput: prefill tok/s and decode tok/s (decode step + on-GPU sampling over the
// chunked 151,936-row LM head, as in src/model/generate.ts) for a random Qwen2.5-0.5B-shaped model
// (hidden 896, 14 heads / 2 KV heads, intermediate 4864, tied embeddings). Quick mode: 2 layers,
// batch 1 and 64. Full mode: 24 layers, batch 1, 64 and 256 (on software adapters only a few steps:
// one 24-layer decode step at batch 256 is ~250 GFLOP). The baseline of each batch's figure is the
// batch-1 figure of the same run. GPU memory held is reported from gpu.stats.
import type { Gpu } from '../src/gpu/runtime.ts';
import { sampleTokens } from '../src/kernels/sampling.ts';
import { tinyConfigJson } from '../tests/helpers/checkpoint.ts';
import { expectedTensors, parseConfig } from '../src/model/config.ts';
import { Transformer } from '../src/model/transformer.ts';
import { uploadWeights } from '../src/model/weights.ts';
import { randomArray } from './random.ts';
import type { BenchOptions, BenchResult } from './types.ts';


export async function benchModel(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const layers = opts.quick ? 2 : 24;
  const cfg = parseConfig({
    ...tinyConfigJson('qwen2'),
    vocab_size: 151936,
    hidden_size: 896,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    intermediate_size: 4864,
    num_hidden_layers: layers,
    tie_word_embeddings: true,
    max_position_embeddings: 32768,
  });
  const shapes = new Map(expectedTensors(cfg).map((e) => [e.name, e.shape]));
  let seed = 12345;
  const read = async (name: string) => {
    const s = shapes.get(name)!;
    const n = s.reduce((a, b) => a * b, 1);
    seed = (seed * 1103515245 + 12345) >>> 0;
    if (/norm\.weight$/.test(name)) return randomArray(n, 0.1, seed, 1);
    if (name.endsWith('.bias')) return randomArray(n, 0.5, seed);
    return randomArray(n, name === 'model.embed_tokens.weight' ? 1 : 1 / Math.sqrt(s[1]), seed);
  };
  const liveBefore = gpu.stats.liveBytes;
  const weights = await uploadWeights(gpu, cfg, (n) => shapes.has(n), read);
  const model = Transformer.fromWeights(gpu, cfg, weights, 1024);
  await gpu.sync();
  const weightBytes = gpu.stats.liveBytes - liveBefore;

  const software = gpu.isSoftware;
  const batches = opts.quick ? [1, 64] : [1, 64, 256];
  const results: BenchResult[] = [];
  let prefillBase: number | null = null;
  let decodeBase: number | null = null;
  for (const B of batches) {
    // Prompt length: longer for batch 1 so every figure has ≥ 64 prefill tokens.
    const T = B === 1 ? 64 : software && !opts.quick ? 8 : 32;
    const steps = software ? (opts.quick ? 8 : 2) : 32;
    const ids = new Uint32Array(B * T);
    const pos = new Uint32Array(B * T);
    for (let i = 0; i < B * T; i++) {
      ids[i] = (i * 7919) % cfg.vocabSize;
      pos[i] = i % T;
    }
    const idsT = gpu.upload(ids, [B * T], 'u32');
    const posT = gpu.upload(pos, [B * T], 'u32');
    const lensT = gpu.upload(new Uint32Array(B).fill(T), [B], 'u32');
    const cache = model.createCache(B, T + steps + 1);
    // Warm-up (pipeline creation) on a throwaway prefill + step, then the timed runs.
    model.prefill(cache, idsT, posT, lensT, B, T).dispose();
    await gpu.sync();
    let t0 = performance.now();
    const hidden = model.prefill(cache, idsT, posT, lensT, B, T);
    await gpu.sync();
    const prefillS = (performance.now() - t0) / 1000;
    // Last rows of the prefill as the first decode inputs (any ids would do for timing).
    let tok = sampleTokens(gpu, { x: hidden.view([B, cfg.hidden], 0), w: model.lmHead }, { greedy: true, seed: 0, step: 0 });
    hidden.dispose();
    const step1 = model.decodeStep(cache, tok, null, T + 1);
    const tok1 = sampleTokens(gpu, { x: step1, w: model.lmHead }, { temperature: 1, seed: 1, step: 1 });
    step1.dispose();
    tok.dispose();
    tok = tok1;
    await gpu.sync();
    const d0 = gpu.dispatchCount;
    t0 = performance.now();
    for (let s = 0; s < steps; s++) {
      const h = model.decodeStep(cache, tok, null, T + 2 + s);
      const next = sampleTokens(gpu, { x: h, w: model.lmHead }, { temperature: 1, seed: 1, step: 2 + s });
      h.dispose();
      tok.dispose();
      tok = next;
    }
    await gpu.read(tok);
    const decodeS = (performance.now() - t0) / 1000;
    const dispatchesPerStep = (gpu.dispatchCount - d0) / steps;
    tok.dispose();
    cache.dispose();
    for (const t of [idsT, posT, lensT]) t.dispose();

    const prefillTps = (B * T) / prefillS;
    const decodeTps = (B * steps) / decodeS;
    prefillBase ??= prefillTps;
    decodeBase ??= decodeTps;
    const details = { layers, batch: B, promptLen: T, steps, vocab: cfg.vocabSize, software, dispatchesPerStep: Math.round(dispatchesPerStep) };
    results.push({
      family: 'model',
      name: `prefill Qwen2.5-0.5B-shaped ${layers}L batch ${B}×${T}`,
      value: prefillTps,
      unit: 'tok/s',
      ...(B > 1 ? { baseline: { name: 'prefill batch 1', value: prefillBase, unit: 'tok/s' }, ratio: prefillTps / prefillBase } : {}),
      details: { ...details, wallMs: prefillS * 1000 },
    });
    results.push({
      family: 'model',
      name: `decode+sample Qwen2.5-0.5B-shaped ${layers}L batch ${B}`,
      value: decodeTps,
      unit: 'tok/s',
      ...(B > 1 ? { baseline: { name: 'decode batch 1', value: decodeBase, unit: 'tok/s' }, ratio: decodeTps / decodeBase } : {}),
      details: { ...details, msPerStep: (decodeS * 1000) / steps },
    });
  }
  results.push({
    family: 'model',
    name: `GPU memory held (${layers}L weights + pool)`,
    value: gpu.stats.allocatedBytes / 2 ** 20,
    unit: 'MiB',
    details: { weightMiB: weightBytes / 2 ** 20, peakLiveMiB: gpu.stats.peakLiveBytes / 2 ** 20, peakAllocatedMiB: gpu.stats.peakAllocatedBytes / 2 ** 20 },
  });
  model.dispose();
  return results;
}
