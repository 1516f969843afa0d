// PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors), as written by
// Hugging Face PEFT's `save_pretrained` for a causal LM:
//   base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_A.weight  [r, in]
//   base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_B.weight  [out, r]
//   base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight
// The adapted projection is y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with s = lora_alpha / r (or lora_alpha / √r with
// use_rslora). Only what our forward implements is accepted: plain LoRA on the seven linear
// projections, one rank for all of them, no bias, no DoRA, no modules_to_save; anything else is a
// UserError naming the file and the problem.
import path from 'node:path';
import type { Gpu } from '../gpu/runtime.ts';
import { UserError } from '../util/errors.ts';
import { fsys } from '../util/files.ts';
import type { ModelConfig } from './config.ts';
import { SafetensorsFile, writeSafetensors, type FloatDtype, type WriteTensor } from './safetensors.ts';
import type { LoraWeights } from './transformer.ts';
import { layerShapes, LINEAR_MODULES, type LayerWeights, type LinearModule } from './weights.ts';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

const MODULE_NAMES = Object.keys(LINEAR_MODULES) as LinearModule[];

/** One LoRA pair on the host: A [r, in] and B [out, r], row-major float32. */
export interface HostLoraPair {
  A: Float32Array;
  B: Float32Array;
}

/** A LoRA adapter on the host (what checkpoints hold). */
export interface HostLora {
  rank: number;
  alpha: number;
  useRslora: boolean;
  /** Targeted modules (every layer present in `layers` has a pair for each). */
  targets: LinearModule[];
  /** Per layer (index = layer), the pairs of the targeted modules; {} for untouched layers. */
  layers: Partial<Record<LinearModule, HostLoraPair>>[];
}

export interface PeftAdapterMeta {
  /** base_model_name_or_path (HF id or folder); default null. */
  baseModelNameOrPath?: string | null;
  /** lora_dropout recorded in the config (training only; inference ignores it). Default 0. */
  loraDropout?: number;
  /** Storage dtype of the safetensors file (default F32; PEFT usually writes the model's dtype). */
  dtype?: FloatDtype;
  /** Extra adapter_config.json fields (merged last, e.g. {revision: 'main'}). */
  extraConfig?: Record<string, unknown>;
}

/** The fields of adapter_config.json we use. */
export interface PeftAdapterConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  loraDropout: number;
  targetModules: LinearModule[] | string;
  baseModelNameOrPath: string | null;
}

export interface PeftAdapterHost {
  dir: string;
  config: PeftAdapterConfig;
  /** The raw adapter_config.json object. */
  rawConfig: Record<string, unknown>;
  lora: HostLora;
}

