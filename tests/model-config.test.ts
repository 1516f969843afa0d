import { afterAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkTensors, expectedTensors, loadConfig, parseConfig } from '../src/model/config.ts';
import { UserError } from '../src/util/errors.ts';

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'cfg-'));
afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

// Published config.json files (trimmed of irrelevant keys only where noted)
const QWEN25_05B = {
  architectures: ['Qwen2ForCausalLM'], attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645, hidden_act: 'silu',
  hidden_size: 896, initializer_range: 0.02, intermediate_size: 4864, max_position_embeddings: 32768, max_window_layers: 21,
  model_type: 'qwen2', num_attention_heads: 14, num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6,
  rope_theta: 1000000.0, sliding_window: 32768, tie_word_embeddings: true, torch_dtype: 'bfloat16', use_cache: true,
  use_sliding_window: false, vocab_size: 151936,
};
const QWEN3_06B = {
  architectures: ['Qwen3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645,
  head_dim: 128, hidden_act: 'silu', hidden_size: 1024, initializer_range: 0.02, intermediate_size: 3072, max_position_embeddings: 40960,
  max_window_layers: 28, model_type: 'qwen3', num_attention_heads: 16, num_hidden_layers: 28, num_key_value_heads: 8, rms_norm_eps: 1e-6,
  rope_scaling: null, rope_theta: 1000000, sliding_window: null, tie_word_embeddings: true, torch_dtype: 'bfloat16', use_cache: true,
  use_sliding_window: false, vocab_size: 151936,
};
const LLAMA32_1B_INSTRUCT = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000, eos_token_id: [128001, 128008, 128009],
  head_dim: 64, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 8192, max_position_embeddings: 131072,
  mlp_bias: false, model_type: 'llama', num_attention_heads: 32, num_hidden_layers: 16, num_key_value_heads: 8, pretraining_tp: 1,
  rms_norm_eps: 1e-5, rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0, tie_word_embeddings: true, torch_dtype: 'bfloat16', use_cache: true, vocab_size: 128256,
};

function expectUserError(f: () => unknown, re: RegExp) {
  let err: unknown = null;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  expect((err as Error).message).toMatch(re);
}

