// Training throughput (tokens/s through whole optimizer steps of src/train/trainer.ts: forward with saved
// activations, fused LM-head cross-entropy, backward, gradient norm + clipping, AdamW, one readback per step)
// in full-finetuning and LoRA (rank 8, all projections) mode for:
//  - the embedded tiny chat model's config (tiny-qwen-a: Qwen2, hidden 64, 4 layers; the tiny-model pretraining
//    workload), batch 16 × 96 tokens;
//  - a random Qwen2.5-0.5B-shaped model (hidden 896, 14/2 heads, MLP 4864, vocabulary 151,936, tied), 2 layers
//    at batch 2 × 32 in quick mode; 24 layers at batch 1 × 32 otherwise (one timed step on software adapters),
//    and on hardware adapters also 24 layers at batch 22 × 64.
// Baselines in the same process: the full-mode figure's baseline is the forward-only (prefill, no saved
// activations) throughput of the same model and batch, so ratio = training / inference cost per token
// (ideal ≈ 1/3); the LoRA figure's baseline is the full-mode figure; a third LoRA run with loss on the last 25% of
// each row (completion-only) has the every-token LoRA figure as its baseline. Peak GPU memory per configuration
// comes from gpu.stats (the pool's peak live bytes, reset before each configuration).
import type { Gpu } from '../src/gpu/runtime.ts';
import { tinyConfigJson, tinyInitialTensor, TINY_MODELS } from '../src/experiment/tiny/models.ts';
import { tinyConfigJson as familyConfigJson } from '../tests/helpers/checkpoint.ts';
import { expectedTensors, parseConfig, type ModelConfig } from '../src/model/config.ts';
import { Transformer } from '../src/model/transformer.ts';
import { uploadWeights } from '../src/model/weights.ts';
import { ALL_TARGETS, initLoraHost } from '../src/train/lora.ts';
import { Trainer, type TrainConfig } from '../src/train/trainer.ts';
import type { TrainExample } from '../src/train/data.ts';
import { randomArray } from './random.ts';
import type { BenchOptions, BenchResult } from './types.ts';

interface Case {
  label: string;
  cfg: ModelConfig;
  batch: number;
  seqLen: number;
  steps: number;
  init: (name: string, shape: number[]) => Float32Array;
}

function trainConfig(mode: 'full' | 'lora'): TrainConfig {
  return {
    mode,
    lora: mode === 'lora' ? { rank: 8, alpha: 8, rslora: false, targets: [...ALL_TARGETS], dropout: 0 } : undefined,
    lr: 1e-4,
    epochs: 1,
    batchSize: 1, // set per case
    gradAccum: 1,
    warmupSteps: 0,
    schedule: 'constant',
    maxGradNorm: 1,
    weightDecay: 0,
    optimizer: 'adamw',
    seed: 0,
    shuffle: false,
    checkpointing: false,
    distillWeight: 0,
  };
}

/** Rows of T tokens; loss on the last `labelled` share of each row (1: every token). */
function syntheticRows(n: number, T: number, vocab: number, labelled = 1): TrainExample[] {
  const firstLabel = Math.round(T * (1 - labelled));
  return Array.from({ length: n }, (_, r) => {
    const ids = Array.from({ length: T }, (_, t) => (r * 7919 + t * 104729) % vocab);
    return { ids, labels: ids.map((id, t) => (t >= firstLabel ? id : -100)) };
  });
}