/** s = alpha/r, or alpha/√r with rsLoRA (Kalajdzievski 2023), as PEFT computes `scaling`. */
export function loraScale(alpha: number, rank: number, useRslora: boolean): number {
  return useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

/** [in, out] of a targeted projection for this model. */
export function loraDims(cfg: ModelConfig, module: LinearModule): { inDim: number; outDim: number } {
  const shape = layerShapes(cfg)[LINEAR_MODULES[module].key as keyof LayerWeights];
  return { outDim: shape[0], inDim: shape[1] };
}

export function peftKey(layer: number, module: LinearModule, which: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${LINEAR_MODULES[module].path}.lora_${which}.weight`;
}

// ------------------------------------------------------------------------------------------------
// writing
// ------------------------------------------------------------------------------------------------

/**
 * Writes a PEFT adapter folder: adapter_model.safetensors first, then adapter_config.json (each
 * file atomically: temp file + rename), so a folder with a config always has its matching weights
 * unless an older complete adapter was being overwritten.
 */
export async function writePeftAdapter(dir: string, cfg: ModelConfig, lora: HostLora, meta: PeftAdapterMeta = {}): Promise<void> {
  checkHostLora(cfg, lora, dir);
  const tensors: WriteTensor[] = [];
  const dtype = meta.dtype ?? 'F32';
  lora.layers.forEach((pairs, l) => {
    for (const m of MODULE_NAMES) {
      const p = pairs[m];
      if (!p) continue;
      const { inDim, outDim } = loraDims(cfg, m);
      tensors.push({ name: peftKey(l, m, 'A'), dtype, shape: [lora.rank, inDim], data: p.A });
      tensors.push({ name: peftKey(l, m, 'B'), dtype, shape: [outDim, lora.rank], data: p.B });
    }
  });
  const layersToTransform = lora.layers.map((p, l) => (Object.keys(p).length ? l : -1)).filter((l) => l >= 0);
  const config: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: meta.baseModelNameOrPath ?? null,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: layersToTransform.length === cfg.layers ? null : layersToTransform,
    loftq_config: {},
    lora_alpha: lora.alpha,
    lora_dropout: meta.loraDropout ?? 0,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: lora.rank,
    rank_pattern: {},
    revision: null,
    target_modules: [...lora.targets].sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: lora.useRslora,
    ...meta.extraConfig,
  };
  fsys().mkdir(dir);
  await writeSafetensors(path.join(dir, ADAPTER_WEIGHTS_FILE), tensors, { format: 'pt' });
  await fsys().writeFileAtomic(path.join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(config, null, 2) + '\n');
}

function checkHostLora(cfg: ModelConfig, lora: HostLora, where: string): void {
  const fail = (msg: string): never => {
    throw new UserError(`${where}: ${msg}`);
  };
  if (!Number.isInteger(lora.rank) || lora.rank < 1) fail(`LoRA rank must be a positive integer, got ${lora.rank}`);
  if (!Number.isFinite(lora.alpha)) fail(`lora_alpha must be a finite number, got ${lora.alpha}`);
  if (lora.layers.length > cfg.layers) fail(`adapter has ${lora.layers.length} layers but the model has ${cfg.layers}`);
  for (const t of lora.targets) if (!MODULE_NAMES.includes(t)) fail(`unknown target module ${JSON.stringify(t)}`);
  lora.layers.forEach((pairs, l) => {
    for (const [m, p] of Object.entries(pairs) as [LinearModule, HostLoraPair][]) {
      if (!MODULE_NAMES.includes(m)) fail(`layer ${l}: unknown module ${JSON.stringify(m)}`);
      const { inDim, outDim } = loraDims(cfg, m);
      if (p.A.length !== lora.rank * inDim) fail(`layer ${l} ${m}: lora_A has ${p.A.length} values, expected [${lora.rank}, ${inDim}]`);
      if (p.B.length !== outDim * lora.rank) fail(`layer ${l} ${m}: lora_B has ${p.B.length} values, expected [${outDim}, ${lora.rank}]`);
    }
  });
}

// ------------------------------------------------------------------------------------------------
// reading
// ------------------------------------------------------------------------------------------------

const KEY_RE = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$/;

function parseAdapterConfig(raw: unknown, file: string): PeftAdapterConfig {
  const fail = (msg: string): never => {
    throw new UserError(`${file}: ${msg}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail('must be a JSON object');
  const c = raw as Record<string, unknown>;
  if (c.peft_type !== 'LORA') fail(`peft_type is ${JSON.stringify(c.peft_type)}; only "LORA" adapters are supported`);
  if (c.task_type !== undefined && c.task_type !== null && c.task_type !== 'CAUSAL_LM') {
    fail(`task_type is ${JSON.stringify(c.task_type)}; only "CAUSAL_LM" is supported`);
  }
  const r = c.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) fail(`r must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) fail(`lora_alpha must be a number, got ${JSON.stringify(alpha)}`);
  const bias = c.bias ?? 'none';
  if (bias !== 'none') fail(`bias is ${JSON.stringify(bias)}; only "none" is supported`);
  if (c.fan_in_fan_out === true) fail('fan_in_fan_out is true; only false (nn.Linear layout) is supported');
  if (c.use_dora === true) fail('use_dora is true; DoRA adapters are not supported');
  for (const k of ['rank_pattern', 'alpha_pattern']) {
    const v = c[k];
    if (v && typeof v === 'object' && Object.keys(v).length > 0) fail(`${k} is not empty; per-module ranks/alphas are not supported`);
  }
  if (Array.isArray(c.modules_to_save) && c.modules_to_save.length > 0) {
    fail(`modules_to_save ${JSON.stringify(c.modules_to_save)} is not supported (only LoRA pairs on linear projections)`);
  }
  if (c.layer_replication !== undefined && c.layer_replication !== null) fail('layer_replication is not supported');
  const useRslora = c.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') fail(`use_rslora must be true or false, got ${JSON.stringify(useRslora)}`);
  const dropout = c.lora_dropout ?? 0;
  if (typeof dropout !== 'number') fail(`lora_dropout must be a number, got ${JSON.stringify(dropout)}`);
  let targetModules: LinearModule[] | string;
  const tm = c.target_modules;
  if (typeof tm === 'string') targetModules = tm; // a regex or "all-linear": the weights file decides
  else if (Array.isArray(tm)) {
    for (const m of tm) {
      if (!MODULE_NAMES.includes(m as LinearModule)) fail(`target_modules has ${JSON.stringify(m)}; supported: ${MODULE_NAMES.join(', ')}`);
    }
    targetModules = tm as LinearModule[];
  } else return fail(`target_modules must be a list or a string, got ${JSON.stringify(tm)}`);
  const base = c.base_model_name_or_path;
  return {
    r: r as number,
    loraAlpha: alpha as number,
    useRslora: useRslora as boolean,
    loraDropout: dropout as number,
    targetModules,
    baseModelNameOrPath: typeof base === 'string' ? base : null,
  };
}

/**
 * Reads an adapter folder into host arrays. With `modelCfg`, validates it against the base model
 * (layer indices, module names, A/B shapes); without, shapes are checked only for consistency.
 */
export async function readPeftAdapterHost(dir: string, modelCfg?: ModelConfig): Promise<PeftAdapterHost> {
  const fs = fsys();
  if (!fs.stat(dir)?.isDirectory) throw new UserError(`${dir}: adapter folder not found`);
  const cfgFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const wFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  if (!fs.exists(cfgFile)) throw new UserError(`${dir}: no ${ADAPTER_CONFIG_FILE} in the adapter folder`);
  if (!fs.exists(wFile)) {
    const hint = fs.exists(path.join(dir, 'adapter_model.bin')) ? ' (adapter_model.bin is not supported; save with safe_serialization=True)' : '';
    throw new UserError(`${dir}: no ${ADAPTER_WEIGHTS_FILE} in the adapter folder${hint}`);
  }
  let rawConfig: Record<string, unknown>;
  try {
    rawConfig = JSON.parse(fs.readText(cfgFile)) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${cfgFile}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  const config = parseAdapterConfig(rawConfig, cfgFile);
  const file = await SafetensorsFile.open(wFile);
  try {
    const fail = (msg: string): never => {
      throw new UserError(`${wFile}: ${msg}`);
    };
    const rank = config.r;
    const found = new Map<string, { layer: number; module: LinearModule; A?: string; B?: string }>();
    for (const name of file.names()) {
      const m = KEY_RE.exec(name);
      if (!m) fail(`unexpected tensor '${name}' (expected base_model.model.model.layers.{i}.(self_attn|mlp).<proj>.lora_A/B.weight)`);
      const layer = Number(m![1]);
      const module = m![3] as LinearModule;
      if (!MODULE_NAMES.includes(module) || LINEAR_MODULES[module].path !== `${m![2]}.${module}`) {
        fail(`tensor '${name}': unknown module ${m![2]}.${m![3]} (supported: ${MODULE_NAMES.map((x) => LINEAR_MODULES[x].path).join(', ')})`);
      }
      if (modelCfg && layer >= modelCfg.layers) {
        fail(`tensor '${name}': layer ${layer} is out of range for the base model (${modelCfg.layers} layers); adapter for another base model?`);
      }
      if (Array.isArray(config.targetModules) && !config.targetModules.includes(module)) {
        fail(`tensor '${name}': module ${module} is not in target_modules ${JSON.stringify(config.targetModules)}`);
      }
      const key = `${layer}.${module}`;
      const entry = found.get(key) ?? { layer, module };
      entry[m![4] as 'A' | 'B'] = name;
      found.set(key, entry);
    }
    if (found.size === 0) fail('no LoRA tensors in the file');
    const nLayers = modelCfg ? modelCfg.layers : Math.max(...[...found.values()].map((e) => e.layer)) + 1;
    const layers: Partial<Record<LinearModule, HostLoraPair>>[] = Array.from({ length: nLayers }, () => ({}));
    const targets = new Set<LinearModule>();
    const dims = new Map<LinearModule, { inDim: number; outDim: number }>();
    for (const e of [...found.values()].sort((a, b) => a.layer - b.layer)) {
      if (!e.A || !e.B) fail(`layer ${e.layer} ${e.module}: lora_${e.A ? 'B' : 'A'} is missing`);
      const a = file.info(e.A!);
      const b = file.info(e.B!);
      if (a.shape.length !== 2 || b.shape.length !== 2) fail(`layer ${e.layer} ${e.module}: lora_A/lora_B must be 2-D, got [${a.shape}] and [${b.shape}]`);
      if (a.shape[0] !== rank || b.shape[1] !== rank) {
        fail(`layer ${e.layer} ${e.module}: lora_A [${a.shape.join(', ')}] / lora_B [${b.shape.join(', ')}] do not have rank r=${rank} from ${ADAPTER_CONFIG_FILE}`);
      }
      const want = modelCfg ? loraDims(modelCfg, e.module) : (dims.get(e.module) ?? { inDim: a.shape[1], outDim: b.shape[0] });
      dims.set(e.module, want);
      if (a.shape[1] !== want.inDim || b.shape[0] !== want.outDim) {
        fail(
          `layer ${e.layer} ${e.module}: lora_A [${a.shape.join(', ')}] / lora_B [${b.shape.join(', ')}] do not fit ` +
            `${modelCfg ? 'the base model' : 'the other layers'} (expected [${rank}, ${want.inDim}] / [${want.outDim}, ${rank}]); adapter for another base model?`,
        );
      }
      layers[e.layer][e.module] = { A: (await file.readTensor(e.A!)).data, B: (await file.readTensor(e.B!)).data };
      targets.add(e.module);
    }
    const lora: HostLora = { rank, alpha: config.loraAlpha, useRslora: config.useRslora, targets: MODULE_NAMES.filter((m) => targets.has(m)), layers };
    return { dir, config, rawConfig, lora };
  } finally {
    await file.close();
  }
}

/** Uploads a host LoRA to the GPU. */
export function uploadLora(gpu: Gpu, cfg: ModelConfig, lora: HostLora): LoraWeights {
  checkHostLora(cfg, lora, 'uploadLora');
  const layers: LoraWeights['layers'] = Array.from({ length: cfg.layers }, () => ({}));
  lora.layers.forEach((pairs, l) => {
    for (const [m, p] of Object.entries(pairs) as [LinearModule, HostLoraPair][]) {
      const { inDim, outDim } = loraDims(cfg, m);
      layers[l][m] = {
        A: gpu.upload(p.A, [lora.rank, inDim], 'f32', `lora.${l}.${m}.A`),
        B: gpu.upload(p.B, [outDim, lora.rank], 'f32', `lora.${l}.${m}.B`),
      };
    }
  });
  return { rank: lora.rank, scale: loraScale(lora.alpha, lora.rank, lora.useRslora), targets: [...lora.targets], layers };
}

/** Reads an adapter folder, validates it against the base model and uploads it as LoraWeights. */
export async function loadPeftAdapter(gpu: Gpu, dir: string, modelCfg: ModelConfig): Promise<LoraWeights> {
  const host = await readPeftAdapterHost(dir, modelCfg);
  return uploadLora(gpu, modelCfg, host.lora);
}

/** Reads GPU LoRA weights back to host arrays (e.g. to save a training checkpoint). */
export async function loraToHost(gpu: Gpu, lora: LoraWeights, alpha: number, useRslora: boolean): Promise<HostLora> {
  const tensors = lora.layers.flatMap((p) => Object.values(p).flatMap((x) => (x ? [x.A, x.B] : [])));
  const data = (await gpu.readMany(tensors)) as Float32Array[];
  let i = 0;
  const layers = lora.layers.map((pairs) => {
    const out: Partial<Record<LinearModule, HostLoraPair>> = {};
    for (const [m, p] of Object.entries(pairs) as [LinearModule, unknown][]) if (p) out[m] = { A: data[i++], B: data[i++] };
    return out;
  });
  return { rank: lora.rank, alpha, useRslora, targets: [...lora.targets], layers };
}

export function disposeLora(lora: LoraWeights): void {
  for (const pairs of lora.layers) for (const p of Object.values(pairs)) {
    p?.A.dispose();
    p?.B.dispose();
  }
}