describe('parseConfig', () => {
  it('Qwen2.5-0.5B', () => {
    expect(parseConfig(QWEN25_05B)).toEqual({
      arch: 'qwen2', vocabSize: 151936, hidden: 896, layers: 24, heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864,
      rmsNormEps: 1e-6, ropeTheta: 1e6, ropeScaling: null, tieWordEmbeddings: true, attentionBias: true, oBias: false,
      mlpBias: false, qkNorm: false, maxPositionEmbeddings: 32768, bosTokenId: 151643, eosTokenIds: [151645], torchDtype: 'bfloat16',
    });
  });
  it('Qwen3-0.6B: explicit head_dim ≠ hidden/heads, q/k norm, no bias', () => {
    const c = parseConfig(QWEN3_06B);
    expect(c.headDim).toBe(128);
    expect(c.hidden / c.heads).toBe(64);
    expect(c.qkNorm).toBe(true);
    expect(c.attentionBias).toBe(false);
    expect(c.oBias).toBe(false);
    expect(c.ropeScaling).toBe(null);
    const withBias = parseConfig({ ...QWEN3_06B, attention_bias: true });
    expect([withBias.attentionBias, withBias.oBias]).toEqual([true, true]);
    const noField: Record<string, unknown> = { ...QWEN3_06B };
    delete noField.attention_bias;
    expect(parseConfig(noField).attentionBias).toBe(false);
  });
  it('Llama-3.2-1B-Instruct: llama3 rope scaling, eos list', () => {
    const c = parseConfig(LLAMA32_1B_INSTRUCT);
    expect(c.ropeScaling).toEqual({ type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(c.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(c.headDim).toBe(64);
    expect(c.rmsNormEps).toBe(1e-5);
    expect([c.attentionBias, c.oBias, c.mlpBias, c.qkNorm]).toEqual([false, false, false, false]);
    const b = parseConfig({ ...LLAMA32_1B_INSTRUCT, attention_bias: true, mlp_bias: true });
    expect([b.attentionBias, b.oBias, b.mlpBias]).toEqual([true, true, true]);
  });
  it('defaults: kv heads = heads, head_dim = hidden/heads, llama eps/theta/maxpos, untied', () => {
    const c = parseConfig({ model_type: 'llama', vocab_size: 10, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16 });
    expect([c.kvHeads, c.headDim, c.rmsNormEps, c.ropeTheta, c.maxPositionEmbeddings, c.tieWordEmbeddings]).toEqual([2, 4, 1e-6, 10000, 2048, false]);
    expect(c.eosTokenIds).toEqual([]);
    expect(c.bosTokenId).toBe(null);
  });
  it("rope_scaling {rope_type: 'default'} and transformers-5 rope_parameters", () => {
    expect(parseConfig({ ...QWEN3_06B, rope_scaling: { rope_type: 'default' } }).ropeScaling).toBe(null);
    const v5: Record<string, unknown> = { ...LLAMA32_1B_INSTRUCT, rope_parameters: { ...LLAMA32_1B_INSTRUCT.rope_scaling, rope_theta: 123456 } };
    delete v5.rope_scaling;
    delete v5.rope_theta;
    const c = parseConfig(v5);
    expect(c.ropeTheta).toBe(123456);
    expect(c.ropeScaling?.factor).toBe(32);
  });
  it('rejects unsupported things naming field and value', () => {
    expectUserError(() => parseConfig({ ...QWEN25_05B, model_type: 'gpt2' }), /model_type "gpt2"/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, hidden_act: 'gelu' }), /hidden_act "gelu"/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, rope_scaling: { type: 'yarn', factor: 4 } }), /rope_scaling type "yarn"/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, rope_scaling: { rope_type: 'linear', factor: 2 } }), /"linear"/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, use_sliding_window: true }), /use_sliding_window is true \(sliding_window=32768, max_window_layers=21\)/);
    expectUserError(() => parseConfig({ ...LLAMA32_1B_INSTRUCT, rope_scaling: { rope_type: 'llama3', factor: 8 } }), /rope_scaling\.low_freq_factor/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, num_key_value_heads: 3 }), /multiple of num_key_value_heads \(3\)/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, hidden_size: '896' }), /hidden_size must be a positive integer, got "896"/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, vocab_size: undefined }), /missing required field vocab_size/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, partial_rotary_factor: 0.5 }), /partial_rotary_factor 0\.5/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, layer_types: ['full_attention', 'sliding_attention'] }), /"sliding_attention"/);
    expectUserError(() => parseConfig({ ...QWEN25_05B, tie_word_embeddings: 'yes' }), /tie_word_embeddings must be true or false/);
    expectUserError(() => parseConfig([1, 2]), /JSON object/);
  });
  it('sliding window that no layer would use is accepted', () => {
    // use_sliding_window true but max_window_layers ≥ num_hidden_layers: HF applies it to no layer
    expect(parseConfig({ ...QWEN25_05B, use_sliding_window: true, max_window_layers: 24 }).arch).toBe('qwen2');
    expect(parseConfig({ ...QWEN3_06B, use_sliding_window: true, sliding_window: null }).arch).toBe('qwen3');
  });
  it('loadConfig reads a directory and reports bad JSON with the path', async () => {
    await fsp.writeFile(path.join(tmp, 'config.json'), JSON.stringify(QWEN3_06B));
    expect((await loadConfig(tmp)).arch).toBe('qwen3');
    const bad = path.join(tmp, 'bad.json');
    await fsp.writeFile(bad, '{"model_type": ');
    await expect(loadConfig(bad)).rejects.toThrow(new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not valid JSON`));
    await expect(loadConfig(path.join(tmp, 'nope'))).rejects.toThrow(/file not found/);
  });
});

describe('expectedTensors', () => {
  it('Qwen2.5-0.5B: count and shapes (qkv bias, tied, no lm_head)', () => {
    const c = parseConfig(QWEN25_05B);
    const t = expectedTensors(c);
    // embed + norm + 24 × (2 norms + 4 proj + 3 bias + 3 mlp) = 2 + 24×12
    expect(t.length).toBe(2 + 24 * 12);
    const m = new Map(t.map((x) => [x.name, x.shape]));
    expect(m.get('model.embed_tokens.weight')).toEqual([151936, 896]);
    expect(m.get('model.layers.0.self_attn.q_proj.weight')).toEqual([896, 896]);
    expect(m.get('model.layers.0.self_attn.k_proj.weight')).toEqual([128, 896]);
    expect(m.get('model.layers.0.self_attn.k_proj.bias')).toEqual([128]);
    expect(m.get('model.layers.23.mlp.down_proj.weight')).toEqual([896, 4864]);
    expect(m.has('model.layers.0.self_attn.o_proj.bias')).toBe(false);
    expect(m.has('lm_head.weight')).toBe(false);
  });
  it('Qwen3-0.6B: q_proj [heads*head_dim, hidden] and q/k norm [head_dim]', () => {
    const m = new Map(expectedTensors(parseConfig(QWEN3_06B)).map((x) => [x.name, x.shape]));
    expect(m.get('model.layers.5.self_attn.q_proj.weight')).toEqual([2048, 1024]);
    expect(m.get('model.layers.5.self_attn.o_proj.weight')).toEqual([1024, 2048]);
    expect(m.get('model.layers.5.self_attn.k_proj.weight')).toEqual([1024, 1024]);
    expect(m.get('model.layers.5.self_attn.q_norm.weight')).toEqual([128]);
    expect(m.get('model.layers.5.self_attn.k_norm.weight')).toEqual([128]);
    expect(m.has('model.layers.5.self_attn.q_proj.bias')).toBe(false);
  });
  it('llama with biases and untied head', () => {
    const c = parseConfig({ ...LLAMA32_1B_INSTRUCT, attention_bias: true, mlp_bias: true, tie_word_embeddings: false });
    const m = new Map(expectedTensors(c).map((x) => [x.name, x.shape]));
    expect(m.get('model.layers.0.self_attn.o_proj.bias')).toEqual([2048]);
    expect(m.get('model.layers.0.mlp.gate_proj.bias')).toEqual([8192]);
    expect(m.get('model.layers.0.mlp.down_proj.bias')).toEqual([2048]);
    expect(m.get('lm_head.weight')).toEqual([128256, 2048]);
  });
});

describe('checkTensors', () => {
  const c = parseConfig({ ...QWEN25_05B, num_hidden_layers: 2 });
  const full = () => new Map(expectedTensors(c).map((x) => [x.name, x.shape.slice()]));
  it('exact match → no warnings; inv_freq ignored; unknown tensors warned', () => {
    expect(checkTensors(c, full())).toEqual([]);
    const m = full();
    m.set('model.layers.0.self_attn.rotary_emb.inv_freq', [32]);
    m.set('model.extra.weight', [3]);
    m.set('lm_head.weight', [151936, 896]);
    const w = checkTensors(c, m);
    expect(w).toHaveLength(2);
    expect(w.join('\n')).toMatch(/unexpected tensor model\.extra\.weight/);
    expect(w.join('\n')).toMatch(/lm_head\.weight is present but tie_word_embeddings is true/);
  });
  it('missing and wrong-shape tensors are a UserError listing them', () => {
    const m = full();
    m.delete('model.layers.1.self_attn.v_proj.bias');
    m.set('model.norm.weight', [895]);
    expectUserError(
      () => checkTensors(c, m, 'ckpt'),
      /ckpt does not match.*missing 1 tensor\(s\): model\.layers\.1\.self_attn\.v_proj\.bias; wrong shape: model\.norm\.weight is \[895\], expected \[896\]/,
    );
  });
  it('a long list of missing tensors is abbreviated', () => {
    expectUserError(() => checkTensors(c, new Map()), /missing 26 tensor\(s\): .*… \(26 in all\)/);
  });
});