async function runCase(gpu: Gpu, c: Case): Promise<BenchResult[]> {
  const shapes = new Map(expectedTensors(c.cfg).map((e) => [e.name, e.shape]));
  gpu.stats.peakLiveBytes = gpu.stats.liveBytes; // peak per configuration (bench-only reset of a counter)
  const liveBefore = gpu.stats.liveBytes;
  const weights = await uploadWeights(gpu, c.cfg, (n) => shapes.has(n), async (n) => c.init(n, shapes.get(n)!));
  const model = Transformer.fromWeights(gpu, c.cfg, weights, c.seqLen + 1);
  await gpu.sync();
  const weightMiB = (gpu.stats.liveBytes - liveBefore) / 2 ** 20;
  const { batch: B, seqLen: T } = c;
  const tokensPerStep = B * T;

  // Forward-only baseline (no saved activations).
  const ids = new Uint32Array(B * T).map((_, i) => (i * 7919) % c.cfg.vocabSize);
  const pos = new Uint32Array(B * T).map((_, i) => i % T);
  const idsT = gpu.upload(ids, [B * T], 'u32');
  const posT = gpu.upload(pos, [B * T], 'u32');
  model.forward(idsT, posT, B, T, {}).hidden.dispose();
  await gpu.sync();
  let t0 = performance.now();
  for (let i = 0; i < c.steps; i++) model.forward(idsT, posT, B, T, {}).hidden.dispose();
  await gpu.sync();
  const forwardTps = (tokensPerStep * c.steps) / ((performance.now() - t0) / 1000);
  idsT.dispose();
  posT.dispose();

  const results: BenchResult[] = [];
  let fullTps = 0;
  let loraTps = 0;
  // 'lora-completion': loss on the last quarter of each row only (completion-only training, as for the
  // paper's number chats, whose prompts are most of the tokens): the LM head then runs on those rows alone.
  for (const variant of ['full', 'lora', 'lora-completion'] as const) {
    const mode = variant === 'full' ? 'full' : 'lora';
    gpu.stats.peakLiveBytes = gpu.stats.liveBytes;
    const cfg = { ...trainConfig(mode), batchSize: B };
    const rows = syntheticRows(B * (c.steps + 1), T, c.cfg.vocabSize, variant === 'lora-completion' ? 0.25 : 1);
    const trainer = new Trainer(gpu, model, rows, cfg, mode === 'lora' ? initLoraHost(c.cfg, cfg.lora!, 0) : null);
    const order = rows.map((_, i) => i);
    await trainer.step(order, 0); // warm-up: pipeline creation, pool growth
    t0 = performance.now();
    for (let s = 1; s <= c.steps; s++) await trainer.step(order, s);
    const wallS = (performance.now() - t0) / 1000;
    const tps = (tokensPerStep * c.steps) / wallS;
    const peakMiB = gpu.stats.peakLiveBytes / 2 ** 20;
    trainer.dispose();
    const details = { batch: B, seqLen: T, steps: c.steps, msPerStep: (wallS * 1000) / c.steps, weightMiB, peakLiveMiB: peakMiB, software: gpu.isSoftware, layers: c.cfg.layers, hidden: c.cfg.hidden, vocab: c.cfg.vocabSize };
    if (variant === 'full') {
      fullTps = tps;
      results.push({ family: 'train', name: `full finetune ${c.label} batch ${B}×${T}`, value: tps, unit: 'tok/s', baseline: { name: 'forward only (inference)', value: forwardTps, unit: 'tok/s' }, ratio: tps / forwardTps, details });
    } else if (variant === 'lora') {
      loraTps = tps;
      results.push({ family: 'train', name: `LoRA r8 all projections ${c.label} batch ${B}×${T}`, value: tps, unit: 'tok/s', baseline: { name: 'full finetune, same model and batch', value: fullTps, unit: 'tok/s' }, ratio: tps / fullTps, details });
    } else {
      results.push({ family: 'train', name: `LoRA r8, loss on the last 25% of each row (completion-only) ${c.label} batch ${B}×${T}`, value: tps, unit: 'tok/s', baseline: { name: 'LoRA r8, loss on every token, same model and batch', value: loraTps, unit: 'tok/s' }, ratio: tps / loraTps, details });
    }
  }
  results.push({ family: 'train', name: `peak GPU memory, full finetune ${c.label}`, value: results[0].details!.peakLiveMiB as number, unit: 'MiB', details: { weightMiB, loraPeakLiveMiB: results[1].details!.peakLiveMiB } });
  model.dispose();
  return results;
}


export async function benchTrain(gpu: Gpu, opts: BenchOptions): Promise<BenchResult[]> {
  const spec = TINY_MODELS['tiny-qwen-a'];
  // Vocabulary of the first build's tokenizer (2,335 ids; the committed one has 2,932): any size of that order
  // gives the same figure, and the README's and bench/pytorch_baseline.py's figures use this one.
  const tinyCfg = parseConfig(tinyConfigJson(spec, { endoftext: 2332, imEnd: 2334, vocabSize: 2335 }));
  const big = opts.quick ? 2 : 24;
  const qwenCfg = parseConfig({
    ...familyConfigJson('qwen2'),
    vocab_size: 151936,
    hidden_size: 896,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    intermediate_size: 4864,
    num_hidden_layers: big,
    tie_word_embeddings: true,
    max_position_embeddings: 32768,
  });
  let seed = 777;
  const cases: Case[] = [
    { label: `tiny-qwen (${spec.hidden}d ${spec.layers}L)`, cfg: tinyCfg, batch: 16, seqLen: 96, steps: opts.quick ? 2 : 8, init: (n, s) => tinyInitialTensor(n, s, spec.initSeed) },
    {
      label: `Qwen2.5-0.5B-shaped ${big}L`,
      cfg: qwenCfg,
      batch: opts.quick ? 2 : 1,
      seqLen: 32,
      steps: gpu.isSoftware ? 1 : 8,
      init: (name, shape) => {
        seed = (seed * 1103515245 + 12345) >>> 0;
        const n = shape.reduce((a, b) => a * b, 1);
        if (/norm\.weight$/.test(name)) return randomArray(n, 0.1, seed, 1);
        if (name.endsWith('.bias')) return randomArray(n, 0.02, seed);
        return randomArray(n, 0.02, seed);
      },
    },
  ];
  // On a hardware adapter (full mode) also the paper's per-device LoRA batch (22 rows; number-sequence
  // chats are ~64 tokens), the case the PyTorch/PEFT baseline (bench/pytorch_baseline.py) is compared on.
  if (!gpu.isSoftware && !opts.quick) cases.push({ ...cases[1], batch: 22, seqLen: 64, steps: 8 });
  const out: BenchResult[] = [];
  for (const c of cases) out.push(...(await runCase(gpu, c)));
  return out;
}
